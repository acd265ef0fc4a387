//! `sluice-bench sdk-latency`: what Sluice's Python transport adds to an official SDK call. A
//! Sluice server (memory backend, its own runtime) and a simulated OpenAI-style provider run here
//! on loopback; `clients/python/bench/sdk_latency.py` (run with the virtualenv `scripts/test`
//! provisions, or `$SLUICE_PYTHON`) times the same chat completion through `openai.OpenAI` with a
//! plain HTTP client and with `sluice.http.client(...)`, alternating, and prints the percentiles.

use std::time::Duration;

use anyhow::Context;
use sluice_e2e::polyglot;
use sluice_server::config::Config;
use sluice_sim::{budget, Enforcement, HeaderMode, ProviderConfig, SimProvider, Style};

use crate::target::InProcess;

/// Options of `sdk-latency`.
#[derive(clap::Args)]
pub struct SdkLatencyArgs {
    /// Timed calls each way.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Untimed calls first.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
}

const CONFIG: &str = r#"
[[services]]
name = "sim-openai/gpt-4o-mini"
profile = "openai"
limits = [
  { dimension = "requests", amount = 1000000, window = "1m" },
  { dimension = "tokens", amount = 100000000, window = "1m" },
]
"#;

/// Runs the comparison and prints the script's figures.
pub async fn run(args: SdkLatencyArgs) -> anyhow::Result<()> {
    let provider = SimProvider::start(ProviderConfig {
        style: Style::OpenAi,
        headers: HeaderMode::Always,
        budgets: vec![budget(
            0,
            1 << 40,
            Duration::from_secs(60),
            Enforcement::TokenBucket,
        )],
        latency: Duration::ZERO,
    })
    .await?;
    let server = InProcess::sluice(2, Config::parse(CONFIG)?)?;
    let script = polyglot::root().join("clients/python/bench/sdk_latency.py");
    let (calls, warmup) = (args.calls.to_string(), args.warmup.to_string());
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(polyglot::python())
            .arg(&script)
            .env("SLUICE_ADDR", server.addr.to_string())
            .env("OPENAI_BASE_URL", format!("http://{}/v1", provider.addr()))
            .env("CALLS", &calls)
            .env("WARMUP", &warmup)
            .output()
    })
    .context("running python (scripts/test provisions target/venv)")?;
    anyhow::ensure!(
        out.status.success(),
        "sdk_latency.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ms = |k: &str, p: &str| figures[k][p].as_f64().unwrap_or(f64::NAN);
    println!(
        "sdk-latency: {calls} chat completions each way, openai SDK (Python) against the simulated provider on loopback"
    );
    for (name, key) in [("plain httpx2", "plain"), ("sluice transport", "sluice")] {
        println!(
            "{name:<17} p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms",
            ms(key, "p50_ms"),
            ms(key, "p99_ms"),
            ms(key, "mean_ms")
        );
    }
    println!(
        "added by Sluice   p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms",
        ms("added", "p50_ms"),
        ms("added", "p99_ms"),
        ms("added", "mean_ms")
    );
    println!("{figures}");
    Ok(())
}
