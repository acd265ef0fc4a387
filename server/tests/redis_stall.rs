//! A short Redis stall must not pin a service afterwards. Acquires answered UNAVAILABLE while
//! Redis was frozen (SIGSTOP) still sit in the socket and run when it thaws; they carry their
//! deadline in Redis's clock and book nothing once it has passed, so the in-flight slots are free
//! as soon as Redis answers again. Real redis-server processes (single and cluster), real time.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sluice_e2e::redis_server::{RedisCluster, RedisServer};
use sluice_server::{
    backend::{Backend, RedisBackend},
    config::{Config, RedisConfig, RedisUrl},
    core::Decision,
    error::Error,
    limiter::{AcquireRequest, Limiter, ReportRequest},
};

const CONFIG: &str = r#"
[[services]]
name = "pool"
limits = [
  { dimension = "concurrent", amount = 4, timeout = "10m" },
  { dimension = "requests", amount = 1000, window = "1m" },
]
"#;

const STALL: Duration = Duration::from_millis(1500);

async fn limiter(url: String, cluster: bool) -> anyhow::Result<Arc<Limiter<RedisBackend>>> {
    let specs: Vec<_> = Config::parse(CONFIG)?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = RedisConfig::new(RedisUrl::parse(&url).map_err(anyhow::Error::msg)?)
        .cluster(cluster)
        .key_prefix("stall")
        .timeout(Duration::from_millis(250));
    let backend = RedisBackend::connect(&specs, &config).await?;
    Ok(Arc::new(Limiter::new(specs, backend)))
}

fn acquire() -> AcquireRequest {
    AcquireRequest {
        service: "pool".into(),
        ..AcquireRequest::default()
    }
}

/// Calls in flight, as the service's status counts them.
async fn in_flight(l: &Limiter<RedisBackend>) -> anyhow::Result<u64> {
    Ok(l.status("pool").await?.snapshot.limits[0].used)
}

/// Freezes Redis (`pause`) for [`STALL`] while 8 workers acquire and retry as the clients do,
/// thaws it (`resume`), and checks that nothing booked during the stall holds a slot.
async fn scenario(
    l: Arc<Limiter<RedisBackend>>,
    pause: impl Fn() -> anyhow::Result<()>,
    resume: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Redis's clock is learned from the readiness probe and from grants.
    l.backend().ready().await.map_err(anyhow::Error::msg)?;
    let (_, d) = l.acquire(&acquire()).await?;
    let Decision::Granted(g) = d else {
        anyhow::bail!("expected a grant, got {d:?}");
    };
    l.report(ReportRequest {
        service: "pool".into(),
        lease_id: g.lease_id.to_string(),
        status_code: 200,
        ..ReportRequest::default()
    })
    .await?;
    anyhow::ensure!(in_flight(&l).await? == 0);

    pause()?;
    let stall_ends = Instant::now() + STALL;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move {
                let mut unavailable = 0u32;
                while Instant::now() < stall_ends {
                    match l.acquire(&acquire()).await {
                        Err(Error::Unavailable(_)) => unavailable += 1,
                        other => return Err(anyhow::anyhow!("during the stall: {other:?}")),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(unavailable)
            })
        })
        .collect();
    let mut refused = 0;
    for w in workers {
        refused += w.await??;
    }
    anyhow::ensure!(
        refused >= 8,
        "only {refused} acquires were tried during the stall"
    );
    resume()?;

    // As soon as Redis answers again, every slot is free: nothing answered UNAVAILABLE booked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let used = loop {
        match in_flight(&l).await {
            Ok(used) => break used,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    };
    anyhow::ensure!(
        used == 0,
        "{used} of 4 slots held by acquires answered UNAVAILABLE"
    );
    for i in 0..4 {
        let (_, d) = l.acquire(&acquire()).await?;
        anyhow::ensure!(
            matches!(d, Decision::Granted(_)),
            "fresh acquire {i}: {d:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stall_books_nothing_for_callers_answered_unavailable() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let l = limiter(redis.url(), false).await?;
    scenario(l, || redis.pause(), || redis.resume()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stall_of_a_cluster_books_nothing_for_callers_answered_unavailable(
) -> anyhow::Result<()> {
    let cluster = RedisCluster::start()?;
    let l = limiter(cluster.url(), true).await?;
    let each = |f: fn(&RedisServer) -> anyhow::Result<()>| {
        let nodes = &cluster.nodes;
        move || nodes.iter().try_for_each(f)
    };
    scenario(l, each(RedisServer::pause), each(RedisServer::resume)).await
}
