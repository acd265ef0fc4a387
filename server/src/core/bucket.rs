//! `token_bucket` as GCRA: one stored "theoretical arrival time" (TAT) per limit. Time is kept
//! scaled by the amount (`tat_scaled = TAT × amount`), so one token is exactly `window` scaled
//! units and all arithmetic is exact integers: no drift, no rounding in the caller's favour.
//!
//! A cost `c` fits at time `t` when `tat − t ≤ (burst − c) × window / amount`; booking it moves the
//! TAT to `max(tat, t) + c × window / amount`.

use super::Micros;

/// GCRA state of one limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Theoretical arrival time × amount, in microseconds.
    pub tat_scaled: u128,
}

/// The fixed parameters of a bucket.
#[derive(Clone, Copy, Debug)]
pub struct BucketShape {
    /// Tokens per window.
    pub amount: u64,
    /// Window length.
    pub window: Micros,
    /// Capacity.
    pub burst: u64,
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
