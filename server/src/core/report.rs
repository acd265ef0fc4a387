//! A provider's answer as the core applies it: a [`ReportCall`] carries real usage for a lease,
//! cooldowns to set ([`CooldownOrder`]), an overload to count ([`OverloadOrder`]), and the
//! provider's remaining budgets ([`RemainingReading`]) to compare with the ledger's own view.
//! Lengths are relative: the backend applies them at its own `now`.

use super::{
    Algorithm, BucketShape, CooldownCause, Dimension, LeaseId, LimitSpec, Micros, UsageUpdate,
    MAX_AMOUNT,
};

/// Set a cooldown on one dimension (on `requests`, every call pays one: the whole service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CooldownOrder {
    /// Calls that spend this dimension wait.
    pub dimension: Dimension,
    /// From now.
    pub length: Micros,
    /// Why.
    pub cause: CooldownCause,
}

/// Count an overload (503, 529): the service cools down for `base × 2^(repeats)`, at most `cap`,
/// scaled by `jitter_permille / 1000`, and at least `at_least`. A success resets the count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadOrder {
    /// First cooldown.
    pub base: Micros,
    /// Longest cooldown from doubling.
    pub cap: Micros,
    /// 800–1200: spreads replicas and services apart.
    pub jitter_permille: u32,
    /// A wait the provider asked for.
    pub at_least: Micros,
    /// Why.
    pub cause: CooldownCause,
}

impl OverloadOrder {
    /// The cooldown for the `streak`-th overload in a row (1 for the first).
    pub fn length(&self, streak: u32) -> Micros {
        let doubled = self
            .base
            .saturating_mul(1u64 << streak.saturating_sub(1).min(30))
            .min(self.cap);
        let jittered =
            u64::try_from(u128::from(doubled) * u128::from(self.jitter_permille) / 1_000)
                .unwrap_or(Micros::MAX);
        jittered.max(self.at_least)
    }
}

/// A provider's remaining budget for one configured limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemainingReading {
    /// Index of the limit in the service's limits.
    pub limit: usize,
    /// What the provider says is left.
    pub remaining: u64,
    /// The provider's rounding: smaller differences are not outside usage.
    pub tolerance: u64,
}

/// A provider's answer, interpreted and validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportCall {
    /// The lease the answer belongs to.
    pub lease: Option<LeaseId>,
    /// Real usage replacing the lease's estimate.
    pub usage: Option<UsageUpdate>,
    /// Cooldowns to set or lengthen.
    pub cooldowns: Vec<CooldownOrder>,
    /// An overload to count.
    pub overload: Option<OverloadOrder>,
    /// The answer was a success (resets the overload count).
    pub success: bool,
    /// Remaining budgets to compare with the ledger's view.
    pub remaining: Vec<RemainingReading>,
    /// Provider budgets to use in place of configured amounts.
    pub adopt: Vec<AdoptOrder>,
    /// The provider throttled the call (a 429 that is not a quota or spend cap): an adaptive
    /// budget lowers itself (see `core::adaptive`).
    pub throttled: bool,
    /// HTTP status and the rate-limit headers to remember.
    pub observation: Option<(u32, Vec<(String, String)>)>,
}

/// Use `amount` as the amount of the limit at index `limit`, until the service's state is
/// forgotten (see `adopt_provider_limits`). A token bucket's rate follows the amount and its burst
/// keeps its proportion to it (`burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptOrder {
    /// Index in the service's limits.
    pub limit: usize,
    /// The provider's budget, `1..=MAX_AMOUNT`.
    pub amount: u64,
    /// A token bucket's capacity with that amount (the configured burst scaled by
    /// `amount / configured amount`, at least 1); the amount for a sliding window.
    pub burst: u64,
}

/// Why a provider budget cannot be adopted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAdopted {
    /// Zero or above [`MAX_AMOUNT`].
    #[error("out of range")]
    OutOfRange,
    /// A token bucket with this amount would need numbers beyond 2^53 (see
    /// [`BucketShape::is_exact`]).
    #[error("too fine a rate for exact arithmetic")]
    Inexact,
    /// Calls in flight are not a budget.
    #[error("not a budget")]
    NotABudget,
}

impl AdoptOrder {
    /// The order that adopts `amount` for `limit`, the limit at `index`.
    pub fn new(index: usize, limit: &LimitSpec, amount: u64) -> Result<Self, NotAdopted> {
        if !(1..=MAX_AMOUNT).contains(&amount) {
            return Err(NotAdopted::OutOfRange);
        }
        let burst = match limit.algorithm {
            Algorithm::SlidingWindow => amount,
            Algorithm::Concurrent => return Err(NotAdopted::NotABudget),
            Algorithm::TokenBucket { .. } => {
                let burst = limit.burst_for(amount);
                let shape = BucketShape {
                    amount,
                    window: limit.window,
                    burst,
                };
                if !shape.is_exact() {
                    return Err(NotAdopted::Inexact);
                }
                burst
            }
        };
        Ok(Self {
            limit: index,
            amount,
            burst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_cooldowns_double_up_to_the_cap_with_jitter() {
        let order = |jitter, at_least| OverloadOrder {
            base: 1_000_000,
            cap: 8_000_000,
            jitter_permille: jitter,
            at_least,
            cause: CooldownCause {
                status_code: 529,
                source: "529 overloaded".into(),
            },
        };
        let plain = order(1_000, 0);
        let lengths: Vec<Micros> = (1..=6).map(|s| plain.length(s)).collect();
        assert_eq!(
            lengths,
            vec![1_000_000, 2_000_000, 4_000_000, 8_000_000, 8_000_000, 8_000_000]
        );
        assert_eq!(order(800, 0).length(2), 1_600_000);
        assert_eq!(order(1_200, 0).length(1), 1_200_000);
        assert_eq!(order(1_000, 5_000_000).length(1), 5_000_000);
        assert_eq!(plain.length(u32::MAX), 8_000_000);
    }
}
