//! Logs an operator can use: with `--log-format json` every line is one JSON object; a cooldown
//! change is one structured line naming the service and the provider's status; a backend failure
//! is one warning line; successful decisions log nothing at the default level.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_e2e::Store;

const CONFIG: &str = r#"
[[services]]
name = "llm"
limits = [{ dimension = "requests", amount = 1000, window = "1m" }]
"#;

/// The log lines whose message is `message`, parsed.
fn lines_with(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_cooldown_and_per_backend_failure() -> anyhow::Result<()> {
    let mut store = Store::redis()?;
    let server = store
        .spawn_server_with(CONFIG, &["--log-format", "json"])
        .await?;
    let client = server.client().await?;
    for _ in 0..20 {
        client.acquire("llm").without_sleep().await?;
    }
    let permit = client.acquire("llm").without_sleep().await?;
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("1"));
    permit
        .report(StatusCode::TOO_MANY_REQUESTS, &headers, None)
        .await?;

    let Store::Redis(redis, _) = &mut store else {
        unreachable!("a redis store")
    };
    redis.stop()?;
    let failed = client.acquire("llm").without_sleep().await;
    assert!(failed.is_err(), "an acquire succeeded without redis");

    // The log is read as the server wrote it; give the reader thread a moment to catch up.
    let mut log = server.log();
    for _ in 0..50 {
        if !lines_with(&log, "backend failed").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        log = server.log();
    }
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("not a JSON line ({e}): {line}"))?;
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
    let cooldowns = lines_with(&log, "cooldown set");
    assert_eq!(cooldowns.len(), 1, "{log}");
    assert_eq!(cooldowns[0]["fields"]["service"], "llm");
    assert_eq!(cooldowns[0]["fields"]["status_code"], 429);
    assert_eq!(cooldowns[0]["level"], "INFO");
    let failures = lines_with(&log, "backend failed");
    assert!(!failures.is_empty(), "{log}");
    assert_eq!(failures[0]["level"], "WARN");
    assert!(
        failures[0]["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("redis")),
        "{log}"
    );
    // 21 granted acquires, not one line about them.
    assert!(lines_with(&log, "acquire").is_empty(), "{log}");
    Ok(())
}
