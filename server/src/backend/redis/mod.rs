//! The `redis` backend: every replica of `sluice-server` shares one set of limits in Redis or Redis
//! Cluster. Each decision is one Lua script call (`EVALSHA`, falling back to `EVAL` when the
//! server answers `NOSCRIPT`, e.g. after a restart or `SCRIPT FLUSH`), so a decision is atomic
//! and its time is the Redis server's `TIME`, never a replica's clock. The scripts implement the
//! memory backend's [`Ledger`](crate::core::Ledger) semantics over sorted sets and hashes; see
//! `common.lua` for the layout. Concurrent acquires of a service share script calls (see
//! [`batch`]).

mod batch;
mod deadline;
mod fallback;
mod layout;
mod link;
pub mod settings;

use std::{
    collections::{hash_map::RandomState, HashMap},
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError, RwLock,
    },
    time::Duration,
};

use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};

pub use layout::ServiceKeys;
use settings::{OnFailure, RedisConfig};

use super::{AcquireCall, Backend, BackendError, MemoryBackend, ReportCall};
use crate::core::{
    AcquireError, AdminOp, BucketShape, CooldownCause, Cost, Decider, Decision, Dimension, Grant,
    LeaseId, LimitSnapshot, Micros, Observation, ReportOutcome, Scope, ServiceSnapshot,
    ServiceSpec, MAX_LEASES,
};

const COMMON: &str = include_str!("common.lua");

/// How much longer than its own deadline a call waits for the batch it carries to answer.
const CARRY_SLACK: Duration = Duration::from_millis(10);

/// One script: the common prelude followed by its body, and the SHA1 `EVALSHA` names it by.
struct LuaScript {
    source: String,
    sha: String,
}

impl LuaScript {
    fn new(body: &str) -> Self {
        let source = format!("{COMMON}\n{body}");
        let sha = redis::Script::new(&source).get_hash().to_string();
        Self { source, sha }
    }
}

/// The scripts.
struct Scripts {
    acquire: LuaScript,
    family: LuaScript,
    report: LuaScript,
    status: LuaScript,
    prune: LuaScript,
    admin: LuaScript,
}

impl Scripts {
    fn new() -> Self {
        Self {
            acquire: LuaScript::new(include_str!("acquire.lua")),
            family: LuaScript::new(include_str!("family.lua")),
            report: LuaScript::new(include_str!("report.lua")),
            status: LuaScript::new(include_str!("status.lua")),
            prune: LuaScript::new(include_str!("prune.lua")),
            admin: LuaScript::new(include_str!("admin.lua")),
        }
    }
}

/// Per-service constants handed to every script call, and the service's acquire queue.
struct ServiceArgs {
    /// The configuration these were made for.
    spec: Arc<ServiceSpec>,
    keys: ServiceKeys,
    limits: String,
    retention: String,
    batcher: batch::Batcher,
}

impl ServiceArgs {
    fn new(spec: &Arc<ServiceSpec>, key_prefix: &str) -> Result<Self, String> {
        Ok(Self {
            spec: spec.clone(),
            keys: ServiceKeys::new(key_prefix, &spec.name, spec.family.as_deref()),
            limits: layout::encode_limits(spec)?,
            retention: layout::retention(spec).to_string(),
            batcher: batch::Batcher::default(),
        })
    }
}

/// The leases a family member's lease booked in its ancestors: `nonce:seq` pairs (nonces in
/// hex), comma-separated, parent first.
fn parse_uplinks(text: &str) -> Result<Vec<LeaseId>, BackendError> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (nonce, seq) = pair.split_once(':').ok_or_else(|| protocol("bad uplink"))?;
            Ok(LeaseId {
                nonce: u64::from_str_radix(nonce, 16).map_err(|_| protocol("bad uplink"))?,
                seq: seq.parse().map_err(|_| protocol("bad uplink"))?,
            })
        })
        .collect()
}

/// The services, by name.
type Services = HashMap<String, Arc<ServiceArgs>>;

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
    /// Replaced whole by [`Backend::reconfigure`].
    services: RwLock<Arc<Services>>,
    key_prefix: String,
    timeout: Duration,
    on_failure: OnFailure,
    time: TimeSource,
    /// Keyed hasher for nonces: a state created by a call gets a nonce no other call offers, so
    /// lease ids of a service's earlier (expired) state never name a lease of its new one.
    nonces: RandomState,
    calls: AtomicU64,
    /// This replica's share of the limits, with `on_failure = "local"`.
    local: Option<fallback::LocalShare>,
    /// The offset of Redis's clock, for the acquires' deadlines.
    clock: deadline::RedisClock,
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

fn protocol(what: &str) -> BackendError {
    BackendError::Unavailable(format!("redis: unexpected script reply ({what})"))
}

fn number<T: std::str::FromStr>(reply: &[String], i: usize) -> Result<T, BackendError> {
    reply
        .get(i)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| protocol("a number was expected"))
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
            services: RwLock::new(Arc::new(services)),
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            on_failure: config.on_failure,
            time: TimeSource::Server,
            nonces: RandomState::new(),
            calls: AtomicU64::new(0),
            local,
            clock: deadline::RedisClock::default(),
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

    fn fresh_nonce(&self) -> String {
        let mut hasher = self.nonces.build_hasher();
        hasher.write_u64(self.calls.fetch_add(1, Ordering::Relaxed));
        format!("{:016x}", hasher.finish())
    }

    fn time_arg(&self) -> String {
        match &self.time {
            TimeSource::Server => String::new(),
            TimeSource::Manual(now) => now.load(Ordering::SeqCst).to_string(),
        }
    }

    /// Runs `script` with the service's keys and common arguments followed by `args`, bounded by
    /// the timeout. `EVALSHA` first; on `NOSCRIPT`, `EVAL` (which also caches the script).
    async fn eval(
        &self,
        script: &LuaScript,
        service: &ServiceArgs,
        args: &[&str],
    ) -> Result<Vec<String>, BackendError> {
        self.eval_as(script, service, args).await
    }

    /// `verb` (`EVALSHA` or `EVAL`) of `body` with the keys of `chain` (a service, then its
    /// ancestors for a family's acquire), the service's common arguments and `args`.
    fn command(&self, verb: &str, body: &str, chain: &[&ServiceArgs], args: &[&str]) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(body).arg(chain.len() * 9);
        for member in chain {
            for key in &member.keys.keys {
                cmd.arg(key);
            }
        }
        let service = chain[0];
        cmd.arg(self.time_arg())
            .arg(&service.limits)
            .arg(&service.retention)
            .arg(self.fresh_nonce());
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// The `EVALSHA` an acquire of `cost` with `max_wait` on `spec` sends (no request id), for
    /// benchmarks that measure Redis alone. The script is loaded by any decision made before.
    pub fn acquire_command(
        &self,
        spec: &ServiceSpec,
        cost: Cost,
        max_wait: Micros,
    ) -> Result<Cmd, BackendError> {
        let service = self.service(spec)?;
        let [c0, c1, c2, c3] = cost.0;
        Ok(self.command(
            "EVALSHA",
            &self.scripts.acquire.sha,
            &[&service],
            &[
                &MAX_LEASES.to_string(),
                "1",
                &format!("{c0} {c1} {c2} {c3}"),
                &max_wait.to_string(),
                "",
                "0 0",
                "",
            ],
        ))
    }

    /// Decides `acquires` of `spec` in order in one script call, at one `now`: what concurrent
    /// acquires of a service share. One reply per acquire.
    async fn run_acquires(
        &self,
        service: &ServiceArgs,
        acquires: Vec<batch::QueuedAcquire>,
    ) -> Result<Vec<Vec<String>>, BackendError> {
        self.run_acquires_until(service, acquires, None).await
    }

    /// [`Self::run_acquires`], answering by `deadline` at the latest (and within the timeout).
    async fn run_acquires_until(
        &self,
        service: &ServiceArgs,
        acquires: Vec<batch::QueuedAcquire>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<Vec<String>>, BackendError> {
        let ancestors = self.ancestors(service)?;
        let mut args: Vec<String> =
            Vec::with_capacity(3 + 3 * ancestors.len() + 3 * acquires.len());
        args.push(MAX_LEASES.to_string());
        args.push(acquires.len().to_string());
        if service.spec.family.is_some() {
            args.push((1 + ancestors.len()).to_string());
            for a in &ancestors {
                args.push(a.limits.clone());
                args.push(a.retention.clone());
                args.push(self.fresh_nonce());
            }
        }
        let sent = tokio::time::Instant::now();
        let timeout = deadline.map_or(self.timeout, |d| {
            d.saturating_duration_since(sent).min(self.timeout)
        });
        // Redis's clock, read once per batch.
        let offset = match self.time {
            TimeSource::Server => self.clock.offset(),
            TimeSource::Manual(_) => None,
        };
        for a in &acquires {
            let [c0, c1, c2, c3] = a.cost.0;
            args.push(format!("{c0} {c1} {c2} {c3}"));
            args.push(a.max_wait.to_string());
            args.push(a.request_id.clone());
            if service.spec.family.is_none() {
                args.push(format!("{} {}", a.class.rank, a.class.max_overtakes));
            }
            // Past the earlier of its caller's deadline and the batch's, nothing is booked.
            args.push(self.deadline_arg(a.deadline.min(sent + timeout), offset));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let replies: Vec<Vec<String>> = if service.spec.family.is_none() {
            self.eval_within(&self.scripts.acquire, &[service], &args, timeout)
                .await?
        } else {
            let chain: Vec<&ServiceArgs> = std::iter::once(service)
                .chain(ancestors.iter().map(Arc::as_ref))
                .collect();
            self.eval_within(&self.scripts.family, &chain, &args, timeout)
                .await?
        };
        self.learn_clock(sent, timeout, &replies);
        Ok(replies)
    }

    /// A deadline as the scripts take it: Redis µs, or '' (no check) while Redis's clock
    /// (`offset`) is unknown or time is set by hand.
    fn deadline_arg(&self, deadline: tokio::time::Instant, offset: Option<i64>) -> String {
        offset
            .and_then(|o| self.clock.at_offset(deadline.into_std(), o))
            .map_or_else(String::new, |t| t.to_string())
    }

    /// Learns Redis's clock from a batch's replies (a queued grant's slot minus its wait is
    /// Redis's `now`); a batch that came back expired well within its timeout means the clock moved
    /// ahead of the estimate, which is then forgotten.
    fn learn_clock(&self, sent: tokio::time::Instant, timeout: Duration, replies: &[Vec<String>]) {
        if !matches!(self.time, TimeSource::Server) {
            return;
        }
        for r in replies {
            match r.first().map(String::as_str) {
                // A grant with a wait ahead says Redis's now exactly (a replayed grant whose slot
                // has passed answers wait 0 and its old slot: nothing to learn from it).
                Some("G") => {
                    if let (Ok(slot), Ok(wait)) = (number::<u64>(r, 2), number::<u64>(r, 3)) {
                        if wait > 0 {
                            self.clock
                                .observe(sent.into_std(), slot.saturating_sub(wait));
                            return;
                        }
                    }
                }
                Some("E") if sent.elapsed() < timeout / 2 => {
                    tracing::warn!(
                        "redis: a decision came back expired at once; relearning its clock"
                    );
                    self.clock.forget();
                    return;
                }
                _ => {}
            }
        }
    }

    /// The ancestors of `service` as configured now, parent first. A service whose arguments a
    /// reload has replaced, or a chain whose members do not share its family (its hash tag), is
    /// [`BackendError::Reconfigured`]: the call is retried on the new configuration.
    fn ancestors(&self, service: &ServiceArgs) -> Result<Vec<Arc<ServiceArgs>>, BackendError> {
        if service.spec.family.is_none() {
            return Ok(Vec::new());
        }
        let reconfigured = || BackendError::Reconfigured(service.spec.name.clone());
        let services = self.services();
        let current = services
            .get(&service.spec.name)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), service));
        if !current {
            return Err(reconfigured());
        }
        let mut chain: Vec<Arc<ServiceArgs>> = Vec::new();
        let mut parent = service.spec.parent.as_deref();
        while let Some(name) = parent {
            let args = services.get(name).ok_or_else(reconfigured)?;
            if chain.len() >= crate::core::MAX_ANCESTORS || args.spec.family != service.spec.family
            {
                return Err(reconfigured());
            }
            chain.push(args.clone());
            parent = args.spec.parent.as_deref();
        }
        Ok(chain)
    }

    /// Decides `calls` of `spec` in order as one batch (what concurrent acquires share), without
    /// the fail-open policy: for tests that compare batches with one-by-one decisions.
    pub async fn acquire_batch(
        &self,
        spec: &ServiceSpec,
        calls: &[AcquireCall<'_>],
    ) -> Result<Vec<Result<Decision, BackendError>>, BackendError> {
        let service = self.service(spec)?;
        let acquires = calls
            .iter()
            .map(|c| batch::QueuedAcquire {
                cost: c.cost,
                max_wait: c.max_wait,
                request_id: c.request_id.unwrap_or_default().to_string(),
                class: c.class,
                deadline: tokio::time::Instant::now() + self.timeout,
            })
            .collect();
        let replies = self.run_acquires(&service, acquires).await?;
        Ok(replies
            .into_iter()
            .zip(calls)
            .map(|(reply, call)| Self::decision(spec, call, reply))
            .collect())
    }

    async fn eval_as<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        service: &ServiceArgs,
        args: &[&str],
    ) -> Result<T, BackendError> {
        self.eval_within(script, &[service], args, self.timeout)
            .await
    }

    /// [`Self::eval_as`] bounded by `timeout`.
    async fn eval_within<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        service: &[&ServiceArgs],
        args: &[&str],
        timeout: Duration,
    ) -> Result<T, BackendError> {
        let connection = self
            .link
            .get()
            .map_err(|e| BackendError::Unavailable(format!("redis: {e}")))?;
        let command = |verb: &str, body: &str| self.command(verb, body, service, args);
        let call = async {
            match connection.query(&command("EVALSHA", &script.sha)).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    tracing::debug!("script not cached on the server; sending it");
                    connection.query(&command("EVAL", &script.source)).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "redis: no answer within {timeout:?}"
            ))),
        }
    }

    /// The decision one acquire reply says.
    fn decision(
        spec: &ServiceSpec,
        call: &AcquireCall<'_>,
        reply: Vec<String>,
    ) -> Result<Decision, BackendError> {
        match reply.first().map(String::as_str) {
            Some("G") => {
                let nonce = reply
                    .get(5)
                    .and_then(|n| u64::from_str_radix(n, 16).ok())
                    .ok_or_else(|| protocol("bad nonce"))?;
                Ok(Decision::Granted(Grant {
                    lease_id: LeaseId {
                        nonce,
                        seq: number(&reply, 1)?,
                    },
                    slot: number(&reply, 2)?,
                    wait: number(&reply, 3)?,
                    decider: Self::decider(spec, reply.get(4))?,
                    scope: Scope::Shared,
                }))
            }
            Some("D") => Ok(Decision::Denied {
                retry_after: number(&reply, 1)?,
                decider: Self::decider(spec, reply.get(2))?,
                scope: Scope::Shared,
            }),
            Some("R") => Err(BackendError::Refused(AcquireError::RequestIdReused(
                call.request_id.unwrap_or_default().to_string(),
            ))),
            Some("F") => Err(BackendError::Refused(AcquireError::Full)),
            Some("O") => Err(BackendError::Refused(AcquireError::TotalTooLarge)),
            // Redis ran it after its caller was answered: nothing was booked.
            Some("E") => Err(BackendError::Unavailable(
                "redis: the decision ran after its deadline; nothing was booked".into(),
            )),
            _ => Err(protocol("unknown acquire answer")),
        }
    }

    /// Leases the service holds (for tests of bounded state).
    pub async fn lease_count(&self, spec: &ServiceSpec) -> Result<usize, BackendError> {
        let service = self.service(spec)?;
        let mut cmd = redis::cmd("ZCARD");
        cmd.arg(service.keys.log());
        let connection = self
            .link
            .get()
            .map_err(|e| BackendError::Unavailable(format!("redis: {e}")))?;
        tokio::time::timeout(self.timeout, connection.query(&cmd))
            .await
            .map_err(|_| BackendError::Unavailable("redis: timeout".into()))?
            .map_err(|e| unavailable(&e))
    }

    fn decider(spec: &ServiceSpec, code: Option<&String>) -> Result<Decider, BackendError> {
        match code.map(String::as_str) {
            Some("n") => Ok(Decider::Now),
            Some("c") => Ok(Decider::Cooldown),
            Some(p) if p.starts_with('p') => {
                let (level, what) = p[1..]
                    .split_once('_')
                    .ok_or_else(|| protocol("unknown decider"))?;
                let level = level.parse().map_err(|_| protocol("unknown decider"))?;
                let limit = match what {
                    "c" => None,
                    i => Some(i.parse().map_err(|_| protocol("unknown decider"))?),
                };
                Ok(Decider::Ancestor { level, limit })
            }
            Some(i) => match i.parse::<usize>() {
                Ok(i) if i < spec.limits.len() => Ok(Decider::Limit(i)),
                // A slot booked under a config a reload replaced (or another replica's) may name
                // a limit this config does not have: the slot stands, its label is unknown.
                Ok(_) => Ok(Decider::Now),
                Err(_) => Err(protocol("unknown decider")),
            },
            None => Err(protocol("missing decider")),
        }
    }
}

/// An answer that says which state it comes from.
trait Scoped {
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
impl RedisBackend {
    /// The local share, if `on_failure = "local"` and Redis is considered down.
    fn open_local(&self) -> Option<&fallback::LocalShare> {
        self.local.as_ref().filter(|l| l.is_open())
    }

    /// Redis failed with `error`: opens the circuit and names `spec`'s local share.
    fn fall_back(
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
    fn mark_local<T: Scoped>(answer: Result<T, BackendError>) -> Result<T, BackendError> {
        answer.map(|mut a| {
            a.set_scope(Scope::Local);
            a
        })
    }

    /// Decides `call` in the local share of `spec`.
    async fn acquire_locally(
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

    async fn report_shared(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
    ) -> Result<ReportOutcome, BackendError> {
        let service = self.service(spec)?;
        let (lease_nonce, lease_seq) = call.lease.map_or((String::new(), String::new()), |l| {
            (format!("{:016x}", l.nonce), l.seq.to_string())
        });
        let usage = call.usage.map_or(String::new(), |u| {
            u[1..]
                .iter()
                .map(|v| v.map_or("-".to_string(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        });
        // Sources are our own text; newlines would split an order, so none may pass.
        let cooldowns = call
            .cooldowns
            .iter()
            .map(|o| {
                format!(
                    "{} {} {} {}",
                    o.dimension.index(),
                    o.length,
                    o.cause.status_code,
                    o.cause.source.replace('\n', " ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let overload = call.overload.as_ref().map_or(String::new(), |o| {
            format!(
                "{} {} {} {} {} {}",
                o.base,
                o.cap,
                o.jitter_permille,
                o.at_least,
                o.cause.status_code,
                o.cause.source.replace('\n', " ")
            )
        });
        let success = if call.success { "1" } else { "0" };
        let remaining = call
            .remaining
            .iter()
            .map(|r| format!("{} {} {}", r.limit, r.remaining, r.tolerance))
            .collect::<Vec<_>>()
            .join(" ");
        let adopt = call
            .adopt
            .iter()
            .map(|o| {
                let window = spec.limits.get(o.limit).map_or(1, |l| l.window);
                let (a, wg) = BucketShape {
                    amount: o.amount,
                    window,
                    burst: o.burst,
                }
                .reduced();
                format!("{} {} {} {a} {wg}", o.limit, o.amount, o.burst)
            })
            .collect::<Vec<_>>()
            .join(" ");
        let max_leases = MAX_LEASES.to_string();
        let (observed, headers) = match &call.observation {
            Some((status, headers)) => (
                status.to_string(),
                serde_json::to_string(headers)
                    .map_err(|e| BackendError::Unavailable(e.to_string()))?,
            ),
            None => Default::default(),
        };
        let reply = self
            .eval(
                &self.scripts.report,
                &service,
                &[
                    &lease_nonce,
                    &lease_seq,
                    &usage,
                    &cooldowns,
                    &overload,
                    success,
                    &remaining,
                    &observed,
                    &headers,
                    &max_leases,
                    &adopt,
                    if spec.family.is_some() { "1" } else { "0" },
                    if call.throttled { "1" } else { "0" },
                ],
            )
            .await?;
        Ok(ReportOutcome {
            cooldown_remaining: number(&reply, 0)?,
            cooldown_set: number::<u8>(&reply, 1)? == 1,
            usage_applied: number::<u8>(&reply, 2)? == 1,
            lease_unknown: number::<u8>(&reply, 3)? == 1,
            outside_usage: number(&reply, 4)?,
            released: number::<u8>(&reply, 5)? == 1,
            uplinks: reply
                .get(6)
                .map(|up| parse_uplinks(up))
                .transpose()?
                .unwrap_or_default(),
            adaptive_scale: number(&reply, 7)?,
            adaptive_lowered: number::<u8>(&reply, 8)? == 1,
            scope: Scope::Shared,
        })
    }

    async fn status_shared(&self, spec: &ServiceSpec) -> Result<ServiceSnapshot, BackendError> {
        let service = self.service(spec)?;
        let reply = self.eval(&self.scripts.status, &service, &[]).await?;
        if reply.len() != 19 + 4 * spec.limits.len() {
            return Err(protocol("status length"));
        }
        let now: Micros = number(&reply, 0)?;
        let cooldown_remaining: Micros = number(&reply, 1)?;
        let cooldown = (cooldown_remaining > 0)
            .then(|| {
                Ok::<_, BackendError>((
                    cooldown_remaining,
                    CooldownCause {
                        status_code: number(&reply, 2)?,
                        source: reply[3].clone(),
                    },
                ))
            })
            .transpose()?;
        let last_report = if reply[5].is_empty() {
            None
        } else {
            Some(Observation {
                at: number(&reply, 6)?,
                status_code: number(&reply, 5)?,
                headers: serde_json::from_str(&reply[7]).map_err(|_| protocol("headers"))?,
            })
        };
        let limits = spec
            .limits
            .iter()
            .enumerate()
            .map(|(i, _)| {
                Ok(LimitSnapshot {
                    used: number(&reply, 9 + 4 * i)?,
                    reset_after: number(&reply, 10 + 4 * i)?,
                    amount: number(&reply, 11 + 4 * i)?,
                    remaining: number(&reply, 12 + 4 * i)?,
                })
            })
            .collect::<Result<_, BackendError>>()?;
        let base = 9 + 4 * spec.limits.len();
        let mut dimension_cooldowns = Vec::new();
        for (k, dimension) in Dimension::ALL[1..].iter().enumerate() {
            let remaining: Micros = number(&reply, base + 3 * k)?;
            if remaining > 0 {
                dimension_cooldowns.push((
                    *dimension,
                    remaining,
                    CooldownCause {
                        status_code: number(&reply, base + 3 * k + 1)?,
                        source: reply[base + 3 * k + 2].clone(),
                    },
                ));
            }
        }
        Ok(ServiceSnapshot {
            now,
            limits,
            cooldown,
            dimension_cooldowns,
            queued: number(&reply, 4)?,
            last_report,
            adaptive_scale: number(&reply, base + 9)?,
            scope: Scope::Shared,
        })
    }

    async fn admin_shared(&self, spec: &ServiceSpec, op: AdminOp) -> Result<(), BackendError> {
        let service = self.service(spec)?;
        let action = match op {
            AdminOp::ClearCooldowns => "clear",
            AdminOp::Reset => "reset",
        };
        self.eval_as::<String>(&self.scripts.admin, &service, &[action])
            .await
            .map(|_| ())
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
        let queued = batch::QueuedAcquire {
            cost: call.cost,
            max_wait: call.max_wait,
            request_id: call.request_id.unwrap_or_default().to_string(),
            class: call.class,
            deadline,
        };
        let submitted = service.batcher.submit(queued, |acquires| {
            self.run_acquires_until(&service, acquires, Some(deadline))
        });
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
        Self::decision(spec, &call, reply)
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
        for service in self.services().values() {
            if let Err(e) = self.eval_as::<i64>(&self.scripts.prune, service, &[]).await {
                tracing::debug!(error = %e, "prune failed; retrying next round");
                return;
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
