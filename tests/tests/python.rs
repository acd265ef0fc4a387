//! A Python worker (grpcio, stubs generated from proto/ by `examples/python/make_stubs.py`) drives
//! a real server: acquire with usage, a slot that must be waited for, a 429 that cools the service
//! down, a denial during the cooldown, and the asyncio client. The checks live in
//! `examples/python/test_worker.py`; this test starts the server and runs it.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context};
use sluice_e2e::{spawn_server, WORKER_EXAMPLES_CONFIG};

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python")
}

/// Generates the stubs, one test at a time (they write the same files).
fn make_stubs(addr: &str) -> anyhow::Result<()> {
    static STUBS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STUBS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run(&["make_stubs.py"], addr)
}

fn run(args: &[&str], addr: &str) -> anyhow::Result<()> {
    run_with(args, addr, &[])
}

fn run_with(args: &[&str], addr: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let out = Command::new("python3")
        .args(args)
        .current_dir(python_dir())
        .env("SLUICE_ADDR", addr)
        .envs(env.iter().copied())
        .output()
        .context("running python3 (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "python3 {args:?} failed ({}); `pip install -r examples/python/requirements.txt` \
             installs what it needs (.ci/run does)\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_acquires_waits_reports_and_sees_the_cooldown() -> anyhow::Result<()> {
    let server = spawn_server(WORKER_EXAMPLES_CONFIG).await?;
    make_stubs(&server.addr)?;
    let addr = server.addr.clone();
    tokio::task::spawn_blocking(move || run(&["test_worker.py"], &addr)).await??;
    let status = server.client().await?.status("llm").await?;
    assert_eq!(
        status.cooldown.map(|c| c.cause),
        Some("429 retry-after".to_string())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_sends_its_bearer_token() -> anyhow::Result<()> {
    const TOKEN: &str = "python-worker-token-0123";
    let config = format!("[auth]\ntokens = [\"{TOKEN}\"]\n{WORKER_EXAMPLES_CONFIG}");
    let server = spawn_server(&config).await?;
    make_stubs(&server.addr)?;
    let addr = server.addr.clone();
    tokio::task::spawn_blocking(move || {
        run_with(&["test_auth.py"], &addr, &[("SLUICE_TOKEN", TOKEN)])
    })
    .await??;
    assert!(!server.log().contains(TOKEN));
    Ok(())
}
