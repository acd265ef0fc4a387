//! The Prometheus endpoint, on every backend: off unless `--metrics-listen` is given; when on,
//! a scrape shows the build, the counters move with acquires, denials, reports and
//! cooldowns, the budget gauges show each limit's use, and an adaptive budget's gauge its scale.

use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_e2e::{http_get as get, sample, Store};

const CONFIG: &str = r#"
[[services]]
name = "llm"
limits = [{ dimension = "requests", amount = 3, window = "1m" }]
"#;

sluice_e2e::on_every_backend!(metrics_count_acquires_reports_and_cooldowns);

async fn metrics_count_acquires_reports_and_cooldowns(store: &Store) -> anyhow::Result<()> {
    let off = store.spawn_server(CONFIG).await?;
    assert!(!off.log().contains("metrics_addr"), "metrics on by default");

    let server = store
        .spawn_server_with(CONFIG, &["--metrics-listen", "127.0.0.1:0"])
        .await?;
    let addr = server.metrics_addr()?;
    let (status, body) = get(&addr, "/metrics").await?;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("sluice_build_info{version=\""), "{body}");
    let (status, _) = get(&addr, "/nothing").await?;
    assert!(status.contains("404"), "{status}");

    let client = server.client().await?;
    for _ in 0..3 {
        client.acquire("llm").without_sleep().await?;
    }
    for _ in 0..2 {
        let denied = client.acquire("llm").without_sleep().await;
        assert!(denied.is_err(), "the limit is spent");
    }
    let lease = client
        .acquire("llm")
        .max_wait(std::time::Duration::from_secs(120))
        .without_sleep()
        .await?;
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("30"));
    lease
        .report(StatusCode::TOO_MANY_REQUESTS, &headers, None)
        .await?;

    let (_, body) = get(&addr, "/metrics").await?;
    let granted = r#"sluice_acquires_total{service="llm",outcome="granted"}"#;
    let denied = r#"sluice_acquires_total{service="llm",outcome="denied"}"#;
    assert_eq!(sample(&body, granted), Some(4.0), "{body}");
    assert_eq!(sample(&body, denied), Some(2.0), "{body}");
    assert_eq!(
        sample(
            &body,
            r#"sluice_reports_total{service="llm",status_class="429"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"sluice_cooldowns_set_total{service="llm",cause="429 retry-after"}"#
        ),
        Some(1.0),
        "{body}"
    );
    let ends = sample(
        &body,
        r#"sluice_cooldown_ends_at_seconds{service="llm",cause="429 retry-after"}"#,
    )
    .ok_or_else(|| anyhow::anyhow!("no cooldown gauge in {body}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(
        ends > now + 20.0 && ends < now + 31.0,
        "ends {ends}, now {now}"
    );
    // One granted wait of about a minute (the fourth slot), the rest immediate.
    assert_eq!(
        sample(&body, r#"sluice_acquire_wait_seconds_count{service="llm"}"#),
        Some(4.0),
        "{body}"
    );
    assert!(
        sample(
            &body,
            r#"sluice_backend_duration_seconds_count{operation="acquire"}"#
        )
        .is_some_and(|n| n >= 6.0),
        "{body}"
    );
    // Budget use, read from the live state at the scrape (a read serves every scrape for 250 ms,
    // so scrape until it is one taken after the acquires): four slots booked of three a minute
    // (the fourth in the next window).
    let used = r#"sluice_limit_used{service="llm",limit="requests/1m"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut body = body;
    while sample(&body, used) != Some(4.0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        body = get(&addr, "/metrics").await?.1;
    }
    assert_eq!(
        sample(
            &body,
            r#"sluice_limit_effective_amount{service="llm",limit="requests/1m"}"#
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"sluice_limit_used{service="llm",limit="requests/1m"}"#
        ),
        Some(4.0),
        "{body}"
    );
    Ok(())
}

const ADAPTIVE: &str = r#"
[[services]]
name = "quiet"
adaptive = true
default_cooldown = "1s"
limits = [{ dimension = "requests", amount = 100, window = "1m" }]
"#;

sluice_e2e::on_every_backend!(an_adaptive_budget_shows_in_its_gauge);

/// Scrapes `addr` until `series` reads `want` (a read of the state serves every scrape for
/// 250 ms); the last body.
async fn scrape_until(addr: &str, series: &str, want: f64) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body = get(addr, "/metrics").await?.1;
        if sample(&body, series) == Some(want) || std::time::Instant::now() >= deadline {
            return Ok(body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn an_adaptive_budget_shows_in_its_gauge(store: &Store) -> anyhow::Result<()> {
    let server = store
        .spawn_server_with(ADAPTIVE, &["--metrics-listen", "127.0.0.1:0"])
        .await?;
    let addr = server.metrics_addr()?;
    let ratio = r#"sluice_adaptive_budget_ratio{service="quiet"}"#;
    let effective = r#"sluice_limit_effective_amount{service="quiet",limit="requests/1m"}"#;
    // Whole until a 429: read at each scrape.
    let body = scrape_until(&addr, ratio, 1.0).await?;
    assert_eq!(sample(&body, ratio), Some(1.0), "{body}");
    assert_eq!(sample(&body, effective), Some(100.0), "{body}");
    // A 429 (not a quota) lowers it to 70 %, in the gauge and in the amount in force.
    let client = server.client().await?;
    let lease = client.acquire("quiet").without_sleep().await?;
    let outcome = lease
        .report(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), None)
        .await?;
    assert!(
        outcome.detail.contains("adaptive budget lowered to 70%"),
        "{}",
        outcome.detail
    );
    let body = scrape_until(&addr, effective, 70.0).await?;
    assert_eq!(sample(&body, ratio), Some(0.7), "{body}");
    assert_eq!(sample(&body, effective), Some(70.0), "{body}");
    Ok(())
}

/// The Grafana dashboard under deploy/ asks only for metrics the server documents (and so
/// exports), by labels they carry: a renamed metric or label fails here, not on a blank panel.
#[test]
fn the_grafana_dashboard_reads_documented_metrics() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!(
        "{root}/deploy/grafana/sluice.json"
    ))?)?;
    let documented = std::fs::read_to_string(format!("{root}/server/src/metrics.rs"))?;
    let table: Vec<&str> = documented
        .lines()
        .filter(|l| l.starts_with("//! | `sluice_"))
        .collect();
    let panels = dashboard["panels"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no panels"))?;
    let mut queries = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            queries += 1;
            let words: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            let mut rows = Vec::new();
            for name in words.iter().filter(|w| w.starts_with("sluice_")) {
                let base = name.strip_suffix("_bucket").unwrap_or(name);
                let row = table
                    .iter()
                    .find(|row| row.starts_with(&format!("//! | `{base}`")))
                    .ok_or_else(|| {
                        anyhow::anyhow!("{base} (panel {}) is not documented", panel["title"])
                    })?;
                rows.push(*row);
            }
            // Labels named in selectors (`label="…"`, `label=~"…"`) and in `by (…)` groups.
            let mut labels: Vec<&str> = words
                .iter()
                .filter(|w| expr.contains(&format!("{w}=\"")) || expr.contains(&format!("{w}=~")))
                .copied()
                .collect();
            for (at, _) in expr.match_indices("by (") {
                let group = expr[at + 4..].split(')').next().unwrap_or_default();
                labels.extend(group.split(',').map(str::trim));
            }
            for label in labels.into_iter().filter(|l| *l != "le") {
                anyhow::ensure!(
                    rows.iter().any(|row| row.contains(&format!("`{label}`"))),
                    "panel {}: no metric of {expr} has the label {label}",
                    panel["title"]
                );
            }
        }
    }
    assert!(queries >= 15, "{queries} queries");
    Ok(())
}
