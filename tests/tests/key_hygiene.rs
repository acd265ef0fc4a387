//! Redis key hygiene, on a single Redis and on a Redis Cluster: after a workload every key of a
//! service has a TTL; a flood of denied requests changes no key at all (same keys, same bytes);
//! once the windows and the cooldown have passed, no key of the service remains.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_client::{Error, Usage};
use sluice_e2e::Store;

const CONFIG: &str = r#"
[[services]]
name = "short"
limits = [
  { dimension = "requests", amount = 5, window = "1s" },
  { dimension = "tokens", amount = 500, window = "1s", algorithm = "token_bucket" },
]

[[services]]
name = "flooded"
limits = [{ dimension = "requests", amount = 3, window = "1m" }]
"#;

/// The serialized value of every key of `service`: equal snapshots mean nothing was written.
fn dump(store: &Store, service: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (key, node) in store.keys(service)? {
        let value = node.command(&["DUMP", &key])?;
        out.push((key, format!("{value:?}")));
    }
    Ok(out)
}

async fn keys_are_bounded_and_expire(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let client = server.client().await?;

    // A workload touching every kind of key: leases, request ids, usage, a cooldown, a report.
    for i in 0..5 {
        let permit = client
            .acquire("short")
            .tokens(50)
            .request_id(format!("job-{i}"))
            .without_sleep()
            .await?;
        let status = if i == 4 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        };
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("1"));
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("5"));
        permit
            .report(status, &headers, Some(Usage::tokens(20, 10)))
            .await?;
    }
    let keys = store.keys("short")?;
    for kind in [":ledger", ":leases"] {
        assert!(
            keys.iter().any(|(key, _)| key.ends_with(kind)),
            "the ledger (state and request ids) and the lease log: {keys:?}"
        );
    }
    for (key, node) in &keys {
        let ttl: i64 = node.text(&["PTTL", key])?.parse()?;
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }

    // A flood of denials on a full service writes nothing.
    for _ in 0..3 {
        client.acquire("flooded").without_sleep().await?;
    }
    let before = dump(store, "flooded")?;
    assert!(!before.is_empty());
    for _ in 0..500 {
        match client.acquire("flooded").await {
            Err(Error::Denied { .. }) => {}
            other => anyhow::bail!("expected a denial, got {other:?}"),
        }
    }
    assert_eq!(
        dump(store, "flooded")?,
        before,
        "denials changed Redis state"
    );

    // After the windows (1s) and the cooldown (1s) pass, plus the TTL's slack, nothing remains.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = store.keys("short")?;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "keys never expired: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !store.keys("flooded")?.is_empty(),
        "a 1m window is still held"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() -> anyhow::Result<()> {
    keys_are_bounded_and_expire(&Store::redis()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster() -> anyhow::Result<()> {
    keys_are_bounded_and_expire(&Store::cluster()?).await
}
