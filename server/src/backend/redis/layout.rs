//! How a service's state is laid out in Redis: its keys, all under one hash tag so that every
//! script touches one cluster slot, and the limit description the scripts receive. Token buckets
//! are reduced by `gcd(amount, window)` so the scripts' GCRA arithmetic stays exact in Lua's
//! doubles; a limit too fine for that is refused at start.

use crate::core::{Algorithm, BucketShape, LimitSpec, Micros, ServiceSpec};

/// How many keys a service has.
pub const KEYS_PER_SERVICE: usize = 3;

/// The keys of one service, in the order the scripts expect them.
#[derive(Clone, Debug)]
pub struct ServiceKeys {
    /// The ledger (the state and the request ids), the lease log, the in-flight slots held.
    pub keys: [String; KEYS_PER_SERVICE],
    /// The one key of the `module` engine (`…:native`): the service's whole ledger, a value of
    /// the Sluice module's data type.
    pub native: String,
}

impl ServiceKeys {
    /// Keys of `service` under `prefix`: `{prefix:service}:ledger`, `…:leases`, `…:held`.
    /// A member of a family shares its root's hash tag, so one script can decide on the whole
    /// family (one cluster slot): the root's keys stay `{prefix:root}:…`, another member's are
    /// `{prefix:root}:<service>:…`.
    pub fn new(prefix: &str, service: &str, family: Option<&str>) -> Self {
        let tag = match family {
            Some(root) if root != service => format!("{{{prefix}:{root}}}:{service}"),
            Some(root) => format!("{{{prefix}:{root}}}"),
            None => format!("{{{prefix}:{service}}}"),
        };
        Self {
            keys: [
                format!("{tag}:ledger"),
                format!("{tag}:leases"),
                format!("{tag}:held"),
            ],
            native: format!("{tag}:native"),
        }
    }
}

/// One limit as the scripts read it: `dim kind amount window burst A Wg`, where kind is 0 for a
/// sliding window, 2 for one that adopts provider budgets, 1 for a bucket, whose TAT advances
/// `Wg / A` µs per token, 4 for one that adopts provider budgets, 3 for calls in flight (window:
/// the lease timeout).
fn encode_limit(limit: &LimitSpec, adopt: bool, adaptive: bool) -> Result<String, String> {
    let dim = limit.dimension.index();
    match limit.algorithm {
        Algorithm::SlidingWindow => Ok(format!(
            "{dim} {} {} {} {} 1 1",
            if adopt { 2 } else { 0 },
            limit.amount,
            limit.window,
            limit.amount
        )),
        Algorithm::Concurrent => Ok(format!(
            "{dim} 3 {} {} {} 1 1",
            limit.amount, limit.window, limit.amount
        )),
        Algorithm::TokenBucket { burst } => {
            let shape = BucketShape {
                amount: limit.amount,
                window: limit.window,
                burst,
            };
            let (a, wg) = shape.reduced();
            // Largest magnitude the scripts compute: a time span of up to the longest wait plus
            // the bucket's drain time, in units of 1/A µs, plus a full burst (ten, when an
            // adaptive budget charges costs up to ten times over).
            let charged = BucketShape {
                burst: burst.saturating_mul(if adaptive { 10 } else { 1 }),
                ..shape
            };
            if !shape.is_exact() || !charged.is_exact() {
                return Err(format!(
                    "limit {}: amount {} per {} µs is too fine for the redis backend's exact \
                     arithmetic; use an amount that shares more factors with the window \
                     (e.g. a round number)",
                    limit.name, limit.amount, limit.window
                ));
            }
            Ok(format!(
                "{dim} {} {} {} {burst} {a} {wg}",
                if adopt { 4 } else { 1 },
                limit.amount,
                limit.window
            ))
        }
    }
}

/// The scripts' description of a service's limits, or why the redis backend cannot hold it.
pub fn encode_limits(spec: &ServiceSpec) -> Result<String, String> {
    let mut out = Vec::with_capacity(spec.limits.len());
    for limit in &spec.limits {
        out.push(
            encode_limit(limit, spec.adopt_provider_limits, spec.adaptive)
                .map_err(|e| format!("service {:?}: {e}", spec.name))?,
        );
    }
    if spec.adaptive {
        // Not a limit: kind 5 says the service's budgets adapt, over this quiet period.
        out.push(format!("0 5 0 {} 0 1 1", spec.adaptive_period()));
    }
    Ok(out.join(" "))
}

/// How long leases are kept, in µs, as the scripts read it.
pub fn retention(spec: &ServiceSpec) -> Micros {
    spec.retention()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Dimension;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = ServiceKeys::new("prod", "openai/gpt-4o", None);
        for k in &keys.keys {
            assert!(k.starts_with("{prod:openai/gpt-4o}:"), "{k}");
        }
        // A family shares its root's tag; the root keeps the keys it had alone.
        let child = ServiceKeys::new("prod", "openai/gpt-4o", Some("openai"));
        assert_eq!(child.keys[0], "{prod:openai}:openai/gpt-4o:ledger");
        let root = ServiceKeys::new("prod", "openai", Some("openai"));
        assert_eq!(root.keys, ServiceKeys::new("prod", "openai", None).keys);
    }

    #[test]
    fn round_buckets_reduce_and_fine_ones_are_refused() {
        let minute = 60_000_000;
        let bucket = |amount, window, burst| {
            LimitSpec::new(
                Dimension::Tokens,
                amount,
                window,
                Algorithm::TokenBucket { burst },
            )
        };
        // 30,000 tokens a minute: one token every 2,000 µs.
        assert_eq!(
            encode_limit(&bucket(30_000, minute, 30_000), false, false).unwrap(),
            format!("1 1 30000 {minute} 30000 1 2000")
        );
        // 90 million tokens a day still fits.
        assert!(encode_limit(
            &bucket(90_000_000, 86_400_000_000, 90_000_000),
            false,
            false
        )
        .is_ok());
        // A large prime amount per day does not.
        let err =
            encode_limit(&bucket(1_000_003, 86_400_000_000, 1_000_003), false, false).unwrap_err();
        assert!(err.contains("tokens/1d"), "{err}");
    }
}
