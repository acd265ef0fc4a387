//! A Node worker (`@grpc/grpc-js`, the API loaded from proto/ by `@grpc/proto-loader`) drives a
//! real server: acquire and report a fetch Response with usage, a slot that must be waited for, a
//! 429 that cools the service down, a denial during the cooldown. The checks live in
//! `clients/node/test/test_worker.mjs`; this test starts the server and runs it. The package's
//! shipped copy of the proto is checked against `proto/`.

use std::process::Command;

use anyhow::{bail, Context};
use sluice_e2e::{polyglot, spawn_server, WORKER_EXAMPLES_CONFIG};

#[test]
fn the_node_package_ships_the_current_proto() -> anyhow::Result<()> {
    let root = polyglot::root();
    let shipped = std::fs::read_to_string(root.join("clients/node/proto/sluice/v1/sluice.proto"))?;
    let current = std::fs::read_to_string(root.join("proto/sluice/v1/sluice.proto"))?;
    assert!(
        shipped == current,
        "clients/node/proto is stale: cp proto/sluice/v1/sluice.proto clients/node/proto/sluice/v1/"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_worker_acquires_waits_reports_and_sees_the_cooldown() -> anyhow::Result<()> {
    let dir = polyglot::node_client()?;
    let server = spawn_server(WORKER_EXAMPLES_CONFIG).await?;
    let addr = server.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("test/test_worker.mjs")
            .current_dir(dir)
            .env("SLUICE_ADDR", addr)
            .output()
    })
    .await?
    .context("running node (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "node test/test_worker.mjs failed ({})\nstdout:\n{}\nstderr:\n{}",
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

#[test]
fn the_node_call_rules_agree_with_the_python_ones() -> anyhow::Result<()> {
    let out = Command::new("node")
        .arg("test/test_calls.mjs")
        .current_dir(polyglot::node_client()?)
        .output()
        .context("running node")?;
    if !out.status.success() {
        bail!(
            "node test/test_calls.mjs failed ({})\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
