//! `chaos`: a bounded run in which things break. Three `sluice-server` replicas (release binary,
//! processes) share one Redis started here on loopback; workers call `Acquire` on all three and
//! record every answer; a driver keeps injecting faults at random: SIGKILL a replica and start it
//! again, freeze Redis (SIGSTOP) for a while, kill Redis and start it empty (its data is lost),
//! and reload a replica's config (SIGHUP). It stops by itself and then checks:
//!
//! - no window of the limit held more grants than its amount, except the windows that span a
//!   Redis data loss, which may hold one more window's amount (the documented allowance); a
//!   grant counts in a window only if its whole call (sent to answered) lies inside it, so the
//!   check never blames a slow answer;
//! - every acquire got an answer (grant, denial or a status code) within its deadline;
//! - every replica's memory stayed bounded (peak resident size);
//! - no replica logged a panic.

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use sluice::v1::{rate_limiter_client::RateLimiterClient, AcquireRequest};
use sluice_e2e::{redis_server::RedisServer, spawn_server, spawn_server_unready, TestServer};
use tonic::transport::{Channel, Endpoint};

/// Options of `chaos`.
#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// How long to run.
    #[arg(long, default_value = "5m", value_parser = crate::decisions::duration)]
    pub duration: Duration,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 12)]
    pub workers: usize,
    /// Decide with the Sluice Redis module (`engine = "module"`), loaded into the Redis started
    /// here (from beside this binary; `cargo build --release -p sluice-redis-module`).
    #[arg(long)]
    pub module: bool,
}

const AMOUNT: usize = 60;
const WINDOW: Duration = Duration::from_secs(2);
const REPLICAS: usize = 3;
/// An acquire with no answer by then has hung.
const DEADLINE: Duration = Duration::from_secs(3);
/// Peak resident size a replica may reach (MiB).
const MEMORY_BOUND_MIB: u64 = 256;

fn config(redis: &str, module: bool) -> String {
    let engine = if module { "engine = \"module\"\n" } else { "" };
    format!(
        r#"
[[services]]
name = "chaos"
limits = [{{ dimension = "requests", amount = {AMOUNT}, window = "2s" }}]

[backend]
kind = "redis"
url = "{redis}"
key_prefix = "chaos"
{engine}"#
    )
}

/// xorshift64*: the fault schedule, reproducible from its seed.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Granted,
    Denied,
    Failed,
    Hung,
}

/// One answered (or hung) acquire.
#[derive(Clone, Copy, Debug)]
struct Call {
    sent: Instant,
    answered: Instant,
    outcome: Outcome,
}

/// The replicas' current URLs (a restarted replica listens on a new port).
type Urls = Arc<RwLock<Vec<String>>>;

async fn worker(index: usize, urls: Urls, calls: Arc<Mutex<Vec<Call>>>, until: Instant) {
    let mut channels: Vec<Option<(String, RateLimiterClient<Channel>)>> = vec![None; REPLICAS];
    let mut i = index;
    while Instant::now() < until {
        let replica = i % REPLICAS;
        i += 1;
        let url = urls.read().unwrap_or_else(PoisonError::into_inner)[replica].clone();
        let sent = Instant::now();
        let fresh = !matches!(&channels[replica], Some((u, _)) if *u == url);
        if fresh {
            channels[replica] = match Endpoint::from_shared(url.clone()) {
                Ok(e) => Some((url.clone(), RateLimiterClient::new(e.connect_lazy()))),
                Err(_) => None,
            };
        }
        let Some((_, client)) = channels[replica].as_mut() else {
            continue;
        };
        let call = client.acquire(AcquireRequest {
            service: "chaos".into(),
            request_id: format!("w{index}-{i}"),
            ..AcquireRequest::default()
        });
        let outcome = match tokio::time::timeout(DEADLINE, call).await {
            Ok(Ok(answer)) if answer.get_ref().granted => Outcome::Granted,
            Ok(Ok(_)) => Outcome::Denied,
            Ok(Err(_)) => Outcome::Failed,
            Err(_) => Outcome::Hung,
        };
        if outcome == Outcome::Failed {
            channels[replica] = None;
        }
        calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Call {
                sent,
                answered: Instant::now(),
                outcome,
            });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Resident size of `pid` in MiB.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Windows (anchored at each grant's send time) holding more grants than allowed (a window
/// spanning a data loss at any of `losses` may hold twice the amount), the most grants in a
/// window that spans no loss, and the most in any.
fn violations(calls: &[Call], losses: &[Instant]) -> (usize, usize, usize) {
    let mut grants: Vec<&Call> = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Granted)
        .collect();
    grants.sort_by_key(|c| c.sent);
    let (mut bad, mut most, mut most_clean) = (0, 0, 0);
    for (i, first) in grants.iter().enumerate() {
        let end = first.sent + WINDOW;
        let inside = grants[i..]
            .iter()
            .take_while(|c| c.sent < end)
            .filter(|c| c.answered < end)
            .count();
        most = most.max(inside);
        let spans_loss = losses.iter().any(|l| *l >= first.sent - WINDOW && *l < end);
        if !spans_loss {
            most_clean = most_clean.max(inside);
        }
        let allowed = if spans_loss { 2 * AMOUNT } else { AMOUNT };
        if inside > allowed {
            bad += 1;
        }
    }
    (bad, most_clean, most)
}

/// `chaos`: runs the faults for `args.duration`, then checks and prints the run.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    if std::env::var_os("SLUICE_SERVER_BIN").is_none() {
        let bin = std::env::current_exe()?.with_file_name("sluice-server");
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: cargo build --release -p sluice-server -p sluice-bench",
            bin.display()
        );
        std::env::set_var("SLUICE_SERVER_BIN", bin);
    }
    let mut redis = if args.module {
        RedisServer::start_with_module(&[])?
    } else {
        RedisServer::start()?
    };
    let config = config(&redis.url(), args.module);
    let mut replicas: Vec<TestServer> = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(spawn_server(&config).await?);
    }
    let urls: Urls = Arc::new(RwLock::new(
        replicas.iter().map(|r| r.url.clone()).collect(),
    ));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let until = started + args.duration;
    let workers: Vec<_> = (0..args.workers)
        .map(|i| tokio::spawn(worker(i, urls.clone(), calls.clone(), until)))
        .collect();

    let mut schedule = Schedule(args.seed.max(1));
    let mut logs = Vec::new();
    let mut losses = Vec::new();
    let mut events: Vec<(Duration, String)> = Vec::new();
    let mut peak_mib = 0u64;
    while Instant::now() + Duration::from_secs(5) < until {
        tokio::time::sleep(schedule.millis(1_000, 4_000)).await;
        for r in &replicas {
            peak_mib = peak_mib.max(rss_mib(r.pid()).unwrap_or(0));
        }
        let at = started.elapsed();
        match schedule.below(4) {
            0 => {
                let i = schedule.below(REPLICAS as u64) as usize;
                replicas[i].signal("KILL")?;
                tokio::time::sleep(schedule.millis(200, 2_000)).await;
                let fresh = spawn_server_unready(&config, &[]).await?;
                urls.write().unwrap_or_else(PoisonError::into_inner)[i] = fresh.url.clone();
                let old = std::mem::replace(&mut replicas[i], fresh);
                logs.push(old.log());
                events.push((at, format!("SIGKILL replica {i}, started again")));
            }
            1 => {
                let pause = schedule.millis(300, 3_000);
                redis.pause()?;
                tokio::time::sleep(pause).await;
                redis.resume()?;
                events.push((at, format!("froze Redis for {pause:?}")));
            }
            2 => {
                let down = schedule.millis(200, 2_000);
                redis.stop()?;
                losses.push(Instant::now());
                tokio::time::sleep(down).await;
                redis.restart()?;
                events.push((at, format!("killed Redis (data lost), back after {down:?}")));
            }
            _ => {
                let i = schedule.below(REPLICAS as u64) as usize;
                replicas[i].signal("HUP")?;
                events.push((at, format!("reloaded replica {i}")));
            }
        }
    }
    for w in workers {
        w.await?;
    }
    for r in &replicas {
        peak_mib = peak_mib.max(rss_mib(r.pid()).unwrap_or(0));
        logs.push(r.log());
    }

    let calls = calls.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let count = |o: Outcome| calls.iter().filter(|c| c.outcome == o).count();
    let (bad, most_clean, most) = violations(&calls, &losses);
    let panics = logs.iter().filter(|l| l.contains("panicked")).count();
    for (at, event) in &events {
        println!("{:>7.1}s  {event}", at.as_secs_f64());
    }
    println!(
        "chaos: {:?}, seed {}, {} faults; {} acquires: {} granted, {} denied, {} failed \
         (UNAVAILABLE and the like), {} hung; most grants in a {WINDOW:?} window: {most_clean} away \
         from a data loss (limit {AMOUNT}), {most} in any (allowed {} across one); violations \
         {bad}; peak replica memory {peak_mib} MiB \
         (bound {MEMORY_BOUND_MIB}); panics {panics}",
        args.duration,
        args.seed,
        events.len(),
        calls.len(),
        count(Outcome::Granted),
        count(Outcome::Denied),
        count(Outcome::Failed),
        count(Outcome::Hung),
        2 * AMOUNT,
    );
    println!(
        "{}",
        serde_json::json!({
            "duration_s": args.duration.as_secs_f64(),
            "seed": args.seed,
            "faults": events.len(),
            "acquires": calls.len(),
            "granted": count(Outcome::Granted),
            "denied": count(Outcome::Denied),
            "failed": count(Outcome::Failed),
            "hung": count(Outcome::Hung),
            "most_in_window_without_data_loss": most_clean,
            "most_in_window": most,
            "violations": bad,
            "peak_replica_mib": peak_mib,
            "panics": panics,
        })
    );
    anyhow::ensure!(bad == 0, "{bad} windows over the limit");
    anyhow::ensure!(count(Outcome::Hung) == 0, "acquires hung");
    anyhow::ensure!(
        peak_mib <= MEMORY_BOUND_MIB,
        "a replica grew to {peak_mib} MiB"
    );
    anyhow::ensure!(panics == 0, "a replica panicked");
    Ok(())
}
