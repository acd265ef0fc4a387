//! The decoded states a Redis node keeps between script calls (`common.lua`, `cached_state`)
//! never stand in for a state that changed behind them: a call decides on what the ledger holds
//! now. Redis is real (the scripts run as its function library, where the cache lives); its clock
//! is moved by hand.

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sluice_e2e::redis_server::RedisServer;
use sluice_server::{
    backend::RedisBackend,
    config::{Config, RedisConfig, RedisUrl},
    core::{Decider, Decision},
    limiter::{AcquireRequest, Limiter},
};

const CONFIG: &str = r#"
[[services]]
name = "svc"
limits = [{ dimension = "requests", amount = 10, window = "10s" }]
"#;

const LEDGER: &str = "{cache:svc}:ledger";

/// Sets a cooldown on the state in place (decoded, changed, encoded again, as no Sluice call
/// would write it): what a write the cache did not see looks like.
const SET_COOLDOWN: &str = r#"
local st = cmsgpack.unpack(redis.call('HGET', KEYS[1], ''))
st.cu0, st.cs0, st.cc0, st.ch = tonumber(ARGV[1]), 429, 'test', tonumber(ARGV[1])
redis.call('HSET', KEYS[1], '', cmsgpack.pack(st))
return 1
"#;

fn call(request_id: &str) -> AcquireRequest {
    AcquireRequest {
        service: "svc".into(),
        request_id: request_id.into(),
        ..AcquireRequest::default()
    }
}

#[tokio::test]
async fn a_state_changed_behind_the_cache_is_read_again() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let specs: Vec<_> = Config::parse(CONFIG)?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = RedisConfig::new(RedisUrl::parse(&redis.url()).map_err(anyhow::Error::msg)?)
        .key_prefix("cache")
        .timeout(Duration::from_secs(5));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
    let backend = RedisBackend::connect(&specs, &config)
        .await?
        .with_manual_time(Arc::new(AtomicU64::new(now)));
    let l = Limiter::new(specs.clone(), backend);

    // Two grants: the second decides on the state the first wrote (and left decoded).
    for id in ["a", "b"] {
        let (_, d) = l.acquire(&call(id)).await?;
        assert!(matches!(d, Decision::Granted(_)), "{d:?}");
    }
    let until = now + 5_000_000;
    redis.command(&["EVAL", SET_COOLDOWN, "1", LEDGER, &until.to_string()])?;

    // The next call sees the cooldown written behind the cache.
    let (_, d) = l.acquire(&call("c")).await?;
    assert!(
        matches!(
            d,
            Decision::Denied {
                decider: Decider::Cooldown,
                retry_after: 5_000_000,
                ..
            }
        ),
        "{d:?}"
    );
    // A denial gives the state back unchanged: the next denial says the same, and a retry of "b"
    // still finds its lease.
    let (_, again) = l.acquire(&call("d")).await?;
    assert!(
        matches!(
            again,
            Decision::Denied {
                decider: Decider::Cooldown,
                ..
            }
        ),
        "{again:?}"
    );
    let (_, replay) = l.acquire(&call("b")).await?;
    assert!(
        matches!(replay, Decision::Granted(ref g) if g.lease_id.seq == 1),
        "{replay:?}"
    );
    Ok(())
}
