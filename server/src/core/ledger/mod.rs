//! The [`Ledger`]: everything one service remembers — its lease log, one GCRA state per
//! token-bucket limit, the active cooldowns, idempotency keys, what it learned of the provider's
//! budget and its last answer — and the decisions made on it: reserve a slot ([`acquire`]), book a
//! higher class ahead ([`overtake`]), take a provider's answer ([`report`]); its life over time
//! ([`lifecycle`]) and what it shows ([`snapshot`]).
//!
//! Decisions are reservations in arrival order: a new slot is never earlier than the ledger's
//! frontier (the last slot its own service booked, or its own limits queued), so a large request
//! is not starved by small ones. Denials change nothing. The ledger keeps a high-water mark of the
//! time it was given, so a clock that steps back frees nothing.

mod acquire;
mod codec;
mod lifecycle;
pub use lifecycle::BucketStates;
mod overtake;
mod report;
mod snapshot;

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
}
