//! A denial through the SDK transports, with the official SDKs (Python, then Node) against the
//! simulated provider: the service `tight` allows one call a minute. The Python script spends it
//! (through plain `httpx` on the transport), then checks both `on_denied` modes through
//! `openai`: `sluice.Denied` raised as it is, and a 429 with `retry-after-ms` for the SDK's own
//! backoff. The Node script checks the same of `sluiceFetch` (there the SDK rejects with its
//! connection error, `Denied` as its cause). With the SDKs' retries on (2), both scripts pin
//! what "raise"/"throw" costs: Python's `openai` raises `Denied` after one acquire; Python's
//! `anthropic` and both Node SDKs retry it, one acquire per attempt (3). The provider sees the one
//! call only: a denied call is never sent. An SDK request that gets no answer (Python and Node)
//! is abandoned: the in-flight slot it held is free at once.

use std::{process::Command, time::Duration};

use anyhow::{bail, Context};
use sluice_e2e::{polyglot, spawn_server};
use sluice_sim::{budget, Enforcement, HeaderMode, ProviderConfig, SimProvider, Style};

const CONFIG: &str = r#"
[[services]]
name = "tight"
limits = [{ dimension = "requests", amount = 1, window = "1m" }]

[[services]]
name = "single"
limits = [{ dimension = "concurrent", amount = 1, timeout = "1m" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_raises_or_answers_the_sdk_a_429_as_asked() -> anyhow::Result<()> {
    let node_dir = polyglot::node_client()?;
    let server = spawn_server(CONFIG).await?;
    let provider = SimProvider::start(ProviderConfig {
        style: Style::OpenAi,
        headers: HeaderMode::Always,
        budgets: vec![budget(
            0,
            100,
            Duration::from_secs(60),
            Enforcement::TokenBucket,
        )],
        latency: Duration::ZERO,
    })
    .await?;
    let base = format!("http://{}/v1", provider.addr());
    let env = [
        ("SLUICE_ADDR", server.addr.as_str()),
        ("OPENAI_BASE_URL", base.as_str()),
    ];
    let python_dir = polyglot::root().join("clients/python/tests");
    tokio::task::block_in_place(|| polyglot::run_python(&python_dir, &["test_denials.py"], &env))?;
    let out = tokio::task::block_in_place(|| {
        Command::new("node")
            .arg("test/test_denials.mjs")
            .current_dir(&node_dir)
            .envs(env)
            .output()
    })
    .context("running node")?;
    if !out.status.success() {
        bail!(
            "node test/test_denials.mjs failed ({})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(provider.calls().len(), 1, "{:?}", provider.calls());
    Ok(())
}
