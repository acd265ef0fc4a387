//! Where rate-limit state lives. Every backend implements [`Backend`] with the same semantics (the
//! core's [`Ledger`](crate::core::Ledger) is the reference), so one behaviour suite runs against
//! all of them. Backends own their clock: the decision time of a service comes from one place.

mod memory;
mod redis;

use std::{future::Future, sync::Arc};

pub use self::redis::{
    settings::{
        validate_key_prefix, Engine, OnFailure, RedisConfig, RedisUrl, SentinelConfig,
        DEFAULT_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT,
    },
    RedisBackend, RedisSetupError, ServiceKeys,
};
pub use memory::{Clock, MemoryBackend};

pub use crate::core::ReportCall;
use crate::core::{
    AcquireError, AdminOp, Class, Cost, Decision, Micros, ReportOutcome, ServiceSnapshot,
    ServiceSpec,
};

/// A request for a slot, validated.
#[derive(Clone, Debug)]
pub struct AcquireCall<'a> {
    /// What the call spends; it fits every limit's capacity.
    pub cost: Cost,
    /// Longest acceptable wait.
    pub max_wait: Micros,
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// Priority class.
    pub class: Class,
}

/// A backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The state refused the acquire (request id reuse, too many leases).
    #[error(transparent)]
    Refused(#[from] AcquireError),
    /// The backend is unreachable or failed.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The call failed, but not because the backend is out of reach: a script refused it (e.g.
    /// an ACL denial), or the batch carrying it was cancelled with its caller. Never answered
    /// by `on_failure`; the caller may retry (with its request id).
    #[error("backend call failed: {0}")]
    Failed(String),
    /// The call carried a configuration of the service that a reload replaced (or removed) while
    /// it was on its way; asking again uses the new one.
    #[error("service {0:?} was reconfigured during the call; retry")]
    Reconfigured(String),
    /// The backend cannot hold a configuration (e.g. limits too fine for exact arithmetic).
    #[error("{0}")]
    Unsupported(String),
}

/// Shared rate-limit state. Implementations must be cheap to call concurrently for different
/// services: no lock spans services.
pub trait Backend: Send + Sync + 'static {
    /// Reserves a slot (see [`Ledger::acquire`](crate::core::Ledger::acquire)).
    fn acquire(
        &self,
        spec: &ServiceSpec,
        call: AcquireCall<'_>,
    ) -> impl Future<Output = Result<Decision, BackendError>> + Send;

    /// Applies a provider's answer (see [`Ledger::report`](crate::core::Ledger::report)).
    fn report(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
    ) -> impl Future<Output = Result<ReportOutcome, BackendError>> + Send;

    /// The live state of a service.
    fn status(
        &self,
        spec: &ServiceSpec,
    ) -> impl Future<Output = Result<ServiceSnapshot, BackendError>> + Send;

    /// Applies an operator's action (see [`Ledger::admin`](crate::core::Ledger::admin)).
    fn admin(
        &self,
        spec: &ServiceSpec,
        op: AdminOp,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Periodic housekeeping: drop expired leases and idle state. Called about once a second.
    fn maintain(&self) -> impl Future<Output = ()> + Send;

    /// Whether the backend can decide now, or why not. Health reports NOT_SERVING while it
    /// cannot. Checked about every quarter second; must answer within the backend's timeout.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send {
        std::future::ready(Ok(()))
    }

    /// Switches to `specs`, a reloaded configuration, or refuses it whole (nothing changes). A
    /// service whose spec is the same `Arc` as before keeps its state untouched; one whose spec
    /// changed keeps its state carried over (see
    /// [`Ledger::reshape`](crate::core::Ledger::reshape)); a new one starts empty; one left out
    /// is dropped. Calls made with a replaced spec fail with [`BackendError::Reconfigured`].
    fn reconfigure(
        &self,
        specs: &[Arc<ServiceSpec>],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
