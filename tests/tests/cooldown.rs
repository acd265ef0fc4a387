//! A 429 reported by one worker pauses every worker: no slot granted after the report starts
//! before the cooldown ends, and work resumes afterwards.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_e2e::{micros, spawn_server};

const CONFIG: &str = r#"
[[services]]
name = "llm"
limits = [{ dimension = "requests", amount = 1000, window = "1s" }]
"#;

const WORKERS: usize = 16;
const COOLDOWN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_429_blocks_all_workers_until_it_ends() -> anyhow::Result<()> {
    let server = spawn_server(CONFIG).await?;
    let reported = Arc::new(AtomicBool::new(false));
    // (acquire sent after the report returned?, sent at, slot)
    let grants: Arc<Mutex<Vec<(bool, u64, u64)>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let client = server.client().await?;
        let reported = reported.clone();
        let grants = grants.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..20 {
                let after_report = reported.load(Ordering::SeqCst);
                let sent = micros(SystemTime::now());
                let permit = client
                    .acquire("llm")
                    .max_wait(Duration::from_secs(10))
                    .without_sleep()
                    .await?;
                grants
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push((after_report, sent, micros(permit.slot_time())));
                tokio::time::sleep(permit.wait()).await;
                tokio::task::yield_now().await;
            }
            anyhow::Ok(())
        }));
    }

    // One worker's call is answered 429 with retry-after: 2.
    let client = server.client().await?;
    let permit = client.acquire("llm").await?;
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("2"));
    let before_report = micros(SystemTime::now());
    let outcome = permit
        .report(StatusCode::TOO_MANY_REQUESTS, &headers, None)
        .await?;
    reported.store(true, Ordering::SeqCst);
    assert!(outcome.cooldown_set);
    assert!(outcome.cooldown <= COOLDOWN && outcome.cooldown > Duration::ZERO);

    let status = client.status("llm").await?;
    let cooldown = status
        .cooldown
        .ok_or_else(|| anyhow::anyhow!("no cooldown in status"))?;
    assert_eq!(cooldown.status_code, 429);
    assert_eq!(cooldown.cause, "429 retry-after");

    for w in workers {
        w.await??;
    }
    let grants = grants
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(
        grants.len(),
        WORKERS * 20,
        "every worker finished after the cooldown"
    );
    let cooldown_end = before_report + COOLDOWN.as_micros() as u64;
    let after: Vec<_> = grants.iter().filter(|g| g.0).collect();
    assert!(
        !after.is_empty(),
        "some acquires were sent after the report"
    );
    for (_, sent, slot) in after {
        assert!(
            *slot >= cooldown_end,
            "acquire sent at {sent} got slot {slot}, before the cooldown end {cooldown_end}"
        );
    }
    Ok(())
}
