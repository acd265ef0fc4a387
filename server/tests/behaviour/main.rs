//! The backend behaviour suite: every test is written once against [`Limiter`] and runs on every
//! backend through [`TestBackend`]: memory, a single Redis, a three-master Redis Cluster, and a
//! Redis over TLS reached as a least-privilege ACL user (real `redis-server` processes started
//! per test on free ports). Time is controlled: tokio's paused clock for memory, a hand-moved
//! time passed to the Redis scripts for Redis.

mod budgets;
mod families;
mod suite;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sluice_e2e::redis_server::{RedisCluster, RedisServer};
use sluice_server::{
    backend::{AcquireCall, Backend, BackendError, Clock, MemoryBackend, RedisBackend, ReportCall},
    config::{RedisConfig, RedisUrl},
    core::{AdminOp, Decision, ReportOutcome, ServiceSnapshot, ServiceSpec},
};

/// A backend the suite can create fresh and whose clock it can move.
pub trait TestBackend: Backend + Sized {
    /// A fresh backend holding `specs`.
    fn create(specs: &[Arc<ServiceSpec>]) -> impl std::future::Future<Output = Self> + Send;
    /// Moves the backend's clock forward.
    fn advance(&self, by: Duration) -> impl std::future::Future<Output = ()> + Send;
    /// Leases the backend still holds for `spec` (to check that memory stays bounded).
    fn held_leases(&self, spec: &ServiceSpec) -> impl std::future::Future<Output = usize> + Send;
}

impl TestBackend for MemoryBackend {
    async fn create(specs: &[Arc<ServiceSpec>]) -> Self {
        tokio::time::pause();
        MemoryBackend::new(specs, Clock::new())
    }

    async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
    }

    async fn held_leases(&self, spec: &ServiceSpec) -> usize {
        MemoryBackend::lease_count(self, spec)
    }
}

/// Redis processes a [`RedisBackend`] can run on.
pub trait RedisDeployment: Send + Sync + 'static {
    /// Starts fresh processes.
    fn start() -> anyhow::Result<Self>
    where
        Self: Sized;
    /// URL of a node.
    fn url(&self) -> String;
    /// Whether it is a cluster.
    const CLUSTER: bool;
    /// The CA to verify a TLS server with.
    fn ca_file(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// The commands Sluice sends (and its scripts call), for a least-privilege ACL user.
pub const SLUICE_COMMANDS: &[&str] = &[
    "evalsha",
    "eval",
    "ping",
    "time",
    "del",
    "exists",
    "hdel",
    "hget",
    "hgetall",
    "hmget",
    "hset",
    "pexpireat",
    "zadd",
    "zcard",
    "zcount",
    "zincrby",
    "zrange",
    "zrangebyscore",
    "zremrangebyscore",
    "zrank",
    "zrem",
    "zrevrange",
    "zrevrangebyscore",
    "zscore",
];

/// A Redis that speaks only TLS (certificate from a test CA), reached as an ACL user that may
/// touch only the suite's keys (`{suite:*`) with only the commands Sluice needs.
pub struct SecuredRedis(RedisServer);

impl RedisDeployment for SecuredRedis {
    fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start_tls()?;
        let mut rule = vec![
            "ACL",
            "SETUSER",
            "sluice",
            "on",
            ">suite-acl-password",
            "resetkeys",
            "~{suite:*",
            "resetchannels",
            "-@all",
        ];
        let allowed: Vec<String> = SLUICE_COMMANDS.iter().map(|c| format!("+{c}")).collect();
        rule.extend(allowed.iter().map(String::as_str));
        anyhow::ensure!(redis.text(&rule)? == "OK", "ACL SETUSER failed");
        Ok(Self(redis))
    }
    fn url(&self) -> String {
        format!(
            "rediss://sluice:suite-acl-password@127.0.0.1:{}",
            self.0.port
        )
    }
    const CLUSTER: bool = false;
    fn ca_file(&self) -> Option<std::path::PathBuf> {
        self.0.ca_file()
    }
}

impl RedisDeployment for RedisServer {
    fn start() -> anyhow::Result<Self> {
        RedisServer::start()
    }
    fn url(&self) -> String {
        RedisServer::url(self)
    }
    const CLUSTER: bool = false;
}

impl RedisDeployment for RedisCluster {
    fn start() -> anyhow::Result<Self> {
        RedisCluster::start()
    }
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
    const CLUSTER: bool = true;
}

/// The Redis backend on its own processes, deciding at a hand-moved time.
pub struct OnRedis<D> {
    backend: RedisBackend,
    now: Arc<AtomicU64>,
    _deployment: D,
}

impl<D: RedisDeployment> Backend for OnRedis<D> {
    async fn acquire(
        &self,
        spec: &ServiceSpec,
        call: AcquireCall<'_>,
    ) -> Result<Decision, BackendError> {
        self.backend.acquire(spec, call).await
    }

    async fn report(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
    ) -> Result<ReportOutcome, BackendError> {
        self.backend.report(spec, call).await
    }

    async fn status(&self, spec: &ServiceSpec) -> Result<ServiceSnapshot, BackendError> {
        self.backend.status(spec).await
    }

    async fn admin(&self, spec: &ServiceSpec, op: AdminOp) -> Result<(), BackendError> {
        self.backend.admin(spec, op).await
    }

    async fn maintain(&self) {
        self.backend.maintain().await;
    }

    async fn reconfigure(&self, specs: &[Arc<ServiceSpec>]) -> Result<(), BackendError> {
        self.backend.reconfigure(specs).await
    }
}

impl<D: RedisDeployment> TestBackend for OnRedis<D> {
    async fn create(specs: &[Arc<ServiceSpec>]) -> Self {
        let deployment = tokio::task::spawn_blocking(D::start)
            .await
            .expect("redis start task")
            .expect("redis starts");
        let config = RedisConfig {
            tls_ca_file: deployment.ca_file(),
            ..RedisConfig::new(RedisUrl::parse(&deployment.url()).expect("valid url"))
                .cluster(D::CLUSTER)
                .key_prefix("suite")
                .timeout(Duration::from_secs(5))
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_micros() as u64;
        let now = Arc::new(AtomicU64::new(now));
        let backend = RedisBackend::connect(specs, &config)
            .await
            .expect("connects to redis")
            .with_manual_time(now.clone());
        Self {
            backend,
            now,
            _deployment: deployment,
        }
    }

    async fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }

    async fn held_leases(&self, spec: &ServiceSpec) -> usize {
        self.backend.lease_count(spec).await.expect("ZCARD")
    }
}

mod memory {
    crate::behaviour_suite!(sluice_server::backend::MemoryBackend);
    mod families {
        crate::family_suite!(sluice_server::backend::MemoryBackend);
    }
    mod budgets {
        crate::budget_suite!(sluice_server::backend::MemoryBackend);
    }
}

mod redis {
    crate::behaviour_suite!(crate::OnRedis<sluice_e2e::redis_server::RedisServer>);
    mod families {
        crate::family_suite!(crate::OnRedis<sluice_e2e::redis_server::RedisServer>);
    }
    mod budgets {
        crate::budget_suite!(crate::OnRedis<sluice_e2e::redis_server::RedisServer>);
    }
}

mod redis_cluster {
    crate::behaviour_suite!(crate::OnRedis<sluice_e2e::redis_server::RedisCluster>);
    mod families {
        crate::family_suite!(crate::OnRedis<sluice_e2e::redis_server::RedisCluster>);
    }
    mod budgets {
        crate::budget_suite!(crate::OnRedis<sluice_e2e::redis_server::RedisCluster>);
    }
}

mod redis_tls_acl {
    crate::behaviour_suite!(crate::OnRedis<crate::SecuredRedis>);
    mod families {
        crate::family_suite!(crate::OnRedis<crate::SecuredRedis>);
    }
    mod budgets {
        crate::budget_suite!(crate::OnRedis<crate::SecuredRedis>);
    }
}
