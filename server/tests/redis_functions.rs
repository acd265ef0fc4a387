//! How the Redis backend calls its scripts: as functions of one library (`FCALL`) where Redis
//! allows it, by SHA (`EVALSHA`) where it does not (a server without functions, here one with
//! `FCALL` renamed away; an ACL user without `FCALL`, or who may not load a library). Either way
//! the same decisions come out: a limit of three requests grants three and denies the fourth.
//! Redis is real; its command counters say which way the calls went.

use std::{sync::Arc, time::Duration};

use sluice_e2e::redis_server::RedisServer;
use sluice_server::{
    backend::{AcquireCall, Backend, RedisBackend},
    config::{Config, RedisConfig, RedisUrl},
    core::{Class, Cost, Decision, ServiceSpec},
};

const CONFIG: &str = r#"
[[services]]
name = "svc"
limits = [{ dimension = "requests", amount = 3, window = "1h" }]
"#;

/// Four acquires of `svc` through a backend on `url`: which were granted.
async fn four_acquires(url: &str) -> anyhow::Result<Vec<bool>> {
    let specs: Vec<Arc<ServiceSpec>> = Config::parse(CONFIG)?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = RedisConfig::new(RedisUrl::parse(url).map_err(anyhow::Error::msg)?)
        .key_prefix("functions")
        .timeout(Duration::from_secs(10));
    let backend = RedisBackend::connect(&specs, &config).await?;
    let mut granted = Vec::new();
    for _ in 0..4 {
        let call = AcquireCall {
            cost: Cost::of_call(0, 0, 0),
            max_wait: 0,
            request_id: None,
            class: Class::TOP,
        };
        let decision = backend.acquire(&specs[0], call).await?;
        granted.push(matches!(decision, Decision::Granted(_)));
    }
    Ok(granted)
}

#[tokio::test]
async fn scripts_are_functions_of_one_library_where_redis_has_functions() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    assert_eq!(
        four_acquires(&redis.url()).await?,
        [true, true, true, false]
    );
    assert_eq!(redis.calls_of("fcall")?, 4);
    assert_eq!(redis.calls_of("function|load")?, 1, "loaded once");
    assert_eq!(redis.calls_of("evalsha")? + redis.calls_of("eval")?, 0);
    Ok(())
}

#[tokio::test]
async fn a_redis_without_functions_is_called_by_sha() -> anyhow::Result<()> {
    // FCALL renamed away: Redis answers "unknown command", as before 7.0.
    let redis = RedisServer::start_with(&["--rename-command", "FCALL", "FCALL_HIDDEN"])?;
    assert_eq!(
        four_acquires(&redis.url()).await?,
        [true, true, true, false]
    );
    assert_eq!(redis.calls_of("evalsha")? + redis.calls_of("eval")?, 4);
    Ok(())
}

#[tokio::test]
async fn an_acl_user_without_fcall_is_called_by_sha() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let rule = [
        "ACL",
        "SETUSER",
        "worker",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-fcall",
        "-function",
    ];
    assert_eq!(redis.text(&rule)?, "OK");
    let url = format!("redis://worker:pw@127.0.0.1:{}", redis.port);
    assert_eq!(four_acquires(&url).await?, [true, true, true, false]);
    assert_eq!(redis.calls_of("evalsha")? + redis.calls_of("eval")?, 4);
    assert_eq!(redis.calls_of("function|load")?, 0);
    Ok(())
}

#[tokio::test]
async fn an_acl_user_who_may_call_but_not_load_functions_is_called_by_sha() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let rule = [
        "ACL",
        "SETUSER",
        "caller",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-function",
    ];
    assert_eq!(redis.text(&rule)?, "OK");
    let url = format!("redis://caller:pw@127.0.0.1:{}", redis.port);
    assert_eq!(four_acquires(&url).await?, [true, true, true, false]);
    // One FCALL found no library, the load was refused: SHA from then on.
    assert_eq!(redis.calls_of("evalsha")? + redis.calls_of("eval")?, 4);
    Ok(())
}
