//! The Envoy front door: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` on the same
//! port, so an egress gateway enforces the same limits as the workers. Each descriptor is mapped
//! to a service (explicit mappings first, then the entry named by `service_key`), and decided as
//! one call of that service that cannot wait: OK if a slot is free now, OVER_LIMIT otherwise,
//! with `retry-after` and `x-ratelimit-*` headers for Envoy to return. `hits_addend` (the
//! descriptor's, else the request's; 0 counts as 1) is the call's token cost. Descriptors that
//! map to no service are not limited (OK), as in Envoy's own rate limit service. A service in
//! shadow mode answers OK, with `x-sluice-shadow: over_limit`, `x-sluice-shadow-retry-after` and
//! `x-sluice-shadow-limit` when the call would have been refused. Like [`crate::grpc`], it only
//! converts types.

use std::sync::Arc;

use sluice::envoy_rls::{
    rate_limit_response::{Code, DescriptorStatus},
    rate_limit_service_server::RateLimitService,
    HeaderValue, RateLimitDescriptor, RateLimitRequest, RateLimitResponse,
};
use tonic::{Request, Response, Status};

use crate::{
    backend::Backend,
    core::{Decider, Decision, MICROS_PER_SEC},
    grpc::{shed, to_duration, InFlight},
    limiter::{AcquireRequest, Limiter},
};

/// Most descriptors in one request.
pub const MAX_DESCRIPTORS: usize = 32;

/// One explicit mapping: a descriptor holding all of `entries` is a call of `service`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorRoute {
    /// `key = value` pairs the descriptor must hold (it may hold more).
    pub entries: Vec<(String, String)>,
    /// The service it is a call of.
    pub service: String,
}

/// `[envoy]`: how Envoy's descriptors map to services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvoyConfig {
    /// Answer only requests of this domain (any when `None`).
    pub domain: Option<String>,
    /// The descriptor entry whose value names the service, when no route matches.
    pub service_key: String,
    /// Explicit mappings, tried in order.
    pub routes: Vec<DescriptorRoute>,
}

/// Default [`EnvoyConfig::service_key`].
pub const DEFAULT_SERVICE_KEY: &str = "sluice_service";

impl EnvoyConfig {
    /// The service `descriptor` is a call of, if any.
    fn service_of<'a>(&'a self, descriptor: &'a RateLimitDescriptor) -> Option<&'a str> {
        let has = |key: &str, value: &str| {
            descriptor
                .entries
                .iter()
                .any(|e| e.key == key && e.value == value)
        };
        if let Some(route) = self
            .routes
            .iter()
            .find(|r| r.entries.iter().all(|(k, v)| has(k, v)))
        {
            return Some(&route.service);
        }
        descriptor
            .entries
            .iter()
            .find(|e| e.key == self.service_key)
            .map(|e| e.value.as_str())
    }
}

/// The Envoy rate limit service over a [`Limiter`].
#[derive(Debug)]
pub struct EnvoyService<B> {
    limiter: Arc<Limiter<B>>,
    config: EnvoyConfig,
    in_flight: InFlight,
}

impl<B> EnvoyService<B> {
    /// Answers Envoy with `limiter`'s decisions, mapping descriptors by `config`, within the
    /// server's `in_flight` bound.
    pub fn new(limiter: Arc<Limiter<B>>, config: EnvoyConfig, in_flight: InFlight) -> Self {
        Self {
            limiter,
            config,
            in_flight,
        }
    }
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.into(),
        value,
    }
}

#[tonic::async_trait]
impl<B: Backend> RateLimitService for EnvoyService<B> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let _admitted = self.in_flight.admit().ok_or_else(shed)?;
        let r = request.into_inner();
        if let Some(domain) = &self.config.domain {
            if &r.domain != domain {
                return Err(Status::invalid_argument(format!(
                    "domain {:?} is not served (this server answers {domain:?})",
                    r.domain
                )));
            }
        }
        if r.descriptors.len() > MAX_DESCRIPTORS {
            return Err(Status::invalid_argument(format!(
                "descriptors: {} (at most {MAX_DESCRIPTORS})",
                r.descriptors.len()
            )));
        }
        let mut overall = Code::Ok;
        let mut statuses = Vec::with_capacity(r.descriptors.len());
        let mut headers = Vec::new();
        let mut shadow = Vec::new();
        for descriptor in &r.descriptors {
            let Some(service) = self.config.service_of(descriptor) else {
                statuses.push(DescriptorStatus {
                    code: Code::Ok as i32,
                    ..DescriptorStatus::default()
                });
                continue;
            };
            let hits = descriptor
                .hits_addend
                .as_ref()
                .map_or(u64::from(r.hits_addend), |h| h.value)
                .max(1);
            // The service's own in-flight limit or an ancestor's: Envoy would hold either.
            let in_flight_limited = self.limiter.service(service).is_ok_and(|s| {
                s.spec.concurrent().is_some()
                    || self
                        .limiter
                        .ancestors(&s.spec)
                        .iter()
                        .any(|a| a.concurrent().is_some())
            });
            if in_flight_limited {
                return Err(Status::failed_precondition(format!(
                    "service {service:?} has a concurrent limit, and Envoy never reports a call's \
                     end: route it through the Sluice API instead"
                )));
            }
            let acquire = AcquireRequest {
                service: service.to_string(),
                tokens: hits,
                ..AcquireRequest::default()
            };
            let (spec, answer) = self.limiter.decide(&acquire).await?;
            // Shadow mode: the call goes through; the headers say what would have happened.
            if let Some(Decision::Denied {
                retry_after,
                decider,
                ..
            }) = &answer.shadow
            {
                if shadow.is_empty() {
                    let seconds = retry_after.div_ceil(MICROS_PER_SEC).max(1);
                    shadow.push(header("x-sluice-shadow", "over_limit".into()));
                    shadow.push(header("x-sluice-shadow-retry-after", seconds.to_string()));
                    shadow.push(header(
                        "x-sluice-shadow-limit",
                        self.limiter.decider_name(&spec, *decider),
                    ));
                }
            }
            match answer.decision {
                Decision::Granted(_) => statuses.push(DescriptorStatus {
                    code: Code::Ok as i32,
                    ..DescriptorStatus::default()
                }),
                Decision::Denied {
                    retry_after,
                    decider,
                    ..
                } => {
                    overall = Code::OverLimit;
                    statuses.push(DescriptorStatus {
                        code: Code::OverLimit as i32,
                        duration_until_reset: Some(to_duration(retry_after)),
                        ..DescriptorStatus::default()
                    });
                    if headers.is_empty() {
                        let seconds = retry_after.div_ceil(MICROS_PER_SEC).max(1);
                        headers.push(header("retry-after", seconds.to_string()));
                        headers.push(header("x-ratelimit-reset", seconds.to_string()));
                        if let Decider::Limit(i) = decider {
                            if let Some(limit) = spec.limits.get(i) {
                                headers.push(header("x-ratelimit-limit", limit.amount.to_string()));
                                headers.push(header("x-ratelimit-remaining", "0".into()));
                            }
                        }
                    }
                }
            }
        }
        headers.extend(shadow);
        Ok(Response::new(RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            response_headers_to_add: headers,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::envoy_rls::rate_limit_descriptor::Entry;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            hits_addend: None,
        }
    }

    #[test]
    fn routes_come_first_then_the_service_key() {
        let config = EnvoyConfig {
            domain: None,
            service_key: DEFAULT_SERVICE_KEY.into(),
            routes: vec![DescriptorRoute {
                entries: vec![
                    ("provider".into(), "openai".into()),
                    ("model".into(), "gpt-4o".into()),
                ],
                service: "openai/gpt-4o".into(),
            }],
        };
        let both = descriptor(&[("provider", "openai"), ("model", "gpt-4o"), ("team", "a")]);
        assert_eq!(config.service_of(&both), Some("openai/gpt-4o"));
        let partial = descriptor(&[("provider", "openai")]);
        assert_eq!(config.service_of(&partial), None);
        let keyed = descriptor(&[("sluice_service", "anthropic/claude")]);
        assert_eq!(config.service_of(&keyed), Some("anthropic/claude"));
    }
}
