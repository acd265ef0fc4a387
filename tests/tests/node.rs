//! A Node worker (`@grpc/grpc-js`, the API loaded from proto/ by `@grpc/proto-loader`) drives a
//! real server: acquire and report a fetch Response with usage, a slot that must be waited for, a
//! 429 that cools the service down, a denial during the cooldown. The checks live in
//! `examples/node/test_worker.mjs`; this test starts the server and runs it.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context};
use sluice_e2e::{spawn_server, WORKER_EXAMPLES_CONFIG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_worker_acquires_waits_reports_and_sees_the_cooldown() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/node");
    if !dir.join("node_modules/@grpc/grpc-js").exists() {
        bail!("examples/node has no node_modules: run `npm ci` there (.ci/run does)");
    }
    let server = spawn_server(WORKER_EXAMPLES_CONFIG).await?;
    let addr = server.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("test_worker.mjs")
            .current_dir(dir)
            .env("SLUICE_ADDR", addr)
            .output()
    })
    .await?
    .context("running node (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "node test_worker.mjs failed ({})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = server.client().await?.status("llm").await?;
    assert_eq!(
        status.cooldown.map(|c| c.cause),
        Some("429 retry-after".to_string())
    );
    Ok(())
}
