//! Shared parent budgets: a service may name a `parent` whose limits it also spends (an
//! organisation-wide budget over several models). An acquire in a family is decided on the
//! ledgers of the service and all its ancestors together: the slot is the earliest at which the
//! cost fits every one of them, and it is booked in all of them or in none. The service's lease
//! remembers the leases it booked in its ancestors, so a report reaches them too.
//!
//! Each ledger's earliest time is of the form `max(t0, c)`, so one pass over the family, each
//! starting where the previous one ended, finds the joint earliest slot.
//!
//! Arrival order is kept per ledger, not across the family: a member waits for its own queue and
//! for the slots its ancestors' own limits and cooldowns queued, never for a sibling's call that
//! its own limit or cooldown queued. Such a call is booked in the ancestor at its (later) slot and
//! counts against the ancestor's windows from then on; a member's call booked behind it in the
//! ancestor's log leaves the log ordered by `reach`. An ancestor's token bucket cannot lend the
//! refill before a queued slot, so a sibling's slot queued more than the bucket's window ahead
//! holds that bucket until then (sliding windows have no such limit).

use super::{
    ledger::NewLease, AcquireError, Cost, Decider, Decision, Grant, Ledger, Micros, Scope,
    ServiceSpec,
};

/// One ledger of a family with the spec it is shaped for; the service first, then its parent, …
#[derive(Debug)]
pub struct Member<'a> {
    /// The member's configuration.
    pub spec: &'a ServiceSpec,
    /// The member's state.
    pub ledger: &'a mut Ledger,
}

/// Reserves the earliest slot for `cost` in every member of the family if it is at most
/// `max_wait` away, as [`Ledger::acquire`] does for one service. The cost must fit every member's
/// limits. A `request_id` seen before by `members[0]` returns the same lease.
pub fn acquire_in_family(
    members: &mut [Member<'_>],
    now: Micros,
    cost: Cost,
    max_wait: Micros,
    request_id: Option<&str>,
) -> Result<Decision, AcquireError> {
    let now = members
        .iter()
        .fold(now, |t, m| t.max(m.ledger.high_water()));
    for m in members.iter_mut() {
        m.ledger.observe(now);
        m.ledger.forget_if_stale(m.spec, now);
        m.ledger.prune(m.spec, now);
        m.ledger.refresh_scale(m.spec, now);
    }
    let Some(first) = members.first() else {
        return Err(AcquireError::Full);
    };
    if let Some(id) = request_id {
        if let Some(lease) = first.ledger.replayable(first.spec, id, now) {
            // A lease is replayed only while it holds every in-flight slot it took, its
            // ancestors' too: a job retried after its report (or timeout) is a new call.
            let uplinks = first.ledger.uplinks_of(lease).unwrap_or_default();
            let held = members
                .iter()
                .skip(1)
                .zip(uplinks)
                .all(|(m, up)| m.spec.concurrent().is_none() || m.ledger.holds_slot(*up, now));
            if held {
                return first
                    .ledger
                    .replay_grant(lease, &cost, now)
                    .map(Decision::Granted);
            }
        }
    }
    if members.iter().any(|m| m.ledger.is_full()) {
        return Err(AcquireError::Full);
    }
    let mut slot = now;
    let mut decider = Decider::Now;
    let mut held_back = false;
    for (level, m) in members.iter().enumerate() {
        let (t, d, in_flight) = m.ledger.earliest(m.spec, slot, &cost);
        if t > slot {
            slot = t;
            decider = d.lift(level);
            held_back = in_flight;
        }
    }
    let wait = slot - now;
    if wait > max_wait || held_back {
        return Ok(Decision::Denied {
            retry_after: wait,
            decider,
            scope: Scope::Shared,
        });
    }
    if members.iter().any(|m| !m.ledger.totals_fit(m.spec, &cost)) {
        return Err(AcquireError::TotalTooLarge);
    }
    let mut uplinks = Vec::with_capacity(members.len().saturating_sub(1));
    for (level, m) in members.iter_mut().enumerate().skip(1) {
        // Seen from the ancestor: its own limit or cooldown, or something below or above it.
        let seen = decider.lower(level);
        let mut lease = NewLease::call(None, 0);
        lease.orders = matches!(seen, Decider::Limit(_) | Decider::Cooldown);
        uplinks.push(m.ledger.book(m.spec, slot, cost, seen, lease));
    }
    let Some(first) = members.first_mut() else {
        return Err(AcquireError::Full);
    };
    let lease_id = first.ledger.book(
        first.spec,
        slot,
        cost,
        decider,
        NewLease::call(request_id, 0),
    );
    first.ledger.link_last(uplinks);
    Ok(Decision::Granted(Grant {
        lease_id,
        slot,
        wait,
        decider,
        scope: Scope::Shared,
    }))
}
