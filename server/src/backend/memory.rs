//! The embedded backend: one [`Ledger`] per configured service, each behind its own mutex, so
//! services never contend with each other and no lock is held across an `.await`. A reload swaps
//! the map of services whole; a surviving service keeps its ledger, reshaped for its new limits.
//! Time comes from [`Clock`]: wall-clock time at start plus tokio's monotonic clock since, which
//! `tokio::time::pause()` controls in tests.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use super::{AcquireCall, Backend, BackendError, ReportCall};
use crate::core::{
    acquire_in_family, AdminOp, Decision, Ledger, Member, Micros, ReportOutcome, ServiceSnapshot,
    ServiceSpec,
};

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

/// One service's state with the configuration it was shaped for.
#[derive(Debug)]
struct ServiceState {
    spec: Arc<ServiceSpec>,
    ledger: Ledger,
}

/// The in-process backend.
#[derive(Debug)]
pub struct MemoryBackend {
    clock: Clock,
    /// Lease-id nonces: every state gets one of its own, so a service removed and added back by
    /// reloads never hands out the ids of its earlier state.
    nonces: crate::core::Unpredictable,
    /// The services, by name; replaced whole by [`Backend::reconfigure`].
    states: RwLock<Arc<HashMap<String, Arc<Mutex<ServiceState>>>>>,
}

impl MemoryBackend {
    /// State for `specs`.
    pub fn new(specs: &[Arc<ServiceSpec>], clock: Clock) -> Self {
        let backend = Self {
            clock,
            nonces: crate::core::Unpredictable::new(),
            states: RwLock::default(),
        };
        let states = specs
            .iter()
            .map(|spec| (spec.name.clone(), backend.fresh_state(spec)))
            .collect();
        backend.install(states);
        backend
    }

    /// An empty state for `spec`. One random nonce per state, so a lease id names its service
    /// (and which of its states) as well as this process: reporting service A's lease under
    /// service B, or under a B removed and added back, finds nothing instead of another lease.
    fn fresh_state(&self, spec: &Arc<ServiceSpec>) -> Arc<Mutex<ServiceState>> {
        Arc::new(Mutex::new(ServiceState {
            spec: spec.clone(),
            ledger: Ledger::new(spec, self.nonces.next_for(spec.name.as_bytes())),
        }))
    }

    fn states(&self) -> Arc<HashMap<String, Arc<Mutex<ServiceState>>>> {
        self.states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install(&self, states: HashMap<String, Arc<Mutex<ServiceState>>>) {
        *self.states.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(states);
    }

    /// Runs `f` on the ledger of `spec`, which must be the configuration the state is shaped for
    /// (a call that raced a reload is refused with [`BackendError::Reconfigured`]).
    fn with_ledger<T>(
        &self,
        spec: &ServiceSpec,
        f: impl FnOnce(&mut Ledger, Micros) -> T,
    ) -> Result<T, BackendError> {
        let state = self
            .states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&spec.name)
            .cloned()
            .ok_or_else(|| BackendError::Reconfigured(spec.name.clone()))?;
        // A panic while holding the lock cannot leave a ledger half-updated in a way that breaks
        // its invariants worse than losing it would; keep serving.
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        if !std::ptr::eq(Arc::as_ptr(&state.spec), spec) {
            return Err(BackendError::Reconfigured(spec.name.clone()));
        }
        let now = self.clock.now();
        Ok(f(&mut state.ledger, now))
    }

    /// Decides an acquire of `spec`, a member of a family, on its ledger and its ancestors'
    /// together. The states are locked in one global order (by address), whatever the family's
    /// shape, so acquires never wait on each other in a cycle, not even while a reload rewrites
    /// the parents; the chain is checked again under the locks.
    fn acquire_in_family(
        &self,
        spec: &ServiceSpec,
        call: &AcquireCall<'_>,
    ) -> Result<Decision, BackendError> {
        let reconfigured = || BackendError::Reconfigured(spec.name.clone());
        let states = self.states();
        let parent_of = |state: &Arc<Mutex<ServiceState>>| {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.spec.parent.clone()
        };
        let first = states.get(&spec.name).ok_or_else(reconfigured)?.clone();
        // A parent gone, or seen twice: a reload is turning parents around. Retried after it.
        let ancestors = crate::core::ancestors(
            &spec.name,
            parent_of(&first),
            |name| states.get(name).cloned(),
            parent_of,
        )
        .map_err(|_| reconfigured())?;
        let mut chain = vec![first];
        chain.extend(ancestors);
        let mut order: Vec<usize> = (0..chain.len()).collect();
        order.sort_by_key(|&i| Arc::as_ptr(&chain[i]) as usize);
        let mut locked: Vec<Option<MutexGuard<'_, ServiceState>>> =
            chain.iter().map(|_| None).collect();
        for i in order {
            locked[i] = Some(chain[i].lock().unwrap_or_else(PoisonError::into_inner));
        }
        let mut guards: Vec<MutexGuard<'_, ServiceState>> = locked.into_iter().flatten().collect();
        let linked = guards
            .windows(2)
            .all(|w| w[0].spec.parent.as_deref() == Some(w[1].spec.name.as_str()));
        let first_is_spec = guards
            .first()
            .is_some_and(|g| std::ptr::eq(Arc::as_ptr(&g.spec), spec));
        let rooted = guards.last().is_some_and(|g| g.spec.parent.is_none());
        if !(linked && first_is_spec && rooted) {
            return Err(reconfigured());
        }
        let mut members: Vec<Member<'_>> = guards
            .iter_mut()
            .map(|g| {
                let ServiceState { spec, ledger } = &mut **g;
                Member { spec, ledger }
            })
            .collect();
        let now = self.clock.now();
        Ok(acquire_in_family(
            &mut members,
            now,
            call.cost,
            call.max_wait,
            call.request_id,
        )?)
    }

    /// Leases held by a service (for tests of bounded memory).
    pub fn lease_count(&self, spec: &ServiceSpec) -> usize {
        self.with_ledger(spec, |l, _| l.lease_count()).unwrap_or(0)
    }
}

impl Backend for MemoryBackend {
    async fn acquire(
        &self,
        spec: &ServiceSpec,
        call: AcquireCall<'_>,
    ) -> Result<Decision, BackendError> {
        if spec.family.is_some() {
            return self.acquire_in_family(spec, &call);
        }
        let decision = self.with_ledger(spec, |ledger, now| {
            ledger.acquire_in_class(
                spec,
                now,
                call.cost,
                call.max_wait,
                call.request_id,
                call.class,
            )
        })??;
        Ok(decision)
    }

    async fn report(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
    ) -> Result<ReportOutcome, BackendError> {
        self.with_ledger(spec, |ledger, now| ledger.report(spec, now, &call))
    }

    async fn status(&self, spec: &ServiceSpec) -> Result<ServiceSnapshot, BackendError> {
        self.with_ledger(spec, |ledger, now| ledger.snapshot(spec, now))
    }

    async fn admin(&self, spec: &ServiceSpec, op: AdminOp) -> Result<(), BackendError> {
        self.with_ledger(spec, |ledger, now| ledger.admin(spec, now, op))
    }

    async fn maintain(&self) {
        for state in self.states().values() {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = self.clock.now();
            let ServiceState { spec, ledger } = &mut *state;
            ledger.compact(spec, now);
        }
    }

    async fn reconfigure(&self, specs: &[Arc<ServiceSpec>]) -> Result<(), BackendError> {
        let old = self.states();
        let mut states = HashMap::with_capacity(specs.len());
        for spec in specs {
            let state = match old.get(&spec.name) {
                Some(state) => {
                    let mut guard = state.lock().unwrap_or_else(PoisonError::into_inner);
                    if !Arc::ptr_eq(&guard.spec, spec) {
                        let ServiceState {
                            spec: before,
                            ledger,
                        } = &mut *guard;
                        ledger.reshape(before, spec);
                        guard.spec = spec.clone();
                    }
                    state.clone()
                }
                None => self.fresh_state(spec),
            };
            states.insert(spec.name.clone(), state);
        }
        self.install(states);
        Ok(())
    }
}
