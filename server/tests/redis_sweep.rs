//! A replica's maintenance round sends the `prune` script only to the services that need it: every
//! service once after a start; then none whose last visit found no state until a call for it
//! comes through, none before the time its last visit answered (its oldest lease past its
//! retention, or with an empty log the time it is forgotten), none this replica granted on within
//! the last half retention (its grants prune it); and the visits still prune and forget. Redis is
//! real; its clock is moved by hand, and its command counters say how many script calls each
//! round made.

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

/// A limiter of `config` on `redis`, its clock set by hand (the second value).
async fn start(
    redis: &RedisServer,
    config: &str,
) -> anyhow::Result<(Limiter<RedisBackend>, Arc<AtomicU64>)> {
    let specs: Vec<_> = Config::parse(config)?
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
    Ok((Limiter::new(specs, backend), now))
}

/// Asks `service` for one request; it must be granted.
async fn grant(limiter: &Limiter<RedisBackend>, service: &str, id: &str) -> anyhow::Result<()> {
    let request = AcquireRequest {
        service: service.into(),
        request_id: id.into(),
        ..AcquireRequest::default()
    };
    let (_, decision) = limiter.acquire(&request).await?;
    anyhow::ensure!(matches!(decision, Decision::Granted(_)), "{decision:?}");
    Ok(())
}

fn spec(limiter: &Limiter<RedisBackend>, name: &str) -> Arc<ServiceSpec> {
    limiter.service(name).expect("configured").spec.clone()
}

#[tokio::test]
async fn maintenance_visits_only_the_services_that_need_it() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let (limiter, now) = start(&redis, &config()).await?;
    let advance = |by: u64| now.fetch_add(by, Ordering::SeqCst);

    // The first round visits every service; none has a state, so the next visits none.
    assert_eq!(round(&redis, &limiter).await?, SERVICES as u64);
    assert_eq!(round(&redis, &limiter).await?, 0);

    // s0 is granted three calls: its grants prune it, so it is left out for half its retention
    // (10 s: 5 s) after the last one.
    for id in ["r0", "r1", "r2"] {
        grant(&limiter, "s0", id).await?;
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
    // That visit said when its oldest lease can go (10 s after its slot): not before.
    advance(4 * S);
    assert_eq!(round(&redis, &limiter).await?, 0);

    // A report on s1 writes a cooldown (30 s) and no lease: one visit, which says s1 has nothing
    // to do before Redis would forget it.
    limiter
        .report(ReportRequest {
            service: "s1".into(),
            status_code: 429,
            headers: vec![("retry-after".into(), "30".into())],
            ..ReportRequest::default()
        })
        .await?;
    assert_eq!(round(&redis, &limiter).await?, 1, "s1");
    assert_eq!(round(&redis, &limiter).await?, 0);

    // Past s0's retention the next visit prunes its leases; a second later (quiet for its
    // retention and a second after its last slot) the next forgets it, and the rounds leave it
    // out again.
    advance(S);
    assert_eq!(
        round(&redis, &limiter).await?,
        1,
        "s0, 10 s after its grants"
    );
    assert_eq!(
        limiter.backend().lease_count(&spec(&limiter, "s0")).await?,
        0
    );
    assert_eq!(redis.text(&["EXISTS", "{sweep:s0}:ledger"])?, "1");
    assert_eq!(round(&redis, &limiter).await?, 0);
    advance(S);
    assert_eq!(round(&redis, &limiter).await?, 1, "s0, forgotten");
    assert_eq!(redis.text(&["EXISTS", "{sweep:s0}:ledger"])?, "0");
    assert_eq!(round(&redis, &limiter).await?, 0);

    // A call through this replica brings a service back into the rounds: a grant on s2, with
    // time moved past half its retention, is visited.
    grant(&limiter, "s2", "").await?;
    advance(5 * S);
    assert_eq!(round(&redis, &limiter).await?, 1, "s2");
    Ok(())
}

#[tokio::test]
async fn a_family_members_call_brings_its_ancestors_back_into_the_rounds() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let config = "[[services]]\nname = \"org\"\nlimits = [{ dimension = \"requests\", amount = 100, window = \"10s\" }]\n\n[[services]]\nname = \"model\"\nparent = \"org\"\nlimits = [{ dimension = \"requests\", amount = 50, window = \"10s\" }]\n";
    let (limiter, now) = start(&redis, config).await?;

    // Neither has a state: both visited once, then left out.
    assert_eq!(round(&redis, &limiter).await?, 2);
    assert_eq!(round(&redis, &limiter).await?, 0);
    // A call of the member books in the parent's log too: past half the member's retention both
    // are visited, and the parent's lease is pruned once past its retention.
    grant(&limiter, "model", "").await?;
    assert_eq!(
        round(&redis, &limiter).await?,
        1,
        "org, not granted on itself"
    );
    now.fetch_add(10 * S, Ordering::SeqCst);
    assert_eq!(round(&redis, &limiter).await?, 2, "org and model");
    assert_eq!(
        limiter
            .backend()
            .lease_count(&spec(&limiter, "org"))
            .await?,
        0
    );
    Ok(())
}
