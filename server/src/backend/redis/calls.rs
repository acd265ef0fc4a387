//! Calling the scripts with a service's keys and common arguments, every call bounded by the
//! timeout (how a call reaches Redis, `FCALL` or `EVALSHA`, is `invoke`); acquires go in batches (see `batch`: of many
//! services on a single Redis, of one service on a cluster), each carrying its caller's deadline
//! in Redis's clock (see `deadline`), and grants teach that clock; a family member's acquire
//! names its ancestors' keys too.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use redis::{Cmd, FromRedisValue};

use super::{
    answer, batch, layout::KEYS_PER_SERVICE, protocol, scripts::LuaScript, RedisBackend,
    ServiceArgs, SharedAcquire, TimeSource,
};
use crate::{
    backend::{AcquireCall, BackendError},
    core::{Class, Cost, Decision, Micros, ServiceSpec, MAX_LEASES},
};

impl RedisBackend {
    pub(super) fn fresh_nonce(&self) -> String {
        format!("{:016x}", self.nonces.next_u64())
    }

    pub(super) fn time_arg(&self) -> String {
        match &self.time {
            TimeSource::Server => String::new(),
            TimeSource::Manual(now) => now.load(Ordering::SeqCst).to_string(),
        }
    }

    /// Runs `script` with the service's keys and common arguments followed by `args`, bounded by
    /// the timeout. `EVALSHA` first; on `NOSCRIPT`, `EVAL` (which also caches the script).
    pub(super) async fn eval(
        &self,
        script: &LuaScript,
        service: &ServiceArgs,
        args: &[&str],
    ) -> Result<Vec<String>, BackendError> {
        self.eval_as(script, service, args).await
    }

    /// `verb` (`EVALSHA` or `EVAL`) of `body` with the keys of `chain` (a service, then its
    /// ancestors for a family's acquire), the service's common arguments and `args`.
    pub(super) fn command(
        &self,
        verb: &str,
        body: &str,
        chain: &[&ServiceArgs],
        args: &[&str],
    ) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(body).arg(chain.len() * KEYS_PER_SERVICE);
        for member in chain {
            for key in &member.keys.keys {
                cmd.arg(key);
            }
        }
        let service = chain[0];
        cmd.arg(self.time_arg())
            .arg(&service.limits)
            .arg(&service.retention)
            .arg(self.fresh_nonce());
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// The `FCALL` (or `EVALSHA`) an acquire of `cost` with `max_wait` on `spec` sends (no request
    /// id), for benchmarks that measure Redis alone. The script is loaded by any decision made
    /// before.
    pub fn acquire_command(
        &self,
        spec: &ServiceSpec,
        cost: Cost,
        max_wait: Micros,
    ) -> Result<Cmd, BackendError> {
        let service = self.service(spec)?;
        let mut requests = protocol::PackedRequests::with_capacity(1);
        requests.push(cost, max_wait, Class::TOP, None, "");
        let requests = requests.finish();
        let (verb, name) = self.call_by(&self.scripts.acquire);
        Ok(self.acquire_script_command(verb, name, &[(&service, 1, &requests)]))
    }

    /// `verb` of `acquire.lua`'s `body` deciding `sections`: per service, its keys, its common
    /// arguments, how many acquires and the acquires packed (see `protocol::PackedRequests`). See
    /// the script's header.
    fn acquire_script_command(
        &self,
        verb: &str,
        body: &str,
        sections: &[(&ServiceArgs, usize, &[u8])],
    ) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(body).arg(sections.len() * KEYS_PER_SERVICE);
        for (service, _, _) in sections {
            for key in &service.keys.keys {
                cmd.arg(key);
            }
        }
        cmd.arg(self.time_arg())
            .arg(MAX_LEASES.to_string())
            .arg(sections.len());
        for (service, n, requests) in sections {
            cmd.arg(&service.limits)
                .arg(&service.retention)
                .arg(self.fresh_nonce())
                .arg(*n)
                .arg(*requests);
        }
        cmd
    }

    /// Decides `acquires` of `spec` in order in one script call, at one `now`: what concurrent
    /// acquires of a service share. One reply per acquire.
    pub(super) async fn run_acquires(
        &self,
        service: &ServiceArgs,
        acquires: Vec<batch::QueuedAcquire>,
    ) -> Result<Vec<answer::Answer>, BackendError> {
        self.run_acquires_until(service, acquires, None).await
    }

    /// [`Self::run_acquires`], answering by `deadline` at the latest (and within the timeout).
    pub(super) async fn run_acquires_until(
        &self,
        service: &ServiceArgs,
        acquires: Vec<batch::QueuedAcquire>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<answer::Answer>, BackendError> {
        if self.engine == super::settings::Engine::Module {
            let ancestors = self.ancestors(service)?;
            let chain: Vec<&ServiceArgs> = std::iter::once(service)
                .chain(ancestors.iter().map(Arc::as_ref))
                .collect();
            let answers = self
                .run_native(&[(chain, acquires.as_slice())], deadline)
                .await;
            // As on the script path: the ancestors' sweeps wait for the bookings in them.
            for a in &ancestors {
                a.sweep.touched();
            }
            return answers;
        }
        if service.spec.family.is_none() {
            return self
                .run_sections(&[(service, acquires.as_slice())], deadline)
                .await;
        }
        let ancestors = self.ancestors(service)?;
        let mut args: Vec<String> = Vec::with_capacity(3 + 3 * ancestors.len());
        args.push(MAX_LEASES.to_string());
        args.push(acquires.len().to_string());
        args.push((1 + ancestors.len()).to_string());
        for a in &ancestors {
            args.push(a.limits.clone());
            args.push(a.retention.clone());
            args.push(self.fresh_nonce());
        }
        let sent = tokio::time::Instant::now();
        let timeout = self.batch_timeout(sent, deadline);
        let offset = self.clock_offset();
        let packed = self.pack_requests(&acquires, sent + timeout, offset);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let chain: Vec<&ServiceArgs> = std::iter::once(service)
            .chain(ancestors.iter().map(Arc::as_ref))
            .collect();
        let replies: Result<answer::AcquireReplies, _> = self
            .eval_command(
                |verb, body| {
                    let mut cmd = self.command(verb, body, &chain, &args);
                    cmd.arg(packed.as_slice());
                    cmd
                },
                &self.scripts.family,
                timeout,
            )
            .await;
        // The call may have booked in every ancestor's log: their sweeps wait for them again.
        for a in &ancestors {
            a.sweep.touched();
        }
        let replies = answer::AcquireReplies::answers(replies?);
        self.learn_clock(sent, timeout, &replies);
        Ok(replies)
    }

    /// Decides the acquires of services that are not family members in one `acquire.lua` call:
    /// each service's in order, at one `now`. One reply per acquire, services in order.
    pub(super) async fn run_sections(
        &self,
        sections: &[(&ServiceArgs, &[batch::QueuedAcquire])],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<answer::Answer>, BackendError> {
        if self.engine == super::settings::Engine::Module {
            let chains: Vec<(Vec<&ServiceArgs>, &[batch::QueuedAcquire])> = sections
                .iter()
                .map(|(service, acquires)| (vec![*service], *acquires))
                .collect();
            return self.run_native(&chains, deadline).await;
        }
        let sent = tokio::time::Instant::now();
        let timeout = self.batch_timeout(sent, deadline);
        let offset = self.clock_offset();
        let args: Vec<(&ServiceArgs, usize, Vec<u8>)> = sections
            .iter()
            .map(|(service, acquires)| {
                (
                    *service,
                    acquires.len(),
                    self.pack_requests(acquires, sent + timeout, offset),
                )
            })
            .collect();
        let sections: Vec<(&ServiceArgs, usize, &[u8])> = args
            .iter()
            .map(|(service, n, packed)| (*service, *n, packed.as_slice()))
            .collect();
        let script = &self.scripts.acquire;
        let replies = answer::AcquireReplies::answers(
            self.eval_command(
                |verb, body| self.acquire_script_command(verb, body, &sections),
                script,
                timeout,
            )
            .await?,
        );
        self.learn_clock(sent, timeout, &replies);
        Ok(replies)
    }

    /// Decides a batch of the shared queue (acquires of many services, in arrival order): each
    /// service's acquires in their order, in one script call. One reply per acquire, in the
    /// batch's order.
    pub(super) async fn run_shared(
        &self,
        batch: Vec<SharedAcquire>,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<answer::Answer>, BackendError> {
        let n = batch.len();
        // Per service: its acquires and where each stood in the batch.
        let mut groups: Vec<(Arc<ServiceArgs>, Vec<batch::QueuedAcquire>, Vec<usize>)> = Vec::new();
        for (i, (service, acquire)) in batch.into_iter().enumerate() {
            match groups.iter_mut().find(|g| Arc::ptr_eq(&g.0, &service)) {
                Some(group) => {
                    group.1.push(acquire);
                    group.2.push(i);
                }
                None => groups.push((service, vec![acquire], vec![i])),
            }
        }
        let sections: Vec<(&ServiceArgs, &[batch::QueuedAcquire])> = groups
            .iter()
            .map(|(service, acquires, _)| (service.as_ref(), acquires.as_slice()))
            .collect();
        let replies = self.run_sections(&sections, Some(deadline)).await?;
        if replies.len() != n {
            // The batcher refuses a reply of the wrong length.
            return Ok(replies);
        }
        let mut ordered = vec![answer::Answer::Script(Vec::new()); n];
        for (slot, reply) in groups
            .iter()
            .flat_map(|(_, _, slots)| slots.iter().copied())
            .zip(replies)
        {
            ordered[slot] = reply;
        }
        Ok(ordered)
    }

    /// How long a batch sent at `sent` may take: the timeout, or less to answer by `deadline`.
    pub(super) fn batch_timeout(
        &self,
        sent: tokio::time::Instant,
        deadline: Option<tokio::time::Instant>,
    ) -> Duration {
        deadline.map_or(self.timeout, |d| {
            d.saturating_duration_since(sent).min(self.timeout)
        })
    }

    /// Redis's time now (µs since the Unix epoch), as far as this replica knows it: the time set
    /// by hand, or this process's clock moved by the learned offset (none until one is learned).
    pub(super) fn redis_now(&self) -> Option<Micros> {
        match &self.time {
            TimeSource::Manual(now) => Some(now.load(Ordering::SeqCst)),
            TimeSource::Server => {
                let offset = self.clock.offset()?;
                let local = self.clock.local(std::time::Instant::now());
                Micros::try_from(local.saturating_add(offset)).ok()
            }
        }
    }

    /// Redis's clock, read once per batch (none while time is set by hand).
    pub(super) fn clock_offset(&self) -> Option<i64> {
        match self.time {
            TimeSource::Server => self.clock.offset(),
            TimeSource::Manual(_) => None,
        }
    }

    /// A deadline in Redis µs, or none (no check) while Redis's clock (`offset`) is unknown or
    /// time is set by hand.
    fn deadline_in_redis(
        &self,
        deadline: tokio::time::Instant,
        offset: Option<i64>,
    ) -> Option<u64> {
        offset.and_then(|o| self.clock.at_offset(deadline.into_std(), o))
    }

    /// `acquires` packed as the acquire scripts take them (`protocol::PackedRequests`), each with
    /// the earlier of its caller's deadline and `batch_deadline`: past it nothing is booked.
    fn pack_requests(
        &self,
        acquires: &[batch::QueuedAcquire],
        batch_deadline: tokio::time::Instant,
        offset: Option<i64>,
    ) -> Vec<u8> {
        let mut packed = protocol::PackedRequests::with_capacity(acquires.len());
        for a in acquires {
            let deadline = self.deadline_in_redis(a.deadline.min(batch_deadline), offset);
            packed.push(a.cost, a.max_wait, a.class, deadline, &a.request_id);
        }
        packed.finish()
    }

    /// Learns Redis's clock from a batch's replies (a queued grant's slot minus its wait is
    /// Redis's `now`); a batch that came back expired well within its timeout means the clock moved
    /// ahead of the estimate, which is then forgotten.
    pub(super) fn learn_clock(
        &self,
        sent: tokio::time::Instant,
        timeout: Duration,
        replies: &[answer::Answer],
    ) {
        if !matches!(self.time, TimeSource::Server) {
            return;
        }
        for r in replies {
            match r.clock_reading() {
                // A grant with a wait ahead says Redis's now exactly (a replayed grant whose slot
                // has passed answers wait 0 and its old slot: nothing to learn from it).
                answer::ClockReading::Grant { slot, wait } if wait > 0 => {
                    self.clock
                        .observe(sent.into_std(), slot.saturating_sub(wait));
                    return;
                }
                answer::ClockReading::Expired if sent.elapsed() < timeout / 2 => {
                    tracing::warn!(
                        "redis: a decision came back expired at once; relearning its clock"
                    );
                    self.clock.forget();
                    return;
                }
                _ => {}
            }
        }
    }

    /// The ancestors of `service` as configured now, parent first. A service whose arguments a
    /// reload has replaced, or a chain whose members do not share its family (its hash tag), is
    /// [`BackendError::Reconfigured`]: the call is retried on the new configuration.
    pub(super) fn ancestors(
        &self,
        service: &ServiceArgs,
    ) -> Result<Vec<Arc<ServiceArgs>>, BackendError> {
        if service.spec.family.is_none() {
            return Ok(Vec::new());
        }
        let reconfigured = || BackendError::Reconfigured(service.spec.name.clone());
        let services = self.services();
        let current = services
            .get(&service.spec.name)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), service));
        if !current {
            return Err(reconfigured());
        }
        // A parent of another family, or none at all: a reload is under way.
        crate::core::ancestors(
            &service.spec.name,
            service.spec.parent.clone(),
            |name| {
                services
                    .get(name)
                    .filter(|a| a.spec.family == service.spec.family)
                    .cloned()
            },
            |args| args.spec.parent.clone(),
        )
        .map_err(|_| reconfigured())
    }

    /// Decides `calls` of `spec` in order as one batch (what concurrent acquires share), without
    /// the fail-open policy: for tests that compare batches with one-by-one decisions.
    pub async fn acquire_batch(
        &self,
        spec: &ServiceSpec,
        calls: &[AcquireCall<'_>],
    ) -> Result<Vec<Result<Decision, BackendError>>, BackendError> {
        let service = self.service(spec)?;
        let acquires = calls
            .iter()
            .map(|c| batch::QueuedAcquire::new(c, tokio::time::Instant::now() + self.timeout))
            .collect();
        let replies = self.run_acquires(&service, acquires).await?;
        Ok(replies
            .into_iter()
            .zip(calls)
            .map(|(reply, call)| answer::decision(spec, call, reply))
            .collect())
    }

    /// Decides `calls` (of services that are not family members, in any order) in one script
    /// call, as the shared queue of a single Redis does: for tests that check what one call of
    /// many services decides. One decision per call, in order.
    pub async fn acquire_across(
        &self,
        calls: &[(&ServiceSpec, AcquireCall<'_>)],
    ) -> Result<Vec<Result<Decision, BackendError>>, BackendError> {
        let mut batch = Vec::with_capacity(calls.len());
        for (spec, call) in calls {
            let service = self.service(spec)?;
            if spec.family.is_some() {
                return Err(BackendError::Failed(format!(
                    "{}: a family member is decided by family.lua",
                    spec.name
                )));
            }
            batch.push((
                service,
                batch::QueuedAcquire::new(call, tokio::time::Instant::now() + self.timeout),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let replies = self.run_shared(batch, deadline).await?;
        Ok(replies
            .into_iter()
            .zip(calls)
            .map(|(reply, (spec, call))| answer::decision(spec, call, reply))
            .collect())
    }

    pub(super) async fn eval_as<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        service: &ServiceArgs,
        args: &[&str],
    ) -> Result<T, BackendError> {
        self.eval_within(script, &[service], args, self.timeout)
            .await
    }

    /// [`Self::eval_as`] bounded by `timeout`.
    pub(super) async fn eval_within<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        service: &[&ServiceArgs],
        args: &[&str],
        timeout: Duration,
    ) -> Result<T, BackendError> {
        self.eval_command(
            |verb, body| self.command(verb, body, service, args),
            script,
            timeout,
        )
        .await
    }
}
