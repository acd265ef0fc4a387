//! Deadlines in Redis's clock. A decision whose caller was answered with an error (no reply
//! within the timeout: a stalled or frozen Redis) must book nothing when Redis runs it later, or
//! it leaves ghost bookings no one holds: an in-flight slot pinned for the lease timeout, a
//! window's budget wasted. So every acquire carries its deadline, and the scripts book nothing
//! once Redis's `TIME` is past it.
//!
//! Redis's clock is not ours: [`RedisClock`] learns the offset between them from answers whose
//! Redis time is known (the readiness probe's `TIME`, a grant's slot minus its wait). An answer
//! sent at our `sent` carrying Redis time `r` bounds the offset from above by `r − sent`; the
//! smallest such bound over the last two periods is the estimate. It errs late (by at most the
//! fastest round trip seen), so a deadline never cuts a call that was still being waited for;
//! a Redis clock that jumps ahead is unlearned when a call comes back expired at once.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long one period of samples lasts: an offset that grows (Redis's clock stepped forward)
/// replaces the old one within two periods.
const PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Estimate {
    current: Option<i64>,
    previous: Option<i64>,
    period_start: i64,
}

/// The offset between Redis's clock and this process's.
#[derive(Debug)]
pub struct RedisClock {
    origin: Instant,
    estimate: Mutex<Estimate>,
}

impl Default for RedisClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            estimate: Mutex::default(),
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl RedisClock {
    /// This process's time, µs since the clock was made.
    pub fn local(&self, at: Instant) -> i64 {
        micros(at.saturating_duration_since(self.origin))
    }

    /// Learns from an answer sent at `sent` whose Redis time was `redis_now` (µs since the Unix
    /// epoch).
    pub fn observe(&self, sent: Instant, redis_now: u64) {
        let Ok(redis_now) = i64::try_from(redis_now) else {
            return;
        };
        let local = self.local(sent);
        let bound = redis_now.saturating_sub(local);
        let mut e = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        if local.saturating_sub(e.period_start) > micros(PERIOD) {
            e.previous = e.current.take();
            e.period_start = local;
        }
        e.current = Some(e.current.map_or(bound, |c| c.min(bound)));
    }

    /// Forgets what was learned (a call came back expired long before its deadline: Redis's
    /// clock moved ahead of the estimate). Deadlines are left out until the next answer.
    pub fn forget(&self) {
        *self.estimate.lock().unwrap_or_else(PoisonError::into_inner) = Estimate::default();
    }

    /// The offset of Redis's clock from this process's (µs), once learned.
    pub fn offset(&self) -> Option<i64> {
        let e = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        match (e.current, e.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `deadline` in Redis's clock (µs since the Unix epoch), given the [`RedisClock::offset`].
    pub fn at_offset(&self, deadline: Instant, offset: i64) -> Option<u64> {
        u64::try_from(self.local(deadline).saturating_add(offset)).ok()
    }

    /// `deadline` in Redis's clock, once the offset is known.
    #[cfg(test)]
    fn in_redis_time(&self, deadline: Instant) -> Option<u64> {
        self.at_offset(deadline, self.offset()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_tightest_upper_bound_and_errs_late() {
        let clock = RedisClock::default();
        let t = clock.origin + Duration::from_secs(1);
        assert_eq!(
            clock.in_redis_time(t),
            None,
            "no deadline before any answer"
        );
        // Redis is 5 s ahead; one answer was queued 300 ms, another 2 ms.
        clock.observe(t, 6_000_000 + 300_000);
        clock.observe(t, 6_000_000 + 2_000);
        let d = t + Duration::from_millis(250);
        assert_eq!(clock.in_redis_time(d), Some(6_252_000));
        clock.forget();
        assert_eq!(clock.in_redis_time(d), None);
    }

    #[test]
    fn a_clock_that_steps_ahead_is_followed_within_two_periods() {
        let clock = RedisClock::default();
        let t = clock.origin + Duration::from_secs(1);
        clock.observe(t, 1_000_000);
        // Redis's clock steps 1 s ahead: the old bound stays the estimate for a period.
        let later = t + PERIOD + Duration::from_secs(1);
        clock.observe(later, 1_000_000 + micros(later - t) as u64 + 1_000_000);
        assert_eq!(clock.in_redis_time(later), Some(clock.local(later) as u64));
        let much_later = later + PERIOD + Duration::from_secs(1);
        clock.observe(
            much_later,
            1_000_000 + micros(much_later - t) as u64 + 1_000_000,
        );
        let even_later = much_later + PERIOD + Duration::from_secs(1);
        clock.observe(
            even_later,
            1_000_000 + micros(even_later - t) as u64 + 1_000_000,
        );
        assert_eq!(
            clock.in_redis_time(even_later),
            Some(clock.local(even_later) as u64 + 1_000_000)
        );
    }
}
