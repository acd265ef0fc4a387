//! The service layer between the API and a [`Backend`]: looks services up, validates and bounds
//! every input, computes costs and cooldowns, and hands the backend only well-formed calls. It
//! knows nothing of protobuf; [`crate::grpc`] converts to and from these types.

use std::{
    collections::{hash_map::RandomState, HashMap},
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::{
    backend::{AcquireCall, Backend},
    config::validate_service_name,
    core::{
        AdminOp, CooldownCause, CooldownOrder, Cost, Decision, Dimension, LeaseId, Micros,
        ReportCall, ServiceSnapshot, ServiceSpec, UsageUpdate, MAX_AMOUNT,
    },
    error::Error,
    metrics,
    provider::{self, Profile, MAX_BODY},
};

/// Longest `max_wait` accepted: one day.
pub const MAX_WAIT_LIMIT: Micros = 86_400 * 1_000_000;
/// Longest `request_id` accepted, in bytes.
pub const MAX_REQUEST_ID: usize = 256;

/// A request for a slot, as received.
#[derive(Clone, Debug, Default)]
pub struct AcquireRequest {
    /// Service name.
    pub service: String,
    /// Estimated total tokens (0: input + output).
    pub tokens: u64,
    /// Estimated input tokens.
    pub input_tokens: u64,
    /// Estimated output tokens.
    pub output_tokens: u64,
    /// Longest acceptable wait.
    pub max_wait: Micros,
    /// Idempotency key; empty for none.
    pub request_id: String,
}

/// Real usage as a provider reported it.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsageReport {
    /// Input tokens.
    pub input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
    /// Total tokens.
    pub total_tokens: Option<u64>,
}

/// A provider's answer, as received.
#[derive(Clone, Debug, Default)]
pub struct ReportRequest {
    /// Service name.
    pub service: String,
    /// Lease from Acquire; empty for none.
    pub lease_id: String,
    /// HTTP status.
    pub status_code: u32,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Real usage.
    pub usage: Option<UsageReport>,
    /// Response body (read by profiles that put the wait there, e.g. Gemini); may be empty.
    pub body: Vec<u8>,
}

/// What a report changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportAnswer {
    /// Cooldown still active.
    pub cooldown: Micros,
    /// The report set or lengthened it.
    pub cooldown_set: bool,
    /// Notes on what was applied or ignored.
    pub detail: String,
}

/// A service's configuration with its live state.
#[derive(Clone, Debug)]
pub struct ServiceStatus {
    /// The configuration.
    pub spec: Arc<ServiceSpec>,
    /// The live state.
    pub snapshot: ServiceSnapshot,
    /// Per limit, the budget the provider's last answer named for it, if any.
    pub learned: Vec<Option<u64>>,
}

/// The rate-limit coordinator over one backend.
#[derive(Debug)]
pub struct Limiter<B> {
    backend: B,
    by_name: HashMap<String, Arc<ServiceSpec>>,
    specs: Vec<Arc<ServiceSpec>>,
    profiles: Vec<Profile>,
    jitter: Jitter,
}

/// Jitter for overload cooldowns: 800–1200 ‰, from a keyed hash of a counter.
#[derive(Debug, Default)]
struct Jitter {
    keys: RandomState,
    calls: AtomicU64,
}

impl Jitter {
    fn next(&self) -> u32 {
        let mut hasher = self.keys.build_hasher();
        hasher.write_u64(self.calls.fetch_add(1, Ordering::Relaxed));
        800 + (hasher.finish() % 401) as u32
    }
}

fn bounded(field: &str, v: u64) -> Result<u64, Error> {
    if v > MAX_AMOUNT {
        return Err(Error::InvalidArgument(format!(
            "{field}: {v} is above 2^53"
        )));
    }
    Ok(v)
}

impl<B: Backend> Limiter<B> {
    /// A limiter for `specs` (indexed by position) on `backend`.
    pub fn new(specs: Vec<Arc<ServiceSpec>>, backend: B) -> Self {
        let by_name = specs.iter().map(|s| (s.name.clone(), s.clone())).collect();
        let profiles = specs
            .iter()
            .map(|s| {
                Profile::builtin(&s.profile).unwrap_or_else(|| {
                    Profile::builtin("generic").unwrap_or_else(|| Profile::custom(Vec::new()))
                })
            })
            .collect();
        Self {
            backend,
            by_name,
            specs,
            profiles,
            jitter: Jitter::default(),
        }
    }

    /// Reads each service's answers with `profiles` (same order as the services), e.g. the
    /// config's, which include `custom` header tables.
    pub fn with_profiles(mut self, profiles: Vec<Profile>) -> Self {
        if profiles.len() == self.specs.len() {
            self.profiles = profiles;
        }
        self
    }

    fn profile(&self, spec: &ServiceSpec) -> Result<&Profile, Error> {
        self.profiles
            .get(spec.index)
            .ok_or_else(|| Error::Unavailable(format!("no profile for {}", spec.name)))
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Looks a service up, refusing malformed names before unknown ones.
    pub fn service(&self, name: &str) -> Result<&Arc<ServiceSpec>, Error> {
        validate_service_name(name).map_err(|e| Error::InvalidArgument(format!("service: {e}")))?;
        self.by_name
            .get(name)
            .ok_or_else(|| Error::UnknownService(name.to_string()))
    }

    /// Reserves a slot, or answers with a denial.
    pub async fn acquire(
        &self,
        req: &AcquireRequest,
    ) -> Result<(Arc<ServiceSpec>, Decision), Error> {
        let spec = self.service(&req.service)?;
        let cost = Cost::of_call(
            bounded("tokens", req.tokens)?,
            bounded("input_tokens", req.input_tokens)?,
            bounded("output_tokens", req.output_tokens)?,
        );
        bounded("tokens", cost.0[1])?;
        if req.max_wait > MAX_WAIT_LIMIT {
            return Err(Error::InvalidArgument("max_wait: longer than 1 day".into()));
        }
        if req.request_id.len() > MAX_REQUEST_ID {
            return Err(Error::InvalidArgument(format!(
                "request_id: longer than {MAX_REQUEST_ID} bytes"
            )));
        }
        spec.check_fits(&cost)?;
        let call = AcquireCall {
            cost,
            max_wait: req.max_wait,
            request_id: (!req.request_id.is_empty()).then_some(req.request_id.as_str()),
        };
        let started = metrics::start();
        let decision = self.backend.acquire(spec, call).await;
        metrics::backend("acquire", started, decision.is_err());
        match &decision {
            Ok(Decision::Granted(g)) => metrics::acquire(&spec.name, "granted", Some(g.wait)),
            Ok(Decision::Denied { .. }) => metrics::acquire(&spec.name, "denied", None),
            Err(_) => metrics::acquire(&spec.name, "error", None),
        }
        Ok((spec.clone(), decision?))
    }

    /// Applies a provider's answer: cooldown, usage, remembered headers.
    pub async fn report(&self, req: ReportRequest) -> Result<ReportAnswer, Error> {
        let spec = self.service(&req.service)?;
        if !(100..=999).contains(&req.status_code) {
            return Err(Error::InvalidArgument(format!(
                "status_code: {} is not an HTTP status (100..=999)",
                req.status_code
            )));
        }
        if req.body.len() > MAX_BODY {
            return Err(Error::InvalidArgument(format!(
                "body: {} bytes (at most {MAX_BODY})",
                req.body.len()
            )));
        }
        let lease = if req.lease_id.is_empty() {
            None
        } else {
            Some(req.lease_id.parse::<LeaseId>().map_err(|_| {
                Error::InvalidArgument(format!(
                    "lease_id: {:?} is malformed",
                    truncate(&req.lease_id)
                ))
            })?)
        };
        let usage = req.usage.map(usage_update).transpose()?;
        let headers = provider::validate_headers(req.headers).map_err(Error::InvalidArgument)?;
        let profile = self.profile(spec)?;
        let reading = provider::read(profile, &headers, &req.body, wall_clock_now());
        let mut notes = reading.notes.clone();
        let plan = provider::plan(
            spec,
            profile,
            req.status_code,
            &reading,
            self.jitter.next(),
            &mut notes,
        );
        let causes: Vec<String> = plan
            .cooldowns
            .iter()
            .map(|o| o.cause.source.clone())
            .chain(plan.overload.iter().map(|o| o.cause.source.clone()))
            .collect();
        let call = ReportCall {
            lease,
            usage,
            cooldowns: plan.cooldowns,
            overload: plan.overload,
            success: plan.success,
            remaining: plan.remaining,
            adopt: plan.adopt,
            observation: Some((req.status_code, provider::rate_limit_headers(&headers))),
        };
        metrics::report(&spec.name, req.status_code);
        let started = metrics::start();
        let outcome = self.backend.report(spec, call).await;
        metrics::backend("report", started, outcome.is_err());
        let outcome = outcome?;
        if outcome.cooldown_set {
            for cause in &causes {
                metrics::cooldown(&spec.name, cause, outcome.cooldown_remaining);
            }
        }
        if outcome.usage_applied {
            notes.push("usage applied".into());
        } else if outcome.lease_unknown {
            notes.push("lease unknown or expired: usage ignored".into());
        }
        if outcome.outside_usage > 0 {
            notes.push(format!(
                "charged {} as usage from outside Sluice",
                outcome.outside_usage
            ));
        }
        if outcome.cooldown_set {
            notes.insert(0, format!("cooldown set ({})", causes.join(", ")));
        }
        Ok(ReportAnswer {
            cooldown: outcome.cooldown_remaining,
            cooldown_set: outcome.cooldown_set,
            detail: notes.join("; "),
        })
    }

    /// The live state of one service.
    pub async fn status(&self, name: &str) -> Result<ServiceStatus, Error> {
        let spec = self.service(name)?;
        self.status_of(spec).await
    }

    async fn status_of(&self, spec: &Arc<ServiceSpec>) -> Result<ServiceStatus, Error> {
        let started = metrics::start();
        let snapshot = self.backend.status(spec).await;
        metrics::backend("status", started, snapshot.is_err());
        let snapshot = snapshot?;
        let learned = self.learned(spec, &snapshot)?;
        Ok(ServiceStatus {
            spec: spec.clone(),
            snapshot,
            learned,
        })
    }

    /// The budgets the provider's last answer named, per configured limit.
    fn learned(
        &self,
        spec: &ServiceSpec,
        snapshot: &ServiceSnapshot,
    ) -> Result<Vec<Option<u64>>, Error> {
        let mut learned = vec![None; spec.limits.len()];
        let Some(report) = &snapshot.last_report else {
            return Ok(learned);
        };
        let headers: Vec<provider::Header> = report
            .headers
            .iter()
            .map(|(name, value)| provider::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        let reading = provider::read(self.profile(spec)?, &headers, &[], report.at);
        for dimension in Dimension::ALL {
            let r = &reading.dimensions[dimension.index()];
            if let (Some(limit), Some(i)) =
                (r.limit, provider::matching_limit(spec, dimension, r.window))
            {
                learned[i] = Some(limit);
            }
        }
        Ok(learned)
    }

    /// Operator: sets (or lengthens) a service-wide cooldown of `length`, with `reason` as its
    /// cause; queued slots it covers move back as for a provider's cooldown.
    pub async fn set_cooldown(
        &self,
        name: &str,
        length: Micros,
        reason: &str,
    ) -> Result<ServiceStatus, Error> {
        let spec = self.service(name)?;
        if length == 0 || length > spec.max_cooldown {
            return Err(Error::InvalidArgument(format!(
                "duration: must be more than 0 and at most max_cooldown ({})",
                crate::core::format_duration(spec.max_cooldown)
            )));
        }
        let reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let call = ReportCall {
            cooldowns: vec![CooldownOrder {
                dimension: Dimension::Requests,
                length,
                cause: CooldownCause {
                    status_code: 0,
                    source: format!("admin: {}", if reason.is_empty() { "set" } else { &reason }),
                },
            }],
            ..ReportCall::default()
        };
        self.backend.report(spec, call).await?;
        tracing::info!(service = %spec.name, cooldown_ms = length / 1_000, reason = %reason, "admin: cooldown set");
        self.status_of(spec).await
    }

    /// Operator: an action on a service's state (clear its cooldowns, or reset it).
    pub async fn admin(&self, name: &str, op: AdminOp) -> Result<ServiceStatus, Error> {
        let spec = self.service(name)?;
        self.backend.admin(spec, op).await?;
        tracing::info!(service = %spec.name, action = ?op, "admin action");
        self.status_of(spec).await
    }

    /// The live state of every service, in config order.
    pub async fn list(&self) -> Result<Vec<ServiceStatus>, Error> {
        let mut out = Vec::with_capacity(self.specs.len());
        for spec in &self.specs {
            out.push(self.status_of(spec).await?);
        }
        Ok(out)
    }
}

/// Wall-clock time, for provider answers that name an absolute time (HTTP-date).
fn wall_clock_now() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn usage_update(u: UsageReport) -> Result<UsageUpdate, Error> {
    let input = u
        .input_tokens
        .map(|v| bounded("usage.input_tokens", v))
        .transpose()?;
    let output = u
        .output_tokens
        .map(|v| bounded("usage.output_tokens", v))
        .transpose()?;
    let total = match u.total_tokens {
        Some(v) => Some(bounded("usage.total_tokens", v)?),
        None => input.zip(output).map(|(i, o)| i + o),
    };
    Ok([None, total, input, output])
}
