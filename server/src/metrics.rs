//! Prometheus metrics, off unless `metrics_listen` is set: [`install`] sets the process's
//! recorder, [`crate::web`] answers `GET /metrics` on the metrics listener, and the record functions below
//! are called by the limiter (they cost nothing measurable while no recorder is installed).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sluice_acquires_total` | counter | `service`, `outcome` (`granted`, `denied`, `error`) |
//! | `sluice_shadow_acquires_total` | counter | `service`, `would` (`granted`, `queued`, `denied`): calls of a service in shadow mode, all granted at once, by what the decision would have done (counted in `sluice_acquires_total` as decided) |
//! | `sluice_acquire_wait_seconds` | histogram | `service`: the wait of granted slots |
//! | `sluice_reports_total` | counter | `service`, `status_class` (`2xx`, `429`, `4xx`, `5xx`, `other`) |
//! | `sluice_cooldowns_set_total` | counter | `service`, `cause` |
//! | `sluice_cooldown_ends_at_seconds` | gauge | `service`, `cause`: Unix time the cooldown ends; active while above `time()` |
//! | `sluice_limit_used` | gauge | `service`, `limit`: cost booked in the limit's window (in flight, for a `concurrent` limit), read at each scrape |
//! | `sluice_limit_effective_amount` | gauge | `service`, `limit`: the amount in force (configured, provider budget or adaptive), read at each scrape |
//! | `sluice_adaptive_budget_ratio` | gauge | `service`: an adaptive budget's share of the configured one (1: whole), as of its last report or status |
//! | `sluice_backend_duration_seconds` | histogram | `operation` (`acquire`, `report`, `status`) |
//! | `sluice_backend_errors_total` | counter | `operation` |
//! | `sluice_unshared_answers_total` | counter | `service`, `operation`, `scope` (`local`, `fail_open`): answers given outside the shared state while Redis was out of reach |
//! | `sluice_shed_total` | counter | (none): calls refused at `max_in_flight` |
//! | `sluice_build_info` | gauge (1) | `version` |

use std::{
    sync::OnceLock,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::{Micros, MICROS_PER_SEC};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets of waits and backend latencies, in seconds.
const WAIT_BUCKETS: [f64; 12] = [
    0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0,
];
const LATENCY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Installs the process's Prometheus recorder (once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("sluice_acquire_wait_seconds".into()),
            &WAIT_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("sluice_backend_duration_seconds".into()),
                &LATENCY_BUCKETS,
            )
        })
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| e.to_string())?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    metrics::gauge!("sluice_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn enabled() -> bool {
    HANDLE.get().is_some()
}

fn seconds(us: Micros) -> f64 {
    us as f64 / MICROS_PER_SEC as f64
}

/// An acquire's outcome, and the wait of a grant.
pub fn acquire(service: &str, outcome: &'static str, wait: Option<Micros>) {
    if !enabled() {
        return;
    }
    metrics::counter!("sluice_acquires_total", "service" => service.to_string(), "outcome" => outcome)
        .increment(1);
    if let Some(wait) = wait {
        metrics::histogram!("sluice_acquire_wait_seconds", "service" => service.to_string())
            .record(seconds(wait));
    }
}

/// A call of a service in shadow mode, granted at once; `would` is what the decision would have
/// done to it (`granted`, `queued` or `denied`).
pub fn shadow(service: &str, would: &'static str) {
    if !enabled() {
        return;
    }
    metrics::counter!("sluice_shadow_acquires_total", "service" => service.to_string(), "would" => would)
        .increment(1);
}

/// A report of a provider answer with HTTP `status`.
pub fn report(service: &str, status: u32) {
    if !enabled() {
        return;
    }
    let class = match status {
        0 => "none",
        429 => "429",
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::counter!("sluice_reports_total", "service" => service.to_string(), "status_class" => class)
        .increment(1);
}

/// A cooldown set by a report, lasting `remaining` from now.
pub fn cooldown(service: &str, cause: &str, remaining: Micros) {
    if !enabled() {
        return;
    }
    let labels = [
        ("service", service.to_string()),
        ("cause", cause.to_string()),
    ];
    metrics::counter!("sluice_cooldowns_set_total", &labels).increment(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("sluice_cooldown_ends_at_seconds", &labels).set(now + seconds(remaining));
}

/// The adaptive budget of `service` at `scale` permille.
pub fn adaptive(service: &str, scale: u32) {
    if !enabled() {
        return;
    }
    metrics::gauge!("sluice_adaptive_budget_ratio", "service" => service.to_string())
        .set(f64::from(scale) / 1000.0);
}

/// A limit's use as of a scrape: booked cost in its window and the amount in force.
pub fn budget(service: &str, limit: &str, used: u64, effective: u64) {
    if !enabled() {
        return;
    }
    let labels = [
        ("service", service.to_string()),
        ("limit", limit.to_string()),
    ];
    metrics::gauge!("sluice_limit_used", &labels).set(used as f64);
    metrics::gauge!("sluice_limit_effective_amount", &labels).set(effective as f64);
}

/// An answer given outside the shared state (`scope` is `local` or `fail_open`).
pub fn scoped(service: &str, operation: &'static str, scope: crate::core::Scope) {
    if scope == crate::core::Scope::Shared || !enabled() {
        return;
    }
    metrics::counter!(
        "sluice_unshared_answers_total",
        "service" => service.to_string(),
        "operation" => operation,
        "scope" => scope.as_str()
    )
    .increment(1);
}

/// A call refused because the server was at `max_in_flight`.
pub fn shed() {
    if enabled() {
        metrics::counter!("sluice_shed_total").increment(1);
    }
}

/// The start of a backend call, when metrics are on (no clock read otherwise).
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// A backend call started at `started` (from [`start`]) and whether it failed.
pub fn backend(operation: &'static str, started: Option<Instant>, failed: bool) {
    let Some(started) = started else { return };
    metrics::histogram!("sluice_backend_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    if failed {
        metrics::counter!("sluice_backend_errors_total", "operation" => operation).increment(1);
    }
}
