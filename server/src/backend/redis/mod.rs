//! The `redis` backend: every replica of `sluice-server` shares one set of limits in Redis or Redis
//! Cluster. Each decision is one Lua script call (`FCALL` of Sluice's function library, loaded
//! when the server has not got it; where Redis refuses functions, `EVALSHA`, falling back to
//! `EVAL` when the server answers `NOSCRIPT`), so a decision is atomic
//! and its time is the Redis server's `TIME`, never a replica's clock. The scripts implement the
//! memory backend's [`Ledger`](crate::core::Ledger) semantics over three keys a service (the
//! ledger: the state and request ids in one hash; the lease log as a list of packed entries; held
//! in-flight slots);
//! the keys, state fields, log entries, decider codes and each script's arguments and replies
//! are in `LAYOUT.md` beside them. This file connects and implements [`Backend`]; `calls` sends the
//! scripts (concurrent acquires share script calls: every service's on a single Redis, each
//! service's on a cluster, see [`batch`]), `protocol`
//! reads their replies (`answer` an acquire's, a script's or the module's: `native`), `fallback` decides locally while Redis is down, `sweep` picks the
//! services a maintenance round visits.

mod answer;
mod batch;
mod calls;
mod deadline;
mod fallback;
mod invoke;
mod layout;
mod link;
mod native;
mod protocol;
mod scripts;
mod sentinel;
pub mod settings;
mod sweep;

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, PoisonError, RwLock},
    time::Duration,
};

use redis::{ErrorKind, RedisError, ServerErrorKind};

pub use layout::ServiceKeys;
use scripts::Scripts;
use settings::{OnFailure, RedisConfig};

use super::{AcquireCall, Backend, BackendError, ReportCall};
use crate::core::{
    AdminOp, Decider, Decision, Grant, LeaseId, Micros, ReportOutcome, Scope, ServiceSnapshot,
    ServiceSpec,
};

/// How much longer than its own deadline a call waits for the batch it carries to answer.
const CARRY_SLACK: Duration = Duration::from_millis(10);

/// Per-service constants handed to every script call, and the service's acquire queue.
struct ServiceArgs {
    /// The configuration these were made for.
    spec: Arc<ServiceSpec>,
    keys: ServiceKeys,
    limits: String,
    retention: String,
    batcher: batch::Batcher,
    /// Whether the maintenance round visits it.
    sweep: sweep::Sweep,
    /// The configuration encoded for the Redis module (`native`).
    spec_bytes: Vec<u8>,
}

impl ServiceArgs {
    fn new(spec: &Arc<ServiceSpec>, key_prefix: &str) -> Result<Self, String> {
        Ok(Self {
            spec: spec.clone(),
            keys: ServiceKeys::new(key_prefix, &spec.name, spec.family.as_deref()),
            limits: layout::encode_limits(spec)?,
            retention: layout::retention(spec).to_string(),
            batcher: batch::Batcher::default(),
            sweep: sweep::Sweep::new(layout::retention(spec)),
            spec_bytes: crate::core::to_bytes(spec.as_ref()),
        })
    }
}

/// The services, by name.
type Services = HashMap<String, Arc<ServiceArgs>>;

/// An acquire in the queue every service shares (a single Redis), with its service.
type SharedAcquire = (Arc<ServiceArgs>, batch::QueuedAcquire);

/// Where decisions take their time from.
#[derive(Clone, Debug, Default)]
enum TimeSource {
    /// The Redis server's `TIME`.
    #[default]
    Server,
    /// A time set by the caller (tests that move time by hand).
    Manual(Arc<AtomicU64>),
}

/// State shared through Redis.
pub struct RedisBackend {
    link: link::Link,
    scripts: Scripts,
    /// Whether the scripts are called as functions (`FCALL`) or by SHA.
    functions: invoke::Functions,
    /// Replaced whole by [`Backend::reconfigure`].
    services: RwLock<Arc<Services>>,
    key_prefix: String,
    timeout: Duration,
    on_failure: OnFailure,
    time: TimeSource,
    /// Nonces: a state created by a call gets a nonce no other call offers, so lease ids of a
    /// service's earlier (expired) state never name a lease of its new one.
    nonces: crate::core::Unpredictable,
    /// This replica's share of the limits, with `on_failure = "local"`.
    local: Option<fallback::LocalShare>,
    /// The offset of Redis's clock, for the acquires' deadlines.
    clock: deadline::RedisClock,
    /// On a single Redis, the acquire queue of every service that is not a family member (one
    /// script call decides many services'); none on a cluster, where each service queues alone.
    shared: Option<batch::Batcher<SharedAcquire>>,
    /// Lua scripts or the Sluice module's commands.
    engine: settings::Engine,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("services", &self.services().len())
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

/// The Redis backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// A service's limits cannot be held exactly by the scripts.
    #[error("{0}")]
    Unsupported(String),
    /// The CA file could not be read.
    #[error("cannot read backend.tls_ca_file {path}: {source}")]
    TlsCa {
        /// The path.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Redis could not be reached or refused the connection.
    #[error("cannot connect to redis at {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// What failed.
        source: RedisError,
    },
}

/// A Redis error as the backend reports it: refusals by Redis or a script (an error reply, e.g.
/// an ACL denial or a script's own check) are failures of the call; anything else (I/O, timeouts,
/// a server loading or failing over) means Redis is out of reach.
fn unavailable(e: &RedisError) -> BackendError {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError) | ErrorKind::Extension => {
            BackendError::Failed(format!("redis: {e}"))
        }
        _ => BackendError::Unavailable(format!("redis: {e}")),
    }
}

impl RedisBackend {
    /// Connects to Redis (or a cluster) and prepares the state layout of `specs`; fails if Redis
    /// does not answer.
    pub async fn connect(
        specs: &[Arc<ServiceSpec>],
        config: &RedisConfig,
    ) -> Result<Self, RedisSetupError> {
        Self::build(specs, config, link::Link::connect(config)).await
    }

    /// Prepares the state layout of `specs` and connects if Redis answers; if it does not, keeps
    /// trying in the background while every call fails as in an outage (see
    /// [`Backend::ready`]). Fails only on what no retry can fix: limits the scripts cannot hold,
    /// an unreadable CA file.
    pub async fn start(
        specs: &[Arc<ServiceSpec>],
        config: &RedisConfig,
    ) -> Result<Self, RedisSetupError> {
        Self::build(specs, config, link::Link::start(config)).await
    }

    /// Lays out `specs` (refusing what the scripts cannot hold before any connection is tried),
    /// then awaits `link`.
    async fn build(
        specs: &[Arc<ServiceSpec>],
        config: &RedisConfig,
        link: impl std::future::Future<Output = Result<link::Link, RedisSetupError>>,
    ) -> Result<Self, RedisSetupError> {
        let services = Self::prepare(specs, &config.key_prefix, &Services::new())
            .map_err(RedisSetupError::Unsupported)?;
        Ok(Self::with_link(specs, services, config, link.await?))
    }

    fn with_link(
        specs: &[Arc<ServiceSpec>],
        services: Services,
        config: &RedisConfig,
        link: link::Link,
    ) -> Self {
        let local = match config.on_failure {
            OnFailure::Local { replicas } => Some(fallback::LocalShare::new(specs, replicas)),
            _ => None,
        };
        Self {
            link,
            scripts: Scripts::new(),
            functions: invoke::Functions::default(),
            services: RwLock::new(Arc::new(services)),
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            on_failure: config.on_failure,
            time: TimeSource::Server,
            nonces: crate::core::Unpredictable::new(),
            local,
            clock: deadline::RedisClock::default(),
            shared: (!config.cluster)
                .then(|| batch::Batcher::new(batch::SHARED_MAX_BATCH, batch::SHARED_IN_FLIGHT)),
            engine: config.engine,
        }
    }

    /// Decides with `now` (µs since the Unix epoch, read at every call) instead of the Redis
    /// server's `TIME`: for tests that move time by hand.
    pub fn with_manual_time(mut self, now: Arc<AtomicU64>) -> Self {
        self.time = TimeSource::Manual(now);
        self
    }

    /// The script arguments of `specs`, keeping those of `current` whose spec is unchanged (the
    /// same `Arc`), or why a service cannot be held.
    fn prepare(
        specs: &[Arc<ServiceSpec>],
        key_prefix: &str,
        current: &Services,
    ) -> Result<Services, String> {
        let mut services = Services::with_capacity(specs.len());
        for spec in specs {
            let args = match current.get(&spec.name) {
                Some(args) if Arc::ptr_eq(&args.spec, spec) => args.clone(),
                _ => Arc::new(ServiceArgs::new(spec, key_prefix)?),
            };
            services.insert(spec.name.clone(), args);
        }
        Ok(services)
    }

    fn services(&self) -> Arc<Services> {
        self.services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The arguments of `spec`, which must be the configuration in force (a call that raced a
    /// reload is refused with [`BackendError::Reconfigured`]).
    fn service(&self, spec: &ServiceSpec) -> Result<Arc<ServiceArgs>, BackendError> {
        self.services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&spec.name)
            .filter(|args| std::ptr::eq(Arc::as_ptr(&args.spec), spec))
            .cloned()
            .ok_or_else(|| BackendError::Reconfigured(spec.name.clone()))
    }

    /// Leases the service holds (for tests of bounded state).
    pub async fn lease_count(&self, spec: &ServiceSpec) -> Result<usize, BackendError> {
        let service = self.service(spec)?;
        if self.engine == settings::Engine::Module {
            let (_, held) = self.status_native(&service).await?;
            return Ok(held as usize);
        }
        let reply: Vec<String> = self.eval(&self.scripts.status, &service, &[]).await?;
        protocol::held(&reply)
    }
}

impl RedisBackend {
    async fn report_shared(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
    ) -> Result<ReportOutcome, BackendError> {
        let service = self.service(spec)?;
        if self.engine == settings::Engine::Module {
            return self.report_native(&service, &call).await;
        }
        let args = protocol::report_args(spec, &call)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self.eval(&self.scripts.report, &service, &args).await;
        // Once Redis ran it (see `sweep`: a visit in flight must hear of it).
        service.sweep.touched();
        protocol::report_outcome(&reply?)
    }

    async fn status_shared(&self, spec: &ServiceSpec) -> Result<ServiceSnapshot, BackendError> {
        let service = self.service(spec)?;
        if self.engine == settings::Engine::Module {
            return Ok(self.status_native(&service).await?.0);
        }
        let reply = self.eval(&self.scripts.status, &service, &[]).await?;
        protocol::snapshot(spec, &reply)
    }

    async fn admin_shared(&self, spec: &ServiceSpec, op: AdminOp) -> Result<(), BackendError> {
        let service = self.service(spec)?;
        if self.engine == settings::Engine::Module {
            return self.admin_native(&service, op).await;
        }
        let action = match op {
            AdminOp::ClearCooldowns => "clear",
            AdminOp::Reset => "reset",
        };
        let done = self
            .eval_as::<String>(&self.scripts.admin, &service, &[action])
            .await;
        service.sweep.touched();
        done.map(|_| ())
    }
}

impl Backend for RedisBackend {
    async fn acquire(
        &self,
        spec: &ServiceSpec,
        call: AcquireCall<'_>,
    ) -> Result<Decision, BackendError> {
        let service = self.service(spec)?;
        if let Some(local) = self.open_local() {
            let (memory, share) = local.share(spec)?;
            return Self::acquire_locally(memory, &share, call).await;
        }
        // The whole call, queueing included, answers within the timeout. A batch this call
        // carries ends by its deadline, so the acquires it carries for others get its answer (an
        // outage, for on_failure) rather than being cut off with it; the outer bound, a little
        // later, only guards the queueing.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let queued = batch::QueuedAcquire::new(&call, deadline);
        let submitted = async {
            match &self.shared {
                Some(shared) if spec.family.is_none() => {
                    shared
                        .submit((service.clone(), queued), |batch| {
                            self.run_shared(batch, deadline)
                        })
                        .await
                }
                _ => {
                    service
                        .batcher
                        .submit(queued, |acquires| {
                            self.run_acquires_until(&service, acquires, Some(deadline))
                        })
                        .await
                }
            }
        };
        let reply = match tokio::time::timeout_at(deadline + CARRY_SLACK, submitted).await {
            Ok(reply) => reply,
            Err(_) => Err(BackendError::Unavailable(format!(
                "redis: no decision within {:?}",
                self.timeout
            ))),
        };
        let reply = match (reply, self.on_failure) {
            (Ok(reply), _) => reply,
            (Err(BackendError::Unavailable(e)), OnFailure::FailOpen) => {
                tracing::warn!(service = %spec.name, error = %e, "redis failed; granting (fail_open)");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as Micros);
                // Lease 0 of nonce 0 names no state: a report for it only applies its cooldown.
                return Ok(Decision::Granted(Grant {
                    lease_id: LeaseId { nonce: 0, seq: 0 },
                    slot: now,
                    wait: 0,
                    decider: Decider::Now,
                    scope: Scope::FailOpen,
                }));
            }
            (Err(BackendError::Unavailable(e)), OnFailure::Local { .. }) => {
                let (memory, share) = self.fall_back(spec, &e)?;
                return Self::acquire_locally(memory, &share, call).await;
            }
            (Err(e), _) => return Err(e),
        };
        let decision = answer::decision(spec, &call, reply)?;
        service.sweep.decided(&decision);
        Ok(decision)
    }

    async fn report(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
    ) -> Result<ReportOutcome, BackendError> {
        if let Some(local) = self.open_local() {
            let (memory, share) = local.share(spec)?;
            return Self::mark_local(memory.report(&share, call).await);
        }
        match self.report_shared(spec, call.clone()).await {
            Err(BackendError::Unavailable(e)) if self.local.is_some() => {
                let (memory, share) = self.fall_back(spec, &e)?;
                Self::mark_local(memory.report(&share, call).await)
            }
            other => other,
        }
    }

    async fn status(&self, spec: &ServiceSpec) -> Result<ServiceSnapshot, BackendError> {
        if let Some(local) = self.open_local() {
            let (memory, share) = local.share(spec)?;
            return Self::mark_local(memory.status(&share).await);
        }
        match self.status_shared(spec).await {
            Err(BackendError::Unavailable(e)) if self.local.is_some() => {
                let (memory, share) = self.fall_back(spec, &e)?;
                Self::mark_local(memory.status(&share).await)
            }
            other => other,
        }
    }

    async fn admin(&self, spec: &ServiceSpec, op: AdminOp) -> Result<(), BackendError> {
        if let Some(local) = self.open_local() {
            let (memory, share) = local.share(spec)?;
            return memory.admin(&share, op).await;
        }
        match self.admin_shared(spec, op).await {
            Err(BackendError::Unavailable(e)) if self.local.is_some() => {
                let (memory, share) = self.fall_back(spec, &e)?;
                memory.admin(&share, op).await
            }
            other => other,
        }
    }

    async fn maintain(&self) {
        if let Some(local) = &self.local {
            local.maintain().await;
        }
        // Every key carries a TTL and every grant prunes; this catches services that only see
        // denials or reports for a while, so their expired leases do not linger until the TTL.
        // Services with nothing to prune yet, or kept pruned by this replica's grants, are left
        // out (see `sweep`).
        let now = self.redis_now();
        for service in self.services().values() {
            if !service.sweep.due(now) {
                continue;
            }
            service.sweep.visiting();
            let pruned = match self.engine {
                settings::Engine::Module => self.prune_native(service).await,
                settings::Engine::Lua => {
                    self.eval_as::<i64>(&self.scripts.prune, service, &[]).await
                }
            };
            match pruned {
                Ok(next_prune) => service.sweep.visited(Some(next_prune)),
                Err(e) => {
                    service.sweep.visited(None);
                    tracing::debug!(error = %e, "prune failed; retrying next round");
                    return;
                }
            }
        }
    }

    /// Not ready until connected. Afterwards, under `fail_closed` (where an outage fails every
    /// call) ready only while Redis answers a `PING` in time; under `fail_open` the server keeps
    /// answering through an outage and stays ready.
    async fn ready(&self) -> Result<(), String> {
        let connection = self.link.get()?;
        if self.on_failure == OnFailure::FailOpen {
            return Ok(());
        }
        // TIME answers like PING and tells Redis's clock, for the acquires' deadlines.
        let command = redis::cmd("TIME");
        let sent = std::time::Instant::now();
        let ping = connection.query::<(String, String)>(&command);
        let answer = match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok((secs, micros))) => {
                if let (TimeSource::Server, Ok(secs), Ok(micros)) =
                    (&self.time, secs.parse::<u64>(), micros.parse::<u64>())
                {
                    self.clock.observe(sent, secs * 1_000_000 + micros);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!(
                "redis: no answer to PING within {:?}",
                self.timeout
            )),
        };
        match (&self.local, answer) {
            // The probe also closes and opens the local fallback's circuit; a replica deciding
            // locally is still serving.
            (Some(local), Ok(())) => {
                local.close();
                Ok(())
            }
            (Some(local), Err(e)) => {
                local.trip(&e);
                Ok(())
            }
            (None, answer) => answer,
        }
    }

    async fn reconfigure(&self, specs: &[Arc<ServiceSpec>]) -> Result<(), BackendError> {
        let services = Self::prepare(specs, &self.key_prefix, &self.services())
            .map_err(BackendError::Unsupported)?;
        if let Some(local) = &self.local {
            local.reconfigure(specs).await?;
        }
        *self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(services);
        Ok(())
    }
}
