//! The setting the official SDKs are tested in (Python's in `python_sdk.rs`, Node's in
//! `node_sdk.rs`): two simulated providers speaking the SDKs' wire format (OpenAI and Anthropic
//! style, [`BUDGET`] requests a second each, rate-limit headers on every answer), a Sluice config
//! that starts at twice that budget and adopts the real one from the headers, and the checks
//! after a run: every call answered, no 429 once Sluice heard the budget, and the usage Sluice
//! holds equal to the providers' count (each answer's usage, streamed or not, replaced the
//! transport's estimate).

use std::time::Duration;

use sluice_sim::{budget, CallRecord, Enforcement, HeaderMode, ProviderConfig, SimProvider, Style};

use crate::TestServer;

/// Requests per second each simulated key allows.
pub const BUDGET: u64 = 8;
/// Every call's prompt.
pub const PROMPT: &str = "Say ok, and nothing else, in one short word please.";
/// Every call's `max_tokens`.
pub const MAX_TOKENS: u64 = 64;

/// The services of both providers, at twice their request budget, adopting it.
pub const CONFIG: &str = r#"
[[services]]
name = "sim-openai/gpt-4o-mini"
profile = "custom"
adopt_provider_limits = true
limits = [
  { dimension = "requests", amount = 16, window = "1s" },
  { dimension = "tokens", amount = 10000000, window = "1h" },
]
headers = [
  { name = "x-ratelimit-limit-requests", dimension = "requests", meaning = "limit", window = "1s" },
  { name = "x-ratelimit-reset-requests", dimension = "requests", meaning = "reset", format = "duration", window = "1s" },
]

[[services]]
name = "sim-anthropic/claude-3-5-haiku"
profile = "custom"
adopt_provider_limits = true
limits = [
  { dimension = "requests", amount = 16, window = "1s" },
  { dimension = "input_tokens", amount = 10000000, window = "1h" },
  { dimension = "output_tokens", amount = 10000000, window = "1h" },
]
headers = [
  { name = "anthropic-ratelimit-requests-limit", dimension = "requests", meaning = "limit", window = "1s" },
  { name = "anthropic-ratelimit-requests-reset", dimension = "requests", meaning = "reset", format = "rfc3339", window = "1s" },
]
"#;

/// A simulated provider of `style` with [`BUDGET`] requests a (fixed) second.
pub async fn provider(style: Style) -> anyhow::Result<SimProvider> {
    Ok(SimProvider::start(ProviderConfig {
        style,
        headers: HeaderMode::Always,
        budgets: vec![budget(
            0,
            BUDGET,
            Duration::from_secs(1),
            Enforcement::FixedWindow,
        )],
        latency: Duration::from_millis(5),
    })
    .await?)
}

/// The two providers: OpenAI style, Anthropic style.
pub async fn providers() -> anyhow::Result<(SimProvider, SimProvider)> {
    Ok((
        provider(Style::OpenAi).await?,
        provider(Style::Anthropic).await?,
    ))
}

/// (answered, limited) calls the provider saw; fails if any 429 came in the second half.
fn answered_and_limited(calls: &[CallRecord], who: &str) -> (u64, u64) {
    let ok = calls.iter().filter(|c| c.status == 200).count() as u64;
    let limited = calls.iter().filter(|c| c.status == 429).count() as u64;
    let late = calls[calls.len() / 2..]
        .iter()
        .filter(|c| c.status == 429)
        .count();
    assert_eq!(
        late, 0,
        "{who}: 429s after Sluice heard the budget: {calls:?}"
    );
    assert!(
        calls.iter().all(|c| c.status == 200 || c.status == 429),
        "{who}: {calls:?}"
    );
    (ok, limited)
}

/// Checks a run of `total` calls per SDK (see the module).
pub async fn check_run(
    server: &TestServer,
    openai: &SimProvider,
    anthropic: &SimProvider,
    total: u64,
) -> anyhow::Result<()> {
    // What the provider counts (sluice_sim::sdk): the prompt's characters / 4, and 20 tokens of
    // answer; what the transport estimated: the same plus 4 for the message, and max_tokens.
    let counted_in = (PROMPT.len() as u64).div_ceil(4);
    let counted_out = sluice_sim::sdk::ANSWER_TOKENS;
    let (estimated_in, estimated_out) = (counted_in + 4, MAX_TOKENS);
    let client = server.client().await?;

    let (ok, limited) = answered_and_limited(&openai.calls(), "openai");
    assert_eq!(ok, total);
    let status = client.status("sim-openai/gpt-4o-mini").await?;
    assert_eq!(status.limits[0].effective_amount, BUDGET, "{status:?}");
    // A 429's estimate stays booked (the provider said no usage); every answer's usage replaced
    // its estimate, streamed answers included.
    assert_eq!(
        status.limits[1].used,
        ok * (counted_in + counted_out) + limited * (estimated_in + estimated_out),
        "{status:?}"
    );

    let (ok, limited) = answered_and_limited(&anthropic.calls(), "anthropic");
    assert_eq!(ok, total);
    let status = client.status("sim-anthropic/claude-3-5-haiku").await?;
    assert_eq!(status.limits[0].effective_amount, BUDGET, "{status:?}");
    assert_eq!(
        (status.limits[1].used, status.limits[2].used),
        (
            ok * counted_in + limited * estimated_in,
            ok * counted_out + limited * estimated_out
        ),
        "{status:?}"
    );
    Ok(())
}
