//! The [`Ledger`]: everything one service remembers — its lease log, one GCRA state per
//! token-bucket limit, the active cooldowns, idempotency keys, what it learned of the provider's
//! budget and its last answer — and the decisions made on it: reserve a slot (here), take a
//! provider's answer ([`report`]), book a higher class ahead ([`overtake`]).
//!
//! Decisions are reservations in arrival order: a new slot is never earlier than the ledger's
//! frontier (the last slot its own service booked, or its own limits queued), so a large request
//! is not starved by small ones. Denials change nothing. The ledger keeps a high-water mark of the
//! time it was given, so a clock that steps back frees nothing.

mod overtake;
mod report;

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{
    adaptive::{self, Adaptive, FULL},
    answer::{Cooldown, Decider, Decision, Grant, LimitSnapshot, Observation, ServiceSnapshot},
    bucket::BucketShape,
    lease::Lease,
    Algorithm, Class, Cost, Dimension, LeaseId, LimitSpec, Micros, Scope, ServiceSpec,
    SlidingWindow, TokenBucket, MAX_TOTAL, MICROS_PER_SEC,
};

/// A lease id's `seq` is its position in the log (the low 40 bits) and a tag (the high bits),
/// which changes when a lease is re-booked behind a higher priority: an id handed out before then
/// names no lease any more, instead of whatever lease took its position.
const TAG_SHIFT: u32 = 40;
const POSITION_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// How a lease is booked besides its slot and cost.
#[derive(Clone, Copy, Debug)]
pub(super) struct NewLease<'a> {
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// It takes an in-flight slot (a call; not usage charged from outside).
    pub holds_slot: bool,
    /// The tag of its id (0 for a first booking).
    pub tag: u32,
    /// Its slot is a place in this ledger's arrival order (later calls are booked no earlier): a
    /// call of the ledger's own service, or a member's call whose slot this ledger's own limits or
    /// cooldown decided. A member's call queued by its own limit is not: it must not hold back
    /// its siblings.
    pub orders: bool,
}

impl<'a> NewLease<'a> {
    /// A call with an idempotency key, holding an in-flight slot.
    pub fn call(request_id: Option<&'a str>, tag: u32) -> Self {
        Self {
            request_id,
            holds_slot: true,
            tag,
            orders: true,
        }
    }
}

/// Most leases one service holds. Each lease is kept until its longest window has passed; this
/// bound keeps a flood of grants (say, zero-token calls on a service with only a daily token
/// limit) from growing memory without end. Beyond it, acquires are shed.
pub const MAX_LEASES: usize = 1 << 20;

/// Most queued leases a cooldown defers (see [`Ledger::report`]); beyond it, queued slots keep
/// their times, so one report's work stays bounded (the Redis scripts share the bound).
pub const MAX_DEFERRED: usize = 1024;

/// An acquire the ledger refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// A retried acquire whose `request_id` was used before with a different cost.
    #[error("request_id {0:?} was already used with a different cost")]
    RequestIdReused(String),
    /// The service holds its maximum of leases ([`MAX_LEASES`]).
    #[error("the service holds too many leases; try again later")]
    Full,
    /// The costs a dimension's retained log holds would reach 2^53 ([`MAX_TOTAL`]): only
    /// possible with costs near the largest accepted, far beyond any provider's budget.
    #[error("the service holds 2^53 of booked cost in one dimension; try again later")]
    TotalTooLarge,
}

/// An operator's action on a service's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// End every active cooldown and the overload count.
    ClearCooldowns,
    /// Forget everything: leases, buckets, cooldowns, adopted limits, the last report.
    Reset,
}

/// Real usage of a lease, per dimension; `None` keeps the estimate.
pub type UsageUpdate = [Option<u64>; 4];

/// The state of one service.
#[derive(Clone, Debug)]
pub struct Ledger {
    nonce: u64,
    log: VecDeque<Lease>,
    /// Sequence number of `log[0]` (or of the next lease when the log is empty).
    front_seq: u64,
    /// Cumulative costs of the leases already dropped from the front of the log.
    base: [u128; 4],
    /// One per limit of the spec; unused for sliding-window limits.
    buckets: Vec<TokenBucket>,
    /// One per limit of the spec: a provider budget (amount, burst) adopted in place of the
    /// configured one.
    adopted: Vec<Option<(u64, u64)>>,
    /// Per dimension; `requests` (every call spends one) is the service-wide cooldown.
    cooldowns: [Option<Cooldown>; 4],
    /// Overloads reported in a row since the last success.
    overload_streak: u32,
    /// What the service learned from its 429s (services with `adaptive`).
    adaptive: Adaptive,
    /// The adaptive scale (permille) in force for the operation at hand, set at its start.
    scale: u32,
    /// The latest slot ever booked (kept when its lease is pruned).
    last_slot: Micros,
    /// The latest slot in arrival order (see [`NewLease::orders`]) and what decided it: no new
    /// slot is booked before it. In one service it is `last_slot`.
    frontier: (Micros, Decider),
    /// The latest cooldown end ever set (kept when the cooldown expires).
    cooldown_horizon: Micros,
    by_request: HashMap<Box<str>, u64>,
    /// In-flight slots held: (end, lease seq), for a `concurrent` limit.
    holds: BTreeSet<(Micros, u64)>,
    /// The last tag given to a re-booked lease's id.
    tags: u32,
    last_report: Option<Observation>,
    high_water: Micros,
    max_leases: usize,
}

/// Two limits that are the same token bucket (their names aside).
fn same_bucket(a: &LimitSpec, b: &LimitSpec) -> bool {
    (a.dimension, a.window, a.amount, a.algorithm) == (b.dimension, b.window, b.amount, b.algorithm)
}

/// The shape of bucket limit `i` in force: the adopted provider budget, else the configured one.
fn shape(spec: &ServiceSpec, adopted: &[Option<(u64, u64)>], i: usize) -> Option<BucketShape> {
    let l = &spec.limits[i];
    match l.algorithm {
        Algorithm::TokenBucket { burst } => {
            let (amount, burst) = match adopted.get(i).copied().flatten() {
                Some(budget) if spec.adopt_provider_limits => budget,
                _ => (l.amount, burst),
            };
            Some(BucketShape {
                amount,
                window: l.window,
                burst,
            })
        }
        Algorithm::SlidingWindow | Algorithm::Concurrent => None,
    }
}

impl Ledger {
    /// An empty ledger for `spec`. `nonce` goes into every lease id.
    pub fn new(spec: &ServiceSpec, nonce: u64) -> Self {
        Self {
            nonce,
            log: VecDeque::new(),
            front_seq: 0,
            base: [0; 4],
            buckets: vec![TokenBucket::default(); spec.limits.len()],
            adopted: vec![None; spec.limits.len()],
            cooldowns: Default::default(),
            overload_streak: 0,
            adaptive: Adaptive::default(),
            scale: FULL,
            last_slot: 0,
            frontier: (0, Decider::Now),
            cooldown_horizon: 0,
            by_request: HashMap::new(),
            holds: BTreeSet::new(),
            tags: 0,
            last_report: None,
            high_water: 0,
            max_leases: MAX_LEASES,
        }
    }

    /// Lowers the lease bound (tests of load shedding).
    pub fn with_max_leases(mut self, max_leases: usize) -> Self {
        self.max_leases = max_leases;
        self
    }

    /// The amount of limit `i` in force: the adopted provider budget, else the configured one.
    fn amount(&self, spec: &ServiceSpec, i: usize) -> u64 {
        let adopted = self.adopted.get(i).copied().flatten();
        match adopted {
            Some((amount, _)) if spec.adopt_provider_limits => amount,
            _ => spec.limits[i].amount,
        }
    }

    /// Carries this state from `old` to `new`, a reloaded configuration of the same service.
    /// Leases, cooldowns, request ids and the last report are kept, so every sliding-window limit
    /// counts the usage already booked (as far back as `old` retained it). A token bucket keeps its
    /// level only if `new` has the same bucket (dimension, window, amount and burst); a bucket that
    /// is new or reshaped starts full. An adopted provider budget stays with the sliding limit of
    /// the same dimension and window. The Redis scripts keep per-limit state under the same
    /// identities, so every backend carries state over alike.
    pub fn reshape(&mut self, old: &ServiceSpec, new: &ServiceSpec) {
        let mut buckets = vec![TokenBucket::default(); new.limits.len()];
        let mut adopted = vec![None; new.limits.len()];
        for (i, limit) in new.limits.iter().enumerate() {
            let same_window = |l: &LimitSpec| {
                l.dimension == limit.dimension
                    && l.window == limit.window
                    && (l.algorithm == Algorithm::Concurrent)
                        == (limit.algorithm == Algorithm::Concurrent)
            };
            let Some(j) = old.limits.iter().position(same_window) else {
                continue;
            };
            let before = &old.limits[j];
            match limit.algorithm {
                // Adoption changes what a bucket's state means: kept only while it stays on.
                Algorithm::TokenBucket { .. }
                    if same_bucket(before, limit)
                        && old.adopt_provider_limits == new.adopt_provider_limits =>
                {
                    buckets[i] = self.buckets.get(j).copied().unwrap_or_default();
                    adopted[i] = self.adopted.get(j).copied().flatten();
                }
                Algorithm::SlidingWindow if before.algorithm == Algorithm::SlidingWindow => {
                    adopted[i] = self.adopted.get(j).copied().flatten();
                }
                _ => {}
            }
        }
        self.buckets = buckets;
        self.adopted = adopted;
    }

    /// The sliding-window arithmetic of limit `i`, with the amount in force.
    fn window(&self, spec: &ServiceSpec, i: usize) -> SlidingWindow {
        self.window_at(spec, i, self.scale)
    }

    /// [`Ledger::window`] at an adaptive `scale`.
    fn window_at(&self, spec: &ServiceSpec, i: usize, scale: u32) -> SlidingWindow {
        let l = &spec.limits[i];
        SlidingWindow {
            amount: adaptive::scaled(self.amount(spec, i), scale),
            window: l.window,
            dimension: l.dimension.index(),
        }
    }

    /// The adaptive scale at `now` (FULL unless the service is `adaptive`).
    fn scale_at(&self, spec: &ServiceSpec, now: Micros) -> u32 {
        if spec.adaptive {
            self.adaptive.scale_at(now, spec.adaptive_period())
        } else {
            FULL
        }
    }

    /// Sets the scale in force for an operation at `now`.
    pub(super) fn refresh_scale(&mut self, spec: &ServiceSpec, now: Micros) {
        self.scale = self.scale_at(spec, now);
    }

    pub(super) fn observe(&mut self, now: Micros) -> Micros {
        self.high_water = self.high_water.max(now);
        self.high_water
    }

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
    pub(super) fn totals_fit(&self, spec: &ServiceSpec, cost: &Cost) -> bool {
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
    pub(super) fn replay(
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
    pub(super) fn replayable(
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
    pub(super) fn replay_grant(
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

    /// Where lease `seq` is in the log: its position is the low bits of `seq`, and the lease
    /// there must carry that very id (a lease re-booked behind a higher priority got a new one).
    fn index_of(&self, seq: u64) -> Option<usize> {
        // Positions count modulo 2^40, so ids keep working past 2^40 bookings.
        let offset = (seq & POSITION_MASK).wrapping_sub(self.front_seq) & POSITION_MASK;
        let i = usize::try_from(offset).ok()?;
        self.log.get(i).filter(|l| l.seq == seq).map(|_| i)
    }

    fn lease(&self, seq: u64) -> Option<&Lease> {
        self.log.get(self.index_of(seq)?)
    }

    /// Earliest slot ≥ `t0`, after the cooldown and the frontier of arrival order, where `cost`
    /// fits every limit; what decided it; and whether that was the in-flight limit (a slot only a
    /// lease timeout would free, never booked ahead).
    pub(super) fn earliest(
        &self,
        spec: &ServiceSpec,
        t0: Micros,
        cost: &Cost,
    ) -> (Micros, Decider, bool) {
        self.earliest_with(spec, t0, cost, true)
    }

    /// [`Ledger::earliest`] for a lease that holds its in-flight slot already (moved, not new):
    /// the in-flight limit does not bind it.
    pub(super) fn earliest_booked(
        &self,
        spec: &ServiceSpec,
        t0: Micros,
        cost: &Cost,
    ) -> (Micros, Decider) {
        let (t, decider, _) = self.earliest_with(spec, t0, cost, false);
        (t, decider)
    }

    fn earliest_with(
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
    fn hold_earliest(&self, amount: u64, t0: Micros) -> Micros {
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

    pub(super) fn book(
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

    /// Forgets everything once the service has been quiet for its retention plus a second after
    /// the latest of its last booked slot, its cooldowns and its last report: all leases have
    /// expired, buckets are drained, and the overload streak and last report are dropped. This is
    /// when the Redis backend's keys expire, so both backends forget the same things.
    pub(super) fn forget_if_stale(&mut self, spec: &ServiceSpec, now: Micros) {
        if self.is_stale(spec, now) {
            self.forget(spec);
        }
    }

    /// Drops all state; lease numbers go on, so no old lease id names a new lease.
    fn forget(&mut self, spec: &ServiceSpec) {
        let fresh = Ledger::new(spec, self.nonce).with_max_leases(self.max_leases);
        let (front_seq, high_water) = (self.front_seq + self.log.len() as u64, self.high_water);
        *self = fresh;
        self.front_seq = front_seq;
        self.high_water = high_water;
    }

    /// Applies an operator's action at `now`.
    pub fn admin(&mut self, spec: &ServiceSpec, now: Micros, op: AdminOp) {
        let now = self.observe(now);
        self.forget_if_stale(spec, now);
        match op {
            AdminOp::ClearCooldowns => {
                self.cooldowns = Default::default();
                self.overload_streak = 0;
            }
            AdminOp::Reset => self.forget(spec),
        }
    }

    /// The slot of the lease booked for `request_id`, wherever it is now (a cooldown or a higher
    /// class may have moved it, and re-booking gives it a new id).
    pub fn slot_of_request(&self, request_id: &str) -> Option<Micros> {
        let seq = *self.by_request.get(request_id)?;
        self.lease(seq).map(|l| l.slot)
    }

    /// The slot of a held lease: where it was booked, or later if a cooldown deferred it.
    pub fn slot_of(&self, id: LeaseId) -> Option<Micros> {
        if id.nonce != self.nonce {
            return None;
        }
        self.lease(id.seq).map(|l| l.slot)
    }

    /// True once the service has been quiet long enough to be forgotten (see `forget_if_stale`).
    fn is_stale(&self, spec: &ServiceSpec, now: Micros) -> bool {
        // The latest cooldown end ever set, not only the active ones: whether an expired
        // cooldown was pruned yet must not change when a service is forgotten.
        let horizon = self
            .last_report
            .as_ref()
            .map(|r| r.at)
            .into_iter()
            .fold(self.last_slot.max(self.cooldown_horizon), Micros::max)
            .max(self.adaptive_recovered(spec));
        // Most calls come within a second of the horizon: skip computing the retention.
        if horizon == 0 || now < horizon.saturating_add(MICROS_PER_SEC) {
            return false;
        }
        now >= horizon
            .saturating_add(spec.retention())
            .saturating_add(MICROS_PER_SEC)
    }

    /// When a lowered adaptive budget is whole again (0 when it is): the service is not forgotten
    /// before, so what it learned outlives a quiet spell.
    fn adaptive_recovered(&self, spec: &ServiceSpec) -> Micros {
        let a = &self.adaptive;
        if !spec.adaptive || a.scale == 0 || a.scale >= FULL {
            return 0;
        }
        a.since
            .saturating_add(a.periods_to_full().saturating_mul(spec.adaptive_period()))
    }

    /// Drops leases whose longest window has passed and an expired cooldown.
    pub fn prune(&mut self, spec: &ServiceSpec, now: Micros) {
        let retention = spec.retention();
        while let Some(front) = self.log.front() {
            if front.reach.saturating_add(retention) > now {
                break;
            }
            self.base = front.cum;
            if let Some(id) = &front.request_id {
                // Unless a later lease took the request id over.
                if self.by_request.get(id) == Some(&front.seq) {
                    self.by_request.remove(id);
                }
            }
            self.log.pop_front();
            self.front_seq += 1;
        }
        while self.holds.first().is_some_and(|&(end, _)| end <= now) {
            self.holds.pop_first();
        }
        for c in &mut self.cooldowns {
            if c.as_ref().is_some_and(|c| c.until <= now) {
                *c = None;
            }
        }
    }

    /// Prunes, then releases spare memory when the service is idle. Returns true when the service
    /// holds no leases, no cooldown and only drained buckets.
    pub fn compact(&mut self, spec: &ServiceSpec, now: Micros) -> bool {
        let now = self.observe(now);
        self.prune(spec, now);
        self.forget_if_stale(spec, now);
        let drained = self
            .buckets
            .iter()
            .enumerate()
            .all(|(i, b)| shape(spec, &self.adopted, i).is_none_or(|s| b.is_drained(s, now)));
        let idle = self.log.is_empty()
            && self.holds.is_empty()
            && self.cooldowns.iter().all(Option::is_none)
            && drained;
        if self.log.capacity() > 2 * self.log.len() + 16 {
            self.log.shrink_to_fit();
        }
        if self.by_request.capacity() > 2 * self.by_request.len() + 16 {
            self.by_request.shrink_to_fit();
        }
        idle
    }

    /// The ledger's high-water mark of time.
    pub(super) fn high_water(&self) -> Micros {
        self.high_water
    }

    /// True when the ledger holds its maximum of leases.
    pub(super) fn is_full(&self) -> bool {
        self.log.len() >= self.max_leases
    }

    /// Records on the latest lease the leases it booked in its ancestors.
    pub(super) fn link_last(&mut self, uplinks: Vec<LeaseId>) {
        if let Some(lease) = self.log.back_mut() {
            lease.uplinks = Some(uplinks.into_boxed_slice());
        }
    }

    /// The leases lease `id` booked in its ancestors (parent first), if it is held.
    pub(super) fn uplinks_of(&self, id: LeaseId) -> Option<&[LeaseId]> {
        if id.nonce != self.nonce {
            return None;
        }
        self.lease(id.seq)?.uplinks.as_deref()
    }

    /// Whether lease `id` still holds its in-flight slot at `now`.
    pub(super) fn holds_slot(&self, id: LeaseId, now: Micros) -> bool {
        id.nonce == self.nonce
            && self
                .lease(id.seq)
                .and_then(|l| l.hold)
                .is_some_and(|end| end > now)
    }

    /// Number of leases held.
    pub fn lease_count(&self) -> usize {
        self.log.len()
    }

    /// The live state of the service at `now`.
    pub fn snapshot(&self, spec: &ServiceSpec, now: Micros) -> ServiceSnapshot {
        let now = now.max(self.high_water);
        if self.is_stale(spec, now) {
            return Ledger::new(spec, self.nonce).snapshot(spec, now);
        }
        let scale = self.scale_at(spec, now);
        let limits = spec
            .limits
            .iter()
            .enumerate()
            .map(|(i, limit)| match shape(spec, &self.adopted, i) {
                None if limit.algorithm == Algorithm::Concurrent => {
                    let used = self.holds.range((now.saturating_add(1), 0)..).count() as u64;
                    let last_end = self.holds.last().map_or(now, |&(end, _)| end);
                    LimitSnapshot {
                        amount: limit.amount,
                        used,
                        remaining: limit.amount.saturating_sub(used),
                        reset_after: last_end.saturating_sub(now),
                    }
                }
                Some(shape) => {
                    // A scaled bucket holds costs scaled up: shown in tokens.
                    let (level, reset_after) = self.buckets[i].level(shape, now);
                    LimitSnapshot {
                        amount: adaptive::scaled(shape.amount, scale),
                        used: adaptive::share(level, scale),
                        remaining: adaptive::share(shape.burst.saturating_sub(level), scale),
                        reset_after,
                    }
                }
                None => {
                    let w = self.window_at(spec, i, scale);
                    let (used, reset_after) = w.usage(&self.log, &self.base, now);
                    let used = u64::try_from(used).unwrap_or(u64::MAX);
                    LimitSnapshot {
                        amount: w.amount,
                        used,
                        remaining: w.amount.saturating_sub(used),
                        reset_after,
                    }
                }
            })
            .collect();
        let queued = self.log.iter().rev().take_while(|l| l.reach > now).count() as u64;
        ServiceSnapshot {
            now,
            limits,
            cooldown: self.cooldowns[0]
                .as_ref()
                .filter(|c| c.until > now)
                .map(|c| (c.until - now, c.cause.clone())),
            dimension_cooldowns: Dimension::ALL[1..]
                .iter()
                .filter_map(|&d| {
                    self.cooldowns[d.index()]
                        .as_ref()
                        .filter(|c| c.until > now)
                        .map(|c| (d, c.until - now, c.cause.clone()))
                })
                .collect(),
            queued,
            last_report: self.last_report.clone(),
            adaptive_scale: scale,
            scope: Scope::Shared,
        }
    }
}
