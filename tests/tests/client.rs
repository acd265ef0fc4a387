//! The Rust client against a real server: permits, typed denials carrying `retry_after`, refusals,
//! reports with an `http::HeaderMap`, and idempotent request ids.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};
use sluice::v1::Reason;
use sluice_client::{Error, Usage};
use sluice_e2e::Store;

const CONFIG: &str = r#"
[[services]]
name = "openai/gpt-4o"
profile = "openai"
limits = [
  { dimension = "requests", amount = 2, window = "1h" },
  { dimension = "tokens", amount = 1000, window = "1h" },
]

[[services]]
name = "paced"
limits = [{ dimension = "requests", amount = 1, window = "2s" }]
"#;

sluice_e2e::on_every_backend!(the_client_acquires_waits_reports_and_types_its_errors);

async fn the_client_acquires_waits_reports_and_types_its_errors(
    store: &Store,
) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let client = server.client().await?.with_client_id("e2e");

    let first = client.acquire("openai/gpt-4o").tokens(600).await?;
    assert_eq!(first.wait(), Duration::ZERO);
    assert!(!first.lease_id().is_empty());

    // Over the token limit with no wait allowed: a typed denial with a retry hint.
    match client.acquire("openai/gpt-4o").tokens(600).await {
        Err(Error::Denied {
            retry_after,
            reason,
            limit,
        }) => {
            assert_eq!(reason, Reason::Limit);
            assert_eq!(limit, "tokens/1h");
            assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_secs(3600),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }

    // Reporting the real usage refunds the estimate: 600 → 100 leaves room for 600 more.
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from_static("29000"),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let outcome = first
        .report(StatusCode::OK, &headers, Some(Usage::tokens(60, 40)))
        .await?;
    assert!(!outcome.cooldown_set);
    assert!(
        outcome.detail.contains("usage applied"),
        "{}",
        outcome.detail
    );

    // The second request fits the refunded tokens; a third must wait for the request limit.
    let second = client
        .acquire("openai/gpt-4o")
        .tokens(600)
        .max_wait(Duration::from_secs(5))
        .await?;
    assert_eq!(second.wait(), Duration::ZERO);
    let third = client
        .acquire("openai/gpt-4o")
        .tokens(10)
        .max_wait(Duration::from_secs(7200))
        .without_sleep()
        .await?;
    assert!(third.wait() > Duration::ZERO);
    assert_eq!(third.limit(), "requests/1h");

    // Without `without_sleep`, the client returns only once the granted slot has come.
    let a = client.acquire("paced").await?;
    let b = client
        .acquire("paced")
        .max_wait(Duration::from_secs(10))
        .await?;
    let spacing = b.slot_time().duration_since(a.slot_time())?;
    assert!(spacing >= Duration::from_secs(2), "{spacing:?}");
    // The server's clock runs from its own start; allow for a few milliseconds of drift.
    let now = SystemTime::now() + Duration::from_millis(50);
    assert!(now >= b.slot_time(), "the client returned before its slot");

    // Retrying with the same request id returns the same lease.
    let a = client
        .acquire("paced")
        .max_wait(Duration::from_secs(7200))
        .request_id("job-1")
        .without_sleep()
        .await?;
    let b = client
        .acquire("paced")
        .max_wait(Duration::from_secs(7200))
        .request_id("job-1")
        .without_sleep()
        .await?;
    assert_eq!(a.lease_id(), b.lease_id());

    assert!(matches!(
        client.acquire("openai/gpt-4o").tokens(5000).await,
        Err(Error::CannotFit(m)) if m.contains("tokens/1h")
    ));
    assert!(matches!(
        client.acquire("nope").await,
        Err(Error::UnknownService(_))
    ));

    // Only rate-limit headers were kept, visible in the status.
    let status = client.status("openai/gpt-4o").await?;
    let last = status
        .last_report
        .ok_or_else(|| anyhow::anyhow!("no last report"))?;
    assert_eq!(last.status_code, 200);
    assert_eq!(last.headers.len(), 1);
    assert_eq!(last.headers[0].name, "x-ratelimit-remaining-tokens");
    assert_eq!(client.list_services().await?.len(), 2);
    Ok(())
}
