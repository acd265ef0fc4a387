//! A replica's maintenance round sends the `prune` script only to the services that need it: every
//! service once after a start, then none whose last visit found no state (until a call for it
//! comes through), none this replica granted on within the last half retention (its grants prune
//! it), and the rest, which it still prunes. Redis is real; its clock is moved by hand, and its
//! command counters say how many script calls each round made.

use std::{
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
    time::Duration,
};

use sluice_e2e::redis_server::RedisServer;
use sluice_server::{
    backend::{Backend, RedisBackend},
    config::{Config, RedisConfig, RedisUrl},
    core::{Decision, ServiceSpec},
    limiter::{AcquireRequest, Limiter, ReportRequest},
};

const SERVICES: usize = 6;
const S: u64 = 1_000_000;

fn config() -> String {
    (0..SERVICES)
        .map(|i| {
            format!(
                "[[services]]\nname = \"s{i}\"\nlimits = [{{ dimension = \"requests\", amount = 100, window = \"10s\" }}]\n"
            )
        })
        .collect()
}

/// Script calls Redis ran (`FCALL`, or `EVALSHA` and `EVAL` where functions are refused).
fn script_calls(redis: &RedisServer) -> anyhow::Result<u64> {
    Ok(redis.calls_of("fcall")? + redis.calls_of("evalsha")? + redis.calls_of("eval")?)
}

/// Runs one maintenance round; returns the script calls it made.
async fn round(redis: &RedisServer, limiter: &Limiter<RedisBackend>) -> anyhow::Result<u64> {
    let before = script_calls(redis)?;
    limiter.backend().maintain().await;
    Ok(script_calls(redis)? - before)
}

fn spec(limiter: &Limiter<RedisBackend>, name: &str) -> Arc<ServiceSpec> {
    limiter.service(name).expect("configured").spec.clone()
}

#[tokio::test]
async fn maintenance_visits_only_the_services_that_need_it() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let specs: Vec<_> = Config::parse(&config())?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let now = Arc::new(AtomicU64::new(1_800_000_000 * S));
    let redis_config = RedisConfig::new(RedisUrl::parse(&redis.url()).map_err(anyhow::Error::msg)?)
        .key_prefix("sweep")
        .timeout(Duration::from_secs(10));
    let backend = RedisBackend::connect(&specs, &redis_config)
        .await?
        .with_manual_time(now.clone());
    let limiter = Limiter::new(specs, backend);
    let advance = |by: u64| now.fetch_add(by, Ordering::SeqCst);

    // The first round visits every service; none has a state, so the next visits none.
    assert_eq!(round(&redis, &limiter).await?, SERVICES as u64);
    assert_eq!(round(&redis, &limiter).await?, 0);

    // s0 is granted three calls: its grants prune it, so it is left out for half its retention
    // (10 s: 5 s) after the last one.
    for i in 0..3 {
        let request = AcquireRequest {
            service: "s0".into(),
            request_id: format!("r{i}"),
            ..AcquireRequest::default()
        };
        let (_, decision) = limiter.acquire(&request).await?;
        assert!(matches!(decision, Decision::Granted(_)), "{decision:?}");
    }
    assert_eq!(round(&redis, &limiter).await?, 0);
    advance(4 * S);
    assert_eq!(round(&redis, &limiter).await?, 0);
    advance(S);
    assert_eq!(
        round(&redis, &limiter).await?,
        1,
        "s0, 5 s after its grants"
    );
    assert_eq!(
        limiter.backend().lease_count(&spec(&limiter, "s0")).await?,
        3
    );

    // A report on s1 writes a cooldown and no grant: s1 is visited from then on, like s0.
    limiter
        .report(ReportRequest {
            service: "s1".into(),
            status_code: 429,
            headers: vec![("retry-after".into(), "30".into())],
            ..ReportRequest::default()
        })
        .await?;
    assert_eq!(round(&redis, &limiter).await?, 2, "s0 and s1");

    // Still pruning: past s0's retention (10 s after its slots) its leases are gone.
    advance(5 * S + S / 2);
    assert_eq!(round(&redis, &limiter).await?, 2);
    assert_eq!(
        limiter.backend().lease_count(&spec(&limiter, "s0")).await?,
        0
    );

    // A second past that, Redis forgets s0 (quiet for its retention and a second after its last
    // slot): the visit finds no state, and the rounds leave it out again.
    advance(S);
    assert_eq!(round(&redis, &limiter).await?, 2);
    assert_eq!(
        round(&redis, &limiter).await?,
        1,
        "s1 alone, in its cooldown"
    );
    Ok(())
}
