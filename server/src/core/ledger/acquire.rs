//! Acquiring on a ledger: replay a retried request id, find the earliest slot at which a cost fits
//! every limit after the cooldowns and the arrival-order frontier, and book it (a higher class
//! ahead of queued lower ones, see `overtake`).

use super::*;

impl Ledger {
    /// Reserves the earliest slot for `cost` if it is at most `max_wait` away.
    ///
    /// The cost must have passed [`ServiceSpec::check_fits`]. A `request_id` seen before returns
    /// the same lease, counted once.
    pub fn acquire(
        &mut self,
        spec: &ServiceSpec,
        now: Micros,
        cost: Cost,
        max_wait: Micros,
        request_id: Option<&str>,
    ) -> Result<Decision, AcquireError> {
        self.acquire_in_class(spec, now, cost, max_wait, request_id, Class::TOP)
    }

    /// [`Ledger::acquire`] for a priority `class`: booked ahead of the queued leases of lower
    /// classes that may still be overtaken (see [`Class`]), which are re-booked behind it.
    pub fn acquire_in_class(
        &mut self,
        spec: &ServiceSpec,
        now: Micros,
        cost: Cost,
        max_wait: Micros,
        request_id: Option<&str>,
        class: Class,
    ) -> Result<Decision, AcquireError> {
        let now = self.observe(now);
        self.forget_if_stale(spec, now);
        self.prune(spec, now);
        self.refresh_scale(spec, now);
        if let Some(id) = request_id {
            if let Some(grant) = self.replay(spec, id, &cost, now)? {
                return Ok(Decision::Granted(grant));
            }
        }
        if self.log.len() >= self.max_leases {
            return Err(AcquireError::Full);
        }
        // Over the whole log, before any lease steps out (they are booked again after it).
        if !self.totals_fit(spec, &cost) {
            return Err(AcquireError::TotalTooLarge);
        }
        let ahead = self.overtakable(spec, now, class.rank);
        // The queued leases it goes ahead of step out while its slot is found.
        let behind: Vec<Lease> = self.log.split_off(self.log.len() - ahead).into();
        let buckets = self.step_out(spec, &behind);
        let frontier = self.frontier;
        if !behind.is_empty() {
            // Not a family (see `overtakable`): every lease orders, so the last one left is the
            // frontier while they are out.
            self.frontier = self
                .log
                .back()
                .map_or((0, Decider::Now), |l| (l.slot, l.decider));
        }
        let (slot, decider, held_back) = self.earliest(spec, now, &cost);
        let wait = slot.saturating_sub(now);
        // A slot only a lease timeout would free is not booked: a report may free one much
        // sooner, so the caller asks again (its `retry_after` is the timeout, an upper bound).
        if wait > max_wait || held_back {
            self.step_back(behind, buckets, frontier);
            return Ok(Decision::Denied {
                retry_after: wait,
                decider,
                scope: Scope::Shared,
            });
        }
        let tag = if behind.is_empty() {
            0
        } else {
            self.fresh_tag()
        };
        let lease_id = self.book(spec, slot, cost, decider, NewLease::call(request_id, tag));
        self.mark_last(class.rank, class.max_overtakes);
        for lease in behind {
            let (t, d, _) = self.earliest(spec, lease.slot.max(now), &lease.cost);
            let tag = self.fresh_tag();
            let id = lease.request_id.as_deref();
            let again = NewLease {
                request_id: id,
                holds_slot: lease.hold.is_some(),
                tag,
                orders: true,
            };
            self.book(spec, t, lease.cost, d, again);
            self.mark_last(lease.rank, lease.overtakes_left.saturating_sub(1));
        }
        Ok(Decision::Granted(Grant {
            lease_id,
            slot,
            wait,
            decider,
            scope: Scope::Shared,
        }))
    }

    /// Whether booking `cost` keeps the costs the retained log holds in every dimension with a
    /// sliding limit below [`MAX_TOTAL`] (the Redis scripts' running totals are exact only below
    /// it; they prune and rebase before they refuse, so every backend refuses alike).
    pub(in crate::core) fn totals_fit(&self, spec: &ServiceSpec, cost: &Cost) -> bool {
        spec.limits
            .iter()
            .filter(|l| l.algorithm == Algorithm::SlidingWindow)
            .all(|l| {
                let d = l.dimension.index();
                let held = self.log.back().map_or(0, |b| b.cum[d] - self.base[d]);
                held + u128::from(cost.0[d]) < MAX_TOTAL
            })
    }

    /// The grant a retried acquire (same `request_id`) gets back, if its lease is still held. A
    /// lease whose in-flight slot is gone (released, or timed out: a crashed worker's job retried
    /// with its key) is not handed out again: the retry is a new call and books anew.
    pub(in crate::core) fn replay(
        &self,
        spec: &ServiceSpec,
        id: &str,
        cost: &Cost,
        now: Micros,
    ) -> Result<Option<Grant>, AcquireError> {
        match self.replayable(spec, id, now) {
            Some(id) => self.replay_grant(id, cost, now).map(Some),
            None => Ok(None),
        }
    }

    /// The lease a retried acquire with `request_id` may get back: held, and holding its
    /// in-flight slot if the service counts them.
    pub(in crate::core) fn replayable(
        &self,
        spec: &ServiceSpec,
        request_id: &str,
        now: Micros,
    ) -> Option<LeaseId> {
        let &seq = self.by_request.get(request_id)?;
        let lease = self.lease(seq)?;
        if spec.concurrent().is_some() && lease.hold.is_none_or(|end| end <= now) {
            return None;
        }
        Some(LeaseId {
            nonce: self.nonce,
            seq,
        })
    }

    /// The grant of replayable lease `id` for a retry asking `cost` (which must be what the
    /// lease asked for).
    pub(in crate::core) fn replay_grant(
        &self,
        id: LeaseId,
        cost: &Cost,
        now: Micros,
    ) -> Result<Grant, AcquireError> {
        let seq = id.seq;
        let Some(lease) = self.lease(seq) else {
            return Err(AcquireError::Full);
        };
        let id = lease.request_id.as_deref().unwrap_or_default();
        if lease.requested != *cost {
            return Err(AcquireError::RequestIdReused(id.to_string()));
        }
        Ok(Grant {
            lease_id: LeaseId {
                nonce: self.nonce,
                seq,
            },
            slot: lease.slot,
            wait: lease.slot.saturating_sub(now),
            decider: lease.decider,
            scope: Scope::Shared,
        })
    }

    /// Earliest slot ≥ `t0`, after the cooldown and the frontier of arrival order, where `cost`
    /// fits every limit; what decided it; and whether that was the in-flight limit (a slot only a
    /// lease timeout would free, never booked ahead).
    pub(in crate::core) fn earliest(
        &self,
        spec: &ServiceSpec,
        t0: Micros,
        cost: &Cost,
    ) -> (Micros, Decider, bool) {
        self.earliest_with(spec, t0, cost, true)
    }

    /// [`Ledger::earliest`] for a lease that holds its in-flight slot already (moved, not new):
    /// the in-flight limit does not bind it.
    pub(in crate::core) fn earliest_booked(
        &self,
        spec: &ServiceSpec,
        t0: Micros,
        cost: &Cost,
    ) -> (Micros, Decider) {
        let (t, decider, _) = self.earliest_with(spec, t0, cost, false);
        (t, decider)
    }

    pub(in crate::core) fn earliest_with(
        &self,
        spec: &ServiceSpec,
        t0: Micros,
        cost: &Cost,
        holds_bind: bool,
    ) -> (Micros, Decider, bool) {
        let mut t = t0;
        let mut decider = Decider::Now;
        let mut held_back = false;
        for (d, c) in self.cooldowns.iter().enumerate() {
            if let Some(c) = c {
                if c.until > t && cost.0[d] > 0 {
                    t = c.until;
                    decider = Decider::Cooldown;
                }
            }
        }
        let (frontier, frontier_decider) = self.frontier;
        if frontier > t {
            t = frontier;
            decider = frontier_decider;
        }
        for (i, limit) in spec.limits.iter().enumerate() {
            let c = cost.get(limit.dimension);
            let ti = match shape(spec, &self.adopted, i) {
                Some(shape) => {
                    self.buckets[i].earliest(shape, adaptive::inflated(c, self.scale), t)
                }
                None if limit.algorithm == Algorithm::Concurrent => {
                    if holds_bind {
                        self.hold_earliest(limit.amount, t)
                    } else {
                        t
                    }
                }
                None => {
                    // An adopted budget below this call's cost lets the call go alone.
                    let mut w = self.window(spec, i);
                    w.amount = w.amount.max(c);
                    w.earliest(&self.log, &self.base, c, t)
                }
            };
            if ti > t {
                t = ti;
                decider = Decider::Limit(i);
                held_back = limit.algorithm == Algorithm::Concurrent;
            }
        }
        (t, decider, held_back)
    }

    /// Earliest `t ≥ t0` at which fewer than `amount` in-flight slots are held. Every held slot
    /// began at or before `t0` (slots are booked in order), so a slot starting at `t` overlaps
    /// exactly the held ones ending after `t`.
    pub(in crate::core) fn hold_earliest(&self, amount: u64, t0: Micros) -> Micros {
        let held = self.holds.len() as u64;
        if held < amount {
            return t0;
        }
        let skip = usize::try_from(held - amount).unwrap_or(usize::MAX);
        self.holds
            .iter()
            .nth(skip)
            .map_or(Micros::MAX, |&(end, _)| t0.max(end))
    }

    pub(in crate::core) fn book(
        &mut self,
        spec: &ServiceSpec,
        slot: Micros,
        cost: Cost,
        decider: Decider,
        lease: NewLease<'_>,
    ) -> LeaseId {
        let NewLease {
            request_id,
            holds_slot,
            tag,
            orders,
        } = lease;
        for (i, bucket) in self.buckets.iter_mut().enumerate() {
            if let Some(shape) = shape(spec, &self.adopted, i) {
                let c = adaptive::inflated(cost.get(spec.limits[i].dimension), self.scale);
                bucket.book(shape, c, slot);
            }
        }
        let prev = self.log.back().map_or(self.base, |l| l.cum);
        let reach = self.log.back().map_or(slot, |l| l.reach.max(slot));
        let mut cum = prev;
        for (c, add) in cum.iter_mut().zip(cost.0) {
            *c += u128::from(add);
        }
        let position = self.front_seq.wrapping_add(self.log.len() as u64) & POSITION_MASK;
        let seq = position | (u64::from(tag) << TAG_SHIFT);
        let hold = match spec.concurrent() {
            Some((_, limit)) if holds_slot => {
                let end = slot.saturating_add(limit.window);
                self.holds.insert((end, seq));
                Some(end)
            }
            _ => None,
        };
        self.last_slot = self.last_slot.max(slot);
        if orders && slot >= self.frontier.0 {
            self.frontier = (slot, decider);
        }
        let request_id: Option<Box<str>> = request_id.map(Into::into);
        if let Some(id) = &request_id {
            self.by_request.insert(id.clone(), seq);
        }
        self.log.push_back(Lease {
            slot,
            reach,
            cost,
            requested: cost,
            cum,
            decider,
            request_id,
            hold,
            uplinks: None,
            seq,
            rank: 0,
            overtakes_left: 0,
        });
        LeaseId {
            nonce: self.nonce,
            seq,
        }
    }
}
