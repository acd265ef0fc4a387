//! Three `sluice-server` replicas sharing one Redis (and, separately, one Redis Cluster; and each
//! again with the Sluice module deciding, `engine = "module"`): 64
//! workers spread over them hammer one service. Every grant is recorded with its slot time and
//! lease sequence number, then: the window invariants hold exactly across replicas, slots follow
//! the order in which Redis booked them, each replica's answers respect causality, and the
//! limits were kept busy (at least 95% of the binding limit's capacity was granted).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use sluice_e2e::{micros, Store};

const CONFIG: &str = r#"
[[services]]
name = "shared"
limits = [
  { dimension = "requests", amount = 100, window = "1s" },
  { dimension = "tokens", amount = 1500, window = "1s" },
]
"#;

const REPLICAS: usize = 3;
const WORKERS: usize = 64;
/// Grants after which the workers stop (about eight windows of the token limit).
const GRANTS: usize = 300;
const LIMITS: [(&str, u64, u64); 2] = [("requests", 100, 1_000_000), ("tokens", 1500, 1_000_000)];

#[derive(Clone, Debug)]
struct Grant {
    replica: usize,
    sent: Instant,
    received: Instant,
    slot: u64,
    seq: u64,
    tokens: u64,
}

impl Grant {
    fn cost(&self, dimension: &str) -> u64 {
        if dimension == "requests" {
            1
        } else {
            self.tokens
        }
    }
}

async fn hammer(store: &Store) -> anyhow::Result<Vec<Grant>> {
    let mut servers = Vec::new();
    for _ in 0..REPLICAS {
        servers.push(store.spawn_server(CONFIG).await?);
    }
    let grants: Arc<Mutex<Vec<Grant>>> = Arc::default();
    let started = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let replica = w % REPLICAS;
        let client = servers[replica].client().await?;
        let grants = grants.clone();
        let started = started.clone();
        workers.push(tokio::spawn(async move {
            let mut call = 0u64;
            while started.fetch_add(1, Ordering::SeqCst) < GRANTS {
                let tokens = 30 + (w as u64 * 7 + call * 13) % 21;
                call += 1;
                let sent = Instant::now();
                let permit = client
                    .acquire("shared")
                    .tokens(tokens)
                    .max_wait(Duration::from_secs(60))
                    .without_sleep()
                    .await?;
                let received = Instant::now();
                let seq = permit
                    .lease_id()
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("lease id {:?}", permit.lease_id()))?;
                grants
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push(Grant {
                        replica,
                        sent,
                        received,
                        slot: micros(permit.slot_time()),
                        seq,
                        tokens,
                    });
                // A worker makes its call when its slot comes, then asks again.
                tokio::time::sleep(permit.wait()).await;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let grants = grants
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(grants)
}

fn check(mut grants: Vec<Grant>) {
    assert_eq!(grants.len(), GRANTS, "every acquire was granted");

    // Redis booked the slots in one order (the lease sequence): slots never go back in it.
    grants.sort_by_key(|g| g.seq);
    for pair in grants.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "lease sequence numbers are unique"
        );
        assert!(
            pair[0].slot <= pair[1].slot,
            "lease {} got slot {} after lease {} got {}",
            pair[1].seq,
            pair[1].slot,
            pair[0].seq,
            pair[0].slot
        );
    }

    // Per replica: an acquire sent after another's answer arrived never gets an earlier slot.
    for replica in 0..REPLICAS {
        let mut mine: Vec<&Grant> = grants.iter().filter(|g| g.replica == replica).collect();
        assert!(!mine.is_empty(), "replica {replica} served grants");
        mine.sort_by_key(|g| g.received);
        let mut latest_answered = 0;
        let mut answered = 0;
        let mut by_sent = mine.clone();
        by_sent.sort_by_key(|g| g.sent);
        for g in by_sent {
            while answered < mine.len() && mine[answered].received < g.sent {
                latest_answered = latest_answered.max(mine[answered].slot);
                answered += 1;
            }
            assert!(
                g.slot >= latest_answered,
                "replica {replica}: slot {} is before an earlier answer's {latest_answered}",
                g.slot
            );
        }
    }

    // Sliding windows: in every interval [s, s + W), at most the amount, across all replicas.
    grants.sort_by_key(|g| g.slot);
    let first = grants[0].slot;
    let last = grants[grants.len() - 1].slot;
    let mut best_utilisation = 0.0f64;
    for (dimension, amount, window) in LIMITS {
        for (i, g) in grants.iter().enumerate() {
            let in_window: u64 = grants[i..]
                .iter()
                .take_while(|h| h.slot < g.slot + window)
                .map(|h| h.cost(dimension))
                .sum();
            assert!(
                in_window <= amount,
                "{dimension}: {in_window} in the window from {}",
                g.slot
            );
        }
        // Busy: over the whole windows of the run, the granted share of what the limit allows.
        let windows = (last - first) / window;
        assert!(windows >= 3, "the run spans {windows} windows");
        let granted: u64 = grants
            .iter()
            .take_while(|g| g.slot < first + windows * window)
            .map(|g| g.cost(dimension))
            .sum();
        let utilisation = granted as f64 / (windows * amount) as f64;
        best_utilisation = best_utilisation.max(utilisation);
    }
    assert!(
        best_utilisation >= 0.95,
        "the binding limit was only {:.1}% used",
        best_utilisation * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_redis_share_the_limits_exactly() -> anyhow::Result<()> {
    let store = Store::redis()?;
    check(hammer(&store).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_redis_cluster_share_the_limits_exactly() -> anyhow::Result<()> {
    let store = Store::cluster()?;
    check(hammer(&store).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_the_redis_module_share_the_limits_exactly() -> anyhow::Result<()> {
    let store = Store::module_redis()?;
    check(hammer(&store).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_module_cluster_share_the_limits_exactly() -> anyhow::Result<()> {
    let store = Store::module_cluster()?;
    check(hammer(&store).await?);
    Ok(())
}
