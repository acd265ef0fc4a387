//! Acquire batching: concurrent acquires on one replica share script calls. Each acquire queues
//! itself; whoever holds one of the queue's few in-flight permits takes up to [`MAX_BATCH`] queued
//! acquires, in arrival order, and sends them as one `EVALSHA`, which decides them one after the
//! other at one `now`. On a single Redis one queue serves every service that is not a family
//! member (the script decides each service's acquires in turn); on a cluster, where a script's
//! keys must share a hash slot, and for family members, each service has its own queue. An idle
//! queue pays one round trip per acquire as before; a busy one pays one per batch, and several
//! batches stay in flight (pipelined), so Redis's fixed cost per script call is shared instead of
//! serialising the replica.
//!
//! If the task carrying a batch is cancelled (its caller went away) after the script was sent,
//! the other acquires of the batch get `Unavailable`; a client that retries with the same
//! `request_id` then gets the lease that may have been booked, as after any lost answer.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{Mutex, PoisonError},
};

use tokio::sync::{oneshot, Semaphore};

use super::super::BackendError;
use crate::core::{Cost, Micros};

/// Most acquires in one script call of a service's own queue.
pub const MAX_BATCH: usize = 64;
/// Script calls of a service's own queue in flight at once, per replica.
const IN_FLIGHT: usize = 4;
/// The shared queue (many services, see the module doc): smaller batches. A call's cost grows
/// with the services it carries, so a big one would hold the acquires behind it; most of what
/// sharing saves (the fixed cost of a script call) is saved by a dozen acquires already.
pub const SHARED_MAX_BATCH: usize = 16;
/// Script calls of the shared queue in flight at once. Few: while two are in Redis the next
/// batch fills, and a service's acquires decided in one section of a call cost Redis far less
/// than the same acquires in several (measured with 64 callers: 2 in flight against 8 gave 14
/// acquires per call instead of 4.5 on one service and 20.7 instead of 25 µs of Redis CPU per
/// decision, with more decisions per second and a lower p99; BENCHMARKS.md 6.2).
pub const SHARED_IN_FLIGHT: usize = 2;

/// One acquire, owned, as queued.
#[derive(Clone, Debug)]
pub struct QueuedAcquire {
    /// Cost.
    pub cost: Cost,
    /// Longest acceptable wait.
    pub max_wait: Micros,
    /// Request id ('' for none).
    pub request_id: String,
    /// Priority class.
    pub class: crate::core::Class,
    /// When its caller is answered with an error at the latest: the scripts book nothing for it
    /// after this (see `deadline.rs`).
    pub deadline: tokio::time::Instant,
}

impl QueuedAcquire {
    /// `call`, owned, answered with an error by `deadline` at the latest.
    pub fn new(call: &super::super::AcquireCall<'_>, deadline: tokio::time::Instant) -> Self {
        Self {
            cost: call.cost,
            max_wait: call.max_wait,
            request_id: call.request_id.unwrap_or_default().to_string(),
            class: call.class,
            deadline,
        }
    }
}

/// The script's reply for one acquire.
pub type Reply = Result<super::answer::Answer, BackendError>;

struct Pending<T> {
    acquire: T,
    answer: oneshot::Sender<Reply>,
}

/// A queue of acquires (`T`: an acquire of one service, or one with its service).
pub struct Batcher<T = QueuedAcquire> {
    queue: Mutex<VecDeque<Pending<T>>>,
    permits: Semaphore,
    max_batch: usize,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Self::new(MAX_BATCH, IN_FLIGHT)
    }
}

fn lost() -> BackendError {
    BackendError::Failed(
        "the batch carrying this acquire was cancelled; retry with the same request_id".into(),
    )
}

impl<T> Batcher<T> {
    /// A queue sending batches of at most `max_batch`, `in_flight` of them at once.
    pub fn new(max_batch: usize, in_flight: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            permits: Semaphore::new(in_flight.max(1)),
            max_batch: max_batch.max(1),
        }
    }

    /// The next batch: up to `max_batch` queued acquires whose callers still wait (one that
    /// gave up, e.g. at its deadline, is dropped unbooked).
    fn take(&self) -> Vec<Pending<T>> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Vec::with_capacity(queue.len().min(self.max_batch));
        while batch.len() < self.max_batch {
            match queue.pop_front() {
                Some(p) if p.answer.is_closed() => {}
                Some(p) => batch.push(p),
                None => break,
            }
        }
        batch
    }

    /// Queues `acquire` and returns its reply, sending batches with `run` (which answers one
    /// reply per acquire, in order, or one error for all) while it waits.
    pub async fn submit<F, Fut>(&self, acquire: T, run: F) -> Reply
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Result<Vec<super::answer::Answer>, BackendError>>,
    {
        let (answer, mut reply) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Pending { acquire, answer });
        loop {
            let permit = tokio::select! {
                biased;
                r = &mut reply => return r.unwrap_or_else(|_| Err(lost())),
                p = self.permits.acquire() => p,
            };
            let Ok(permit) = permit else {
                return Err(BackendError::Unavailable("batcher closed".into()));
            };
            if let Ok(r) = reply.try_recv() {
                return r;
            }
            let batch = self.take();
            if batch.is_empty() {
                // Another batch in flight carries this acquire.
                drop(permit);
                return (&mut reply).await.unwrap_or_else(|_| Err(lost()));
            }
            let (acquires, answers): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.acquire, p.answer)).unzip();
            let n = acquires.len();
            let replies = run(acquires).await;
            drop(permit);
            match replies {
                Ok(replies) if replies.len() == n => {
                    for (answer, r) in answers.into_iter().zip(replies) {
                        let _ = answer.send(Ok(r));
                    }
                }
                Ok(_) => {
                    for answer in answers {
                        let _ = answer.send(Err(BackendError::Unavailable(
                            "redis: acquire batch answered with the wrong length".into(),
                        )));
                    }
                }
                Err(e) => {
                    // Every acquire of the batch gets the batch's error, of the same kind: an
                    // outage stays an outage (for on_failure), a refusal a refusal.
                    let copy = |e: &BackendError| match e {
                        BackendError::Unavailable(m) => BackendError::Unavailable(m.clone()),
                        BackendError::Failed(m) => BackendError::Failed(m.clone()),
                        other => BackendError::Failed(other.to_string()),
                    };
                    for answer in answers {
                        let _ = answer.send(Err(copy(&e)));
                    }
                }
            }
        }
    }
}
