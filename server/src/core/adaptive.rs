//! Adaptive budgets, for providers that send no rate-limit headers (Gemini, many gateways,
//! self-hosted servers): the service learns its real budget from its 429s, as TCP's CUBIC does
//! (and the AWS SDKs' adaptive retry mode). A 429 that is not a quota or spend cap scales every
//! budget of the service by [`DECREASE`] (at most once per cooldown episode, never below
//! [`FLOOR`]). Each quiet period after the last 429 gives back half of what is left up to the
//! scale the 429 came at (the budget is most likely just under it), until it is whole; from there
//! on each one adds [`STEP`] of the configured amounts, up to all of them ([`FULL`]). The budget
//! so spends most of its time close under the level that drew the 429 and probes above it slowly.
//!
//! The scale at any time is a pure function of the last throttle (its scale, the scale it came
//! at, and its time), so every backend computes it alike without writing as time passes. A
//! sliding window's amount is scaled; a token bucket charges each cost scaled up by the inverse
//! (the same as a bucket whose rate and burst are scaled). When a throttle lowers the scale, what
//! a bucket owes was charged at the old scale: it is charged again at the new one
//! ([`BucketShape::rescale`](super::BucketShape::rescale)), so the lowered budget holds for the
//! calls already granted too. A rising scale leaves what is owed as charged (the safe direction).

use super::Micros;

/// The whole configured budget, in permille.
pub const FULL: u32 = 1000;
/// A throttle scales the budget by 0.7.
pub const DECREASE: u32 = 700;
/// Never below a tenth of the configured budget.
pub const FLOOR: u32 = 100;
/// Beyond the scale the last 429 came at, each quiet period adds 5 % of the configured budget.
pub const STEP: u32 = 50;
/// Costs charged to a scaled bucket stay below 2^52.
const MAX_INFLATED: u64 = 1 << 52;

/// What a service has learned from its 429s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adaptive {
    /// The scale (permille) set by the last throttle; 0 when none was ever seen.
    pub scale: u32,
    /// When the last throttle came.
    pub since: Micros,
    /// The end of the cooldown episode the last decrease belongs to: throttles before it lower
    /// nothing more.
    pub episode_end: Micros,
    /// The scale in force when the last decrease came (what recovery climbs back to first).
    pub peak: u32,
}

impl Adaptive {
    /// The scale in force at `now`: `scale`, recovering once per full `period` since the last
    /// throttle (see the module's doc).
    pub fn scale_at(&self, now: Micros, period: Micros) -> u32 {
        if self.scale == 0 {
            return FULL;
        }
        let steps = now.saturating_sub(self.since) / period.max(1);
        let peak = self.peak.max(self.scale);
        let gap = peak - self.scale;
        let halvings = halvings(gap);
        if steps < halvings {
            return peak - (gap >> steps);
        }
        let probed = u64::from(peak) + (steps - halvings).saturating_mul(u64::from(STEP));
        u32::try_from(probed.min(u64::from(FULL))).unwrap_or(FULL)
    }

    /// How many quiet periods after the last throttle the budget is whole again (0 if it is).
    pub fn periods_to_full(&self) -> u64 {
        if self.scale == 0 || self.scale >= FULL {
            return 0;
        }
        let peak = self.peak.max(self.scale).min(FULL);
        halvings(peak - self.scale) + u64::from((FULL - peak).div_ceil(STEP))
    }

    /// A throttle at `now` whose cooldown ends at `until`: lowers the scale if no decrease of
    /// this episode came yet, and restarts the quiet period in any case. True if it lowered it.
    pub fn throttle(&mut self, now: Micros, until: Micros, period: Micros) -> bool {
        let current = self.scale_at(now, period);
        let lower = now >= self.episode_end;
        if lower {
            self.peak = current;
            self.scale = (current * DECREASE / FULL).max(FLOOR);
        } else {
            // The quiet period restarts from the scale of the moment, toward the same peak.
            self.peak = self.peak.max(current);
            self.scale = current;
        }
        self.since = now;
        if lower {
            self.episode_end = until.max(now);
        }
        lower
    }
}

/// How many halvings bring `gap` to 0: its bit length.
fn halvings(gap: u32) -> u64 {
    u64::from(u32::BITS - gap.leading_zeros())
}

/// An amount at `scale` permille: at least 1.
pub fn scaled(amount: u64, scale: u32) -> u64 {
    if scale >= FULL {
        return amount;
    }
    share(amount, scale).max(1)
}

/// `x × scale / 1000`, rounded down (a count of tokens shown at the scale).
pub fn share(x: u64, scale: u32) -> u64 {
    if scale >= FULL {
        return x;
    }
    let s = u64::from(scale);
    (x / 1000) * s + (x % 1000) * s / 1000
}

/// What a cost of `cost` is charged to a token bucket at `scale`: `cost × 1000 / scale`, rounded
/// up, at most 2^52.
pub fn inflated(cost: u64, scale: u32) -> u64 {
    if scale >= FULL || cost == 0 {
        return cost;
    }
    let s = u64::from(scale.max(1));
    let (q, r) = (cost / s, cost % s);
    if q > MAX_INFLATED / 1000 {
        return MAX_INFLATED;
    }
    (q * 1000 + (r * 1000).div_ceil(s)).min(MAX_INFLATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Micros = 60_000_000;

    #[test]
    fn decreases_once_per_episode_and_recovers_to_the_peak_first() {
        let mut a = Adaptive::default();
        assert_eq!(a.scale_at(0, P), FULL);
        assert!(a.throttle(10, 10 + 5_000_000, P));
        assert_eq!(a.scale_at(10, P), 700);
        // A second 429 of the same cooldown lowers nothing, but the quiet period restarts.
        assert!(!a.throttle(1_000_000, 6_000_000, P));
        assert_eq!(a.scale_at(1_000_000 + P - 1, P), 700);
        // Each quiet period gives back half the gap to 1000 (the scale the 429 came at).
        let at = |k: u64| a.scale_at(1_000_000 + k * P, P);
        let climb: Vec<u32> = (1..=9).map(at).collect();
        assert_eq!(climb, vec![850, 925, 963, 982, 991, 996, 998, 999, 1000]);
        assert_eq!(a.periods_to_full(), 9);
        // The next episode lowers from the recovered scale; beyond its peak it probes by STEP.
        assert!(a.throttle(1_000_000 + 2 * P, 1_000_000 + 2 * P + 1, P));
        assert_eq!((a.peak, a.scale), (925, 647));
        let t = 1_000_000 + 2 * P;
        let climb: Vec<u32> = (0..=12).map(|k| a.scale_at(t + k * P, P)).collect();
        assert_eq!(
            climb,
            vec![647, 786, 856, 891, 908, 917, 921, 923, 924, 925, 975, 1000, 1000]
        );
        assert_eq!(a.periods_to_full(), 9 + 2);
    }

    #[test]
    fn never_below_the_floor() {
        let mut a = Adaptive::default();
        for i in 0..20 {
            a.throttle(i * 10, i * 10 + 1, P);
        }
        assert_eq!(a.scale_at(200, P), FLOOR);
    }

    #[test]
    fn scaling_and_inflation_are_exact_and_bounded() {
        assert_eq!(scaled(1000, 700), 700);
        assert_eq!(scaled(3, 100), 1);
        assert_eq!(scaled(1 << 50, 1000), 1 << 50);
        assert_eq!(scaled(1 << 50, 500), 1 << 49);
        assert_eq!(inflated(7, 700), 10);
        assert_eq!(inflated(1, 700), 2);
        assert_eq!(inflated(1 << 50, 100), 1 << 52);
        assert_eq!(inflated(5, FULL), 5);
    }
}
