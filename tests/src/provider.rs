//! The simulated provider the end-to-end tests call (a real HTTP server, see `sluice-sim`): a key
//! allowing [`BUDGET`] requests per one-second [`WINDOW`], answering with OpenAI-style header
//! names, and the header table ([`HEADERS`]) a `custom` profile reads them with over that window
//! (the `openai` profile assumes the per-minute windows of the real API).

use std::time::Duration;

use sluice_sim::{budget, Enforcement, HeaderMode, ProviderConfig, SimProvider, Style};

/// The provider's limit window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// The key's real budget: requests per window.
pub const BUDGET: u64 = 5;

/// Header rules for the provider's names over one-second windows.
pub const HEADERS: &str = r#"
headers = [
  { name = "x-ratelimit-limit-requests", dimension = "requests", meaning = "limit", window = "1s" },
  { name = "x-ratelimit-remaining-requests", dimension = "requests", meaning = "remaining", window = "1s" },
  { name = "x-ratelimit-reset-requests", dimension = "requests", meaning = "reset", format = "duration", window = "1s" },
]
"#;

/// Starts the provider: its budget enforced by `enforcement`, its headers sent per `headers`.
pub async fn start(headers: HeaderMode, enforcement: Enforcement) -> anyhow::Result<SimProvider> {
    Ok(SimProvider::start(ProviderConfig {
        style: Style::OpenAi,
        headers,
        budgets: vec![budget(0, BUDGET, WINDOW, enforcement)],
        latency: Duration::ZERO,
    })
    .await?)
}
