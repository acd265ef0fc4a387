//! What every behaviour test shares: a catalogue of services ([`CONFIG`]) from which each test
//! declares the ones it uses ([`limiter`]), a fresh limiter on a backend, and the small steps
//! (acquire, expect a grant or a denial, report).

use std::{sync::Arc, time::Duration};

use sluice_server::{
    config::Config,
    core::ServiceSpec,
    error::Error,
    limiter::{AcquireRequest, Limiter, ReloadSummary, ReportRequest},
};

use crate::TestBackend;

/// The services the tests of limits, leases, reports and reloads pick from (each names its own).
pub const CONFIG: &str = r#"
[[services]]
name = "rpm"
limits = [{ dimension = "requests", amount = 3, window = "10s" }]

[[services]]
name = "tpm"
default_cooldown = "2s"
max_cooldown = "30s"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m" },
]

[[services]]
name = "bucket"
limits = [{ dimension = "tokens", amount = 600, window = "1m", algorithm = "token_bucket", burst = 100 }]

[[services]]
name = "oai"
profile = "openai"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m" },
]

[[services]]
name = "claude"
profile = "anthropic"
quota_cooldown = "10m"
limits = [{ dimension = "requests", amount = 50, window = "1m" }]

[[services]]
name = "gemini"
profile = "gemini"
quota_cooldown = "20m"
limits = [{ dimension = "requests", amount = 10, window = "1m" }]

[[services]]
name = "split"
limits = [
  { dimension = "input_tokens", amount = 100, window = "1m" },
  { dimension = "output_tokens", amount = 50, window = "1m", algorithm = "token_bucket" },
]

[[services]]
name = "inflight"
limits = [
  { dimension = "concurrent", amount = 2, timeout = "30s" },
  { dimension = "requests", amount = 100, window = "1m" },
]

[[services]]
name = "org"
limits = [{ dimension = "tokens", amount = 1000, window = "1m" }]

[[services]]
name = "org/big"
parent = "org"
profile = "openai"
limits = [{ dimension = "requests", amount = 100, window = "1m" }]

[[services]]
name = "org/small"
parent = "org"
profile = "openai"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 600, window = "1m" },
]

[[services]]
name = "shadow"
mode = "shadow"
limits = [{ dimension = "requests", amount = 3, window = "10s" }]

[[services]]
name = "adopt"
profile = "openai"
adopt_provider_limits = true
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m", algorithm = "token_bucket" },
]

[[services]]
name = "learning"
profile = "openai"
adopt_provider_limits = true
adaptive = true
default_cooldown = "1s"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m", algorithm = "token_bucket", burst = 500 },
]
"#;

/// One second in microseconds, as the limiter's answers count time.
pub const US: u64 = 1_000_000;

/// The blocks of `catalogue` named in `names`, in the catalogue's order; panics on a name the
/// catalogue lacks (a parent must be named with its members).
pub fn services_of(catalogue: &str, names: &[&str]) -> String {
    let mut out = String::new();
    let mut found = 0;
    for part in catalogue
        .split("[[services]]")
        .filter(|p| !p.trim().is_empty())
    {
        if names
            .iter()
            .any(|n| part.trim_start().starts_with(&format!("name = {n:?}\n")))
        {
            out.push_str("[[services]]");
            out.push_str(part);
            found += 1;
        }
    }
    assert_eq!(found, names.len(), "{names:?}: not all in the catalogue");
    out
}

/// The services `names` of [`CONFIG`].
pub fn services(names: &[&str]) -> String {
    services_of(CONFIG, names)
}

/// A limiter over the services `names` of [`CONFIG`] on a fresh backend.
pub async fn limiter<B: TestBackend>(names: &[&str]) -> Limiter<B> {
    limiter_for(&services(names)).await
}

/// A limiter over `config` on a fresh backend.
pub async fn limiter_for<B: TestBackend>(config: &str) -> Limiter<B> {
    let specs: Vec<Arc<ServiceSpec>> = Config::parse(config)
        .expect("test config is valid")
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let backend = B::create(&specs).await;
    Limiter::new(specs, backend)
}

/// Reloads `l` with `config`, as a SIGHUP would.
pub async fn reload<B: TestBackend>(l: &Limiter<B>, config: &str) -> Result<ReloadSummary, Error> {
    let config = Config::parse(config).expect("reloaded config is valid");
    l.reconfigure(config.services, config.profiles).await
}

/// `config` with the service `name`'s block replaced by `block` (empty: removed).
pub fn replace_block(config: &str, name: &str, block: &str) -> String {
    let mut out = String::new();
    for part in config
        .split("[[services]]")
        .filter(|p| !p.trim().is_empty())
    {
        if part.trim_start().starts_with(&format!("name = {name:?}")) {
            out.push_str(block);
        } else {
            out.push_str("[[services]]");
            out.push_str(part);
        }
    }
    out
}

pub fn req(service: &str, tokens: u64, max_wait: Duration) -> AcquireRequest {
    AcquireRequest {
        service: service.into(),
        tokens,
        max_wait: max_wait.as_micros() as u64,
        ..AcquireRequest::default()
    }
}

pub fn report(
    service: &str,
    lease_id: &str,
    status: u32,
    headers: &[(&str, &str)],
) -> ReportRequest {
    ReportRequest {
        service: service.into(),
        lease_id: lease_id.into(),
        status_code: status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..ReportRequest::default()
    }
}

/// Grants `req`, returning (lease id, wait in µs); panics on a denial.
pub async fn granted<B: TestBackend>(l: &Limiter<B>, r: &AcquireRequest) -> (String, u64) {
    match l.acquire(r).await.expect("acquire").1 {
        sluice_server::core::Decision::Granted(g) => (g.lease_id.to_string(), g.wait),
        d => panic!("expected a grant, got {d:?}"),
    }
}

/// Returns retry_after in µs of a denial; panics on a grant.
pub async fn denied<B: TestBackend>(l: &Limiter<B>, r: &AcquireRequest) -> u64 {
    match l.acquire(r).await.expect("acquire").1 {
        sluice_server::core::Decision::Denied { retry_after, .. } => retry_after,
        d => panic!("expected a denial, got {d:?}"),
    }
}

pub fn is<T: std::fmt::Debug>(r: Result<T, Error>, f: fn(&Error) -> bool) -> bool {
    match r {
        Err(e) => f(&e),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Reports `lease` of `service` with `status` and returns whether it released an in-flight slot.
pub async fn released<B: TestBackend>(
    l: &Limiter<B>,
    service: &str,
    lease: &str,
    status: u32,
) -> bool {
    let answer = l
        .report(report(service, lease, status, &[]))
        .await
        .expect("report");
    answer.detail.contains("slot released")
}
