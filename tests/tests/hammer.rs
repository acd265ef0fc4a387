//! 32 concurrent workers on one service through the Rust client and a real server process: every
//! grant is recorded with its server-side slot time, then the window invariants are checked. Then
//! 16 workers share a pool of 3 in-flight slots: every call's span is recorded, and no instant may
//! see more than 3 of them.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sluice_e2e::{micros, Store};

const CONFIG: &str = r#"
[[services]]
name = "hammer"
limits = [
  { dimension = "requests", amount = 100, window = "1s" },
  { dimension = "tokens", amount = 4000, window = "1s", algorithm = "token_bucket", burst = 1000 },
]
"#;

const POOL: &str = r#"
[[services]]
name = "pool"
limits = [{ dimension = "concurrent", amount = 3, timeout = "10m" }]
"#;

const WORKERS: u64 = 32;
const CALLS: u64 = 8;
const REQUESTS: (u64, u64) = (100, 1_000_000);
// At most 40 tokens a call: 100 calls fit burst + rate × 0.75 s, so the request window is the one
// that fills whenever the workers keep up.
const TOKENS: (u64, u64, u64) = (4000, 1_000_000, 1000);

sluice_e2e::on_every_backend!(thirty_two_workers_never_exceed_the_limits);
sluice_e2e::on_every_backend!(sixteen_workers_never_have_more_calls_in_flight_than_the_pool);

/// Each worker makes its calls one after the other: acquire (asking again while the pool is
/// full), call for a few milliseconds, report. A call's span runs from the acquire's return to the
/// report's sending, inside the span the server held its slot, so at most 3 may overlap.
async fn sixteen_workers_never_have_more_calls_in_flight_than_the_pool(
    store: &Store,
) -> anyhow::Result<()> {
    let server = store.spawn_server(POOL).await?;
    let spans: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..16u64 {
        let client = server.client().await?;
        let spans = spans.clone();
        workers.push(tokio::spawn(async move {
            for c in 0..6u64 {
                let permit = client
                    .acquire("pool")
                    .max_wait(Duration::from_secs(120))
                    .await?;
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(5 + (w * 7 + c * 3) % 20)).await;
                let end = Instant::now();
                spans
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push((start, end));
                permit.report(200u16, &http::HeaderMap::new(), None).await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let spans = spans
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(spans.len(), 96, "every call was granted");
    let mut most = 0;
    for &(t, _) in &spans {
        let in_flight = spans.iter().filter(|&&(s, e)| s <= t && t < e).count();
        assert!(in_flight <= 3, "{in_flight} calls in flight at once");
        most = most.max(in_flight);
    }
    // The check was not vacuous: the pool was shared by more than one call at a time.
    assert!(
        most >= 2,
        "at most {most} call in flight: the workers never overlapped"
    );
    Ok(())
}

async fn thirty_two_workers_never_exceed_the_limits(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let grants: Arc<Mutex<Vec<(u64, u64, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let client = server.client().await?;
        let grants = grants.clone();
        workers.push(tokio::spawn(async move {
            for c in 0..CALLS {
                let tokens = 10 + (w * 7 + c * 13) % 31;
                let permit = client
                    .acquire("hammer")
                    .tokens(tokens)
                    .max_wait(Duration::from_secs(30))
                    .await?;
                let slot = micros(permit.slot_time());
                grants
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push((slot, tokens, permit.lease_id().to_string()));
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let mut grants = grants
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(
        grants.len() as u64,
        WORKERS * CALLS,
        "every call was granted"
    );
    let mut ids: Vec<_> = grants.iter().map(|g| g.2.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), grants.len(), "lease ids are unique");
    grants.sort();

    // Sliding window: in every interval [s, s + W) at most `amount` requests.
    let (amount, window) = REQUESTS;
    let mut max_in_window = 0;
    for (i, (start, _, _)) in grants.iter().enumerate() {
        let n = grants[i..]
            .iter()
            .take_while(|(s, _, _)| *s < start + window)
            .count() as u64;
        max_in_window = max_in_window.max(n);
        assert!(
            n <= amount,
            "{n} requests in the window starting at {start}"
        );
    }
    // The load filled the window, so the check was not vacuous (32 workers need only ~3 round
    // trips per second each to keep 100 slots per second booked).
    assert_eq!(max_in_window, amount, "the request window was never full");

    // Token bucket: in every interval [a, b] at most burst + rate × (b − a).
    let (rate, per, burst) = TOKENS;
    for i in 0..grants.len() {
        let mut sum = 0u128;
        for (s, tokens, _) in &grants[i..] {
            sum += u128::from(*tokens);
            let bound = u128::from(burst) * u128::from(per)
                + u128::from(rate) * u128::from(s - grants[i].0);
            assert!(
                sum * u128::from(per) <= bound,
                "{sum} tokens granted from {} to {s}",
                grants[i].0
            );
        }
    }
    Ok(())
}
