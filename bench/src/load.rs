//! The load generator: `concurrency` tasks call one operation in a loop for a warm-up and then a
//! measured duration, either as fast as answers come back (closed loop) or at a fixed total rate
//! (open loop, for latency at a given load). Each task keeps its own latency samples.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::stats::Measured;

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A slot was booked.
    Granted,
    /// No slot.
    Denied,
}

/// One call: task index and call number in, outcome out.
pub type Operation = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = anyhow::Result<Outcome>> + Send>>
        + Send
        + Sync,
>;

/// The shape of a load run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Concurrent callers.
    pub concurrency: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Total calls per second (open loop); `None`: as fast as possible.
    pub rate: Option<f64>,
}

/// Runs `op` under `load` and returns what was measured.
pub async fn drive(name: &str, load: Load, op: Operation) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let mut tasks = Vec::with_capacity(load.concurrency);
    for task in 0..load.concurrency {
        let op = op.clone();
        let period = load
            .rate
            .map(|r| Duration::from_secs_f64(load.concurrency as f64 / r.max(1e-6)));
        tasks.push(tokio::spawn(async move {
            let mut m = Measured::default();
            let mut ticker = period.map(|p| {
                let mut t = tokio::time::interval_at(
                    (start + p.mul_f64(task as f64 / load.concurrency as f64)).into(),
                    p,
                );
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut i = 0u64;
            loop {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = op(task, i).await;
                i += 1;
                if sent < measure_from {
                    continue;
                }
                match result {
                    Ok(outcome) => {
                        let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        m.latencies.push(us);
                        match outcome {
                            Outcome::Granted => m.granted += 1,
                            Outcome::Denied => m.denied += 1,
                        }
                    }
                    Err(_) => m.errors += 1,
                }
            }
            m
        }));
    }
    let mut total = Measured {
        name: name.to_string(),
        concurrency: load.concurrency,
        ..Measured::default()
    };
    for t in tasks {
        let m = t.await?;
        total.granted += m.granted;
        total.denied += m.denied;
        total.errors += m.errors;
        total.latencies.extend(m.latencies);
    }
    total.elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .min(load.duration);
    Ok(total)
}
