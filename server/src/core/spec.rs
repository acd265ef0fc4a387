//! What a service is allowed to spend: its limits, each over one [`Dimension`] with an
//! [`Algorithm`], and the [`Cost`] of one call. Specs are validated by the config layer and are
//! immutable while the server runs.

use std::fmt;

use super::{duration::format_duration, Micros, MICROS_PER_SEC};

/// Largest amount, burst, cost or usage accepted anywhere (2^50): every number stays exact in a
/// Lua double, with room for the running totals of the Redis backend's sliding windows.
pub const MAX_AMOUNT: u64 = 1 << 50;

/// Longest `max_wait` accepted: one day.
pub const MAX_WAIT_LIMIT: Micros = 86_400 * 1_000_000;

/// Bound of every running total (2^53): a dimension's retained log never holds this much (see
/// `Ledger::totals_fit`), on every backend alike.
pub const MAX_TOTAL: u128 = 1 << 53;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// One per call.
    Requests,
    /// Total tokens of a call.
    Tokens,
    /// Input (prompt) tokens.
    InputTokens,
    /// Output (completion) tokens.
    OutputTokens,
}

impl Dimension {
    /// Every dimension, in index order.
    pub const ALL: [Dimension; 4] = [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::InputTokens,
        Dimension::OutputTokens,
    ];

    /// Position of this dimension in a [`Cost`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The config and API spelling: `requests`, `tokens`, `input_tokens`, `output_tokens`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::InputTokens => "input_tokens",
            Dimension::OutputTokens => "output_tokens",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// How a limit spends and refills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Exact log of granted costs: at most `amount` in every interval of length `window`.
    SlidingWindow,
    /// GCRA: continuous refill at `amount / window`, capacity `burst`.
    TokenBucket {
        /// Bucket capacity.
        burst: u64,
    },
    /// Calls in flight: each granted call holds one of `amount` slots from its slot time until
    /// its report, or until `window` (the lease timeout) has passed, so a crashed worker frees its
    /// slot by itself. Configured as `dimension = "concurrent"`; it counts calls (`requests`).
    Concurrent,
}

impl Algorithm {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::TokenBucket { .. } => "token_bucket",
            Algorithm::Concurrent => "concurrent",
        }
    }
}

/// One budget of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    /// What it counts.
    pub dimension: Dimension,
    /// How much per window, `1..=MAX_AMOUNT`.
    pub amount: u64,
    /// Window length, > 0.
    pub window: Micros,
    /// How it is enforced.
    pub algorithm: Algorithm,
    /// Display name, e.g. `tokens/1m`.
    pub name: String,
}

impl LimitSpec {
    /// Builds a limit and its display name.
    pub fn new(dimension: Dimension, amount: u64, window: Micros, algorithm: Algorithm) -> Self {
        let name = match algorithm {
            Algorithm::Concurrent => "concurrent".to_string(),
            _ => format!("{}/{}", dimension.as_str(), format_duration(window)),
        };
        Self {
            dimension,
            amount,
            window,
            algorithm,
            name,
        }
    }

    /// At most `amount` calls in flight; a lease holds its slot for at most `lease_timeout`.
    pub fn concurrent(amount: u64, lease_timeout: Micros) -> Self {
        Self::new(
            Dimension::Requests,
            amount,
            lease_timeout,
            Algorithm::Concurrent,
        )
    }

    /// The config and API spelling of what the limit counts: its dimension, or `concurrent`.
    pub fn dimension_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Concurrent => "concurrent",
            _ => self.dimension.as_str(),
        }
    }

    /// Largest cost a single call may have: the amount, or the bucket's burst.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::SlidingWindow | Algorithm::Concurrent => self.amount,
            Algorithm::TokenBucket { burst } => burst,
        }
    }

    /// Whether `(amount, burst)` (a budget in force, before any adaptive scale) is another budget
    /// than the configured one: for a token bucket its amount or burst differs, for a sliding
    /// window its amount; an in-flight limit adopts nothing.
    pub fn is_other_budget(&self, amount: u64, burst: u64) -> bool {
        match self.algorithm {
            Algorithm::TokenBucket { burst: configured } => {
                (amount, burst) != (self.amount, configured)
            }
            Algorithm::SlidingWindow => amount != self.amount,
            Algorithm::Concurrent => false,
        }
    }

    /// A token bucket's capacity when its amount is `amount` (an adopted provider budget): the
    /// configured burst in the same proportion to it, at least 1. The amount for other limits.
    pub fn burst_for(&self, amount: u64) -> u64 {
        match self.algorithm {
            Algorithm::TokenBucket { burst } if amount != self.amount => {
                let scaled =
                    u128::from(burst) * u128::from(amount) / u128::from(self.amount.max(1));
                u64::try_from(scaled)
                    .unwrap_or(u64::MAX)
                    .clamp(1, MAX_AMOUNT)
            }
            Algorithm::TokenBucket { burst } => burst,
            Algorithm::SlidingWindow | Algorithm::Concurrent => amount,
        }
    }

    /// How long a booked cost can still weigh on this limit: the window of a sliding window; for a
    /// bucket, the time a full bucket takes to drain (`burst × window / amount`), which exceeds the
    /// window when `burst > amount`; the lease timeout of an in-flight limit.
    pub fn span(&self) -> Micros {
        match self.algorithm {
            Algorithm::SlidingWindow | Algorithm::Concurrent => self.window,
            Algorithm::TokenBucket { burst } => {
                let drain = (u128::from(burst) * u128::from(self.window))
                    .div_ceil(u128::from(self.amount.max(1)));
                Micros::try_from(drain)
                    .unwrap_or(Micros::MAX)
                    .max(self.window)
            }
        }
    }
}

/// What one call spends, per [`Dimension`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost(pub [u64; 4]);

impl Cost {
    /// The cost of one call: one request and the given token estimates. When `tokens` is 0 the
    /// total is taken as `input_tokens + output_tokens`.
    pub fn of_call(tokens: u64, input_tokens: u64, output_tokens: u64) -> Self {
        let total = if tokens == 0 {
            input_tokens.saturating_add(output_tokens)
        } else {
            tokens
        };
        Cost([1, total, input_tokens, output_tokens])
    }

    /// The cost in one dimension.
    pub fn get(&self, dimension: Dimension) -> u64 {
        self.0[dimension.index()]
    }
}

/// A cost that can never be granted, whatever the wait.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cost {cost} can never fit limit {limit} (capacity {capacity})")]
pub struct NeverFits {
    /// Name of the limit, e.g. `tokens/1m`.
    pub limit: String,
    /// The requested cost in that limit's dimension.
    pub cost: u64,
    /// The limit's amount or burst.
    pub capacity: u64,
}

/// Whether a service's decisions are enforced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Callers get the decisions: they wait for their slot or are refused.
    #[default]
    Enforce,
    /// Decisions are made, booked and counted as they would be, but every call is granted at
    /// once: to read what Sluice would do in front of a live fleet before enforcing it.
    Shadow,
}

impl Mode {
    /// The mode named `name` in the config (`enforce` or `shadow`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "enforce" => Some(Mode::Enforce),
            "shadow" => Some(Mode::Shadow),
            _ => None,
        }
    }

    /// Its name in the config and in GetStatus.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// A configured service: its name, provider profile, limits and cooldown policy.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Position in the configuration (backends find state by name; this only orders it).
    pub index: usize,
    /// Service name, e.g. `openai/gpt-4o`.
    pub name: String,
    /// Which provider's headers `ReportResponse` reads.
    pub profile: String,
    /// At least one limit.
    pub limits: Vec<LimitSpec>,
    /// Cooldown after a 429/503/529 that says nothing about when to retry.
    pub default_cooldown: Micros,
    /// Longest cooldown a provider's answer may set.
    pub max_cooldown: Micros,
    /// Cooldown after a quota or spend-cap 429 that names no time.
    pub quota_cooldown: Micros,
    /// Use the budget the provider's headers name (its `limit`) in place of a limit's configured
    /// amount.
    pub adopt_provider_limits: bool,
    /// Learn the budget from 429s (providers without rate-limit headers): see `core::adaptive`.
    pub adaptive: bool,
    /// The service whose budget this one also spends (e.g. `openai` for `openai/gpt-4o`): a grant
    /// must fit this service's limits and every ancestor's.
    pub parent: Option<String>,
    /// The root of this service's family, when it has a parent or children: the whole family is
    /// decided together (on Redis, under one hash tag).
    pub family: Option<String>,
    /// Enforced, or shadow (every call granted at once, the decision only booked and shown).
    pub mode: Mode,
}

impl ServiceSpec {
    /// Service `name` with `limits` and the config's defaults otherwise: the generic profile, a
    /// 1 s default cooldown, at most 1 h for any cooldown (quotas too), nothing learned, no
    /// parent. For tools and tests that build services without a config file.
    pub fn new(name: &str, limits: Vec<LimitSpec>) -> Self {
        Self {
            index: 0,
            name: name.to_string(),
            profile: "generic".into(),
            limits,
            default_cooldown: MICROS_PER_SEC,
            max_cooldown: 3600 * MICROS_PER_SEC,
            quota_cooldown: 3600 * MICROS_PER_SEC,
            adopt_provider_limits: false,
            adaptive: false,
            parent: None,
            family: None,
            mode: Mode::Enforce,
        }
    }

    /// Whether `other` configures this service the same way (its position in the config aside).
    pub fn same_as(&self, other: &ServiceSpec) -> bool {
        let ServiceSpec {
            index: _,
            name,
            profile,
            limits,
            default_cooldown,
            max_cooldown,
            quota_cooldown,
            adopt_provider_limits,
            adaptive,
            parent,
            family,
            mode,
        } = other;
        (
            &self.name,
            &self.profile,
            &self.limits,
            self.default_cooldown,
            self.max_cooldown,
            self.quota_cooldown,
            self.adopt_provider_limits,
            self.adaptive,
            &self.parent,
            &self.family,
            self.mode,
        ) == (
            name,
            profile,
            limits,
            *default_cooldown,
            *max_cooldown,
            *quota_cooldown,
            *adopt_provider_limits,
            *adaptive,
            parent,
            family,
            *mode,
        )
    }

    /// An adaptive budget's quiet period: the service's longest window (at least a second).
    pub fn adaptive_period(&self) -> Micros {
        self.limits
            .iter()
            .filter(|l| l.algorithm != Algorithm::Concurrent)
            .map(|l| l.window)
            .max()
            .unwrap_or(0)
            .max(MICROS_PER_SEC)
    }

    /// How long leases are kept: the longest [`LimitSpec::span`] of the service, so a report can
    /// correct a lease for as long as its cost weighs on any limit.
    pub fn retention(&self) -> Micros {
        self.limits.iter().map(LimitSpec::span).max().unwrap_or(0)
    }

    /// The in-flight limit, if the service has one: its index and amount.
    pub fn concurrent(&self) -> Option<(usize, &LimitSpec)> {
        self.limits
            .iter()
            .enumerate()
            .find(|(_, l)| l.algorithm == Algorithm::Concurrent)
    }

    /// Refuses a cost above some limit's capacity, naming the limit.
    pub fn check_fits(&self, cost: &Cost) -> Result<(), NeverFits> {
        match self
            .limits
            .iter()
            .find(|l| cost.get(l.dimension) > l.capacity())
        {
            Some(l) => Err(NeverFits {
                limit: l.name.clone(),
                cost: cost.get(l.dimension),
                capacity: l.capacity(),
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_default_to_input_plus_output() {
        assert_eq!(Cost::of_call(0, 10, 5).get(Dimension::Tokens), 15);
        assert_eq!(Cost::of_call(7, 10, 5).get(Dimension::Tokens), 7);
        assert_eq!(Cost::of_call(0, 0, 0).get(Dimension::Requests), 1);
    }

    #[test]
    fn never_fits_names_the_limit() {
        let spec = ServiceSpec::new(
            "s",
            vec![
                LimitSpec::new(
                    Dimension::Requests,
                    10,
                    MICROS_PER_SEC,
                    Algorithm::SlidingWindow,
                ),
                LimitSpec::new(
                    Dimension::Tokens,
                    1000,
                    60 * MICROS_PER_SEC,
                    Algorithm::TokenBucket { burst: 100 },
                ),
            ],
        );
        assert!(spec.check_fits(&Cost::of_call(100, 0, 0)).is_ok());
        let err = spec.check_fits(&Cost::of_call(101, 0, 0)).unwrap_err();
        assert_eq!(err.limit, "tokens/1m");
        assert_eq!(err.capacity, 100);
    }
}
