//! The client's futures stepped by hand under a paused clock (`tokio_test::task::spawn`,
//! `assert_pending!`): what an acquire does while it sleeps until its slot, what dropping it
//! then gives back, and how a worker waiting for an in-flight slot finds one freed.
//!
//! The server is the real one (`sluice_server::run` on the memory backend, over TCP on port 0)
//! in this same single-threaded runtime, so it runs on the same paused tokio clock: the test moves
//! time by hand and every slot is exact. The test never leaves the runtime idle (it polls and
//! yields in turn), so the paused clock never auto-advances behind its back.

use std::{
    future::{Future, IntoFuture},
    task::Poll,
    time::Duration,
};

use sluice_client::{Client, Error, Permit};
use sluice_server::config::Config;
use tokio::sync::oneshot;
use tokio_test::{assert_pending, task::Spawn};

/// `slow`: one call per 10 s. `queue`: the same, and one call in flight. `pool`: one call in
/// flight.
const CONFIG: &str = r#"
[[services]]
name = "slow"
limits = [{ dimension = "requests", amount = 1, window = "10s" }]

[[services]]
name = "queue"
limits = [
  { dimension = "requests", amount = 1, window = "10s" },
  { dimension = "concurrent", amount = 1, timeout = "10m" },
]

[[services]]
name = "pool"
limits = [{ dimension = "concurrent", amount = 1, timeout = "10m" }]
"#;

/// How long the calls may wait for their slot (a call without it is answered at once).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Turns of the runtime a step may take: the server and the sockets live in this thread, so an
/// answer arrives within a few dozen; the bound only keeps a broken test from spinning forever.
const TURNS: usize = 100_000;

/// A server of [`CONFIG`] in this runtime and a client connected to it; the server stops when
/// the sender is dropped.
async fn start() -> anyhow::Result<(Client, oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let config = Config::parse(CONFIG)?;
    let server = tokio::spawn(async move {
        sluice_server::run(listener, config, async move {
            let _ = stopped.await;
        })
        .await
    });
    let client = until_ready(&mut tokio_test::task::spawn(Client::connect(format!(
        "http://{addr}"
    ))))
    .await;
    if server.is_finished() {
        anyhow::bail!("the server stopped: {:?}", server.await);
    }
    Ok((client?, stop))
}

/// Polls `task` and yields to the runtime in turn until the task is ready.
async fn until_ready<F: Future>(task: &mut Spawn<F>) -> F::Output {
    for _ in 0..TURNS {
        if let Poll::Ready(output) = task.poll() {
            return output;
        }
        tokio::task::yield_now().await;
    }
    panic!("not ready after {TURNS} turns of the runtime");
}

/// Runs `future` to completion the same way (for the test's own calls).
async fn run<F: Future>(future: F) -> F::Output {
    until_ready(&mut tokio_test::task::spawn(future)).await
}

/// Polls `task` (an acquire of `service`) until it sleeps until its slot: the server shows its
/// lease queued, and the task stays pending through many more turns (its answer has arrived).
async fn until_asleep<F: Future<Output: std::fmt::Debug>>(
    task: &mut Spawn<F>,
    client: &Client,
    service: &str,
) {
    for _ in 0..TURNS {
        assert_pending!(task.poll());
        tokio::task::yield_now().await;
        let status = run(client.status(service)).await.expect("status");
        if status.queued == 1 {
            break;
        }
    }
    for _ in 0..1_000 {
        assert_pending!(task.poll());
        tokio::task::yield_now().await;
    }
}

/// Moves the paused clock and lets the runtime fire what came due.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    tokio::task::yield_now().await;
}

#[tokio::test(start_paused = true)]
async fn an_acquire_sleeps_until_its_slot_and_not_a_moment_longer() -> anyhow::Result<()> {
    let (client, _stop) = start().await?;
    let first = run(client.acquire("slow").into_future()).await?;
    assert_eq!(first.wait(), Duration::ZERO);

    // The next slot is 10 s after the first: the acquire is granted it and sleeps.
    let mut second =
        tokio_test::task::spawn(client.acquire("slow").max_wait(MAX_WAIT).into_future());
    until_asleep(&mut second, &client, "slow").await;
    advance(Duration::from_millis(9_999)).await;
    for _ in 0..1_000 {
        assert_pending!(second.poll());
        tokio::task::yield_now().await;
    }
    advance(Duration::from_millis(1)).await;
    let second: Permit = until_ready(&mut second).await?;
    assert_eq!(second.wait(), Duration::from_secs(10));
    assert_eq!(second.limit(), "requests/10s");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_acquire_dropped_while_it_sleeps_gives_its_in_flight_slot_back() -> anyhow::Result<()> {
    let (client, _stop) = start().await?;
    let first = run(client.acquire("queue").into_future()).await?;
    run(first.report(200u16, &http::HeaderMap::new(), None)).await?;
    let mut sleeper =
        tokio_test::task::spawn(client.acquire("queue").max_wait(MAX_WAIT).into_future());
    until_asleep(&mut sleeper, &client, "queue").await;
    assert_eq!(in_flight(&client, "queue").await?, 1);

    // A timeout or an aborted task drops the future: its lease is reported abandoned, in the
    // background, and the in-flight slot it held is free again.
    drop(sleeper);
    for _ in 0..1_000 {
        if in_flight(&client, "queue").await? == 0 {
            break;
        }
    }
    assert_eq!(in_flight(&client, "queue").await?, 0);
    let next = run(client
        .acquire("queue")
        .max_wait(MAX_WAIT)
        .without_sleep()
        .into_future())
    .await?;
    assert!(next.wait() > Duration::ZERO, "{next:?}");
    Ok(())
}

/// Calls of `service` in flight, as its `concurrent` limit counts them.
async fn in_flight(client: &Client, service: &str) -> anyhow::Result<u64> {
    let status = run(client.status(service)).await?;
    let limit = status
        .limits
        .iter()
        .find(|l| l.name.starts_with("concurrent"));
    Ok(limit.map(|l| l.used).unwrap_or_default())
}

#[tokio::test(start_paused = true)]
async fn a_worker_waiting_for_an_in_flight_slot_asks_again_after_its_pause() -> anyhow::Result<()> {
    let (client, _stop) = start().await?;
    let holder = run(client.acquire("pool").into_future()).await?;
    let mut waiter =
        tokio_test::task::spawn(client.acquire("pool").max_wait(MAX_WAIT).into_future());
    for _ in 0..1_000 {
        assert_pending!(waiter.poll());
        tokio::task::yield_now().await;
    }

    // The holder's report frees the slot; the waiter learns it when it next asks, 20 ms after
    // its first try (its first pause), not before.
    run(holder.report(200u16, &http::HeaderMap::new(), None)).await?;
    for _ in 0..1_000 {
        assert_pending!(waiter.poll());
        tokio::task::yield_now().await;
    }
    advance(Duration::from_millis(20)).await;
    let permit = until_ready(&mut waiter).await?;
    assert_eq!(permit.wait(), Duration::from_millis(20));

    // Without a max_wait the same call is refused at once, naming the in-flight limit.
    let refused = run(client.acquire("pool").into_future()).await;
    assert!(
        matches!(&refused, Err(Error::Denied { limit, .. }) if limit.starts_with("concurrent")),
        "{refused:?}"
    );
    Ok(())
}
