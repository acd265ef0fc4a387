//! Redis `TIME` jumping backwards, as after a failover to a primary whose clock is behind: the
//! scripts decide at the latest time the state has seen (its high-water mark), so a clock going
//! back frees no capacity, moves no window, and breaks nothing; decisions resume their normal
//! course once the clock catches up. Redis is real; its clock is the time the backend hands the
//! scripts in place of `TIME` (libfaketime cannot run redis-server: it recurses with jemalloc).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sluice_e2e::redis_server::{RedisCluster, RedisServer};
use sluice_server::{
    backend::RedisBackend,
    config::{Config, RedisConfig, RedisUrl},
    core::Decision,
    limiter::{AcquireRequest, Limiter},
};

const CONFIG: &str = r#"
[[services]]
name = "svc"
limits = [
  { dimension = "requests", amount = 5, window = "1h" },
  { dimension = "tokens", amount = 600, window = "1m", algorithm = "token_bucket", burst = 100 },
]
"#;

const MINUTE: u64 = 60_000_000;

async fn limiter(
    url: String,
    cluster: bool,
) -> anyhow::Result<(Limiter<RedisBackend>, Arc<AtomicU64>)> {
    let specs: Vec<_> = Config::parse(CONFIG)?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = RedisConfig::new(RedisUrl::parse(&url).map_err(anyhow::Error::msg)?)
        .cluster(cluster)
        .key_prefix("clock")
        .timeout(Duration::from_secs(5));
    let now = Arc::new(AtomicU64::new(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64,
    ));
    let backend = RedisBackend::connect(&specs, &config)
        .await?
        .with_manual_time(now.clone());
    Ok((Limiter::new(specs, backend), now))
}

fn acquire(tokens: u64) -> AcquireRequest {
    AcquireRequest {
        service: "svc".into(),
        tokens,
        ..AcquireRequest::default()
    }
}

async fn scenario(l: Limiter<RedisBackend>, now: Arc<AtomicU64>) -> anyhow::Result<()> {
    let start = now.load(Ordering::SeqCst);
    // Five requests over five minutes fill the hour; the bucket is drained by 100 tokens.
    for i in 0..5 {
        now.store(start + i * MINUTE, Ordering::SeqCst);
        let (_, d) = l.acquire(&acquire(if i == 4 { 100 } else { 0 })).await?;
        anyhow::ensure!(matches!(d, Decision::Granted(_)), "grant {i}: {d:?}");
    }
    let denied = |d: Decision| match d {
        Decision::Denied { retry_after, .. } => Ok(retry_after),
        other => Err(anyhow::anyhow!("expected a denial, got {other:?}")),
    };
    let before = denied(l.acquire(&acquire(0)).await?.1)?;
    // 4 minutes in: the first lease leaves the window in 56 minutes.
    assert_eq!(before, 56 * MINUTE);

    // The clock jumps back ten minutes: nothing is freed, no hint moves.
    now.store(start + 4 * MINUTE - 10 * MINUTE, Ordering::SeqCst);
    assert_eq!(denied(l.acquire(&acquire(0)).await?.1)?, before);
    let bucket = l.status("svc").await?;
    assert_eq!(bucket.snapshot.limits[0].used, 5);
    assert_eq!(
        bucket.snapshot.limits[1].used, 100,
        "the bucket did not refill"
    );
    // A wait granted now is measured from the high-water mark, not from the early clock.
    let mut waiting = acquire(0);
    waiting.max_wait = 3_600_000_000;
    match l.acquire(&waiting).await?.1 {
        Decision::Granted(g) => assert_eq!(g.wait, 56 * MINUTE),
        other => anyhow::bail!("expected a grant after a wait, got {other:?}"),
    }

    // Once the clock passes the high-water mark again, time runs as before: at the hour after
    // the first lease, the next slot (the second lease's) frees.
    now.store(start + 61 * MINUTE, Ordering::SeqCst);
    assert!(matches!(
        l.acquire(&acquire(0)).await?.1,
        Decision::Granted(_)
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_going_back_frees_nothing_on_redis() -> anyhow::Result<()> {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    let (l, now) = limiter(redis.url(), false).await?;
    scenario(l, now).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_going_back_frees_nothing_on_redis_cluster() -> anyhow::Result<()> {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await??;
    let (l, now) = limiter(cluster.url(), true).await?;
    scenario(l, now).await
}
