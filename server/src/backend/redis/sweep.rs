//! Which services a replica's maintenance round (about once a second) sends the `prune` script
//! to. The round is housekeeping only: expired leases change no decision, and every key carries a
//! TTL. A service needs no visit
//!
//! - before the time its last visit answered: its log's oldest lease past its retention (new
//!   leases join the tail), or with an empty log the time it will be forgotten (a call since may
//!   make either earlier, e.g. an overtake moving the head; pruning then waits, which only delays
//!   memory hygiene);
//! - when its last visit found no state, until a call for it comes through this replica (another
//!   replica's calls are that replica's to sweep; a family member's call counts for its
//!   ancestors, whose logs it books in);
//! - while this replica grants on it: every grant prunes its service's log once the oldest lease
//!   is half a retention past its own (`prune` in `log.lua`), so a service granted on within the
//!   last half retention is kept pruned by its grants.
//!
//! A call whose answer comes back while a visit is in flight keeps the visit from marking the
//! service idle (Redis may have run the call after the visit). A call booked whose answer never
//! comes (a timeout) is not seen: its lease then waits for its TTL, as before any sweep.
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
    /// The last visit found no state, and no call came through this replica since.
    idle: AtomicBool,
    /// A visit is in flight.
    visiting: AtomicBool,
    /// A call came back while the visit in flight was.
    touched_while_visiting: AtomicBool,
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
            visiting: AtomicBool::new(false),
            touched_while_visiting: AtomicBool::new(false),
            half_retention: retention / 2,
        }
    }

    /// A decision for the service came back from Redis.
    pub fn decided(&self, decision: &Decision) {
        self.touched();
        if let Decision::Granted(grant) = decision {
            // The decision's time: its slot less its wait. A replayed lease counts too, though
            // it prunes nothing: rare, and it only holds a visit back by half a retention.
            let at = grant.slot.saturating_sub(grant.wait);
            // Written only when it moves: every decision of a busy service passes here.
            if at > self.last_grant.load(Ordering::Relaxed) {
                self.last_grant.fetch_max(at, Ordering::Relaxed);
            }
        }
    }

    /// A call that may have written the service's state came back (a report, an operator's
    /// action, a family member's acquire for its ancestors).
    pub fn touched(&self) {
        if self.visiting.load(Ordering::SeqCst) {
            self.touched_while_visiting.store(true, Ordering::SeqCst);
        }
        if self.idle.load(Ordering::SeqCst) {
            self.idle.store(false, Ordering::SeqCst);
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

    /// A visit is sent.
    pub fn visiting(&self) {
        self.touched_while_visiting.store(false, Ordering::SeqCst);
        self.visiting.store(true, Ordering::SeqCst);
    }

    /// What the visit answered (`None`: it failed): the earliest Redis time the next visit could
    /// do anything, or a negative number for no state.
    pub fn visited(&self, next_prune: Option<i64>) {
        self.visiting.store(false, Ordering::SeqCst);
        match next_prune.map(u64::try_from) {
            Some(Ok(at)) => self.next_prune.store(at, Ordering::Relaxed),
            Some(Err(_)) => {
                self.next_prune.store(0, Ordering::Relaxed);
                if !self.touched_while_visiting.load(Ordering::SeqCst) {
                    self.idle.store(true, Ordering::SeqCst);
                }
            }
            None => {}
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
        sweep.visiting();
        sweep.visited(Some(200_000_000));
        assert!(!sweep.due(Some(199_999_999)));
        assert!(sweep.due(Some(200_000_000)));
        // Grants do not bring it forward; a recent one holds it back further.
        sweep.decided(&granted(198_000_000, 0));
        assert!(!sweep.due(Some(200_000_000)));
        assert!(sweep.due(Some(203_000_000)));
    }

    #[test]
    fn no_state_waits_for_a_call() {
        let sweep = Sweep::new(10_000_000);
        sweep.visiting();
        sweep.visited(Some(-1));
        assert!(!sweep.due(Some(1)) && !sweep.due(None));
        sweep.touched();
        assert!(sweep.due(Some(1)));
        sweep.visiting();
        sweep.visited(Some(-1));
        sweep.decided(&Decision::Denied {
            retry_after: 1,
            decider: Decider::Now,
            scope: Scope::Shared,
        });
        assert!(sweep.due(Some(1)), "a denial is a call too");
    }

    #[test]
    fn a_call_answered_during_a_visit_keeps_the_service_in() {
        let sweep = Sweep::new(10_000_000);
        // Redis ran the visit (no state yet), then a call that created one, whose answer came
        // back first.
        sweep.visiting();
        sweep.touched();
        sweep.visited(Some(-1));
        assert!(sweep.due(Some(1)));
        // A failed visit changes nothing.
        sweep.visiting();
        sweep.visited(None);
        assert!(sweep.due(Some(1)));
    }
}
