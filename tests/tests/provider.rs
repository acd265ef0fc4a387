//! Workers calling a simulated provider through Sluice (a real HTTP server answering with
//! OpenAI-style headers and 429s; see `sluice-sim`). Two promises are checked on what the provider
//! saw, on every backend:
//!
//! - With `adopt_provider_limits`, a service configured far above the key's real budget draws
//!   429s only from calls Sluice granted before it had heard from the provider: once one answer
//!   named the budget, no call draws a 429 — neither after a `remaining: 0` success nor when a
//!   cooldown ends (queued workers resume paced by the adopted budget, not all at once).
//! - When someone outside Sluice spends part of the budget, one worker's 429 pauses the whole
//!   fleet: at most one 429 per cooldown episode, and no call after it until the provider's
//!   reset, because the slots already booked for queued workers move back with the cooldown.
//!
//! The provider's fixed windows start when it starts; the workers begin 300 ms into a window so
//! that millisecond jitter between a slot and the provider's clock cannot put a call on the wrong
//! side of a window boundary.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use sluice_client::Usage;
use sluice_e2e::{
    provider::{BUDGET, HEADERS, WINDOW},
    Store,
};
use sluice_sim::{Enforcement, HeaderMode, SimClient, SimProvider};
use tokio::sync::Barrier;

const WORKERS: usize = 8;
/// Tokens of a worker's call (the outside user's calls spend 1, which tells them apart).
const WORKER_INPUT: u64 = 10;

/// The service `llm` with `settings` (lines of TOML) and `limits`, reading the OpenAI-style
/// headers over one-second windows.
fn config(settings: &str, limits: &str) -> String {
    format!("[[services]]\nname = \"llm\"\nprofile = \"custom\"\n{settings}\nlimits = [{limits}]\n{HEADERS}")
}

async fn provider(headers: HeaderMode) -> anyhow::Result<SimProvider> {
    sluice_e2e::provider::start(headers, Enforcement::FixedWindow).await
}

/// A worker's connection to the provider.
async fn connect(provider: &SimProvider) -> anyhow::Result<SimClient> {
    SimClient::connect(provider.addr())
        .await
        .map_err(|e| anyhow!(e))
}

/// Sleeps until `phase` into the provider's next window.
async fn align(provider: &SimProvider, phase: Duration) {
    let started = provider.started();
    let next = started.elapsed().as_nanos() / WINDOW.as_nanos() + 1;
    let at = started + Duration::from_nanos((next * WINDOW.as_nanos()) as u64) + phase;
    tokio::time::sleep_until(at.into()).await;
}

fn window_of(at: Duration) -> u128 {
    at.as_nanos() / WINDOW.as_nanos()
}

/// One call through Sluice: acquire (waiting as long as it takes), wait at `gate` if given,
/// call, report. Returns the provider's status and whether its answer carried rate-limit headers.
async fn call_through_sluice(
    client: &sluice_client::Client,
    sim: &mut SimClient,
    gate: Option<&Barrier>,
) -> anyhow::Result<(u16, bool)> {
    let permit = client
        .acquire("llm")
        .max_wait(Duration::from_secs(30))
        .await?;
    if let Some(gate) = gate {
        gate.wait().await;
    }
    let answer = sim.call(WORKER_INPUT, 5).await.map_err(|e| anyhow!(e))?;
    let informative = answer
        .headers
        .contains_key("x-ratelimit-remaining-requests");
    permit
        .report(
            answer.status,
            &answer.headers,
            Usage::from_json(&answer.body),
        )
        .await?;
    Ok((answer.status, informative))
}

sluice_e2e::on_every_backend!(adopted_budgets_stop_429s_once_heard_with_headers_on_every_answer);
sluice_e2e::on_every_backend!(adopted_budgets_stop_429s_once_heard_with_headers_on_429s_only);

async fn adopted_budgets_stop_429s_once_heard_with_headers_on_every_answer(
    store: &Store,
) -> anyhow::Result<()> {
    adopted_budgets_stop_429s_once_heard(store, HeaderMode::Always).await
}

async fn adopted_budgets_stop_429s_once_heard_with_headers_on_429s_only(
    store: &Store,
) -> anyhow::Result<()> {
    adopted_budgets_stop_429s_once_heard(store, HeaderMode::On429).await
}

async fn adopted_budgets_stop_429s_once_heard(
    store: &Store,
    headers: HeaderMode,
) -> anyhow::Result<()> {
    // Configured at 100 per second; the key allows 5.
    let config = config(
        "adopt_provider_limits = true",
        r#"{ dimension = "requests", amount = 100, window = "1s" }"#,
    );
    let server = store.spawn_server(&config).await?;
    let provider = provider(headers).await?;
    const SUCCESSES: usize = 20;
    let heard = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicUsize::new(0));
    // Every worker starts at once, and the opening burst goes out only when every worker holds
    // its first grant: all of it is granted before any answer is back.
    let start = Arc::new(Barrier::new(WORKERS + 1));
    let opening = Arc::new(Barrier::new(WORKERS));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let client = server.client().await?;
        let mut sim = connect(&provider).await?;
        let (heard, successes, start) = (heard.clone(), successes.clone(), start.clone());
        let opening = opening.clone();
        workers.push(tokio::spawn(async move {
            start.wait().await;
            // (Sluice had heard from the provider before this acquire, status)
            let mut calls = Vec::new();
            let mut gate = Some(opening.as_ref());
            while successes.load(Ordering::SeqCst) < SUCCESSES {
                let knew = heard.load(Ordering::SeqCst);
                let (status, informative) =
                    call_through_sluice(&client, &mut sim, gate.take()).await?;
                if informative {
                    heard.store(true, Ordering::SeqCst);
                }
                if status == 200 {
                    successes.fetch_add(1, Ordering::SeqCst);
                }
                calls.push((knew, status));
            }
            anyhow::Ok(calls)
        }));
    }
    align(&provider, Duration::from_millis(300)).await;
    start.wait().await;
    let mut calls = Vec::new();
    for w in workers {
        calls.extend(w.await??);
    }
    let after_heard_429s = calls.iter().filter(|(knew, s)| *knew && *s == 429).count();
    assert_eq!(
        after_heard_429s, 0,
        "calls granted after Sluice heard the budget drew 429s: {calls:?}"
    );
    // The opening burst (8 calls at 100/s against 5) drew the only 429s, all in its window.
    let seen = provider.calls();
    let opening = window_of(seen[0].at);
    let limited: Vec<_> = seen.iter().filter(|c| c.status == 429).collect();
    assert!(
        !limited.is_empty(),
        "the opening burst drew no 429: {seen:?}"
    );
    assert!(
        limited.iter().all(|c| window_of(c.at) == opening),
        "429s after the opening window: {seen:?}"
    );
    // Never more than the budget per window.
    let last = window_of(seen[seen.len() - 1].at);
    for w in opening..=last {
        let ok = seen
            .iter()
            .filter(|c| window_of(c.at) == w && c.status == 200)
            .count() as u64;
        assert!(ok <= BUDGET, "window {w}: {ok} successes");
    }
    // The budget in force is the provider's, and says so even when the last answer named no
    // budget (what the last answer named is shown when it named one: answers without headers
    // say nothing).
    let status = server.client().await?.status("llm").await?;
    let limit = &status.limits[0];
    assert_eq!((limit.amount, limit.effective_amount), (100, BUDGET));
    assert_eq!(limit.effective_because, "provider budget", "{status:?}");
    if headers == HeaderMode::Always {
        assert_eq!(limit.learned_amount, Some(BUDGET));
    }
    Ok(())
}

sluice_e2e::on_every_backend!(one_workers_429_pauses_the_fleet_when_outside_usage_takes_budget);

async fn one_workers_429_pauses_the_fleet_when_outside_usage_takes_budget(
    store: &Store,
) -> anyhow::Result<()> {
    // Sluice paces the fleet at the key's budget (a slot every 200 ms); the provider only
    // answers with headers on 429s.
    let config = config(
        "",
        &format!(
            r#"{{ dimension = "requests", amount = {BUDGET}, window = "1s", algorithm = "token_bucket", burst = 1 }}"#
        ),
    );
    let server = store.spawn_server(&config).await?;
    let provider = provider(HeaderMode::On429).await?;
    const SUCCESSES: usize = 12;
    let successes = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Someone else spends 2 of the 5 requests early in every window.
    let outside = {
        let mut sim = connect(&provider).await?;
        let (done, started) = (done.clone(), provider.started());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let next = started.elapsed().as_nanos() / WINDOW.as_nanos() + 1;
                let at = started
                    + Duration::from_nanos((next * WINDOW.as_nanos()) as u64)
                    + Duration::from_millis(50);
                tokio::time::sleep_until(at.into()).await;
                for _ in 0..2 {
                    sim.call(1, 1).await.map_err(|e| anyhow!(e))?;
                }
            }
            anyhow::Ok(())
        })
    };
    align(&provider, Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let client = server.client().await?;
        let mut sim = connect(&provider).await?;
        let successes = successes.clone();
        workers.push(tokio::spawn(async move {
            while successes.load(Ordering::SeqCst) < SUCCESSES {
                let (status, _) = call_through_sluice(&client, &mut sim, None).await?;
                if status == 200 {
                    successes.fetch_add(1, Ordering::SeqCst);
                }
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    done.store(true, Ordering::SeqCst);
    outside.await??;
    let seen = provider.calls();
    let mine: Vec<_> = seen
        .iter()
        .filter(|c| c.input_tokens == WORKER_INPUT)
        .collect();
    let mut episodes = 0;
    for (i, c) in mine.iter().enumerate() {
        if c.status != 429 {
            continue;
        }
        episodes += 1;
        // The 429 set a cooldown until the provider's reset: no worker called again in its window.
        let later: Vec<_> = mine[i + 1..]
            .iter()
            .filter(|d| window_of(d.at) == window_of(c.at))
            .collect();
        assert!(
            later.is_empty(),
            "calls after a 429 in its window: {c:?} then {later:?}"
        );
    }
    assert!(
        episodes >= 2,
        "outside usage should have caused 429s ({:?} run): {seen:?}",
        started.elapsed()
    );
    Ok(())
}
