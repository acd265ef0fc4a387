//! A ledger over time: carried to a reloaded configuration (`reshape`), pruned of expired leases
//! and compacted, forgotten once stale, and reset or cleared by an operator.

use super::*;

impl Ledger {
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

    /// Forgets everything once the service has been quiet for its retention plus a second after
    /// the latest of its last booked slot, its cooldowns and its last report: all leases have
    /// expired, buckets are drained, and the overload streak and last report are dropped. This is
    /// when the Redis backend's keys expire, so both backends forget the same things.
    pub(in crate::core) fn forget_if_stale(&mut self, spec: &ServiceSpec, now: Micros) {
        if self.is_stale(spec, now) {
            self.forget(spec);
        }
    }

    /// Drops all state; lease numbers go on, so no old lease id names a new lease.
    pub(in crate::core) fn forget(&mut self, spec: &ServiceSpec) {
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

    /// True once the service has been quiet long enough to be forgotten (see `forget_if_stale`).
    pub(in crate::core) fn is_stale(&self, spec: &ServiceSpec, now: Micros) -> bool {
        let horizon = self.horizon(spec);
        // Most calls come within a second of the horizon: skip computing the retention.
        if horizon == 0 || now < horizon.saturating_add(MICROS_PER_SEC) {
            return false;
        }
        now >= Self::forgotten_after(spec, horizon)
    }

    /// When this state will be forgotten if nothing happens to it before: its horizon plus the
    /// retention plus a second (`None`: it holds nothing to forget). A store that expires state
    /// by time (the Redis module's keys) expires it then.
    pub fn forget_at(&self, spec: &ServiceSpec) -> Option<Micros> {
        let horizon = self.horizon(spec);
        (horizon != 0).then(|| Self::forgotten_after(spec, horizon))
    }

    /// The latest of the last booked slot, the cooldowns ever set, the last report and the end of
    /// a lowered adaptive budget (0: nothing yet).
    fn horizon(&self, spec: &ServiceSpec) -> Micros {
        // The latest cooldown end ever set, not only the active ones: whether an expired
        // cooldown was pruned yet must not change when a service is forgotten.
        self.last_report
            .as_ref()
            .map(|r| r.at)
            .into_iter()
            .fold(self.last_slot.max(self.cooldown_horizon), Micros::max)
            .max(self.adaptive_recovered(spec))
    }

    fn forgotten_after(spec: &ServiceSpec, horizon: Micros) -> Micros {
        horizon
            .saturating_add(spec.retention())
            .saturating_add(MICROS_PER_SEC)
    }

    /// When a lowered adaptive budget is whole again (0 when it is): the service is not forgotten
    /// before, so what it learned outlives a quiet spell.
    pub(in crate::core) fn adaptive_recovered(&self, spec: &ServiceSpec) -> Micros {
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
}

impl Ledger {
    /// About how many bytes the state holds (for a store's memory accounting: Redis's
    /// `MEMORY USAGE` of the module's keys).
    pub fn memory_estimate(&self) -> usize {
        let ids: usize = self
            .log
            .iter()
            .filter_map(|l| l.request_id.as_ref().map(|id| 2 * id.len() + 32))
            .sum();
        std::mem::size_of::<Self>()
            + self.log.capacity() * std::mem::size_of::<Lease>()
            + ids
            + self.holds.len() * 40
            + self.buckets.len() * std::mem::size_of::<TokenBucket>()
    }
}

impl Ledger {
    /// Whether this state can be used with `spec`: one bucket per limit (a state decoded from
    /// outside must be checked before its first use; `reshape` carries it to another spec).
    pub fn is_shaped_for(&self, spec: &ServiceSpec) -> bool {
        self.buckets.len() == spec.limits.len() && self.adopted.len() == spec.limits.len()
    }
}

impl Ledger {
    /// The earliest time pruning can drop something: the first lease's reach plus the retention,
    /// or, with no leases, when the state will be forgotten (`None`: nothing ever).
    pub fn next_prune_at(&self, spec: &ServiceSpec) -> Option<Micros> {
        match self.log.front() {
            Some(front) => Some(front.reach.saturating_add(spec.retention())),
            None => self.forget_at(spec),
        }
    }
}

/// The token-bucket state of each limit of a configuration and the provider budget each
/// adopted: what a store keeps apart while another configuration is in force, so that replicas
/// whose configurations differ during a rolling reload do not restart each other's buckets full
/// (the Redis module's `Stored`; the Lua scripts name bucket state by what a limit is instead).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketStates {
    /// One per limit.
    pub buckets: Vec<TokenBucket>,
    /// One per limit.
    pub adopted: Vec<Option<(u64, u64)>>,
}

impl Ledger {
    /// The bucket states of the configuration the ledger is shaped for.
    pub fn bucket_states(&self) -> BucketStates {
        BucketStates {
            buckets: self.buckets.clone(),
            adopted: self.adopted.clone(),
        }
    }

    /// Puts back `states`, taken under `spec` (the configuration the ledger is shaped for now),
    /// into the limits that `reshape` started afresh: a bucket still in its initial state, a
    /// budget not adopted. What the last configuration carried over is kept.
    pub fn restore_bucket_states(&mut self, spec: &ServiceSpec, states: &BucketStates) {
        let n = spec.limits.len();
        if states.buckets.len() != n || states.adopted.len() != n || !self.is_shaped_for(spec) {
            return;
        }
        for i in 0..n {
            if self.buckets[i] == TokenBucket::default() {
                self.buckets[i] = states.buckets[i];
            }
            if self.adopted[i].is_none() {
                self.adopted[i] = states.adopted[i];
            }
        }
    }
}
