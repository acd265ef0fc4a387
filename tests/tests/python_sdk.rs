//! The official Python SDKs (`openai`, `anthropic`, from the registry) with Sluice's transport,
//! through a real server to simulated providers that speak their wire format: a fleet of 8
//! processes (blocking and asyncio clients, plain and streamed answers). Sluice is configured
//! with twice the keys' real request budget and adopts it from the headers: every call completes,
//! the providers' 429s stop once Sluice has heard from them, and the usage Sluice holds is the
//! providers' count (see `sluice_e2e::sdk`).

use std::process::Stdio;

use serde_json::Value;
use sluice_e2e::{
    polyglot,
    sdk::{self, CONFIG, MAX_TOKENS, PROMPT},
    spawn_server, TestServer,
};
use sluice_sim::SimProvider;

const PROCESSES: usize = 8;
/// Calls per SDK per process.
const CALLS: usize = 6;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_sdk_processes_stays_inside_the_providers_budget() -> anyhow::Result<()> {
    let server = spawn_server(CONFIG).await?;
    let (openai, anthropic) = sdk::providers().await?;
    let done = tokio::task::block_in_place(|| fleet(&server, &openai, &anthropic))?;
    let calls = Some(CALLS as u64);
    for d in &done {
        assert_eq!(
            (d["openai"].as_u64(), d["anthropic"].as_u64()),
            (calls, calls),
            "{done:?}"
        );
        assert_eq!(d["streamed"].as_u64(), calls, "{done:?}");
    }
    sdk::check_run(&server, &openai, &anthropic, (PROCESSES * CALLS) as u64).await
}
