//! `token_bucket` as GCRA: one stored "theoretical arrival time" (TAT) per limit. Time is kept
//! scaled by the amount (`tat_scaled = TAT × amount`), so one token is exactly `window` scaled
//! units and all arithmetic is exact integers: no drift, no rounding in the caller's favour.
//!
//! A cost `c` fits at time `t` when `tat − t ≤ (burst − c) × window / amount`; booking it moves the
//! TAT to `max(tat, t) + c × window / amount`.

use super::{Micros, MAX_WAIT_LIMIT};

/// 2^53: integers below it are exact in a double (the Redis scripts' numbers).
const MAX_EXACT: u128 = 1 << 53;

/// GCRA state of one limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Theoretical arrival time × amount, in microseconds.
    pub tat_scaled: u128,
}

/// The fixed parameters of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketShape {
    /// Tokens per window.
    pub amount: u64,
    /// Window length.
    pub window: Micros,
    /// Capacity.
    pub burst: u64,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl BucketShape {
    /// `(A, Wg)`: amount and window divided by their greatest common divisor, so the TAT moves
    /// `Wg / A` µs per token with the smallest integers (the Redis scripts' representation).
    pub fn reduced(&self) -> (u128, u128) {
        let (amount, window) = (u128::from(self.amount), u128::from(self.window));
        let g = gcd(amount, window).max(1);
        (amount / g, window / g)
    }

    /// Time until a full bucket drains: at least the window.
    pub fn span(&self) -> Micros {
        let drain = (u128::from(self.burst) * u128::from(self.window))
            .div_ceil(u128::from(self.amount.max(1)));
        Micros::try_from(drain)
            .unwrap_or(Micros::MAX)
            .max(self.window)
    }

    /// Whether every number the bucket's arithmetic needs stays below 2^53 in the reduced
    /// representation: a span of the longest wait plus the drain time in units of 1/A µs, plus a
    /// full burst. Every backend refuses buckets (configured or adopted) that are not.
    pub fn is_exact(&self) -> bool {
        let (a, wg) = self.reduced();
        let span = u128::from(MAX_WAIT_LIMIT) + u128::from(self.span());
        span * a + u128::from(self.burst) * wg + a < MAX_EXACT
    }

    /// The state of `bucket` (shaped by `self`) re-expressed for `to`, at `now`, with `latest` the
    /// latest slot booked: what it owes carries over in whole tokens (rounded up, never down),
    /// draining at the new rate; at most a burst plus the longest wait's worth at the new rate
    /// (what can be booked ahead), so the numbers stay exact.
    ///
    /// Counted from `now`, what it owes includes the time up to the latest booked slot (a slot
    /// another limit or a cooldown chose, which owes no tokens): at a higher rate that time would
    /// drain early and let the calls queued there weigh less than they cost. So it is also counted
    /// from `max(now, latest)`, that time kept as time, and the later of the two states is kept
    /// (the second within the longest wait plus a drain from `now`). For a lower rate the first is
    /// the later one (and the queued calls are booked again at it).
    pub fn convert(
        &self,
        bucket: TokenBucket,
        to: BucketShape,
        now: Micros,
        latest: Micros,
    ) -> TokenBucket {
        let w = u128::from(self.window);
        let ahead =
            (u128::from(MAX_WAIT_LIMIT) * u128::from(to.amount)).div_ceil(u128::from(to.window));
        let most = u128::from(to.burst) + ahead;
        let from = |t: Micros| {
            let debt = bucket
                .tat_scaled
                .saturating_sub(u128::from(t) * u128::from(self.amount));
            let tokens = debt.div_ceil(w).min(most);
            u128::from(t) * u128::from(to.amount) + tokens * u128::from(to.window)
        };
        let reach = now.saturating_add(MAX_WAIT_LIMIT).saturating_add(to.span());
        let after_latest = from(now.max(latest)).min(u128::from(reach) * u128::from(to.amount));
        TokenBucket {
            tat_scaled: from(now).max(after_latest),
        }
    }

    /// The state of `bucket` (shaped by `self`) when an adaptive budget's scale drops from `from`
    /// to `to` permille at `now`, with `latest` the latest slot booked. What the bucket owes was
    /// charged at `from` or below (each cost × 1000 / scale), so it is charged again at `to`: ×
    /// from / to, rounded up, the safe direction. What it owes is counted from
    /// `max(now, latest)`: before the last booked slot the TAT also holds the time to that slot
    /// (a slot a sliding window or a cooldown chose, which owes no tokens), which must not grow;
    /// from there on it is only what the calls booked owe. Counted in units of 1/A µs (A from
    /// [`BucketShape::reduced`], the Redis scripts' representation). The result stays within the
    /// longest wait plus the time a full bucket drains from `now` (what bookings can reach, so the
    /// numbers stay exact), and never below what the bucket owed.
    pub fn rescale(
        &self,
        bucket: TokenBucket,
        now: Micros,
        latest: Micros,
        from: u32,
        to: u32,
    ) -> TokenBucket {
        let since = now.max(latest);
        let base = u128::from(since) * u128::from(self.amount);
        if to == 0 || from <= to || bucket.tat_scaled <= base {
            return bucket;
        }
        let (a, _) = self.reduced();
        let g = u128::from(self.amount) / a.max(1);
        let owed = (bucket.tat_scaled - base).div_ceil(g.max(1));
        let reach = u128::from(MAX_WAIT_LIMIT) + u128::from(self.span());
        let cap = reach.saturating_sub(u128::from(since - now)) * a;
        let units = (owed * u128::from(from))
            .div_ceil(u128::from(to))
            .min(cap)
            .max(owed);
        TokenBucket {
            tat_scaled: base + units * g,
        }
    }
}

impl TokenBucket {
    /// Earliest `t ≥ t0` at which `cost` (≤ burst) fits.
    pub fn earliest(&self, shape: BucketShape, cost: u64, t0: Micros) -> Micros {
        let a = u128::from(shape.amount);
        let w = u128::from(shape.window);
        let need = self.tat_scaled + u128::from(cost) * w;
        let allowance = u128::from(shape.burst) * w;
        if need <= allowance {
            return t0;
        }
        let t = (need - allowance).div_ceil(a);
        t0.max(Micros::try_from(t).unwrap_or(Micros::MAX))
    }

    /// Books `cost` at slot `t`, which must come from [`TokenBucket::earliest`].
    pub fn book(&mut self, shape: BucketShape, cost: u64, t: Micros) {
        let a = u128::from(shape.amount);
        let w = u128::from(shape.window);
        self.tat_scaled = self.tat_scaled.max(u128::from(t) * a) + u128::from(cost) * w;
    }

    /// Tokens currently in the bucket (rounded up) and the time until it is empty.
    pub fn level(&self, shape: BucketShape, now: Micros) -> (u64, Micros) {
        let a = u128::from(shape.amount);
        let w = u128::from(shape.window);
        let ahead = self.tat_scaled.saturating_sub(u128::from(now) * a);
        let level = u64::try_from(ahead.div_ceil(w)).unwrap_or(u64::MAX);
        let reset = Micros::try_from(ahead.div_ceil(a)).unwrap_or(Micros::MAX);
        (level, reset)
    }

    /// True when the bucket is empty at `now`, so its state carries no information.
    pub fn is_drained(&self, shape: BucketShape, now: Micros) -> bool {
        self.tat_scaled <= u128::from(now) * u128::from(shape.amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: BucketShape = BucketShape {
        amount: 10,
        window: 1_000_000,
        burst: 5,
    };

    #[test]
    fn burst_then_steady_rate() {
        let mut b = TokenBucket::default();
        let now = 10_000_000;
        for _ in 0..5 {
            let t = b.earliest(SHAPE, 1, now);
            assert_eq!(t, now);
            b.book(SHAPE, 1, t);
        }
        // Burst spent: one token every window / amount = 100 ms.
        let t = b.earliest(SHAPE, 1, now);
        assert_eq!(t, now + 100_000);
        b.book(SHAPE, 1, t);
        assert_eq!(b.earliest(SHAPE, 1, now), now + 200_000);
        assert_eq!(b.level(SHAPE, now), (6, 600_000));
    }

    #[test]
    fn large_cost_waits_for_enough_refill() {
        let mut b = TokenBucket::default();
        let now = 1_000_000;
        b.book(SHAPE, 5, now);
        // Five tokens must drain before five more fit: 500 ms.
        assert_eq!(b.earliest(SHAPE, 5, now), now + 500_000);
        assert_eq!(b.earliest(SHAPE, 2, now), now + 200_000);
        assert!(!b.is_drained(SHAPE, now + 499_999));
        assert!(b.is_drained(SHAPE, now + 500_000));
    }

    #[test]
    fn a_scale_drop_charges_what_the_bucket_owes_at_the_new_scale() {
        // 20,000 a minute, burst 20,000: A = 1, Wg = 3,000 µs per token.
        let shape = BucketShape {
            amount: 20_000,
            window: 60_000_000,
            burst: 20_000,
        };
        let now = 1_000_000_000;
        let mut b = TokenBucket::default();
        b.book(shape, 7_000, now);
        // 7,000 tokens owed at the whole scale are 10,000 at 70 %: the same 7,000 real tokens.
        let r = shape.rescale(b, now, now, 1000, 700);
        assert_eq!(r.level(shape, now).0, 10_000);
        // Rounded up, in units of 1/A µs: 1 token owed at 60 % is ceil(3,000 × 600 / 420) =
        // 4,286 units at 42 %, not 4,285.
        let mut one = TokenBucket::default();
        one.book(shape, 1, now);
        let r = shape.rescale(one, now, now, 600, 420);
        assert_eq!(r.tat_scaled - u128::from(now) * 20_000, 4_286 * 20_000);
        // Nothing owed, or no drop: unchanged.
        assert_eq!(shape.rescale(b, now + 60_000_000, 0, 1000, 700), b);
        assert_eq!(shape.rescale(b, now, now, 700, 700), b);
        // A slot booked 30 s ahead (by another limit) with 1,000 tokens: the TAT holds the 30 s
        // to it, which owes nothing and stays; the 1,000 tokens after it become 1,429.
        let mut queued = TokenBucket::default();
        queued.book(shape, 1_000, now + 30_000_000);
        let r = shape.rescale(queued, now, now + 30_000_000, 1000, 700);
        assert_eq!(r.level(shape, now + 30_000_000).0, 1_429);
        // Bounded by a day of bookings plus a drain from now, never below what was owed.
        let far = TokenBucket {
            tat_scaled: u128::from(now + 86_400_000_000 + 60_000_000) * 20_000,
        };
        assert_eq!(shape.rescale(far, now, now, 1000, 100), far);
        let day = TokenBucket {
            tat_scaled: u128::from(now + 86_400_000_000) * 20_000,
        };
        assert_eq!(shape.rescale(day, now, now, 1000, 100), far);
        assert_eq!(shape.rescale(day, now, now + 3_600_000_000, 1000, 100), far);
    }

    #[test]
    fn a_new_budget_carries_the_debt_over_in_whole_tokens() {
        let from = BucketShape {
            amount: 20_000,
            window: 60_000_000,
            burst: 20_000,
        };
        let half = BucketShape {
            amount: 10_000,
            window: 60_000_000,
            burst: 10_000,
        };
        let now = 1_000_000_000;
        // 15,000 owed carry over whole at the lower budget: above its burst, draining at its
        // rate (15,000 at 10,000 a minute: 90 s).
        let mut b = TokenBucket::default();
        b.book(from, 15_000, now);
        let c = from.convert(b, half, now, now);
        assert_eq!(c.level(half, now), (15_000, 90_000_000));
        // Back up: the same tokens, draining twice as fast.
        assert_eq!(
            half.convert(c, from, now, now).level(from, now),
            (15_000, 45_000_000)
        );
        // A call booked 30 s ahead (by another limit) with 1,000 tokens: at the higher rate the
        // 30 s it waits for owe nothing and stay 30 s; its 1,000 tokens stay after them.
        let mut queued = TokenBucket::default();
        queued.book(half, 1_000, now + 30_000_000);
        let c = half.convert(queued, from, now, now + 30_000_000);
        assert_eq!(c.level(from, now + 30_000_000).0, 1_000);
        // Counted from now only, the 30 s (5,000 tokens at the old rate) would drain in 15 s.
        let early = half.convert(queued, from, now, now);
        assert_eq!(early.level(from, now + 30_000_000).0, 0);
    }

    #[test]
    fn idle_time_refills_only_up_to_burst() {
        let mut b = TokenBucket::default();
        b.book(SHAPE, 5, 0);
        let later = 3_600_000_000;
        for _ in 0..5 {
            assert_eq!(b.earliest(SHAPE, 1, later), later);
            b.book(SHAPE, 1, later);
        }
        assert!(b.earliest(SHAPE, 1, later) > later);
    }
}
