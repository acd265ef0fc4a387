//! The no-op server: `sluice.v1.RateLimiter` answering every `Acquire` with a fixed grant of the
//! same shape as a real one, on the same tonic stack. The load it sustains is the ceiling of gRPC
//! on this machine.

use std::time::SystemTime;

use sluice::v1::{
    rate_limiter_server::{RateLimiter, RateLimiterServer},
    AcquireRequest, AcquireResponse, GetStatusRequest, GetStatusResponse, ListServicesRequest,
    ListServicesResponse, Reason, ReportResponseRequest, ReportResponseResponse,
};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{Request, Response, Status};

struct Noop;

#[tonic::async_trait]
impl RateLimiter for Noop {
    async fn acquire(
        &self,
        _: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        Ok(Response::new(AcquireResponse {
            granted: true,
            lease_id: "00000000deadbeef-1".into(),
            wait: Some(prost_types::Duration::default()),
            retry_after: None,
            reason: Reason::Granted as i32,
            limit: String::new(),
            slot_time: Some(prost_types::Timestamp::from(SystemTime::now())),
            scope: 0,
            shadow: None,
        }))
    }

    async fn report_response(
        &self,
        _: Request<ReportResponseRequest>,
    ) -> Result<Response<ReportResponseResponse>, Status> {
        Ok(Response::new(ReportResponseResponse::default()))
    }

    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        Ok(Response::new(GetStatusResponse::default()))
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        Ok(Response::new(ListServicesResponse::default()))
    }
}

/// Serves the no-op service on `listener` until `stop` fires.
/// The server runs as a spawned task, as `sluice_server::run` runs it, so both are scheduled
/// alike.
pub async fn serve(listener: TcpListener, stop: oneshot::Receiver<()>) -> anyhow::Result<()> {
    let server = tonic::transport::Server::builder()
        .add_service(RateLimiterServer::new(Noop))
        .serve_with_incoming_shutdown(sluice_server::server::incoming(listener), async move {
            let _ = stop.await;
        });
    tokio::spawn(server).await??;
    Ok(())
}
