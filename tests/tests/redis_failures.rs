//! The Redis backend when Redis misbehaves: scripts are reloaded after `FUNCTION FLUSH` and after a
//! Redis restart, the connection comes back by itself, and a Redis outage answers `UNAVAILABLE`
//! under `fail_closed` but a logged grant under `fail_open`.

use std::time::{Duration, Instant};

use sluice::v1::AcquireRequest;
use sluice_e2e::{redis_server::RedisServer, spawn_server, Store};
use tonic::Code;

const CONFIG: &str = r#"
[[services]]
name = "svc"
limits = [{ dimension = "requests", amount = 1000, window = "1m" }]
"#;

fn acquire() -> AcquireRequest {
    AcquireRequest {
        service: "svc".into(),
        ..AcquireRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_and_connections_come_back_after_flush_and_restart() -> anyhow::Result<()> {
    let mut store = Store::redis()?;
    let server = store.spawn_server(CONFIG).await?;
    let client = server.client().await?;
    client.acquire("svc").without_sleep().await?;

    let Store::Redis(redis, _) = &mut store else {
        unreachable!("a redis store")
    };
    // The scripts are one function library on a Redis with functions.
    let libraries = redis.text(&["FUNCTION", "LIST"])?;
    assert!(libraries.contains("sluice_"), "{libraries}");
    assert_eq!(redis.text(&["FUNCTION", "FLUSH"])?, "OK");
    // "Function not found" is answered by loading the library again, within the same call.
    client.acquire("svc").without_sleep().await?;
    assert!(redis.text(&["FUNCTION", "LIST"])?.contains("sluice_"));
    // SCRIPT FLUSH leaves the functions alone (where they are in use).
    assert_eq!(redis.text(&["SCRIPT", "FLUSH"])?, "OK");
    client.acquire("svc").without_sleep().await?;
    let status = client.status("svc").await?;
    assert_eq!(status.limits[0].used, 3);

    // A restart loses the scripts and the connection (and, without persistence, the state).
    redis.restart()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.acquire("svc").without_sleep().await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let status = client.status("svc").await?;
    assert_eq!(
        status.limits[0].used, 1,
        "state starts over after the restart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_unavailable_under_fail_closed() -> anyhow::Result<()> {
    let mut store = Store::redis()?;
    let server = store.spawn_server(CONFIG).await?;
    let mut raw = server.raw_client().await?;
    assert!(raw.acquire(acquire()).await?.into_inner().granted);
    let Store::Redis(redis, _) = &mut store else {
        unreachable!("a redis store")
    };
    redis.stop()?;
    let err = raw
        .acquire(acquire())
        .await
        .expect_err("no grant without redis");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("redis"), "{}", err.message());
    let err = raw
        .get_status(sluice::v1::GetStatusRequest {
            service: "svc".into(),
        })
        .await
        .expect_err("no status without redis");
    assert_eq!(err.code(), Code::Unavailable);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_grants_and_logs_under_fail_open() -> anyhow::Result<()> {
    let mut redis = RedisServer::start()?;
    let config = format!(
        "{CONFIG}\n[backend]\nkind = \"redis\"\nurl = \"redis://default:hunter2@127.0.0.1:{}\"\non_failure = \"fail_open\"\ntimeout = \"500ms\"\n",
        redis.port
    );
    // The default user has no password, so AUTH with one fails: set it, then connect.
    redis.text(&["CONFIG", "SET", "requirepass", "hunter2"])?;
    let server = spawn_server(&config).await?;
    let mut raw = server.raw_client().await?;
    let normal = raw.acquire(acquire()).await?.into_inner();
    assert!(normal.granted);
    assert_ne!(normal.lease_id, "0000000000000000-0");

    redis.stop()?;
    let open = raw.acquire(acquire()).await?.into_inner();
    assert!(open.granted, "fail_open grants");
    assert_eq!(open.lease_id, "0000000000000000-0");
    assert_eq!(open.wait, Some(prost_types::Duration::default()));
    // The warning is written as the answer goes out: wait for it rather than race it.
    server.wait_for_log("fail_open", 1).await?;
    let log = server.log();
    assert!(!log.contains("hunter2"), "the password was logged:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_speak_tls() -> anyhow::Result<()> {
    let redis = RedisServer::start_tls()?;
    assert!(redis.url().starts_with("rediss://"));
    let ca = redis
        .ca_file()
        .ok_or_else(|| anyhow::anyhow!("a TLS server has a CA file"))?;
    let config = format!(
        "{CONFIG}\n[backend]\nkind = \"redis\"\nurl = \"{}\"\ntls_ca_file = \"{}\"\n",
        redis.url(),
        ca.display()
    );
    let server = spawn_server(&config).await?;
    let mut raw = server.raw_client().await?;
    assert!(raw.acquire(acquire()).await?.into_inner().granted);
    let keys = redis.command(&["DBSIZE"])?;
    assert_ne!(keys, redis::Value::Int(0), "state was written over TLS");
    Ok(())
}
