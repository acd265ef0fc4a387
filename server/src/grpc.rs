//! The `sluice.v1.RateLimiter` gRPC service. It only converts: protobuf messages into the
//! [`limiter`](crate::limiter) types and back, and [`Error`] into `tonic::Status` (the one place
//! where error kinds meet status codes).

use std::sync::Arc;

use sluice::v1::{
    self as pb, rate_limiter_server::RateLimiter, AcquireRequest, AcquireResponse,
    GetStatusRequest, GetStatusResponse, ListServicesRequest, ListServicesResponse,
    ReportResponseRequest, ReportResponseResponse,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use crate::{
    backend::Backend,
    core::{
        Algorithm, CooldownCause, Decider, Decision, Dimension, Micros, Scope, ServiceSpec,
        MICROS_PER_SEC,
    },
    error::Error,
    limiter::{self, Limiter, ServiceStatus, UsageReport},
    metrics,
};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::UnknownService(_) => Status::not_found(message),
            Error::NeverFits(_) => Status::failed_precondition(message),
            Error::Unavailable(_) => {
                // One line per backend failure; the caller sees UNAVAILABLE.
                tracing::warn!(error = %message, "backend failed");
                Status::unavailable(message)
            }
            Error::Reconfigured(_) => Status::unavailable(message),
            Error::Overloaded(_) => {
                tracing::warn!(error = %message, "shedding load");
                Status::resource_exhausted(message)
            }
        }
    }
}

/// The calls being decided, shared by every service that decides: beyond `max_in_flight` of
/// them, calls are refused at once with `RESOURCE_EXHAUSTED` instead of queueing (load shedding).
#[derive(Clone, Debug)]
pub struct InFlight(Arc<Semaphore>);

/// How many calls the server decides at once unless `max_in_flight` says otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

impl InFlight {
    /// Room for `max` calls at once.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.max(1))))
    }

    /// A permit to decide one call, or none when `max_in_flight` calls are under way (answer
    /// [`shed`]).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// The gRPC face of a [`Limiter`].
#[derive(Debug)]
pub struct RateLimiterService<B> {
    limiter: Arc<Limiter<B>>,
    in_flight: InFlight,
}

impl<B> RateLimiterService<B> {
    /// Serves `limiter`, deciding at most [`DEFAULT_MAX_IN_FLIGHT`] calls at once.
    pub fn new(limiter: Arc<Limiter<B>>) -> Self {
        Self {
            limiter,
            in_flight: InFlight::new(DEFAULT_MAX_IN_FLIGHT),
        }
    }

    /// Shares `in_flight` (its bound and its calls) with other services.
    pub fn with_in_flight(mut self, in_flight: InFlight) -> Self {
        self.in_flight = in_flight;
        self
    }

    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.admit()
    }
}

impl<B: Backend> RateLimiterService<B> {
    /// The `AcquireResponse` of `decision` on `spec`.
    fn response(&self, spec: &Arc<ServiceSpec>, decision: Decision) -> AcquireResponse {
        match decision {
            Decision::Granted(g) => AcquireResponse {
                granted: true,
                lease_id: g.lease_id.to_string(),
                wait: Some(to_duration(g.wait)),
                retry_after: None,
                reason: pb::Reason::Granted as i32,
                limit: self.limiter.decider_name(spec, g.decider),
                slot_time: Some(to_timestamp(g.slot)),
                scope: scope(g.scope) as i32,
                shadow: None,
            },
            Decision::Denied {
                retry_after,
                decider,
                scope: decided_in,
            } => AcquireResponse {
                granted: false,
                lease_id: String::new(),
                wait: None,
                retry_after: Some(to_duration(retry_after)),
                reason: match decider {
                    Decider::Cooldown | Decider::Ancestor { limit: None, .. } => {
                        pb::Reason::Cooldown
                    }
                    Decider::Now => pb::Reason::Unspecified,
                    _ => match self.limiter.decider_limit(spec, decider) {
                        Some((owner, i))
                            if owner
                                .limits
                                .get(i)
                                .is_some_and(|l| l.algorithm == Algorithm::Concurrent) =>
                        {
                            pb::Reason::InFlight
                        }
                        _ => pb::Reason::Limit,
                    },
                } as i32,
                limit: self.limiter.decider_name(spec, decider),
                slot_time: None,
                scope: scope(decided_in) as i32,
                shadow: None,
            },
        }
    }
}

/// The answer to a call shed at `max_in_flight` (counted, not logged: shedding is what overload
/// looks like, and a line per call would add to it).
pub fn shed() -> Status {
    metrics::shed();
    Status::resource_exhausted("server busy: too many calls in flight; retry shortly")
}

/// Longest Duration protobuf allows, in seconds (10,000 years).
const MAX_PROTO_DURATION_SECS: Micros = 315_576_000_000;
/// Last second protobuf's Timestamp allows (9999-12-31T23:59:59Z).
const MAX_PROTO_TIMESTAMP_SECS: Micros = 253_402_300_799;

/// Converts microseconds into a protobuf `Duration`, clamped to its range.
pub fn to_duration(micros: Micros) -> prost_types::Duration {
    // protobuf's Duration spans ±10,000 years; a longer hint (a bucket that drains over ages)
    // is clamped so every client can decode it.
    let micros = micros.min(MAX_PROTO_DURATION_SECS * MICROS_PER_SEC);
    prost_types::Duration {
        seconds: (micros / MICROS_PER_SEC) as i64,
        nanos: ((micros % MICROS_PER_SEC) * 1_000) as i32,
    }
}

fn to_timestamp(micros: Micros) -> prost_types::Timestamp {
    // protobuf's Timestamp ends with year 9999.
    let micros = micros.min(MAX_PROTO_TIMESTAMP_SECS * MICROS_PER_SEC);
    prost_types::Timestamp {
        seconds: (micros / MICROS_PER_SEC) as i64,
        nanos: ((micros % MICROS_PER_SEC) * 1_000) as i32,
    }
}

/// Converts a protobuf `Duration` into microseconds (rounded up), refusing negative and
/// non-normalised values and anything longer than `max`.
pub fn from_duration(
    field: &str,
    d: Option<prost_types::Duration>,
    max: Micros,
) -> Result<Micros, Error> {
    let Some(d) = d else { return Ok(0) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(Error::InvalidArgument(format!(
            "{field}: must be a non-negative duration (seconds {}, nanos {})",
            d.seconds, d.nanos
        )));
    }
    let micros = u128::from(d.seconds as u64) * u128::from(MICROS_PER_SEC)
        + u128::from((d.nanos as u64).div_ceil(1_000));
    if micros > u128::from(max) {
        return Err(Error::InvalidArgument(format!(
            "{field}: longer than {}",
            crate::core::format_duration(max)
        )));
    }
    Ok(micros as Micros)
}

fn scope(scope: Scope) -> pb::Scope {
    match scope {
        Scope::Shared => pb::Scope::Shared,
        Scope::Local => pb::Scope::Local,
        Scope::FailOpen => pb::Scope::FailOpen,
    }
}

fn header_pairs(headers: Vec<pb::Header>) -> Vec<(String, String)> {
    headers.into_iter().map(|h| (h.name, h.value)).collect()
}

pub(crate) fn service_status(status: ServiceStatus) -> pb::ServiceStatus {
    let because: Vec<String> = (0..status.spec.limits.len())
        .map(|i| status.effective_because(i))
        .collect();
    let ServiceStatus {
        spec,
        snapshot,
        learned,
    } = status;
    let limits = spec
        .limits
        .iter()
        .zip(&snapshot.limits)
        .zip(learned)
        .zip(because)
        .map(|(((limit, live), learned), because)| {
            pb::LimitStatus {
                name: limit.name.clone(),
                dimension: limit.dimension_name().into(),
                amount: limit.amount,
                window: Some(to_duration(limit.window)),
                algorithm: limit.algorithm.as_str().into(),
                // A bucket's capacity in force (an adopted budget's, at the adaptive scale).
                burst: match limit.algorithm {
                    Algorithm::TokenBucket { .. } => live.burst,
                    Algorithm::SlidingWindow | Algorithm::Concurrent => limit.amount,
                },
                used: live.used,
                remaining: live.remaining,
                reset_after: Some(to_duration(live.reset_after)),
                learned_amount: learned,
                effective_amount: live.amount,
                effective_because: because,
            }
        })
        .collect();
    let cooldown =
        |dimension: Dimension, remaining: Micros, cause: CooldownCause| pb::CooldownStatus {
            remaining: Some(to_duration(remaining)),
            cause: cause.source,
            status_code: cause.status_code,
            dimension: dimension.as_str().into(),
        };
    pb::ServiceStatus {
        service: spec.name.clone(),
        profile: spec.profile.clone(),
        limits,
        cooldown: snapshot
            .cooldown
            .map(|(remaining, cause)| cooldown(Dimension::Requests, remaining, cause)),
        dimension_cooldowns: snapshot
            .dimension_cooldowns
            .into_iter()
            .map(|(d, remaining, cause)| cooldown(d, remaining, cause))
            .collect(),
        queued: snapshot.queued,
        scope: scope(snapshot.scope) as i32,
        adaptive_permille: snapshot.adaptive_scale,
        mode: spec.mode.as_str().into(),
        last_report: snapshot.last_report.map(|o| pb::ProviderReport {
            status_code: o.status_code,
            age: Some(to_duration(snapshot.now.saturating_sub(o.at))),
            headers: o
                .headers
                .into_iter()
                .map(|(name, value)| pb::Header { name, value })
                .collect(),
        }),
    }
}

#[tonic::async_trait]
impl<B: Backend> RateLimiter for RateLimiterService<B> {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let _admitted = self.admit().ok_or_else(shed)?;
        let r = request.into_inner();
        let req = limiter::AcquireRequest {
            max_wait: from_duration("max_wait", r.max_wait, limiter::MAX_WAIT_LIMIT)?,
            service: r.service,
            tokens: r.tokens,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            request_id: r.request_id,
            priority: r.priority,
        };
        let (spec, answer) = self.limiter.decide(&req).await?;
        let mut response = self.response(&spec, answer.decision);
        response.shadow = answer.shadow.map(|decided| {
            let would = self.response(&spec, decided);
            pb::ShadowDecision {
                granted: would.granted,
                wait: would.wait,
                retry_after: would.retry_after,
                reason: would.reason,
                limit: would.limit,
            }
        });
        tracing::debug!(
            service = %req.service,
            client_id = %r.client_id,
            granted = response.granted,
            limit = %response.limit,
            "acquire"
        );
        Ok(Response::new(response))
    }

    async fn report_response(
        &self,
        request: Request<ReportResponseRequest>,
    ) -> Result<Response<ReportResponseResponse>, Status> {
        let _admitted = self.admit().ok_or_else(shed)?;
        let r = request.into_inner();
        let req = limiter::ReportRequest {
            service: r.service,
            lease_id: r.lease_id,
            status_code: r.status_code,
            headers: header_pairs(r.headers),
            usage: r.usage.map(|u| UsageReport {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                total_tokens: u.total_tokens,
            }),
            body: r.body,
        };
        let service = req.service.clone();
        let status_code = req.status_code;
        let answer = self.limiter.report(req).await?;
        if answer.cooldown_set {
            tracing::info!(
                service = %service,
                status_code,
                cooldown_ms = answer.cooldown / 1_000,
                detail = %answer.detail,
                "cooldown set"
            );
        }
        Ok(Response::new(ReportResponseResponse {
            cooldown: Some(to_duration(answer.cooldown)),
            cooldown_set: answer.cooldown_set,
            detail: answer.detail,
            scope: scope(answer.scope) as i32,
        }))
    }

    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let _admitted = self.admit().ok_or_else(shed)?;
        let status = self.limiter.status(&request.into_inner().service).await?;
        Ok(Response::new(GetStatusResponse {
            status: Some(service_status(status)),
        }))
    }

    async fn list_services(
        &self,
        _request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let _admitted = self.admit().ok_or_else(shed)?;
        let services = self.limiter.list().await?;
        Ok(Response::new(ListServicesResponse {
            services: services.into_iter().map(service_status).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_both_ways_and_refuse_bad_values() {
        assert_eq!(
            to_duration(1_500_000),
            prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(
            from_duration("f", d(1, 500_000_000), 10_000_000).unwrap(),
            1_500_000
        );
        assert_eq!(from_duration("f", d(0, 1), 10_000_000).unwrap(), 1);
        assert_eq!(from_duration("f", None, 10).unwrap(), 0);
        assert!(from_duration("f", d(-1, 0), 10_000_000).is_err());
        assert!(from_duration("f", d(0, -5), 10_000_000).is_err());
        assert!(from_duration("f", d(0, 1_000_000_000), 10_000_000).is_err());
        assert!(from_duration("f", d(11, 0), 10_000_000).is_err());
        assert!(from_duration("f", d(i64::MAX, 999_999_999), 10_000_000).is_err());
    }

    #[test]
    fn huge_values_are_clamped_into_protobufs_range() {
        assert_eq!(
            to_duration(Micros::MAX),
            prost_types::Duration {
                seconds: 315_576_000_000,
                nanos: 0
            }
        );
        assert_eq!(to_timestamp(Micros::MAX).seconds, 253_402_300_799);
        assert_eq!(to_timestamp(Micros::MAX).nanos, 0);
    }
}
