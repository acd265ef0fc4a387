//! `on_failure = "local"`: while Redis cannot answer, each replica decides in its own memory with
//! its share of every limit (amount and burst divided by the configured number of replicas, at
//! least 1), so the fleet as a whole stays within the limits without talking to each other. A
//! failed call opens the circuit: calls go straight to the local share, without waiting for
//! Redis, until a probe (the server's readiness check, every quarter second) finds Redis
//! answering again; then decisions return to the shared state. Local decisions are forgotten on
//! return: the shared state never saw them, which over-admits by at most one local share.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, PoisonError, RwLock,
};

use std::collections::HashMap;

use crate::{
    backend::{AcquireCall, Backend, BackendError, Clock, MemoryBackend},
    core::{Algorithm, Decision, Grant, ReportOutcome, Scope, ServiceSnapshot, ServiceSpec},
};

/// `spec` with every limit divided by `replicas` (at least 1 each).
pub(super) fn share_of(spec: &ServiceSpec, replicas: u32) -> ServiceSpec {
    let part = |v: u64| (v / u64::from(replicas.max(1))).max(1);
    let mut share = spec.clone();
    for limit in &mut share.limits {
        limit.amount = part(limit.amount);
        if let Algorithm::TokenBucket { burst } = limit.algorithm {
            limit.algorithm = Algorithm::TokenBucket { burst: part(burst) };
        }
    }
    share
}

/// This replica's share of the limits, and whether it is in use.
pub(super) struct LocalShare {
    replicas: u32,
    memory: MemoryBackend,
    /// The shares, by service name, as the memory backend holds them.
    shares: RwLock<HashMap<String, Arc<ServiceSpec>>>,
    /// Set while Redis is considered down.
    open: AtomicBool,
}

impl LocalShare {
    pub(super) fn new(specs: &[Arc<ServiceSpec>], replicas: u32) -> Self {
        let shares: Vec<_> = specs
            .iter()
            .map(|s| Arc::new(share_of(s, replicas)))
            .collect();
        Self {
            replicas,
            memory: MemoryBackend::new(&shares, Clock::new()),
            shares: RwLock::new(shares.into_iter().map(|s| (s.name.clone(), s)).collect()),
            open: AtomicBool::new(false),
        }
    }

    /// The local backend and `spec`'s share in it.
    pub(super) fn share(
        &self,
        spec: &ServiceSpec,
    ) -> Result<(&MemoryBackend, Arc<ServiceSpec>), BackendError> {
        let share = self
            .shares
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&spec.name)
            .cloned()
            .ok_or_else(|| BackendError::Reconfigured(spec.name.clone()))?;
        Ok((&self.memory, share))
    }

    /// Whether calls should skip Redis.
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Redis failed with `error`: decide locally from now on.
    pub(super) fn trip(&self, error: &str) {
        if !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %error,
                replicas = self.replicas,
                "redis failed; deciding locally with this replica's share of each limit"
            );
        }
    }

    /// Redis answered a probe: decide in the shared state again.
    pub(super) fn close(&self) {
        if self.open.swap(false, Ordering::Relaxed) {
            tracing::info!("redis answers again; deciding in the shared state");
        }
    }

    pub(super) async fn maintain(&self) {
        self.memory.maintain().await;
    }

    pub(super) async fn reconfigure(&self, specs: &[Arc<ServiceSpec>]) -> Result<(), BackendError> {
        let current = self
            .shares
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Keep the share of an unchanged spec (the memory backend keeps its state by identity).
        let shares: Vec<_> = specs
            .iter()
            .map(|s| {
                let share = share_of(s, self.replicas);
                match current.get(&s.name) {
                    Some(old) if old.same_as(&share) => old.clone(),
                    _ => Arc::new(share),
                }
            })
            .collect();
        self.memory.reconfigure(&shares).await?;
        *self.shares.write().unwrap_or_else(PoisonError::into_inner) =
            shares.into_iter().map(|s| (s.name.clone(), s)).collect();
        Ok(())
    }
}

// How the Redis backend falls back on its local share.

/// An answer that says which state it comes from.
pub(super) trait Scoped {
    fn set_scope(&mut self, scope: Scope);
}

impl Scoped for ReportOutcome {
    fn set_scope(&mut self, scope: Scope) {
        self.scope = scope;
    }
}

impl Scoped for ServiceSnapshot {
    fn set_scope(&mut self, scope: Scope) {
        self.scope = scope;
    }
}

/// Decisions in the shared state, and the local fallback.
impl super::RedisBackend {
    /// The local share, if `on_failure = "local"` and Redis is considered down.
    pub(super) fn open_local(&self) -> Option<&LocalShare> {
        self.local.as_ref().filter(|l| l.is_open())
    }

    /// Redis failed with `error`: opens the circuit and names `spec`'s local share.
    pub(super) fn fall_back(
        &self,
        spec: &ServiceSpec,
        error: &str,
    ) -> Result<(&MemoryBackend, Arc<ServiceSpec>), BackendError> {
        let local = self
            .local
            .as_ref()
            .ok_or_else(|| BackendError::Unavailable(error.to_string()))?;
        local.trip(error);
        local.share(spec)
    }

    /// Marks an answer of the local share as such.
    pub(super) fn mark_local<T: Scoped>(
        answer: Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        answer.map(|mut a| {
            a.set_scope(Scope::Local);
            a
        })
    }

    /// Decides `call` in the local share of `spec`.
    pub(super) async fn acquire_locally(
        memory: &MemoryBackend,
        share: &ServiceSpec,
        call: AcquireCall<'_>,
    ) -> Result<Decision, BackendError> {
        share.check_fits(&call.cost).map_err(|e| {
            BackendError::Unavailable(format!(
                "redis is down and {e} in this replica's local share"
            ))
        })?;
        Ok(match memory.acquire(share, call).await? {
            Decision::Granted(grant) => Decision::Granted(Grant {
                scope: Scope::Local,
                ..grant
            }),
            Decision::Denied {
                retry_after,
                decider,
                ..
            } => Decision::Denied {
                retry_after,
                decider,
                scope: Scope::Local,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_divides_amounts_and_bursts_and_never_reaches_zero() {
        let config = crate::config::Config::parse(
            r#"
[[services]]
name = "s"
limits = [
  { dimension = "requests", amount = 10, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m", algorithm = "token_bucket", burst = 300 },
  { dimension = "input_tokens", amount = 2, window = "1s" },
]
"#,
        )
        .expect("valid");
        let spec = &config.services[0];
        let share = share_of(spec, 3);
        assert_eq!(share.limits[0].amount, 3);
        assert_eq!(share.limits[1].amount, 333);
        assert_eq!(
            share.limits[1].algorithm,
            Algorithm::TokenBucket { burst: 100 }
        );
        assert_eq!(share.limits[2].amount, 1);
        assert_eq!(share_of(spec, 1).limits, spec.limits);
    }
}
