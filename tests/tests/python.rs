//! The Python client (`clients/python`, installed into `target/venv` by `scripts/test` as a user
//! installs it) against a real server: acquire with usage, a slot that must be waited for, a 429
//! that cools the service down, a denial during the cooldown, the asyncio client, bearer tokens.
//! The checks live in `clients/python/tests/`; these tests start the server and run them. The
//! package's shipped gRPC stubs are checked fresh against `proto/`.

use std::path::PathBuf;

use sluice_e2e::{polyglot, spawn_server, WORKER_EXAMPLES_CONFIG};

fn package() -> PathBuf {
    polyglot::root().join("clients/python")
}

fn run(script: &str, addr: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut env = env.to_vec();
    env.push(("SLUICE_ADDR", addr));
    polyglot::run_python(&package().join("tests"), &[script], &env)?;
    Ok(())
}

#[test]
fn the_shipped_stubs_are_fresh_against_the_proto() -> anyhow::Result<()> {
    // Fails (naming the stale files) when proto/ changed without `python make_stubs.py`, or
    // when pyproject's grpcio / protobuf floors are below what the stubs need.
    let out = polyglot::run_python(&package(), &["make_stubs.py", "--check"], &[])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("stubs are fresh"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_acquires_waits_reports_and_sees_the_cooldown() -> anyhow::Result<()> {
    let server = spawn_server(WORKER_EXAMPLES_CONFIG).await?;
    let addr = server.addr.clone();
    tokio::task::spawn_blocking(move || run("test_worker.py", &addr, &[])).await??;
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
    let addr = server.addr.clone();
    tokio::task::spawn_blocking(move || run("test_auth.py", &addr, &[("SLUICE_TOKEN", TOKEN)]))
        .await??;
    assert!(!server.log().contains(TOKEN));
    Ok(())
}

#[test]
fn the_celery_example_maps_its_models_onto_the_example_services() -> anyhow::Result<()> {
    let check = r#"
import tasks
for url, model, want in [
    ("https://api.anthropic.com/v1/messages", "claude-sonnet-4-20250514", "anthropic/claude-sonnet"),
    ("https://api.openai.com/v1/chat/completions", "gpt-4o-mini", "openai/gpt-4o-mini"),
    ("https://api.openai.com/v1/chat/completions", "gpt-4o-2024-08-06", "openai/gpt-4o"),
]:
    got = tasks.service("POST", url, {"model": model})
    assert got == want, (got, want)
    assert f'name = "{want}"' in open("../sluice.toml").read(), want
print("ok")
"#;
    let dir = polyglot::root().join("examples/celery");
    polyglot::run_python(&dir, &["-c", check], &[("CELERY_BROKER_URL", "memory://")])?;
    Ok(())
}

#[test]
fn the_call_rules_read_services_costs_and_streamed_usage() -> anyhow::Result<()> {
    polyglot::run_python(&package().join("tests"), &["test_calls.py"], &[])?;
    Ok(())
}
