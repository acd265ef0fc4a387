//! The Prometheus endpoint, on every backend: off unless `--metrics-listen` is given; when on,
//! a scrape shows the build, and the counters move with acquires, denials, reports and
//! cooldowns.

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
    Ok(())
}
