//! `GET /api/status`: every service's live state as JSON, the fields of `ListServices` (one
//! `ServiceStatus` per service, converted by the gRPC layer's own mapping) with durations in
//! milliseconds. On Redis it is the shared state. Provider header values are shown only when
//! they look like the numbers, times and policies rate-limit headers carry; anything else (a
//! value that could carry a secret) reads `(hidden)`. Documented in docs/operating.md. Also the
//! budget gauges a scrape of `/metrics` refreshes from the same live state.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::StatusCode;
use serde_json::{json, Value};
use sluice::v1 as pb;
use tokio::sync::Mutex;

use crate::{backend::Backend, grpc::service_status, limiter::Limiter};

/// How long one read of every service's state serves the page's viewers and the scrapes.
const FRESH: Duration = Duration::from_millis(250);

/// Every service's status as the gRPC layer converts it, or why the backend could not say.
pub type Snapshot = Result<Vec<pb::ServiceStatus>, String>;

/// Reads every service's state at most once per [`FRESH`]: each read costs the backend a status
/// call per service, and neither the page's viewers nor scrapers may multiply that.
pub struct Snapshots<B: Backend> {
    limiter: Arc<Limiter<B>>,
    last: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl<B: Backend> Snapshots<B> {
    /// Snapshots of `limiter`'s services.
    pub fn new(limiter: Arc<Limiter<B>>) -> Self {
        Self {
            limiter,
            last: Mutex::new(None),
        }
    }

    /// A snapshot at most [`FRESH`] old (callers meanwhile wait for the one being read).
    pub async fn get(&self) -> Arc<Snapshot> {
        let mut last = self.last.lock().await;
        if let Some((at, snapshot)) = last.as_ref() {
            if at.elapsed() < FRESH {
                return snapshot.clone();
            }
        }
        let snapshot = Arc::new(
            self.limiter
                .list()
                .await
                .map(|all| all.into_iter().map(service_status).collect())
                .map_err(|e| e.to_string()),
        );
        *last = Some((Instant::now(), snapshot.clone()));
        snapshot
    }
}

/// The answer to `GET /api/status`.
pub fn answer(snapshot: &Snapshot) -> (StatusCode, String) {
    let generated = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    match snapshot {
        Ok(services) => {
            let services: Vec<Value> = services.iter().map(service_json).collect();
            let body = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "generated_at_unix_ms": generated,
                "services": services,
            });
            (StatusCode::OK, body.to_string())
        }
        Err(e) => {
            let body = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "generated_at_unix_ms": generated,
                "error": e,
            });
            (StatusCode::SERVICE_UNAVAILABLE, body.to_string())
        }
    }
}

/// Sets the budget gauges from a snapshot, before a scrape renders them (a backend that did not
/// answer leaves the last values).
pub fn record_budgets(snapshot: &Snapshot) {
    match snapshot {
        Ok(services) => {
            for status in services {
                for limit in &status.limits {
                    crate::metrics::budget(
                        &status.service,
                        &limit.name,
                        limit.used,
                        limit.effective_amount,
                    );
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "budget gauges not refreshed"),
    }
}

fn millis(d: &Option<prost_types::Duration>) -> Value {
    match d {
        Some(d) => json!(d.seconds * 1_000 + i64::from(d.nanos) / 1_000_000),
        None => Value::Null,
    }
}

fn scope(scope: i32) -> &'static str {
    match pb::Scope::try_from(scope) {
        Ok(pb::Scope::Local) => "local",
        Ok(pb::Scope::FailOpen) => "fail_open",
        _ => "shared",
    }
}

fn cooldown_json(c: &pb::CooldownStatus) -> Value {
    json!({
        "dimension": c.dimension,
        "remaining_ms": millis(&c.remaining),
        "status_code": c.status_code,
        "cause": c.cause,
    })
}

/// One service, as the page reads it.
pub fn service_json(s: &pb::ServiceStatus) -> Value {
    let limits: Vec<Value> = s
        .limits
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "dimension": l.dimension,
                "algorithm": l.algorithm,
                "amount": l.amount,
                "window_ms": millis(&l.window),
                "burst": l.burst,
                "used": l.used,
                "remaining": l.remaining,
                "reset_after_ms": millis(&l.reset_after),
                "learned_amount": l.learned_amount,
                "effective_amount": l.effective_amount,
                "effective_because": l.effective_because,
            })
        })
        .collect();
    let mut cooldowns: Vec<Value> = s.cooldown.iter().map(cooldown_json).collect();
    cooldowns.extend(s.dimension_cooldowns.iter().map(cooldown_json));
    json!({
        "service": s.service,
        "profile": s.profile,
        "mode": s.mode,
        "scope": scope(s.scope),
        "queued": s.queued,
        "adaptive_permille": s.adaptive_permille,
        "limits": limits,
        "cooldowns": cooldowns,
        "last_report": s.last_report.as_ref().map(|r| json!({
            "status_code": r.status_code,
            "age_ms": millis(&r.age),
            "headers": r.headers.iter().map(|h| json!([h.name, shown(&h.value)])).collect::<Vec<_>>(),
        })),
    })
}

/// A header value as shown: rate-limit headers carry numbers, durations (`1m30s`, `250ms`),
/// RFC 3339 times, policies (`100;w=60`) and HTTP dates (`Retry-After`); a value with anything
/// else, or longer than 64 bytes, is hidden.
fn shown(value: &str) -> &str {
    let plain = value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || " .,:;=+-TZhmsw".contains(c));
    let http_date = value.len() <= 64
        && crate::provider::formats::parse_wait(
            crate::provider::formats::TimeFormat::HttpDate,
            value,
            0,
        )
        .is_ok();
    if plain || http_date {
        value
    } else {
        "(hidden)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_that_could_carry_a_secret_are_hidden() {
        for plain in [
            "59",
            "1m30s",
            "250ms",
            "2026-12-01T10:00:00Z",
            "100;w=60",
            "0.5",
        ] {
            assert_eq!(shown(plain), plain);
        }
        for secret in ["sk-live-abcdef", "Bearer xyz", "token=abc", &"1".repeat(65)] {
            assert_eq!(shown(secret), "(hidden)", "{secret}");
        }
    }

    #[test]
    fn a_service_reads_as_json_with_milliseconds() {
        let status = pb::ServiceStatus {
            service: "openai/gpt-4o".into(),
            limits: vec![pb::LimitStatus {
                name: "rpm".into(),
                amount: 500,
                used: 12,
                effective_amount: 250,
                window: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            cooldown: Some(pb::CooldownStatus {
                remaining: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 500_000_000,
                }),
                cause: "retry-after".into(),
                status_code: 429,
                dimension: "requests".into(),
            }),
            scope: pb::Scope::FailOpen as i32,
            last_report: Some(pb::ProviderReport {
                status_code: 429,
                age: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                headers: vec![pb::Header {
                    name: "x-ratelimit-remaining-requests".into(),
                    value: "sk-secret".into(),
                }],
            }),
            ..Default::default()
        };
        let v = service_json(&status);
        assert_eq!(v["limits"][0]["window_ms"], 60_000);
        assert_eq!(v["limits"][0]["effective_amount"], 250);
        assert_eq!(v["cooldowns"][0]["remaining_ms"], 1_500);
        assert_eq!(v["cooldowns"][0]["status_code"], 429);
        assert_eq!(v["scope"], "fail_open");
        assert_eq!(v["last_report"]["age_ms"], 2_000);
        assert_eq!(v["last_report"]["headers"][0][1], "(hidden)");
    }
}
