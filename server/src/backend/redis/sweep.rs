//! Which services a replica's maintenance round (about once a second) sends the `prune` script
//! to. The round is housekeeping only: expired leases change no decision, and every key carries a
//! TTL. A service needs no visit
//!
//! - before its log's oldest lease is past its retention: each visit answers when that is (the
//!   head only changes by pruning; new leases join the tail);
//! - when its last visit found nothing to wait for (an empty log, or no state), until a call for
//!   it comes through this replica (another replica's calls are that replica's to sweep);
//! - while this replica grants on it: every grant prunes its service's log once the oldest lease
//!   is half a retention past its own (`prune` in `log.lua`), so a service granted on within the
//!   last half retention is kept pruned by its grants.
//!
//! The first round after a start visits every service (which also converts a state an earlier
//! release wrote), as does the first after a reload every service whose configuration changed.
//! Before this, each replica ran one script call per configured service every second whatever
//! the load: with 1,000 services about 50 ms of Redis CPU a second per replica, idle or not
//! (BENCHMARKS.md, section 6.5).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::core::{Decision, Micros};

/// One service's sweep bookkeeping on this replica.
#[derive(Debug)]
pub struct Sweep {
    /// Redis time of the latest grant this replica saw decided (µs; 0: none).
    last_grant: AtomicU64,
    /// Redis time before which a visit can prune nothing (µs; 0: not known).
    next_prune: AtomicU64,
    /// The last visit found nothing to wait for, and no call came through this replica since.
    idle: AtomicBool,
    /// Half the service's retention (µs): the slack a grant's own pruning leaves.
    half_retention: Micros,
}

impl Sweep {
    /// The bookkeeping of a service kept for `retention` µs after a lease's span.
    pub fn new(retention: Micros) -> Self {
        Self {
            last_grant: AtomicU64::new(0),
            next_prune: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            half_retention: retention / 2,
        }
    }

    /// A decision for the service came back from Redis.
    pub fn decided(&self, decision: &Decision) {
        self.touched();
        if let Decision::Granted(grant) = decision {
            // The decision's time: its slot less its wait (a replayed lease's slot may lie
            // before it, which only makes the next visit come sooner).
            let at = grant.slot.saturating_sub(grant.wait);
            // Written only when it moves: every decision of a busy service passes here.
            if at > self.last_grant.load(Ordering::Relaxed) {
                self.last_grant.fetch_max(at, Ordering::Relaxed);
            }
        }
    }

    /// A call that may write the service's state (a report, an operator's action) came through.
    pub fn touched(&self) {
        if self.idle.load(Ordering::Relaxed) {
            self.idle.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the round at Redis time `now` (`None`: not known) visits the service.
    pub fn due(&self, now: Option<Micros>) -> bool {
        if self.idle.load(Ordering::Relaxed) {
            return false;
        }
        let Some(now) = now else {
            return true;
        };
        let last = self.last_grant.load(Ordering::Relaxed);
        let granting = last > 0 && now < last.saturating_add(self.half_retention);
        !granting && now >= self.next_prune.load(Ordering::Relaxed)
    }

    /// What the visit answered: the earliest Redis time a prune could drop a lease, or a
    /// negative number for nothing to wait for.
    pub fn visited(&self, next_prune: i64) {
        match u64::try_from(next_prune) {
            Ok(at) => self.next_prune.store(at, Ordering::Relaxed),
            Err(_) => {
                self.next_prune.store(0, Ordering::Relaxed);
                self.idle.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Decider, Grant, LeaseId, Scope};

    fn granted(slot: Micros, wait: Micros) -> Decision {
        Decision::Granted(Grant {
            lease_id: LeaseId { nonce: 1, seq: 0 },
            slot,
            wait,
            decider: Decider::Now,
            scope: Scope::Shared,
        })
    }

    #[test]
    fn a_recent_grant_defers_the_visit_by_half_a_retention() {
        let sweep = Sweep::new(10_000_000);
        assert!(sweep.due(Some(1_000)), "never granted: visited");
        // Granted at 100 s (slot 102 s, 2 s away).
        sweep.decided(&granted(102_000_000, 2_000_000));
        assert!(!sweep.due(Some(104_999_999)));
        assert!(sweep.due(Some(105_000_000)));
        // Redis's time unknown: visited.
        assert!(sweep.due(None));
        // An older grant seen late does not move it back.
        sweep.decided(&granted(50_000_000, 0));
        assert!(!sweep.due(Some(104_000_000)));
    }

    #[test]
    fn a_visit_says_when_the_next_one_can_prune() {
        let sweep = Sweep::new(10_000_000);
        sweep.visited(200_000_000);
        assert!(!sweep.due(Some(199_999_999)));
        assert!(sweep.due(Some(200_000_000)));
        // Grants do not bring it forward; a recent one holds it back further.
        sweep.decided(&granted(198_000_000, 0));
        assert!(!sweep.due(Some(200_000_000)));
        assert!(sweep.due(Some(203_000_000)));
    }

    #[test]
    fn nothing_to_wait_for_waits_for_a_call() {
        let sweep = Sweep::new(10_000_000);
        sweep.visited(-1);
        assert!(!sweep.due(Some(1)) && !sweep.due(None));
        sweep.touched();
        assert!(sweep.due(Some(1)));
        sweep.visited(-1);
        sweep.decided(&Decision::Denied {
            retry_after: 1,
            decider: Decider::Now,
            scope: Scope::Shared,
        });
        assert!(sweep.due(Some(1)), "a denial is a call too");
    }
}
