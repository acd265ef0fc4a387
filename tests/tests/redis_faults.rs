//! Redis faults under load: 32 workers acquire through 2 replicas (one `fail_closed`, one
//! `fail_open`) sharing one Redis, while Redis is absent at start, appears, loses its scripts,
//! is killed and restarted, and is frozen (SIGSTOP). Every decision is recorded with its phase,
//! outcome and latency; each phase's promise is checked on the record.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use sluice::v1::{rate_limiter_client::RateLimiterClient, AcquireRequest, Scope};
use sluice_e2e::{redis_server::RedisServer, spawn_server_unready, TestServer};
use tonic::{transport::Channel, Code};
use tonic_health::pb::health_check_response::ServingStatus;

/// The Redis timeout of both replicas.
const TIMEOUT: Duration = Duration::from_millis(500);
const WORKERS: usize = 32;

/// One service `svc` with a requests limit of `amount` per `window`, on the Redis at `url`
/// (timeout 500 ms), with `failure` as its failure settings (`on_failure = ...`, ...).
fn redis_config(url: &str, amount: u64, window: &str, failure: &str) -> String {
    format!(
        r#"
[[services]]
name = "svc"
limits = [{{ dimension = "requests", amount = {amount}, window = "{window}" }}]

[backend]
kind = "redis"
url = "{url}"
timeout = "500ms"
{failure}
"#
    )
}

/// A limit far above the load, with `on_failure`.
fn config(url: &str, on_failure: &str) -> String {
    redis_config(
        url,
        1_000_000_000,
        "1m",
        &format!("on_failure = \"{on_failure}\""),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Absent,
    Up,
    Flushed,
    Killed,
    Restarted,
    Frozen,
    Thawed,
}

#[derive(Debug)]
struct Decision {
    /// The phase it started in.
    phase: Phase,
    replica: usize,
    started: Instant,
    latency: Duration,
    outcome: Result<bool, Code>,
    /// Which state decided (for answers).
    scope: Option<Scope>,
    /// Whether it also ended in that phase (one under way at a change belongs to neither).
    within: bool,
}

/// Workers acquiring in a loop until stopped, recording every decision.
struct Load {
    phase: Arc<Mutex<Phase>>,
    record: Arc<Mutex<Vec<Decision>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(replicas: &[Channel]) -> Self {
        let phase = Arc::new(Mutex::new(Phase::Absent));
        let record = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..WORKERS)
            .map(|w| {
                let replica = w % replicas.len();
                let mut client = RateLimiterClient::new(replicas[replica].clone());
                let (phase, record, stop) = (phase.clone(), record.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let now = *phase.lock().expect("phase");
                        let started = Instant::now();
                        let mut request = tonic::Request::new(AcquireRequest {
                            service: "svc".into(),
                            ..AcquireRequest::default()
                        });
                        // A stuck connection shows as a deadline, never as a hung worker.
                        request.set_timeout(Duration::from_secs(10));
                        let answer = client.acquire(request).await.map(|r| r.into_inner());
                        let scope = answer.as_ref().ok().map(|a| a.scope());
                        let outcome = answer.map(|a| a.granted).map_err(|s| s.code());
                        let latency = started.elapsed();
                        let within = *phase.lock().expect("phase") == now;
                        record.lock().expect("record").push(Decision {
                            phase: now,
                            replica,
                            started,
                            latency,
                            outcome,
                            scope,
                            within,
                        });
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            phase,
            record,
            stop,
            tasks,
        }
    }

    fn enter(&self, phase: Phase) {
        *self.phase.lock().expect("phase") = phase;
    }

    fn decided(&self) -> usize {
        self.record.lock().expect("record").len()
    }

    /// Waits until at least `n` more decisions are recorded.
    async fn run_for(&self, n: usize) {
        let target = self.decided() + n;
        while self.decided() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `at` has passed, then for `n` more decisions.
    async fn run_past(&self, at: Instant, n: usize) {
        while Instant::now() < at {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.run_for(n).await;
    }

    /// Stops the workers; the decisions that started and ended in one phase.
    async fn finish(self) -> anyhow::Result<Vec<Decision>> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await?;
        }
        let record = std::mem::take(&mut *self.record.lock().expect("record"));
        Ok(record.into_iter().filter(|d| d.within).collect())
    }
}

async fn wait_for_status(server: &TestServer, want: ServingStatus) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if server.serving_status().await.ok() == Some(want) {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "never {want:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_keep_their_promises_through_redis_faults() -> anyhow::Result<()> {
    let mut redis = RedisServer::start()?;
    let url = redis.url();
    redis.stop()?;

    // Redis absent at start: both replicas start, listen, and report NOT_SERVING.
    let closed = spawn_server_unready(&config(&url, "fail_closed"), &[]).await?;
    let open = spawn_server_unready(&config(&url, "fail_open"), &[]).await?;
    for server in [&closed, &open] {
        assert_eq!(server.serving_status().await?, ServingStatus::NotServing);
    }
    let channels = [
        Channel::from_shared(closed.url.clone())?.connect().await?,
        Channel::from_shared(open.url.clone())?.connect().await?,
    ];
    let load = Load::start(&channels);
    load.run_for(200).await;

    // Redis appears: both turn SERVING within 2 s.
    load.enter(Phase::Up);
    redis.restart()?;
    let appeared = Instant::now();
    for server in [&closed, &open] {
        let serving = wait_for_status(server, ServingStatus::Serving).await?;
        let after = serving - appeared;
        assert!(
            after < Duration::from_secs(2),
            "SERVING {after:?} after redis appeared"
        );
    }
    load.run_past(appeared + Duration::from_secs(2), 400).await;

    // SCRIPT FLUSH mid-run: no decision fails.
    load.enter(Phase::Flushed);
    assert_eq!(redis.text(&["SCRIPT", "FLUSH"])?, "OK");
    load.run_for(400).await;

    // Killed: decisions follow on_failure. Restarted without its scripts: they resume.
    load.enter(Phase::Killed);
    redis.stop()?;
    let killed = Instant::now();
    load.run_for(400).await;
    load.enter(Phase::Restarted);
    redis.restart()?;
    let returned = Instant::now();
    load.run_past(returned + Duration::from_secs(2), 400).await;

    // Frozen: every decision answers within the timeout plus 50 ms.
    load.enter(Phase::Frozen);
    redis.pause()?;
    let frozen_at = Instant::now();
    let before = load.decided();
    while load.decided() < before + 200 || frozen_at.elapsed() < 3 * TIMEOUT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    load.enter(Phase::Thawed);
    redis.resume()?;
    let thawed = Instant::now();
    load.run_past(thawed + Duration::from_secs(2), 400).await;
    let record = load.finish().await?;

    let count = |phase: Phase, f: &dyn Fn(&Decision) -> bool| {
        record.iter().filter(|d| d.phase == phase && f(d)).count()
    };
    // Absent: fail_closed answers UNAVAILABLE, fail_open grants.
    assert!(count(Phase::Absent, &|d| d.replica == 0) > 0);
    assert_eq!(
        count(Phase::Absent, &|d| d.replica == 0
            && d.outcome != Err(Code::Unavailable)),
        0
    );
    assert_eq!(
        count(Phase::Absent, &|d| d.replica == 1 && d.outcome != Ok(true)),
        0
    );
    // Every fail_open grant without Redis says so.
    assert_eq!(
        count(Phase::Absent, &|d| d.replica == 1
            && d.scope != Some(Scope::FailOpen)),
        0
    );
    // (Decisions that started before the kill took effect were shared.)
    assert_eq!(
        count(Phase::Killed, &|d| d.replica == 1
            && d.started > killed
            && d.scope != Some(Scope::FailOpen)),
        0
    );
    assert!(count(Phase::Killed, &|d| d.scope == Some(Scope::FailOpen)) > 0);
    // Up and flushed: every decision is a grant.
    for phase in [Phase::Up, Phase::Flushed] {
        let failed: Vec<_> = record
            .iter()
            .filter(|d| d.phase == phase && d.started > appeared + Duration::from_secs(2))
            .filter(|d| d.outcome != Ok(true))
            .collect();
        assert!(failed.is_empty(), "{phase:?}: {failed:?}\n{}", closed.log());
        let settled = appeared + Duration::from_secs(2);
        assert_eq!(
            count(phase, &|d| d.started > settled
                && d.scope != Some(Scope::Shared)),
            0
        );
    }
    // Up to one decision per worker was under way at each end of the phase.
    assert!(count(Phase::Flushed, &|_| true) >= 400 - 2 * WORKERS);
    // Killed: fail_closed refuses, fail_open grants; nothing else.
    assert_eq!(
        count(Phase::Killed, &|d| d.replica == 0
            && !matches!(d.outcome, Ok(true) | Err(Code::Unavailable))),
        0
    );
    assert_eq!(
        count(Phase::Killed, &|d| d.replica == 1 && d.outcome != Ok(true)),
        0
    );
    // Restarted: every decision started 2 s after Redis returned is a grant, on both replicas.
    let late: Vec<_> = record
        .iter()
        .filter(|d| d.phase == Phase::Restarted && d.started > returned + Duration::from_secs(2))
        .collect();
    assert!(late.iter().any(|d| d.replica == 0) && late.iter().any(|d| d.replica == 1));
    let failed: Vec<_> = late.iter().filter(|d| d.outcome != Ok(true)).collect();
    assert!(failed.is_empty(), "after restart: {failed:?}");
    // Frozen: every answer within the timeout plus 50 ms; fail_open grants.
    let slowest = record
        .iter()
        .filter(|d| d.phase == Phase::Frozen)
        .map(|d| d.latency)
        .max()
        .unwrap_or_default();
    assert!(
        slowest <= TIMEOUT + Duration::from_millis(50),
        "slowest decision while frozen: {slowest:?}"
    );
    assert!(count(Phase::Frozen, &|d| d.replica == 1 && d.outcome == Ok(true)) > 0);
    // Thawed: decisions resume (no stuck connection).
    let failed: Vec<_> = record
        .iter()
        .filter(|d| d.phase == Phase::Thawed && d.started > thawed + Duration::from_secs(2))
        .filter(|d| d.outcome != Ok(true))
        .collect();
    assert!(failed.is_empty(), "after thaw: {failed:?}");
    for server in [&closed, &open] {
        assert!(!server.log().contains("panicked"), "{}", server.log());
    }
    Ok(())
}

#[tokio::test]
async fn a_wrong_redis_password_is_not_serving_with_a_clear_log_line() -> anyhow::Result<()> {
    let redis = RedisServer::start_with(&["--requirepass", "right-horse-battery"])?;
    let url = format!("redis://:wrong-s3cret-staple@127.0.0.1:{}", redis.port);
    let server = spawn_server_unready(&config(&url, "fail_closed"), &[]).await?;
    server.wait_for_log("cannot connect to redis", 1).await?;
    server
        .wait_for_log("still cannot connect to redis", 1)
        .await?;
    assert_eq!(server.serving_status().await?, ServingStatus::NotServing);
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot connect to redis"))
        .unwrap_or_default();
    assert!(line.contains("authentication failed"), "{line}");
    assert!(
        !log.contains("s3cret"),
        "the password leaked into the log:\n{log}"
    );
    // The right password is only in the Redis command line, never used here.
    assert!(!log.contains("right-horse"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_enforces_each_replicas_share_then_returns_to_shared_state() -> anyhow::Result<()>
{
    let mut redis = RedisServer::start()?;
    let config = redis_config(
        &redis.url(),
        10,
        "1h",
        "on_failure = \"local\"\nreplicas = 2",
    );
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let replicas = [
        sluice_e2e::spawn_server_with(&config, &metrics).await?,
        sluice_e2e::spawn_server_with(&config, &metrics).await?,
    ];
    let clients = [replicas[0].client().await?, replicas[1].client().await?];
    // Shared: what one replica grants, the other sees.
    for _ in 0..3 {
        let permit = clients[0].acquire("svc").without_sleep().await?;
        assert_eq!(permit.scope(), Scope::Shared);
    }
    assert_eq!(clients[1].status("svc").await?.limits[0].used, 3);

    // Redis gone: each replica grants exactly its share (10 / 2), and says so in its log.
    redis.stop()?;
    for (client, server) in clients.iter().zip(&replicas) {
        let mut granted = 0;
        for _ in 0..8 {
            match client.acquire("svc").without_sleep().await {
                Ok(permit) => {
                    // Marked: this grant does not count against the other replica.
                    assert_eq!(permit.scope(), Scope::Local);
                    granted += 1;
                }
                Err(sluice_client::Error::Denied { .. }) => {}
                Err(e) => anyhow::bail!("neither a grant nor a denial: {e}"),
            }
        }
        assert_eq!(granted, 5, "{}", server.log());
        let status = client.status("svc").await?;
        assert_eq!(status.scope(), Scope::Local);
        let counted = sluice_e2e::sample(
            &server.scrape().await?,
            r#"sluice_unshared_answers_total{service="svc",operation="acquire",scope="local"}"#,
        );
        assert_eq!(counted, Some(8.0));
        assert_eq!(server.serving_status().await?, ServingStatus::Serving);
        server.wait_for_log("deciding locally", 1).await?;
    }

    // Redis back (empty): the readiness probe finds it and decisions are shared again.
    redis.restart()?;
    for server in &replicas {
        server
            .wait_for_log("deciding in the shared state", 1)
            .await?;
    }
    let permit = clients[0].acquire("svc").without_sleep().await?;
    assert_eq!(permit.scope(), Scope::Shared);
    assert_eq!(clients[1].status("svc").await?.limits[0].used, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_retried_after_a_lost_reply_is_counted_once() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let proxy = sluice_e2e::proxy::LossyProxy::start(redis.port).await?;
    let server = sluice_e2e::spawn_server(&config(
        &format!("redis://127.0.0.1:{}", proxy.port),
        "fail_closed",
    ))
    .await?;
    let mut raw = server.raw_client().await?;
    let request = || AcquireRequest {
        service: "svc".into(),
        request_id: "worker-7-call-42".into(),
        ..AcquireRequest::default()
    };

    // Redis books the lease, the reply is lost: the caller sees UNAVAILABLE.
    proxy.arm();
    let lost = raw
        .acquire(request())
        .await
        .expect_err("the reply was lost");
    assert_eq!(lost.code(), Code::Unavailable, "{lost:?}");
    assert!(proxy.has_cut());
    let log_key = "{sluice:svc}:leases";
    assert_eq!(
        redis.text(&["LLEN", log_key])?,
        "1",
        "the lost call was booked"
    );

    // The retry with the same request id gets that lease: counted once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let granted = loop {
        match raw.acquire(request()).await {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => anyhow::bail!("retry failed: {s:?}"),
        }
    };
    assert!(granted.granted);
    assert_eq!(redis.text(&["LLEN", log_key])?, "1");
    let again = raw.acquire(request()).await?.into_inner();
    assert_eq!(again.lease_id, granted.lease_id);
    let status = server.client().await?.status("svc").await?;
    assert_eq!(status.limits[0].used, 1);
    Ok(())
}
