//! A real Celery worker (prefork, 8 processes; its broker and result backend a `redis-server`
//! this test starts) runs tasks on `sluice.celery.SluiceTask` that call a simulated provider
//! through the openai SDK on Sluice's transport; 16 tasks come at once to a key of 4 calls a
//! second. The checks live in `clients/python/tests/celery_drive.py`:
//!
//! - configured right: every task completes; the ones Sluice had no slot for within its in-worker
//!   wait (0.5 s) were retried with a countdown (their retry counts say so) instead of sleeping in
//!   the worker (none waited for its slot longer than that); the provider drew no 429;
//! - configured twice too high: the provider's 429s (reported by the transport) retry their tasks
//!   after Sluice's cooldown, and every task completes.
//!
//! In both, every retry's countdown is checked against what Sluice said: a denial's
//! `retry_after`, or for a 429 the cooldown Sluice answered the report with (about the service's
//! `default_cooldown`, well short of the task's 5 s fallback); and no retry started sooner.

use std::time::Duration;

use serde_json::Value;
use sluice_e2e::{polyglot, redis_server::RedisServer, spawn_server};
use sluice_sim::{budget, CallRecord, Enforcement, HeaderMode, ProviderConfig, SimProvider, Style};

const TASKS: u64 = 16;

/// The service's `default_cooldown`, in seconds: a 429 naming no time cools it down this long,
/// and the driver checks the tasks it drew were retried after about that.
const COOLDOWN_SECONDS: u64 = 1;

fn config(requests_per_second: u64) -> String {
    format!(
        r#"
[[services]]
name = "sim-openai/gpt-4o-mini"
profile = "openai"
default_cooldown = "{COOLDOWN_SECONDS}s"
limits = [
  {{ dimension = "requests", amount = {requests_per_second}, window = "1s" }},
  {{ dimension = "tokens", amount = 10000000, window = "1h" }},
]
"#
    )
}

/// Runs the tasks with Sluice configured at `requests_per_second` and the provider allowing
/// `provider_per_second` (fixed one-second windows); returns the driver's summary and the calls
/// the provider saw.
async fn run(
    requests_per_second: u64,
    provider_per_second: u64,
    expect_429: bool,
) -> anyhow::Result<(Value, Vec<CallRecord>)> {
    let broker = RedisServer::start()?;
    let server = spawn_server(&config(requests_per_second)).await?;
    let provider = SimProvider::start(ProviderConfig {
        style: Style::OpenAi,
        headers: HeaderMode::Never,
        budgets: vec![budget(
            0,
            provider_per_second,
            Duration::from_secs(1),
            Enforcement::FixedWindow,
        )],
        latency: Duration::from_millis(5),
    })
    .await?;
    let dir = polyglot::root().join("clients/python/tests");
    let env = [
        ("BROKER_URL", format!("{}/0", broker.url())),
        ("SLUICE_ADDR", server.addr.clone()),
        ("OPENAI_BASE_URL", format!("http://{}/v1", provider.addr())),
        ("TASKS", TASKS.to_string()),
        ("EXPECT_429", if expect_429 { "1" } else { "0" }.to_string()),
        ("SERVICE_COOLDOWN", COOLDOWN_SECONDS.to_string()),
    ];
    let out = tokio::task::block_in_place(|| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        polyglot::run_python(&dir, &["celery_drive.py"], &env)
    })?;
    let summary: Value = serde_json::from_slice(&out.stdout)?;
    println!("{summary}");
    assert_eq!(summary["tasks"].as_u64(), Some(TASKS), "{summary}");
    Ok((summary, provider.calls()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_tasks_are_retried_with_a_countdown_not_slept_in_the_worker() -> anyhow::Result<()> {
    // Sluice at 4 a second, the provider at 6: the tasks are denied and retried by Sluice, and a
    // worker calling a few milliseconds after its slot (a loaded machine) still finds the
    // provider's fixed window open (at 4 against 4 it once drew a 429).
    let (summary, calls) = run(4, 6, false).await?;
    assert!(summary["retried"].as_u64() > Some(0), "{summary}");
    assert_eq!(calls.len() as u64, TASKS, "{calls:?}");
    assert!(calls.iter().all(|c| c.status == 200), "{calls:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retries_the_celery_task_after_sluices_cooldown() -> anyhow::Result<()> {
    let (summary, calls) = run(8, 4, true).await?;
    let ok = calls.iter().filter(|c| c.status == 200).count() as u64;
    let limited = calls.iter().filter(|c| c.status == 429).count() as u64;
    assert_eq!(ok, TASKS, "{calls:?}");
    assert_eq!(summary["limited"].as_u64(), Some(limited), "{summary}");
    Ok(())
}
