//! The `sluice.v1.Admin` gRPC service, for operators: set or clear a service's cooldown, reset
//! its state, reload the config. Served only when enabled (`--admin` / `admin = true`); otherwise callers get
//! UNIMPLEMENTED. Like [`crate::grpc`], it only converts types.

use std::sync::Arc;

use sluice::v1::{
    admin_server::Admin, AdminResponse, ReloadConfigRequest, ReloadConfigResponse, ServiceRequest,
    SetCooldownRequest,
};
use tonic::{Request, Response, Status};

use crate::{
    backend::Backend,
    core::AdminOp,
    grpc::{from_duration, service_status},
    limiter::{Limiter, MAX_WAIT_LIMIT},
    reload::Reloader,
};

/// The gRPC face of the limiter's operator actions.
#[derive(Debug)]
pub struct AdminService<B> {
    limiter: Arc<Limiter<B>>,
    reloader: Arc<Reloader<B>>,
}

impl<B> AdminService<B> {
    /// Serves `limiter`'s operator actions, reloading its config with `reloader`.
    pub fn new(limiter: Arc<Limiter<B>>, reloader: Arc<Reloader<B>>) -> Self {
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
        let done = self
            .reloader
            .reload("admin")
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(ReloadConfigResponse {
            added: done.summary.added,
            removed: done.summary.removed,
            changed: done.summary.changed,
            unchanged: done.summary.unchanged,
            needs_restart: done.needs_restart.into_iter().map(str::to_string).collect(),
        }))
    }
}
