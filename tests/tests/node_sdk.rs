//! The official Node SDKs (`openai`, `@anthropic-ai/sdk`, from the registry) with
//! `fetch: sluiceFetch(...)`, through a real server to simulated providers that speak their wire
//! format: 8 concurrent workers in one Node process, plain and streamed answers. As for the
//! Python fleet (see `sluice_e2e::sdk`): every call completes, no 429 once Sluice heard the
//! budget, and the usage Sluice holds is the providers' count. The run is
//! `clients/node/test/sdk_run.mjs`.

use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;
use sluice_e2e::{
    polyglot,
    sdk::{self, CONFIG, MAX_TOKENS, PROMPT},
    spawn_server,
};

const WORKERS: u64 = 8;
/// Calls per SDK per worker.
const CALLS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdks_with_sluice_fetch_stay_inside_the_providers_budget() -> anyhow::Result<()> {
    let dir = polyglot::node_client()?;
    let server = spawn_server(CONFIG).await?;
    let (openai, anthropic) = sdk::providers().await?;
    let out = tokio::task::block_in_place(|| {
        Command::new("node")
            .arg("test/sdk_run.mjs")
            .current_dir(&dir)
            .env("SLUICE_ADDR", &server.addr)
            .env("OPENAI_BASE_URL", format!("http://{}/v1", openai.addr()))
            .env("ANTHROPIC_BASE_URL", format!("http://{}", anthropic.addr()))
            .env("PROMPT", PROMPT)
            .env("MAX_TOKENS", MAX_TOKENS.to_string())
            .env("CALLS", CALLS.to_string())
            .output()
    })
    .context("running node (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "node test/sdk_run.mjs failed ({})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let done: Value = serde_json::from_slice(&out.stdout)?;
    let total = WORKERS * CALLS;
    assert_eq!(
        (done["openai"].as_u64(), done["anthropic"].as_u64()),
        (Some(total), Some(total)),
        "{done}"
    );
    assert_eq!(done["streamed"].as_u64(), Some(total), "{done}");
    sdk::check_run(&server, &openai, &anthropic, total).await
}
