//! Graceful shutdown of a real server process on SIGTERM: health turns NOT_SERVING for clients
//! already watching, in-flight streams are drained within `shutdown_grace`, and the process exits
//! cleanly.

use sluice_e2e::Store;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

const CONFIG: &str = r#"
shutdown_grace = "1s"

[[services]]
name = "svc"
limits = [{ dimension = "requests", amount = 10, window = "1m" }]
"#;

sluice_e2e::on_every_backend!(sigterm_reports_not_serving_then_exits_cleanly);

async fn sigterm_reports_not_serving_then_exits_cleanly(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let mut health = server.health().await?;
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "sluice.v1.RateLimiter".into(),
        })
        .await?
        .into_inner();
    let first = watch.message().await?.map(|m| m.status);
    assert_eq!(first, Some(ServingStatus::Serving as i32));

    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(m)) = watch.message().await {
            seen.push(m.status);
        }
        seen
    });
    let code = server.terminate().await?;
    assert_eq!(code, Some(0), "clean exit");
    let seen = watcher.await?;
    assert_eq!(
        seen.first(),
        Some(&(ServingStatus::NotServing as i32)),
        "{seen:?}"
    );
    Ok(())
}
