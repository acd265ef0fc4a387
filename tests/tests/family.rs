//! Parent budgets end to end, on every backend: two models share their provider's organisation
//! budget through a real server; a denial by the parent names the parent's limit, usage reported
//! on a model is refunded to the parent, and a 429 on the parent's dimension pauses the sibling.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use sluice::v1::Reason;
use sluice_client::{Error, Usage};
use sluice_e2e::Store;

const CONFIG: &str = r#"
[[services]]
name = "openai"
limits = [{ dimension = "tokens", amount = 10000, window = "1m" }]

[[services]]
name = "openai/gpt-4o"
parent = "openai"
profile = "openai"
limits = [{ dimension = "tokens", amount = 8000, window = "1m" }]

[[services]]
name = "openai/gpt-4o-mini"
parent = "openai"
profile = "openai"
limits = [{ dimension = "tokens", amount = 8000, window = "1m" }]
"#;

sluice_e2e::on_every_backend!(models_share_their_providers_budget);

async fn models_share_their_providers_budget(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let client = server.client().await?;

    let big = client.acquire("openai/gpt-4o").tokens(7000).await?;
    // Within the mini model's own 8,000, but only 3,000 are left in the organisation's budget.
    match client.acquire("openai/gpt-4o-mini").tokens(4000).await {
        Err(Error::Denied { reason, limit, .. }) => {
            assert_eq!(reason, Reason::Limit);
            assert_eq!(limit, "openai: tokens/1m");
        }
        other => panic!("expected a denial by the parent, got {other:?}"),
    }
    // The big call used 1,000 tokens: the organisation's budget gets the other 6,000 back.
    big.report(200u16, &HeaderMap::new(), Some(Usage::tokens(600, 400)))
        .await?;
    let parent = client.status("openai").await?;
    assert_eq!(parent.limits[0].used, 1000);
    let mini = client.acquire("openai/gpt-4o-mini").tokens(4000).await?;

    // A 429 on tokens, the parent's dimension, pauses the whole family.
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from_static("0"),
    );
    headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("30s"));
    let answer = mini.report(429u16, &headers, None).await?;
    assert!(
        answer.detail.contains("family cooldown set on openai"),
        "{}",
        answer.detail
    );
    match client.acquire("openai/gpt-4o").tokens(10).await {
        Err(Error::Denied {
            reason,
            limit,
            retry_after,
        }) => {
            assert_eq!(reason, Reason::Cooldown);
            assert_eq!(limit, "openai: cooldown");
            assert!(retry_after > Duration::from_secs(20), "{retry_after:?}");
        }
        other => panic!("expected the family cooldown, got {other:?}"),
    }
    Ok(())
}
