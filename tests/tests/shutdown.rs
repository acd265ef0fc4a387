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

/// In-flight acquires at SIGTERM: Redis is frozen, so each admitted acquire takes the backend's
/// whole timeout (then a `fail_open` grant). SIGTERM comes while they wait: health turns
/// NOT_SERVING for a watcher, every admitted call still gets its answer, and the process exits
/// within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_acquires_finish_within_the_grace_period() -> anyhow::Result<()> {
    let redis = sluice_e2e::redis_server::RedisServer::start()?;
    let config = format!(
        "{}\n[backend]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"\non_failure = \"fail_open\"\n",
        CONFIG.replace("shutdown_grace = \"1s\"", "shutdown_grace = \"5s\""),
        redis.url()
    );
    let server = sluice_e2e::spawn_server(&config).await?;
    let mut watch = server
        .health()
        .await?
        .watch(HealthCheckRequest {
            service: "sluice.v1.RateLimiter".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        watch.message().await?.map(|m| m.status),
        Some(ServingStatus::Serving as i32)
    );
    let raw = server.raw_client().await?;
    redis.pause()?;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut raw = raw.clone();
            tokio::spawn(async move {
                let outcome = raw
                    .acquire(sluice::v1::AcquireRequest {
                        service: "svc".into(),
                        ..Default::default()
                    })
                    .await;
                (outcome.map(|r| r.into_inner().granted), started.elapsed())
            })
        })
        .collect();
    // Let the calls reach the server (they then wait a whole second on the frozen Redis).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let term_at = started.elapsed();
    let exit = tokio::spawn(server.terminate());
    assert_eq!(
        watch.message().await?.map(|m| m.status),
        Some(ServingStatus::NotServing as i32)
    );
    let mut answered_after_term = 0;
    for call in calls {
        let (outcome, at) = call.await?;
        match outcome {
            Ok(granted) => {
                assert!(granted);
                if at > term_at {
                    answered_after_term += 1;
                }
            }
            // Only a call that had not reached the server may be refused, never cut.
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
    }
    assert!(answered_after_term > 0, "no call was in flight at SIGTERM");
    let code = exit.await??;
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(5) + term_at);
    redis.resume()?;
    Ok(())
}
