//! The embedded backend: one [`Ledger`] per configured service, each behind its own mutex, so
//! services never contend with each other and no lock is held across an `.await`. Time comes from
//! [`Clock`]: wall-clock time at start plus tokio's monotonic clock since, which
//! `tokio::time::pause()` controls in tests.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use super::{AcquireCall, Backend, BackendError, ReportCall};
use crate::core::{AdminOp, Decision, Ledger, Micros, ReportOutcome, ServiceSnapshot, ServiceSpec};

/// Monotonic time expressed as Unix-epoch microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_origin: Micros,
    origin: Instant,
}

impl Clock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Self {
        let wall_origin = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as Micros);
        Self {
            wall_origin,
            origin: Instant::now(),
        }
    }

    /// Current time.
    pub fn now(&self) -> Micros {
        self.wall_origin + self.origin.elapsed().as_micros() as Micros
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The in-process backend.
#[derive(Debug)]
pub struct MemoryBackend {
    clock: Clock,
    specs: Vec<Arc<ServiceSpec>>,
    ledgers: Vec<Mutex<Ledger>>,
}

impl MemoryBackend {
    /// State for `specs`, whose `index` fields must be their positions.
    pub fn new(specs: &[Arc<ServiceSpec>], clock: Clock) -> Self {
        // One random nonce per service, so a lease id names its service as well as this process:
        // reporting service A's lease under service B finds nothing instead of B's lease.
        let random = RandomState::new();
        let nonce_for = |spec: &ServiceSpec| {
            let mut hasher = random.build_hasher();
            hasher.write(spec.name.as_bytes());
            hasher.finish()
        };
        Self {
            clock,
            specs: specs.to_vec(),
            ledgers: specs
                .iter()
                .map(|s| Mutex::new(Ledger::new(s, nonce_for(s))))
                .collect(),
        }
    }

    fn ledger(&self, spec: &ServiceSpec) -> Result<MutexGuard<'_, Ledger>, BackendError> {
        let ledger = self
            .ledgers
            .get(spec.index)
            .ok_or_else(|| BackendError::Unavailable(format!("no state for {}", spec.name)))?;
        // A panic while holding the lock cannot leave a ledger half-updated in a way that breaks
        // its invariants worse than losing it would; keep serving.
        Ok(ledger.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Leases held by a service (for tests of bounded memory).
    pub fn lease_count(&self, spec: &ServiceSpec) -> usize {
        self.ledger(spec).map_or(0, |l| l.lease_count())
    }
}

impl Backend for MemoryBackend {
    async fn acquire(
        &self,
        spec: &ServiceSpec,
        call: AcquireCall<'_>,
    ) -> Result<Decision, BackendError> {
        let now = self.clock.now();
        let decision =
            self.ledger(spec)?
                .acquire(spec, now, call.cost, call.max_wait, call.request_id)?;
        Ok(decision)
    }

    async fn report(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
    ) -> Result<ReportOutcome, BackendError> {
        let now = self.clock.now();
        Ok(self.ledger(spec)?.report(spec, now, &call))
    }

    async fn status(&self, spec: &ServiceSpec) -> Result<ServiceSnapshot, BackendError> {
        let now = self.clock.now();
        Ok(self.ledger(spec)?.snapshot(spec, now))
    }

    async fn admin(&self, spec: &ServiceSpec, op: AdminOp) -> Result<(), BackendError> {
        let now = self.clock.now();
        self.ledger(spec)?.admin(spec, now, op);
        Ok(())
    }

    async fn maintain(&self) {
        for spec in &self.specs {
            let now = self.clock.now();
            if let Ok(mut ledger) = self.ledger(spec) {
                ledger.compact(spec, now);
            }
        }
    }
}
