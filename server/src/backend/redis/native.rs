//! The `module` engine: decisions run by the Sluice Redis module's native commands
//! (`redis-module/`) instead of the Lua scripts. A service's whole state is one key (`…:native`)
//! holding the memory backend's own ledger; the calls carry the service's encoded configuration
//! and their requests and answers in the core's binary codec (`core::remote`), so the module
//! decides exactly as the memory backend does. Batching, deadlines and the learned clock are the
//! script path's (`calls.rs`), and so is the maintenance sweep (`sweep.rs`), which visits a
//! service with `SLUICE.PRUNE` when it has leases to drop; the module expires keys itself.

use std::sync::atomic::Ordering;

use redis::Cmd;

use super::{answer, batch, protocol, unavailable, RedisBackend, ServiceArgs, TimeSource};
use crate::{
    backend::BackendError,
    core::{
        from_bytes, to_bytes, AcquireAnswer, AcquireRequest, AcquireRequests, AdminOp, ReportCall,
        ReportOutcome, ServiceSnapshot, MAX_LEASES,
    },
};

impl RedisBackend {
    /// The decision time the module takes: the time set by hand, or `-1` (Redis's clock).
    fn native_time(&self) -> String {
        match &self.time {
            TimeSource::Server => "-1".into(),
            TimeSource::Manual(now) => now.load(Ordering::SeqCst).to_string(),
        }
    }

    /// `SLUICE.ACQUIRE` deciding `sections`: per section, a service and its ancestors (parent
    /// first) and its acquires, with the deadline each carries in Redis's clock.
    pub(super) fn native_acquire_command(
        &self,
        sections: &[(Vec<&ServiceArgs>, AcquireRequests)],
    ) -> Cmd {
        let mut keys = sections
            .iter()
            .flat_map(|(chain, _)| chain.iter().map(|s| &s.keys.native));
        let mut cmd = redis::cmd("SLUICE.ACQUIRE");
        let total: usize = sections.iter().map(|(chain, _)| chain.len()).sum();
        if let Some(first) = keys.next() {
            cmd.arg(first);
        }
        cmd.arg(total.saturating_sub(1));
        for key in keys {
            cmd.arg(key);
        }
        cmd.arg(self.native_time()).arg(MAX_LEASES);
        for (chain, requests) in sections {
            cmd.arg(chain.len());
            for member in chain {
                cmd.arg(member.spec_bytes.as_slice());
            }
            for _ in chain {
                cmd.arg(self.nonces.next_u64());
            }
            cmd.arg(to_bytes(requests));
        }
        cmd
    }

    /// The requests of `acquires`, each with the earlier of its caller's deadline and
    /// `batch_deadline` in Redis's clock (none while the clock is unknown).
    pub(super) fn native_requests(
        &self,
        acquires: &[batch::QueuedAcquire],
        batch_deadline: tokio::time::Instant,
        offset: Option<i64>,
    ) -> AcquireRequests {
        AcquireRequests(
            acquires
                .iter()
                .map(|a| AcquireRequest {
                    cost: a.cost,
                    max_wait: a.max_wait,
                    class: a.class,
                    deadline: offset.and_then(|o| {
                        self.clock
                            .at_offset(a.deadline.min(batch_deadline).into_std(), o)
                    }),
                    request_id: (!a.request_id.is_empty()).then(|| a.request_id.clone()),
                })
                .collect(),
        )
    }

    /// Sends `cmd` (a module command) bounded by `timeout`.
    pub(super) async fn native_query<T: redis::FromRedisValue>(
        &self,
        cmd: &Cmd,
        timeout: std::time::Duration,
    ) -> Result<T, BackendError> {
        let connection = self
            .link
            .get()
            .map_err(|e| BackendError::Unavailable(format!("redis: {e}")))?;
        match tokio::time::timeout(timeout, connection.query(cmd)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) if e.to_string().contains("unknown command") => Err(BackendError::Failed(
                "redis: engine = \"module\", but this Redis has not loaded the Sluice module \
                 (redis-server --loadmodule …/libsluice_redis_module.so)"
                    .into(),
            )),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "redis: no answer within {timeout:?}"
            ))),
        }
    }

    /// Decides `sections` in one `SLUICE.ACQUIRE`: one answer per acquire, sections in order.
    pub(super) async fn run_native(
        &self,
        sections: &[(Vec<&ServiceArgs>, &[batch::QueuedAcquire])],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<answer::Answer>, BackendError> {
        let sent = tokio::time::Instant::now();
        let timeout = self.batch_timeout(sent, deadline);
        let offset = self.clock_offset();
        let packed: Vec<(Vec<&ServiceArgs>, AcquireRequests)> = sections
            .iter()
            .map(|(chain, acquires)| {
                (
                    chain.clone(),
                    self.native_requests(acquires, sent + timeout, offset),
                )
            })
            .collect();
        let cmd = self.native_acquire_command(&packed);
        let replies: Vec<Vec<u8>> = self.native_query(&cmd, timeout).await?;
        let answers = replies
            .iter()
            .map(|bytes| {
                from_bytes::<AcquireAnswer>(bytes)
                    .map(answer::Answer::Native)
                    .map_err(|e| protocol::protocol(&format!("module answer: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.learn_clock(sent, timeout, &answers);
        Ok(answers)
    }

    /// `SLUICE.REPORT` of `call` on `service`.
    pub(super) async fn report_native(
        &self,
        service: &ServiceArgs,
        call: &ReportCall,
    ) -> Result<ReportOutcome, BackendError> {
        let mut cmd = redis::cmd("SLUICE.REPORT");
        cmd.arg(&service.keys.native)
            .arg(self.native_time())
            .arg(service.spec_bytes.as_slice())
            .arg(self.nonces.next_u64())
            .arg(to_bytes(call));
        let bytes: Vec<u8> = self.native_query(&cmd, self.timeout).await?;
        from_bytes(&bytes).map_err(|e| protocol::protocol(&format!("module answer: {e}")))
    }

    /// `SLUICE.STATUS` of `service`: its snapshot and the leases it holds.
    pub(super) async fn status_native(
        &self,
        service: &ServiceArgs,
    ) -> Result<(ServiceSnapshot, u64), BackendError> {
        let mut cmd = redis::cmd("SLUICE.STATUS");
        cmd.arg(&service.keys.native)
            .arg(self.native_time())
            .arg(service.spec_bytes.as_slice());
        let bytes: Vec<u8> = self.native_query(&cmd, self.timeout).await?;
        from_bytes(&bytes).map_err(|e| protocol::protocol(&format!("module answer: {e}")))
    }

    /// `SLUICE.PRUNE` of `service`: when a visit can next drop something (−1: no state).
    pub(super) async fn prune_native(&self, service: &ServiceArgs) -> Result<i64, BackendError> {
        let mut cmd = redis::cmd("SLUICE.PRUNE");
        cmd.arg(&service.keys.native)
            .arg(self.native_time())
            .arg(service.spec_bytes.as_slice());
        self.native_query(&cmd, self.timeout).await
    }

    /// `SLUICE.ADMIN` of `op` on `service`.
    pub(super) async fn admin_native(
        &self,
        service: &ServiceArgs,
        op: AdminOp,
    ) -> Result<(), BackendError> {
        let mut cmd = redis::cmd("SLUICE.ADMIN");
        cmd.arg(&service.keys.native)
            .arg(self.native_time())
            .arg(service.spec_bytes.as_slice())
            .arg(self.nonces.next_u64())
            .arg(to_bytes(&op));
        self.native_query::<String>(&cmd, self.timeout)
            .await
            .map(|_| ())
    }
}
