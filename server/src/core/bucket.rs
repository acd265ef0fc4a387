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

    /// The state of `bucket` (shaped by `self`) re-expressed for `to`, at `now`: what it owes
    /// carries over in whole tokens (rounded up, never down), draining at the new rate; at most a
    /// burst plus the longest wait's worth at the new rate (what can be booked ahead), so the
    /// numbers stay exact.
    pub fn convert(&self, bucket: TokenBucket, to: BucketShape, now: Micros) -> TokenBucket {
        let w = u128::from(self.window);
        let debt = bucket
            .tat_scaled
            .saturating_sub(u128::from(now) * u128::from(self.amount));
        let ahead =
            (u128::from(MAX_WAIT_LIMIT) * u128::from(to.amount)).div_ceil(u128::from(to.window));
        let tokens = debt.div_ceil(w).min(u128::from(to.burst) + ahead);
        TokenBucket {
            tat_scaled: u128::from(now) * u128::from(to.amount) + tokens * u128::from(to.window),
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
