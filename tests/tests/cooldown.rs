//! A 429 reported by one worker pauses every worker: no slot granted after the report starts
//! before the cooldown ends, and work resumes afterwards. The cooldown's end is read from the
//! server (a probe's slot time), so the test does not compare two processes' clocks.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_e2e::{micros, Store};

const CONFIG: &str = r#"
[[services]]
name = "llm"
limits = [{ dimension = "requests", amount = 1000, window = "1s" }]
"#;

const WORKERS: usize = 16;
/// Grants each worker must get for acquires sent after the report before it stops.
const AFTER_REPORT: usize = 3;
/// A worker that has not seen the report after this many grants fails the test.
const MAX_ITERATIONS: usize = 100_000;
const COOLDOWN: Duration = Duration::from_secs(2);

sluice_e2e::on_every_backend!(a_reported_429_blocks_all_workers_until_it_ends);

async fn a_reported_429_blocks_all_workers_until_it_ends(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let reported = Arc::new(AtomicBool::new(false));
    // Slots (µs, server clock) granted to acquires sent after the report returned.
    let after_report: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let client = server.client().await?;
        let reported = reported.clone();
        let after_report = after_report.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = 0;
            for _ in 0..MAX_ITERATIONS {
                let sent_after_report = reported.load(Ordering::SeqCst);
                let permit = client
                    .acquire("llm")
                    .max_wait(Duration::from_secs(10))
                    .without_sleep()
                    .await?;
                if sent_after_report {
                    after_report
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .push(micros(permit.slot_time()));
                    mine += 1;
                    if mine == AFTER_REPORT {
                        return anyhow::Ok(());
                    }
                }
                tokio::time::sleep(permit.wait()).await;
                tokio::task::yield_now().await;
            }
            anyhow::bail!("the report was never seen")
        }));
    }

    // One worker's call is answered 429 with retry-after: 2.
    let client = server.client().await?;
    let permit = client.acquire("llm").await?;
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("2"));
    let before_report = Instant::now();
    let outcome = permit
        .report(StatusCode::TOO_MANY_REQUESTS, &headers, None)
        .await?;
    reported.store(true, Ordering::SeqCst);
    assert!(outcome.cooldown_set);
    assert!(outcome.cooldown <= COOLDOWN && outcome.cooldown > Duration::ZERO);

    // A probe sent now is booked exactly at the cooldown's end: the request limit is far away.
    let probe = client
        .acquire("llm")
        .max_wait(Duration::from_secs(10))
        .without_sleep()
        .await?;
    let since_report = before_report.elapsed();
    assert_eq!(probe.limit(), "cooldown");
    assert!(probe.wait() <= COOLDOWN);
    assert!(
        probe.wait() + since_report >= COOLDOWN,
        "the cooldown ends {:?} after the probe, {since_report:?} after the report",
        probe.wait()
    );
    let cooldown_end = micros(probe.slot_time());

    let status = client.status("llm").await?;
    let cooldown = status
        .cooldown
        .ok_or_else(|| anyhow::anyhow!("no cooldown in status"))?;
    assert_eq!(cooldown.status_code, 429);
    assert_eq!(cooldown.cause, "429 retry-after");

    for w in workers {
        w.await??;
    }
    let slots = after_report
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(slots.len(), WORKERS * AFTER_REPORT, "every worker resumed");
    for slot in slots {
        assert!(
            slot >= cooldown_end,
            "an acquire sent after the report got slot {slot}, before the cooldown end {cooldown_end}"
        );
    }
    // Work resumed once the cooldown was over.
    assert!(micros(SystemTime::now()) + 50_000 >= cooldown_end);
    Ok(())
}
