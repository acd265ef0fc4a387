//! A provider's answer applied to a ledger: cooldowns lengthened (a later end wins) and queued
//! slots moved behind them, overloads counted, an adaptive budget lowered, the lease's in-flight
//! slot released and its estimate replaced by the real usage, provider budgets adopted, and
//! usage the provider saw from outside Sluice charged.

use super::{same_bucket, shape, Ledger, NewLease, UsageUpdate, MAX_DEFERRED};
use crate::core::lease::Lease;
use crate::core::{
    adaptive::{self, FULL},
    AdoptOrder, Algorithm, BucketShape, Cooldown, Cost, Decider, Dimension, LeaseId, Micros,
    Observation, RemainingReading, ReportCall, ReportOutcome, Scope, ServiceSpec, MAX_AMOUNT,
    MAX_TOTAL,
};

impl Ledger {
    /// Applies a provider's answer: sets or lengthens cooldowns (a later end wins), counts an
    /// overload or a success, replaces a lease's estimated cost by its real usage, charges usage
    /// the provider saw from outside Sluice, and remembers the observation.
    pub fn report(&mut self, spec: &ServiceSpec, now: Micros, call: &ReportCall) -> ReportOutcome {
        let now = self.observe(now);
        self.forget_if_stale(spec, now);
        self.prune(spec, now);
        self.refresh_scale(spec, now);
        let mut cooldown_set = false;
        for order in &call.cooldowns {
            cooldown_set |= self.lengthen(
                order.dimension.index(),
                Cooldown {
                    until: now.saturating_add(order.length),
                    cause: order.cause.clone(),
                },
            );
        }
        if let Some(order) = &call.overload {
            self.overload_streak = self.overload_streak.saturating_add(1);
            let until = now.saturating_add(order.length(self.overload_streak));
            cooldown_set |= self.lengthen(
                Dimension::Requests.index(),
                Cooldown {
                    until,
                    cause: order.cause.clone(),
                },
            );
        }
        if call.success {
            self.overload_streak = 0;
        }
        let mut adaptive_lowered = false;
        if spec.adaptive && call.throttled {
            let until = self
                .cooldowns
                .iter()
                .flatten()
                .map(|c| c.until)
                .fold(now, Micros::max);
            let before = self.scale;
            adaptive_lowered = self.adaptive.throttle(now, until, spec.adaptive_period());
            self.refresh_scale(spec, now);
            if adaptive_lowered {
                self.rescale_buckets(spec, now, before);
            }
        }
        let seq = call
            .lease
            .filter(|id| id.nonce == self.nonce)
            .map(|id| id.seq);
        let found = seq.is_some_and(|s| self.lease(s).is_some());
        let released = seq.filter(|_| found).is_some_and(|s| self.release(s));
        let uplinks = seq
            .filter(|_| found)
            .and_then(|s| self.lease(s))
            .and_then(|l| l.uplinks.as_deref())
            .map(<[LeaseId]>::to_vec)
            .unwrap_or_default();
        let usage_applied = match (seq, call.usage) {
            (Some(seq), Some(usage)) if found => {
                self.reconcile(spec, now, seq, usage);
                true
            }
            _ => false,
        };
        let mut lowered = adaptive_lowered;
        for order in &call.adopt {
            lowered |= self.adopt(spec, now, order);
        }
        // A family's leases are booked in several ledgers at once; moving one copy would leave
        // the others behind, so a family's queued slots keep their times.
        if spec.family.is_none() {
            self.defer_queued(spec, now, lowered);
        }
        let mut outside_usage = 0;
        for reading in &call.remaining {
            outside_usage += self.charge_outside(spec, now, reading);
        }
        if let Some((status_code, headers)) = &call.observation {
            self.last_report = Some(Observation {
                at: now,
                status_code: *status_code,
                headers: headers.clone(),
            });
        }
        let outcome = ReportOutcome {
            cooldown_remaining: self.cooldown_remaining(now),
            cooldown_set,
            usage_applied,
            lease_unknown: call.lease.is_some() && !found,
            outside_usage,
            released,
            uplinks,
            adaptive_scale: self.scale,
            adaptive_lowered,
            scope: Scope::Shared,
        };
        self.forget_if_stale(spec, now);
        outcome
    }

    /// After an adaptive decrease from scale `before` to the one in force: what each bucket owes
    /// (from the latest booked slot on) was charged at `before`, so it is charged again at the
    /// lower scale (see [`BucketShape::rescale`]). Without it the calls already granted would
    /// weigh as if the budget were still `before`, and the bucket would admit more than the
    /// lowered budget.
    fn rescale_buckets(&mut self, spec: &ServiceSpec, now: Micros, before: u32) {
        for (i, bucket) in self.buckets.iter_mut().enumerate() {
            if let Some(shape) = shape(spec, &self.adopted, i) {
                *bucket = shape.rescale(*bucket, now, self.last_slot, before, self.scale);
            }
        }
    }

    /// Moves the queued slots (after `now`) that an active cooldown covers to its end, all by the
    /// same amount: queued workers keep their order and spacing, and resume spread out as booked
    /// instead of all at once. Moving the tail of the log later keeps every window invariant. When
    /// the same report `lowered` a budget (adopted or adaptive), the old spacing is too tight for
    /// it: the queued slots are booked again in order (see [`Ledger::respace_queued`]). A worker
    /// that waited learns its new slot by asking again with its `request_id`.
    fn defer_queued(&mut self, spec: &ServiceSpec, now: Micros, lowered: bool) {
        let until = self
            .cooldowns
            .iter()
            .flatten()
            .map(|c| c.until)
            .fold(now, Micros::max);
        let first = self.log.partition_point(|l| l.slot <= now);
        let Some(first_slot) = self.log.get(first).map(|l| l.slot) else {
            return;
        };
        if self.log.len() - first > MAX_DEFERRED {
            return;
        }
        let delta = until.saturating_sub(first_slot);
        if lowered && self.log.range(first..).all(|l| l.cost == l.requested) {
            self.respace_queued(spec, first, delta);
            return;
        }
        if delta == 0 {
            return;
        }
        for lease in self.log.range_mut(first..) {
            lease.slot += delta;
            lease.reach = lease.slot;
            let seq = lease.seq;
            if let Some(end) = &mut lease.hold {
                if self.holds.remove(&(*end, seq)) {
                    *end += delta;
                    self.holds.insert((*end, seq));
                } else {
                    lease.hold = None;
                }
            }
        }
        self.last_slot += delta;
        if self.frontier.0 > now {
            self.frontier.0 += delta;
        }
        for (i, bucket) in self.buckets.iter_mut().enumerate() {
            if let Some(shape) = shape(spec, &self.adopted, i) {
                let a = u128::from(shape.amount);
                if bucket.tat_scaled > u128::from(now) * a {
                    bucket.tat_scaled += u128::from(delta) * a;
                }
            }
        }
    }

    /// Books the queued leases from log index `first` on again, in order, under the budgets in
    /// force: each at the earliest slot from its own moved by `delta` (so never sooner, nor closer
    /// to the one before, than booked) at which it fits every limit after the ones before it.
    /// They keep their ids, costs and in-flight slots (an in-flight limit does not move them: the
    /// slots they hold stay as many). They step out of the buckets first as an overtake's do
    /// (their raw costs, so a bucket never looks emptier than it is).
    fn respace_queued(&mut self, spec: &ServiceSpec, first: usize, delta: Micros) {
        let queued: Vec<Lease> = self.log.split_off(first).into();
        self.step_out(spec, &queued);
        self.frontier = self
            .log
            .back()
            .map_or((0, Decider::Now), |l| (l.slot, l.decider));
        for mut lease in queued {
            let (slot, decider) = self.earliest_booked(spec, lease.slot + delta, &lease.cost);
            for (i, bucket) in self.buckets.iter_mut().enumerate() {
                if let Some(shape) = shape(spec, &self.adopted, i) {
                    let c = lease.cost.get(spec.limits[i].dimension);
                    bucket.book(shape, adaptive::inflated(c, self.scale), slot);
                }
            }
            if let Some(end) = lease.hold {
                let moved = spec
                    .concurrent()
                    .map_or(end, |(_, limit)| slot.saturating_add(limit.window));
                lease.hold = Some(moved);
                self.holds.insert((moved, lease.seq));
            }
            lease.reach = self.log.back().map_or(slot, |l| l.reach.max(slot));
            lease.slot = slot;
            lease.decider = decider;
            self.last_slot = self.last_slot.max(slot);
            self.frontier = (slot, decider);
            self.log.push_back(lease);
        }
    }

    /// Adopts a provider budget in place of limit `order.limit`'s. A token bucket's state is
    /// re-expressed for the new rate and burst (what it owes carries over in whole tokens); the
    /// same budget again changes nothing.
    /// Limits of the same identity share one adopted budget (the Redis scripts keep one per
    /// sliding dimension and window, one per bucket).
    /// True if it lowered a budget in force (a sliding limit's amount, a bucket's rate or burst).
    fn adopt(&mut self, spec: &ServiceSpec, now: Micros, order: &AdoptOrder) -> bool {
        let Some(limit) = spec.limits.get(order.limit) else {
            return false;
        };
        if !(1..=MAX_AMOUNT).contains(&order.amount) {
            return false;
        }
        let mut lowered = false;
        let budget = (order.amount, order.burst);
        for (i, other) in spec.limits.iter().enumerate() {
            match other.algorithm {
                Algorithm::SlidingWindow
                    if limit.algorithm == Algorithm::SlidingWindow
                        && (other.dimension, other.window) == (limit.dimension, limit.window) =>
                {
                    lowered |= spec.adopt_provider_limits && order.amount < self.amount(spec, i);
                    self.adopted[i] = Some(budget);
                }
                Algorithm::TokenBucket { .. }
                    if spec.adopt_provider_limits && same_bucket(other, limit) =>
                {
                    let Some(from) = shape(spec, &self.adopted, i) else {
                        continue;
                    };
                    let to = BucketShape {
                        amount: order.amount,
                        window: limit.window,
                        burst: order.burst,
                    };
                    if from != to {
                        lowered |= to.amount < from.amount || to.burst < from.burst;
                        self.buckets[i] = from.convert(self.buckets[i], to, now, self.last_slot);
                        self.adopted[i] = Some(budget);
                    }
                }
                _ => {}
            }
        }
        lowered
    }

    /// Ends the in-flight slot of lease `seq`, if it still holds one.
    fn release(&mut self, seq: u64) -> bool {
        let Some(i) = self.index_of(seq) else {
            return false;
        };
        let Some(lease) = self.log.get_mut(i) else {
            return false;
        };
        let released = lease
            .hold
            .take()
            .is_some_and(|end| self.holds.remove(&(end, seq)));
        // The call is over: a later acquire with its request id is a new call.
        if released {
            if let Some(id) = &lease.request_id {
                if self.by_request.get(id) == Some(&seq) {
                    self.by_request.remove(id);
                }
            }
        }
        released
    }

    /// Sets the cooldown of dimension `d` to `cooldown` if it ends later. True if it did.
    fn lengthen(&mut self, d: usize, cooldown: Cooldown) -> bool {
        let current = &mut self.cooldowns[d];
        if current.as_ref().is_none_or(|c| cooldown.until > c.until) {
            self.cooldown_horizon = self.cooldown_horizon.max(cooldown.until);
            *current = Some(cooldown);
            true
        } else {
            false
        }
    }

    /// What limit `i` could still grant now, in the ledger's view (queued slots count as used).
    fn remaining(&self, spec: &ServiceSpec, i: usize, now: Micros) -> u64 {
        match shape(spec, &self.adopted, i) {
            Some(shape) => adaptive::share(
                shape
                    .burst
                    .saturating_sub(self.buckets[i].level(shape, now).0),
                self.scale,
            ),
            None => {
                let w = self.window(spec, i);
                let (used, _) = w.usage(&self.log, &self.base, now);
                w.amount
                    .saturating_sub(u64::try_from(used).unwrap_or(u64::MAX))
            }
        }
    }

    /// Books the usage the provider saw beyond the ledger's view as a lease of its own (no id),
    /// at the latest booked slot, in every limit of the reading's dimension. Returns the charge.
    fn charge_outside(
        &mut self,
        spec: &ServiceSpec,
        now: Micros,
        reading: &RemainingReading,
    ) -> u64 {
        let Some(limit) = spec
            .limits
            .get(reading.limit)
            .filter(|l| l.algorithm != Algorithm::Concurrent)
        else {
            return 0;
        };
        let own = self.remaining(spec, reading.limit, now);
        let seen = reading.remaining.saturating_add(reading.tolerance);
        if seen >= own || self.log.len() >= self.max_leases {
            return 0;
        }
        let charge = own - seen;
        let mut cost = Cost::default();
        cost.0[limit.dimension.index()] = charge;
        if !self.totals_fit(spec, &cost) {
            return 0;
        }
        let slot = self.last_slot.max(now);
        let outside = NewLease {
            request_id: None,
            holds_slot: false,
            tag: 0,
            // Not a call: it holds no one back (in one service its slot is the frontier anyway).
            orders: false,
        };
        self.book(spec, slot, cost, Decider::Limit(reading.limit), outside);
        charge
    }

    /// The longest cooldown still active.
    fn cooldown_remaining(&self, now: Micros) -> Micros {
        self.cooldowns
            .iter()
            .flatten()
            .map(|c| c.until.saturating_sub(now))
            .max()
            .unwrap_or(0)
    }

    /// Replaces the cost of lease `seq` by its real usage; the requests dimension never changes.
    fn reconcile(&mut self, spec: &ServiceSpec, now: Micros, seq: u64, usage: UsageUpdate) {
        let Some(i) = self.index_of(seq) else {
            return;
        };
        for dim in [
            Dimension::Tokens,
            Dimension::InputTokens,
            Dimension::OutputTokens,
        ] {
            let d = dim.index();
            let Some(new) = usage[d] else { continue };
            let old = self.log[i].cost.0[d];
            if new == old {
                continue;
            }
            let sliding = spec
                .limits
                .iter()
                .any(|l| l.dimension == dim && l.algorithm == Algorithm::SlidingWindow);
            let held = self.log.back().map_or(0, |b| b.cum[d] - self.base[d]);
            if new > old && sliding && held + u128::from(new - old) >= MAX_TOTAL {
                // As on Redis: a charge that would reach 2^53 keeps the estimate.
                continue;
            }
            self.log[i].cost.0[d] = new;
            for lease in self.log.range_mut(i..) {
                lease.cum[d] = lease.cum[d] + u128::from(new) - u128::from(old);
            }
            let slot = self.log[i].slot;
            for (b, limit) in spec.limits.iter().enumerate() {
                let Some(shape) = shape(spec, &self.adopted, b) else {
                    continue;
                };
                // Past its span the lease weighs on the limit no more: every GCRA term up to it
                // is at most `slot × amount + burst × window`, now below `now × amount`.
                if limit.dimension != dim || slot.saturating_add(shape.span()) <= now {
                    continue;
                }
                let w = u128::from(shape.window);
                let bucket = &mut self.buckets[b];
                if new < old && self.scale < FULL {
                    // Later leases were charged at a scale the refund floor cannot see: a scaled
                    // bucket is not refunded (as on Redis).
                    continue;
                }
                if new > old {
                    // A charge beyond one burst counts as one burst: the bucket is overdrawn at
                    // most once (the Redis backend's arithmetic stays exact the same way).
                    let charge = adaptive::inflated(new - old, self.scale).min(shape.burst);
                    bucket.tat_scaled += u128::from(charge) * w;
                } else {
                    // GCRA's TAT is a max over leases j of (slot_j × amount + window × costs from
                    // j on). Lowering lease i's cost lowers exactly the terms j ≤ i; the terms of
                    // later leases bound the refund from below.
                    let last = self.log.back().map_or(0, |l| l.cum[d]);
                    let floor = self
                        .log
                        .range(i + 1..)
                        .map(|l| {
                            let from_here = last - (l.cum[d] - u128::from(l.cost.0[d]));
                            u128::from(l.slot) * u128::from(shape.amount) + from_here * w
                        })
                        .max()
                        .unwrap_or(0);
                    let refunded = bucket
                        .tat_scaled
                        .saturating_sub(u128::from((old - new).min(shape.burst)) * w);
                    bucket.tat_scaled = refunded.max(floor);
                }
            }
        }
    }
}
