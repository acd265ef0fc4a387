//! The service layer between the API and a [`Backend`]: looks services up, validates and bounds
//! every input, computes costs and cooldowns, and hands the backend only well-formed calls. It
//! knows nothing of protobuf; [`crate::grpc`] converts to and from these types. Acquires and
//! reloads are here; reports in [`report`], status and operator actions in [`status`], shadow
//! mode in [`shadow`].

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

mod report;
mod shadow;
mod status;

pub use shadow::Answer;

use crate::{
    backend::{AcquireCall, Backend},
    core::validate_service_name,
    core::{
        AdminOp, Algorithm, Class, CooldownCause, CooldownOrder, Cost, Decider, Decision,
        Dimension, LeaseId, Micros, Priorities, ReportCall, Scope, ServiceSnapshot, ServiceSpec,
        UsageUpdate, MAX_AMOUNT,
    },
    error::Error,
    metrics,
    provider::{self, Profile, MAX_BODY},
};

/// Longest `max_wait` accepted: one day.
pub use crate::core::MAX_WAIT_LIMIT;
/// Longest `request_id` accepted, in bytes.
pub const MAX_REQUEST_ID: usize = 256;
/// The `status_code` of a report for a call that got no answer (abandoned, or its answer lost).
pub const ABANDONED: u32 = 0;

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
    /// Priority class name; empty for the default class.
    pub priority: String,
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
    /// Which state took the report.
    pub scope: Scope,
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

/// A configured service: its limits and policy, and how its provider's answers are read.
#[derive(Debug)]
pub struct Service {
    /// Limits and policy.
    pub spec: Arc<ServiceSpec>,
    /// The reader of its provider's answers.
    pub profile: Profile,
}

/// The services in force, by name and in config order; replaced whole by a reload.
#[derive(Debug, Default)]
struct Catalog {
    by_name: HashMap<String, Arc<Service>>,
    order: Vec<Arc<Service>>,
}

impl Catalog {
    fn new(order: Vec<Arc<Service>>) -> Self {
        let by_name = order
            .iter()
            .map(|s| (s.spec.name.clone(), s.clone()))
            .collect();
        Self { by_name, order }
    }
}

/// What a reload changed, by service name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// New services.
    pub added: Vec<String>,
    /// Services no longer configured: they answer NOT_FOUND.
    pub removed: Vec<String>,
    /// Surviving services whose limits, policy or profile changed: their state is carried over.
    pub changed: Vec<String>,
    /// Surviving services configured as before: their state is untouched.
    pub unchanged: Vec<String>,
}

/// The rate-limit coordinator over one backend.
#[derive(Debug)]
pub struct Limiter<B> {
    backend: B,
    catalog: RwLock<Arc<Catalog>>,
    /// The priority classes; replaced whole by a reload.
    priorities: RwLock<Arc<Priorities>>,
    /// Held while a reload runs: reloads apply one after the other.
    reloading: tokio::sync::Mutex<()>,
    jitter: Jitter,
}

/// Jitter for overload cooldowns: 800–1200 ‰.
#[derive(Debug, Default)]
struct Jitter(crate::core::Unpredictable);

impl Jitter {
    fn next(&self) -> u32 {
        self.0.next_in(800, 1200)
    }
}

fn bounded(field: &str, v: u64) -> Result<u64, Error> {
    if v > MAX_AMOUNT {
        return Err(Error::InvalidArgument(format!(
            "{field}: {v} is above 2^50"
        )));
    }
    Ok(v)
}

impl<B: Backend> Limiter<B> {
    /// A limiter for `specs` on `backend`, which must hold the same specs. Each service reads its
    /// provider's answers with the built-in profile its spec names.
    pub fn new(specs: Vec<Arc<ServiceSpec>>, backend: B) -> Self {
        let services = specs
            .into_iter()
            .map(|spec| {
                let profile = builtin_profile(&spec.profile);
                Arc::new(Service { spec, profile })
            })
            .collect();
        Self {
            backend,
            catalog: RwLock::new(Arc::new(Catalog::new(services))),
            priorities: RwLock::default(),
            reloading: tokio::sync::Mutex::new(()),
            jitter: Jitter::default(),
        }
    }

    /// Uses `priorities` (e.g. the config's) in place of the built-in classes.
    pub fn with_priorities(self, priorities: Priorities) -> Self {
        self.set_priorities(priorities);
        self
    }

    /// Switches to reloaded priority classes.
    pub fn set_priorities(&self, priorities: Priorities) {
        *self
            .priorities
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(priorities);
    }

    /// The class called `name` (the default class for an empty name).
    fn class(&self, name: &str) -> Result<Class, Error> {
        let priorities = self
            .priorities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        priorities.class(name).ok_or_else(|| {
            let known: Vec<&str> = priorities.names().collect();
            Error::InvalidArgument(format!(
                "priority: unknown class {:?} (configured: {})",
                truncate(name),
                known.join(", ")
            ))
        })
    }

    /// Reads each service's answers with `profiles` (same order as the services), e.g. the
    /// config's, which include `custom` header tables.
    pub fn with_profiles(self, profiles: Vec<Profile>) -> Self {
        let catalog = self.catalog();
        if profiles.len() == catalog.order.len() {
            let services = catalog
                .order
                .iter()
                .zip(profiles)
                .map(|(s, profile)| {
                    Arc::new(Service {
                        spec: s.spec.clone(),
                        profile,
                    })
                })
                .collect();
            self.install(Catalog::new(services));
        }
        self
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install(&self, catalog: Catalog) {
        *self.catalog.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(catalog);
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Looks a service up, refusing malformed names before unknown ones.
    pub fn service(&self, name: &str) -> Result<Arc<Service>, Error> {
        validate_service_name(name).map_err(|e| Error::InvalidArgument(format!("service: {e}")))?;
        self.catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownService(name.to_string()))
    }

    /// The ancestors of `spec` as configured now, parent first.
    pub fn ancestors(&self, spec: &ServiceSpec) -> Vec<Arc<ServiceSpec>> {
        let catalog = self.catalog.read().unwrap_or_else(PoisonError::into_inner);
        // A catalog is validated whole (config::services), so the walk never breaks here.
        crate::core::ancestors(
            &spec.name,
            spec.parent.clone(),
            |name| catalog.by_name.get(name).map(|s| s.spec.clone()),
            |spec| spec.parent.clone(),
        )
        .unwrap_or_default()
    }

    /// The limit `decider` points at, as `(service, limit)`: one of `spec`'s or an ancestor's.
    pub fn decider_limit(
        &self,
        spec: &Arc<ServiceSpec>,
        decider: Decider,
    ) -> Option<(Arc<ServiceSpec>, usize)> {
        match decider {
            Decider::Limit(i) => Some((spec.clone(), i)),
            Decider::Ancestor {
                level,
                limit: Some(i),
            } => {
                let ancestor = self
                    .ancestors(spec)
                    .into_iter()
                    .nth(usize::from(level).checked_sub(1)?)?;
                Some((ancestor, usize::from(i)))
            }
            _ => None,
        }
    }

    /// What decided a slot, for the API: a limit's name (an ancestor's prefixed by its service,
    /// e.g. `openai: tokens/1m`), `cooldown` (`openai: cooldown`), or empty.
    pub fn decider_name(&self, spec: &Arc<ServiceSpec>, decider: Decider) -> String {
        match decider {
            Decider::Now => String::new(),
            Decider::Cooldown => "cooldown".into(),
            Decider::Ancestor { level, limit: None } => self
                .ancestors(spec)
                .get(usize::from(level).saturating_sub(1))
                .map_or_else(|| "cooldown".into(), |a| format!("{}: cooldown", a.name)),
            _ => match self.decider_limit(spec, decider) {
                Some((owner, i)) => {
                    let name = owner.limits.get(i).map_or("", |l| l.name.as_str());
                    if Arc::ptr_eq(&owner, spec) {
                        name.to_string()
                    } else {
                        format!("{}: {name}", owner.name)
                    }
                }
                None => String::new(),
            },
        }
    }

    /// Runs `f` on the service `name` as configured now. A call that raced a reload (the backend
    /// answered [`Error::Reconfigured`]) runs once more on the new configuration, so a reload
    /// never fails a caller's request.
    async fn on_service<T, F, Fut>(&self, name: &str, f: F) -> Result<T, Error>
    where
        F: Fn(Arc<Service>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        match f(self.service(name)?).await {
            Err(Error::Reconfigured(_)) => {
                // A reload is switching the backend and the catalog: wait until it is done.
                drop(self.reloading.lock().await);
                f(self.service(name)?).await
            }
            other => other,
        }
    }

    /// Switches to a reloaded configuration: `specs` with their `profiles` (same order). A service
    /// configured exactly as before keeps its state untouched, a changed one keeps its state carried
    /// over to its new limits, a new one starts empty, and a removed one answers NOT_FOUND from
    /// now on. Refused whole, with nothing changed, if the backend cannot hold it.
    pub async fn reconfigure(
        &self,
        specs: Vec<ServiceSpec>,
        profiles: Vec<Profile>,
    ) -> Result<ReloadSummary, Error> {
        if specs.len() != profiles.len() {
            return Err(Error::InvalidArgument(
                "one profile per service is required".into(),
            ));
        }
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.catalog();
        let mut summary = ReloadSummary::default();
        let mut services = Vec::with_capacity(specs.len());
        for (spec, profile) in specs.into_iter().zip(profiles) {
            let name = spec.name.clone();
            let spec = match current.by_name.get(&name) {
                Some(old) if old.spec.same_as(&spec) && old.profile == profile => {
                    summary.unchanged.push(name);
                    old.spec.clone()
                }
                Some(old) if old.spec.same_as(&spec) => {
                    summary.changed.push(name);
                    old.spec.clone()
                }
                Some(_) => {
                    summary.changed.push(name);
                    Arc::new(spec)
                }
                None => {
                    summary.added.push(name);
                    Arc::new(spec)
                }
            };
            services.push(Arc::new(Service { spec, profile }));
        }
        let next = Catalog::new(services);
        summary.removed = current
            .order
            .iter()
            .map(|s| &s.spec.name)
            .filter(|name| !next.by_name.contains_key(*name))
            .cloned()
            .collect();
        let specs: Vec<_> = next.order.iter().map(|s| s.spec.clone()).collect();
        self.backend.reconfigure(&specs).await?;
        self.install(next);
        Ok(summary)
    }

    /// Reserves a slot, or answers with a denial.
    pub async fn acquire(
        &self,
        req: &AcquireRequest,
    ) -> Result<(Arc<ServiceSpec>, Decision), Error> {
        self.on_service(&req.service, |service| self.acquire_on(service, req))
            .await
    }

    async fn acquire_on(
        &self,
        service: Arc<Service>,
        req: &AcquireRequest,
    ) -> Result<(Arc<ServiceSpec>, Decision), Error> {
        let spec = &service.spec;
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
        for ancestor in self.ancestors(spec) {
            ancestor.check_fits(&cost).map_err(|mut e| {
                e.limit = format!("{}: {}", ancestor.name, e.limit);
                e
            })?;
        }
        let call = AcquireCall {
            cost,
            max_wait: req.max_wait,
            request_id: (!req.request_id.is_empty()).then_some(req.request_id.as_str()),
            class: self.class(&req.priority)?,
        };
        let started = metrics::start();
        let decision = self.backend.acquire(spec, call).await;
        metrics::backend("acquire", started, decision.is_err());
        match &decision {
            Ok(Decision::Granted(g)) => {
                metrics::acquire(&spec.name, "granted", Some(g.wait));
                metrics::scoped(&spec.name, "acquire", g.scope);
            }
            Ok(Decision::Denied { scope, .. }) => {
                metrics::acquire(&spec.name, "denied", None);
                metrics::scoped(&spec.name, "acquire", *scope);
            }
            Err(_) => metrics::acquire(&spec.name, "error", None),
        }
        Ok((spec.clone(), decision?))
    }
}

/// The built-in profile `name`, or `generic` for a name without one.
fn builtin_profile(name: &str) -> Profile {
    Profile::builtin(name).unwrap_or_else(|| {
        Profile::builtin("generic").unwrap_or_else(|| Profile::custom(Vec::new()))
    })
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
