//! A Redis state written by an older release is read by this one: the adaptive budget's fields
//! were renamed (`as at ae ap ar` → `ps pt pe pp pr`, so that the `a` prefix names adopted
//! budgets only). A state holding the old names keeps its lowered budget, and the next throttle
//! writes the new names and drops the old. Redis is real; its clock is moved by hand.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sluice_e2e::redis_server::RedisServer;
use sluice_server::{
    backend::RedisBackend,
    config::{Config, RedisConfig, RedisUrl},
    limiter::{Limiter, ReportRequest},
};

const CONFIG: &str = r#"
[[services]]
name = "quiet"
adaptive = true
default_cooldown = "2s"
limits = [{ dimension = "requests", amount = 100, window = "10s" }]
"#;

/// The state hash of `quiet` under the test's key prefix.
const STATE: &str = "{upgrade:quiet}:s";

fn throttle() -> ReportRequest {
    ReportRequest {
        service: "quiet".into(),
        status_code: 429,
        ..ReportRequest::default()
    }
}

async fn scale(l: &Limiter<RedisBackend>) -> anyhow::Result<u32> {
    Ok(l.status("quiet").await?.snapshot.adaptive_scale)
}

fn fields(redis: &RedisServer) -> anyhow::Result<Vec<String>> {
    let redis::Value::Array(keys) = redis.command(&["HKEYS", STATE])? else {
        anyhow::bail!("HKEYS answered no array");
    };
    let mut names: Vec<String> = keys
        .into_iter()
        .filter_map(|k| match k {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        })
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn a_state_with_the_old_adaptive_field_names_keeps_its_budget() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let specs: Vec<_> = Config::parse(CONFIG)?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = RedisConfig::new(RedisUrl::parse(&redis.url()).map_err(anyhow::Error::msg)?)
        .key_prefix("upgrade")
        .timeout(Duration::from_secs(5));
    let now = Arc::new(AtomicU64::new(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64,
    ));
    let backend = RedisBackend::connect(&specs, &config)
        .await?
        .with_manual_time(now.clone());
    let l = Limiter::new(specs, backend);

    l.report(throttle()).await?;
    assert_eq!(scale(&l).await?, 700);
    // Make it a state an older release wrote: the adaptive fields under their old names.
    for (new, old) in [
        ("ps", "as"),
        ("pt", "at"),
        ("pe", "ae"),
        ("pp", "ap"),
        ("pr", "ar"),
    ] {
        let value = redis.text(&["HGET", STATE, new])?;
        redis.command(&["HSET", STATE, old, &value])?;
        redis.command(&["HDEL", STATE, new])?;
    }
    assert!(fields(&redis)?.contains(&"as".to_string()));
    assert_eq!(scale(&l).await?, 700, "the old fields are read");

    // After its cooldown episode, the next throttle lowers from there and writes the new names.
    now.fetch_add(3_000_000, Ordering::SeqCst);
    l.report(throttle()).await?;
    assert_eq!(scale(&l).await?, 490);
    let names = fields(&redis)?;
    for old in ["as", "at", "ae", "ap", "ar"] {
        assert!(!names.contains(&old.to_string()), "{old} left in {names:?}");
    }
    for new in ["ps", "pt", "pe", "pp", "pr"] {
        assert!(
            names.contains(&new.to_string()),
            "{new} missing from {names:?}"
        );
    }
    Ok(())
}
