//! [`Acquire`]: the builder returned by [`Client::acquire`]. Awaiting it sends one `Acquire`
//! RPC (retried on UNAVAILABLE with the same request id, so a retry is never counted twice), then
//! sleeps the granted wait. A worker that waited asks again with the same request id before it
//! returns: if a cooldown was reported meanwhile, the server has moved its slot back (queued
//! workers keep their order), and it sleeps on until the new slot. A denial because every
//! in-flight slot is held (`IN_FLIGHT`) is asked again, backing off from 20 ms to 250 ms, until a
//! report frees a slot or `max_wait` has passed.

use std::{
    future::{Future, IntoFuture},
    pin::Pin,
    time::{Duration, SystemTime},
};

use sluice::v1::{AcquireRequest, Reason};
use tonic::Code;

use crate::{
    convert::{from_proto, to_proto},
    permit::ReleaseOnDrop,
    Client, Error, Permit,
};

const RETRIES: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(250)];
/// Most times a waiting worker asks again whether its slot moved (a cooldown, or a higher
/// priority class booked ahead of it: at most once per overtake its class allows).
const MAX_RECHECKS: usize = 64;
/// First and longest pause between asks while every in-flight slot is held.
const IN_FLIGHT_POLL: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_millis(250));

/// A pending acquire. Set its costs, then `.await` it for a [`Permit`].
#[derive(Debug)]
#[must_use = "an acquire does nothing until awaited"]
pub struct Acquire<'a> {
    client: &'a Client,
    request: AcquireRequest,
    sleep: bool,
}

impl<'a> Acquire<'a> {
    pub(crate) fn new(client: &'a Client, service: String) -> Self {
        Self {
            client,
            request: AcquireRequest {
                service,
                client_id: client.client_id.clone(),
                ..AcquireRequest::default()
            },
            sleep: true,
        }
    }

    /// Estimated total tokens of the call (e.g. prompt tokens + `max_tokens`).
    pub fn tokens(mut self, tokens: u64) -> Self {
        self.request.tokens = tokens;
        self
    }

    /// Estimated input tokens, for `input_tokens` limits.
    pub fn input_tokens(mut self, tokens: u64) -> Self {
        self.request.input_tokens = tokens;
        self
    }

    /// Estimated output tokens, for `output_tokens` limits.
    pub fn output_tokens(mut self, tokens: u64) -> Self {
        self.request.output_tokens = tokens;
        self
    }

    /// Longest wait accepted for a slot (default: zero, a plain try-acquire).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.request.max_wait = Some(to_proto(max_wait));
        self
    }

    /// Idempotency key (default: a fresh UUID). Reuse it to retry an acquire safely.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request.request_id = id.into();
        self
    }

    /// Priority class (`interactive`, `default`, `batch`, or as the server configures them):
    /// a higher class is booked ahead of the queued calls of lower ones. Default: the server's
    /// default class.
    pub fn priority(mut self, class: impl Into<String>) -> Self {
        self.request.priority = class.into();
        self
    }

    /// Returns the permit at once instead of sleeping until its slot; the caller must wait
    /// [`Permit::wait`] itself, then ask again with the same request id before calling (a
    /// cooldown or a higher priority class may have moved the slot).
    pub fn without_sleep(mut self) -> Self {
        self.sleep = false;
        self
    }

    /// One `Acquire` RPC, retried on UNAVAILABLE with the same request id.
    async fn send(&self) -> Result<sluice::v1::AcquireResponse, Error> {
        let mut attempt = 0;
        loop {
            match self.client.rpc().acquire(self.request.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == Code::Unavailable && attempt < RETRIES.len() => {
                    tokio::time::sleep(RETRIES[attempt]).await;
                    attempt += 1;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    async fn run(mut self) -> Result<Permit, Error> {
        if self.request.request_id.is_empty() {
            self.request.request_id = uuid::Uuid::new_v4().to_string();
        }
        let started = tokio::time::Instant::now();
        let mut response = self.send().await?;
        let max_wait = from_proto(self.request.max_wait);
        let mut pause = IN_FLIGHT_POLL.0;
        let mut polled = false;
        while !response.granted && response.reason() == Reason::InFlight {
            let Some(left) = max_wait
                .checked_sub(started.elapsed())
                .filter(|l| !l.is_zero())
            else {
                break;
            };
            tokio::time::sleep(pause.min(left).min(from_proto(response.retry_after))).await;
            pause = (pause * 2).min(IN_FLIGHT_POLL.1);
            let left = max_wait.saturating_sub(started.elapsed());
            self.request.max_wait = Some(to_proto(left));
            response = self.send().await?;
            polled = true;
        }
        // Time spent asking for a free in-flight slot counts as waited.
        let mut waited = if polled {
            started.elapsed()
        } else {
            Duration::ZERO
        };
        // From the grant on, dropping this future (a timeout, an aborted task) or failing gives
        // the lease back: the guard reports it abandoned unless a Permit takes it over.
        let mut guard = self.guard_for(&response, None);
        if self.sleep {
            // The same request id returns the same lease, at its current slot.
            for _ in 0..MAX_RECHECKS {
                let wait = from_proto(response.wait);
                if !response.granted || wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait).await;
                waited += wait;
                response = self.send().await?;
                guard = self.guard_for(&response, guard);
            }
        }
        if !response.granted {
            return Err(Error::Denied {
                retry_after: from_proto(response.retry_after),
                reason: Reason::try_from(response.reason).unwrap_or(Reason::Unspecified),
                limit: response.limit,
            });
        }
        let wait = from_proto(response.wait);
        let slot_time = response
            .slot_time
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or_else(|| SystemTime::now() + wait);
        if self.sleep && !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let scope = response.scope();
        let guard = self
            .guard_for(&response, guard)
            .unwrap_or_else(|| ReleaseOnDrop::new(self.client, &self.request.service, ""));
        Ok(Permit::new(
            self.client.clone(),
            guard,
            waited + wait,
            slot_time,
            response.limit,
            scope,
        ))
    }

    /// The guard of the lease `response` grants: `current` if it guards that lease already.
    fn guard_for(
        &self,
        response: &sluice::v1::AcquireResponse,
        current: Option<std::sync::Arc<ReleaseOnDrop>>,
    ) -> Option<std::sync::Arc<ReleaseOnDrop>> {
        if !response.granted {
            return current;
        }
        match current {
            Some(g) if g.lease_id() == response.lease_id => Some(g),
            _ => Some(ReleaseOnDrop::new(
                self.client,
                &self.request.service,
                &response.lease_id,
            )),
        }
    }
}

impl<'a> IntoFuture for Acquire<'a> {
    type Output = Result<Permit, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
