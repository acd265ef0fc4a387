//! The backend behaviour suite: every test is written once against [`Limiter`] and runs on every
//! backend through [`TestBackend`]: memory, a single Redis, a three-master Redis Cluster, and a
//! Redis over TLS reached as a least-privilege ACL user; and with the Sluice Redis module
//! deciding (`engine = "module"`): a Redis, a cluster, and a Redis reached as an ACL user with
//! only the module's commands (real `redis-server` processes started per test on free ports).
//! Time is controlled: tokio's paused clock for memory, a hand-moved time passed to the Redis
//! scripts (or the module's commands) for Redis. Tests are plain generic async functions in topic
//! files (`limits`, `leases`, `reports`, `reloads`, `families`, `budgets`; `suite` holds what they
//! share), each over the services it names from its file's catalogue, and [`on_backend!`] runs
//! each of them on each backend.

mod budgets;
mod families;
mod leases;
mod limits;
mod reloads;
mod reports;
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
    config::{Engine, RedisConfig, RedisUrl},
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
    /// How it decides: Lua scripts, or the Sluice module's commands.
    const ENGINE: Engine = Engine::Lua;
}

/// The commands Sluice sends (and its scripts call), for a least-privilege ACL user. Without
/// `fcall` and `function|load` the scripts go by `EVALSHA`: the suite runs that path here.
pub const SLUICE_COMMANDS: &[&str] = &[
    "evalsha",
    "eval",
    "ping",
    "time",
    "del",
    "exists",
    "get",
    "hdel",
    "hget",
    "hgetall",
    "hmget",
    "hset",
    "pexpireat",
    "rpush",
    "lpush",
    "lpop",
    "lrange",
    "lindex",
    "lset",
    "ltrim",
    "zadd",
    "zcard",
    "zcount",
    "zrange",
    "zrangebyscore",
    "zremrangebyscore",
    "zrem",
    "zscore",
];

/// Adds the ACL user `sluice` (password `suite-acl-password`), who may touch only the suite's keys
/// (`{suite:*`) with only `commands`.
fn add_acl_user(redis: &RedisServer, commands: &[&str]) -> anyhow::Result<()> {
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
    let allowed: Vec<String> = commands.iter().map(|c| format!("+{c}")).collect();
    rule.extend(allowed.iter().map(String::as_str));
    anyhow::ensure!(redis.text(&rule)? == "OK", "ACL SETUSER failed");
    Ok(())
}

/// A Redis that speaks only TLS (certificate from a test CA), reached as an ACL user that may
/// touch only the suite's keys (`{suite:*`) with only the commands Sluice needs.
pub struct SecuredRedis(RedisServer);

impl RedisDeployment for SecuredRedis {
    fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start_tls()?;
        add_acl_user(&redis, SLUICE_COMMANDS)?;
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

/// The commands Sluice sends with `engine = "module"`, for a least-privilege ACL user.
pub const SLUICE_MODULE_COMMANDS: &[&str] = &[
    "sluice.acquire",
    "sluice.report",
    "sluice.status",
    "sluice.admin",
    "sluice.prune",
    "ping",
    "time",
];

/// A Redis with the Sluice module loaded, decided by the module.
pub struct ModuleRedis(RedisServer);

/// [`ModuleRedis`] reached as an ACL user that may touch only the suite's keys with only the
/// module's commands (and `ping`, `time`).
pub struct SecuredModuleRedis(RedisServer);

impl RedisDeployment for SecuredModuleRedis {
    fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start_with_module(&[])?;
        add_acl_user(&redis, SLUICE_MODULE_COMMANDS)?;
        Ok(Self(redis))
    }
    fn url(&self) -> String {
        format!(
            "redis://sluice:suite-acl-password@127.0.0.1:{}",
            self.0.port
        )
    }
    const CLUSTER: bool = false;
    const ENGINE: Engine = Engine::Module;
}

impl RedisDeployment for ModuleRedis {
    fn start() -> anyhow::Result<Self> {
        RedisServer::start_with_module(&[]).map(Self)
    }
    fn url(&self) -> String {
        self.0.url()
    }
    const CLUSTER: bool = false;
    const ENGINE: Engine = Engine::Module;
}

/// A Redis Cluster whose nodes load the Sluice module, decided by the module.
pub struct ModuleCluster(RedisCluster);

impl RedisDeployment for ModuleCluster {
    fn start() -> anyhow::Result<Self> {
        RedisCluster::start_with_module().map(Self)
    }
    fn url(&self) -> String {
        self.0.url()
    }
    const CLUSTER: bool = true;
    const ENGINE: Engine = Engine::Module;
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
                .engine(D::ENGINE)
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

/// Runs every behaviour test on backend `$backend`: one `#[tokio::test]` per test function of
/// each topic file, in a module per topic. A test function not listed here is dead code, which
/// clippy refuses: none can be left out.
macro_rules! on_backend {
    ($backend:ty) => {
        on_backend!(@topics $backend;
            limits: [
                sliding_window_counts_requests_exactly,
                in_flight_slots_are_held_until_reported,
                a_crashed_workers_slot_frees_itself_at_the_lease_timeout,
                token_costs_are_reserved_in_arrival_order,
                denials_record_nothing,
                token_bucket_allows_burst_then_refills,
                costs_that_never_fit_are_refused_naming_the_limit,
                interactive_calls_are_booked_ahead_of_queued_batch_calls,
                services_are_independent,
                expired_leases_are_dropped_and_idle_services_shrink,
                a_shadow_service_grants_every_call_at_once_and_books_what_it_decided,
            ],
            leases: [
                a_request_id_is_replayed_only_while_its_slot_is_held,
                double_and_late_reports_free_nothing_more,
                request_id_makes_a_retried_acquire_count_once,
                unknown_leases_are_not_errors_but_malformed_input_is,
                a_lease_id_only_names_a_lease_of_its_own_service,
            ],
            reports: [
                overloads_back_off_exponentially_with_jitter_until_a_success,
                remaining_zero_cools_down_the_dimension_it_names,
                remaining_below_the_view_is_charged_as_outside_usage,
                provider_limits_are_adopted_when_the_service_says_so,
                operators_clear_cooldowns_and_reset_usage,
                quota_and_spend_caps_cool_down_long_with_the_cause_visible,
                reported_usage_refunds_the_estimate,
                status_shows_the_providers_last_answer,
                a_429_cools_the_service_down_and_cooldowns_only_lengthen,
            ],
            reloads: [
                a_reload_keeps_the_state_of_surviving_services_and_adds_and_removes_services,
                a_reload_carries_usage_over_to_changed_limits,
                a_reload_that_turns_adoption_off_restores_the_configured_amount,
                calls_carrying_a_replaced_configuration_are_refused_by_the_backend,
                a_limit_dropped_and_added_back_by_reloads_leaves_a_working_service,
            ],
            families: [
                a_members_queue_never_stalls_its_siblings,
                a_members_cooldown_never_stalls_its_siblings,
                the_parents_own_queue_holds_every_member_and_is_named,
                a_retried_job_is_a_new_call_through_its_ancestors_in_flight_limit,
                lease_ids_never_repeat_for_a_service_removed_and_added_back,
                numbers_near_two_to_the_53_are_refused_up_front_or_granted_alike,
                a_family_spends_its_parents_budget_atomically,
                reports_reach_the_parent_and_its_429s_cool_the_family,
            ],
            budgets: [
                a_token_bucket_adopts_the_providers_budget_with_its_rate_and_burst,
                an_adaptive_budget_lowers_on_429s_and_recovers_when_quiet,
                queued_calls_are_released_at_the_lowered_budget_after_a_429,
                an_adaptive_bucket_charges_at_its_scale,
                a_providers_remaining_below_the_view_drains_a_token_bucket_and_never_fills_it,
                a_decrease_keeps_what_an_adaptive_bucket_owes,
                status_says_why_from_the_budget_in_force_not_the_last_answer,
                quotas_spend_caps_and_overloads_leave_an_adaptive_budget_alone,
            ],
        );
    };
    (@topics $backend:ty; $($topic:ident: [$($test:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $topic {
                $(
                    #[tokio::test]
                    async fn $test() {
                        crate::$topic::$test::<$backend>().await;
                    }
                )*
            }
        )*
    };
}

mod memory {
    on_backend!(sluice_server::backend::MemoryBackend);
}

mod redis {
    on_backend!(crate::OnRedis<sluice_e2e::redis_server::RedisServer>);
}

mod redis_cluster {
    on_backend!(crate::OnRedis<sluice_e2e::redis_server::RedisCluster>);
}

mod redis_tls_acl {
    on_backend!(crate::OnRedis<crate::SecuredRedis>);
}

mod redis_module {
    on_backend!(crate::OnRedis<crate::ModuleRedis>);
}

mod redis_module_cluster {
    on_backend!(crate::OnRedis<crate::ModuleCluster>);
}

mod redis_module_acl {
    on_backend!(crate::OnRedis<crate::SecuredModuleRedis>);
}
