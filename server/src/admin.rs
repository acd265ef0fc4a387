//! The `sluice.v1.Admin` gRPC service, for operators: set or clear a service's cooldown, reset
//! its state, reload the config. Served only when enabled (`--admin` / `admin = true`); otherwise callers get
//! UNIMPLEMENTED. Like [`crate::grpc`], it only converts types.

use std::{future::Future, pin::Pin, sync::Arc};

use sluice::v1::{
    admin_server::Admin, AdminResponse, ReloadConfigRequest, ReloadConfigResponse, ServiceRequest,
    SetCooldownRequest,
};
use tonic::{Request, Response, Status};

use crate::{
    backend::Backend,
    core::AdminOp,
    grpc::{from_duration, service_status},
    limiter::{Limiter, ReloadSummary, MAX_WAIT_LIMIT},
};

/// What `ReloadConfig` runs: the server wires its config reloader in (see `crate::reload`), so
/// this API layer does not reach up into the wiring. Returns what changed and the settings that
/// need a restart, or why nothing was applied.
pub trait ConfigReloader: Send + Sync + 'static {
    /// Re-reads the config and applies it; `trigger` says who asked, for the logs.
    fn reload<'a>(&'a self, trigger: &'static str) -> Reloading<'a>;
}

/// A reload under way: what changed and what needs a restart, or why nothing was applied.
pub type Reloading<'a> =
    Pin<Box<dyn Future<Output = Result<(ReloadSummary, Vec<&'static str>), String>> + Send + 'a>>;

/// The gRPC face of the limiter's operator actions.
pub struct AdminService<B> {
    limiter: Arc<Limiter<B>>,
    reloader: Arc<dyn ConfigReloader>,
}

impl<B> std::fmt::Debug for AdminService<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl<B> AdminService<B> {
    /// Serves `limiter`'s operator actions, reloading its config with `reloader`.
    pub fn new(limiter: Arc<Limiter<B>>, reloader: Arc<dyn ConfigReloader>) -> Self {
        Self { limiter, reloader }
    }
}

fn answer(status: crate::limiter::ServiceStatus) -> Response<AdminResponse> {
    Response::new(AdminResponse {
        status: Some(service_status(status)),
    })
}

#[tonic::async_trait]
impl<B: Backend> Admin for AdminService<B> {
    async fn set_cooldown(
        &self,
        request: Request<SetCooldownRequest>,
    ) -> Result<Response<AdminResponse>, Status> {
        let r = request.into_inner();
        let length = from_duration("duration", r.duration, 31 * MAX_WAIT_LIMIT)?;
        let status = self
            .limiter
            .set_cooldown(&r.service, length, &r.reason)
            .await?;
        Ok(answer(status))
    }

    async fn clear_cooldown(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<AdminResponse>, Status> {
        let service = request.into_inner().service;
        let status = self
            .limiter
            .admin(&service, AdminOp::ClearCooldowns)
            .await?;
        Ok(answer(status))
    }

    async fn reset_service(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<AdminResponse>, Status> {
        let service = request.into_inner().service;
        let status = self.limiter.admin(&service, AdminOp::Reset).await?;
        Ok(answer(status))
    }

    async fn reload_config(
        &self,
        _request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let (summary, needs_restart) = self
            .reloader
            .reload("admin")
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(ReloadConfigResponse {
            added: summary.added,
            removed: summary.removed,
            changed: summary.changed,
            unchanged: summary.unchanged,
            needs_restart: needs_restart.into_iter().map(str::to_string).collect(),
        }))
    }
}
