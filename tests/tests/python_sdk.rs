//! The official Python SDKs (`openai`, `anthropic`, from the registry) with Sluice's transport,
//! through a real server to simulated providers that speak their wire format: a fleet of 8
//! processes (blocking and asyncio clients, plain and streamed answers). Sluice is configured
//! with twice the keys' real request budget and adopts it from the headers: every call completes,
//! the providers' 429s stop once Sluice has heard from them, and the usage Sluice holds is the
//! providers' count (the answers' usage, streamed or not, replaced the estimates).

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use sluice_e2e::{polyglot, spawn_server, TestServer};
use sluice_sim::{budget, CallRecord, Enforcement, HeaderMode, ProviderConfig, SimProvider, Style};

const PROCESSES: usize = 8;
/// Calls per SDK per process.
const CALLS: usize = 6;
/// Requests per second each simulated key allows.
const BUDGET: u64 = 8;
const PROMPT: &str = "Say ok, and nothing else, in one short word please.";
const MAX_TOKENS: u64 = 64;

const CONFIG: &str = r#"
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

async fn provider(style: Style) -> anyhow::Result<SimProvider> {
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

/// Runs the fleet; returns what each process says it completed.
fn fleet(
    server: &TestServer,
    openai: &SimProvider,
    anthropic: &SimProvider,
) -> anyhow::Result<Vec<Value>> {
    let dir = polyglot::root().join("clients/python/tests");
    let openai_url = format!("http://{}/v1", openai.addr());
    let anthropic_url = format!("http://{}", anthropic.addr());
    let max_tokens = MAX_TOKENS.to_string();
    let calls = CALLS.to_string();
    let children = (0..PROCESSES)
        .map(|i| {
            std::process::Command::new(polyglot::python())
                .args(["sdk_fleet.py", &i.to_string(), &calls])
                .current_dir(&dir)
                .env("SLUICE_ADDR", &server.addr)
                .env("OPENAI_BASE_URL", &openai_url)
                .env("ANTHROPIC_BASE_URL", &anthropic_url)
                .env("PROMPT", PROMPT)
                .env("MAX_TOKENS", &max_tokens)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut done = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "fleet process {i} failed ({}); scripts/test provisions target/venv\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        done.push(serde_json::from_slice(&out.stdout)?);
    }
    Ok(done)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_sdk_processes_stays_inside_the_providers_budget() -> anyhow::Result<()> {
    let server = spawn_server(CONFIG).await?;
    let (openai, anthropic) = (
        provider(Style::OpenAi).await?,
        provider(Style::Anthropic).await?,
    );
    let done = tokio::task::block_in_place(|| fleet(&server, &openai, &anthropic))?;
    for d in &done {
        assert_eq!(
            (d["openai"].as_u64(), d["anthropic"].as_u64()),
            (Some(CALLS as u64), Some(CALLS as u64)),
            "{done:?}"
        );
        assert_eq!(d["streamed"].as_u64(), Some(CALLS as u64), "{done:?}");
    }
    let total = (PROCESSES * CALLS) as u64;

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
