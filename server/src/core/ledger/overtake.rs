//! Priority overtakes on a ledger: a call of a higher class is booked ahead of the queued leases
//! of lower classes that may still be overtaken, which step out of the state while its slot is
//! found and are booked again behind it with new ids (see `core::priority`).

use super::{shape, Ledger, TAG_SHIFT};
use crate::core::{adaptive::FULL, lease::Lease, Decider, Micros, ServiceSpec, TokenBucket};

/// Most queued leases one call is booked ahead of (and re-booked behind it): bounds the work of
/// an overtake (the Redis script shares the bound).
pub const MAX_AHEAD: usize = 64;

impl Ledger {
    /// How many queued leases at the end of the log a call of `rank` goes ahead of: leases of
    /// lower classes, not started, with overtakes left, never reconciled (their cost is what
    /// their bucket holds), holding their in-flight slot if the service counts them. Not in a
    /// family (its leases are booked in several ledgers).
    pub(super) fn overtakable(&self, spec: &ServiceSpec, now: Micros, rank: u8) -> usize {
        // A scaled bucket charges by the scale of the moment: stepping leases out would not
        // give back what they were charged.
        if spec.family.is_some() || self.scale < FULL {
            return 0;
        }
        // With every in-flight slot held, a re-booked lease could only wait for a lease timeout:
        // overtake only with a slot free for the newcomer (the others keep theirs).
        let counts_holds = match spec.concurrent() {
            Some((_, limit)) if self.holds.len() as u64 >= limit.amount => return 0,
            Some(_) => true,
            None => false,
        };
        self.log
            .iter()
            .rev()
            .take(MAX_AHEAD)
            .take_while(|l| {
                l.slot > now
                    && l.rank > rank
                    && l.overtakes_left > 0
                    && l.cost == l.requested
                    && l.hold.is_some() == counts_holds
            })
            .count()
    }

    /// Takes the leases `behind` (just split off the log) out of the buckets and the held slots.
    /// Returns the buckets as they were. A bucket's TAT without them is taken as `TAT − window ×
    /// their cost`: exact when they were booked on a full bucket, else above the true one (the
    /// bucket then looks fuller than it is, never emptier).
    pub(super) fn step_out(
        &mut self,
        spec: &ServiceSpec,
        behind: &[Lease],
    ) -> Option<Vec<TokenBucket>> {
        if behind.is_empty() {
            return None;
        }
        for lease in behind {
            if let Some(end) = lease.hold {
                self.holds.remove(&(end, lease.seq));
            }
        }
        let before = self.buckets.clone();
        for (i, bucket) in self.buckets.iter_mut().enumerate() {
            if let Some(shape) = shape(spec, &self.adopted, i) {
                let d = spec.limits[i].dimension;
                let cost: u128 = behind.iter().map(|l| u128::from(l.cost.get(d))).sum();
                bucket.tat_scaled = bucket
                    .tat_scaled
                    .saturating_sub(cost * u128::from(shape.window));
            }
        }
        Some(before)
    }

    /// Undoes [`Ledger::step_out`] when nothing is booked: the leases `behind` step back in as
    /// they were, with the buckets and the frontier they left.
    pub(super) fn step_back(
        &mut self,
        behind: Vec<Lease>,
        buckets: Option<Vec<TokenBucket>>,
        frontier: (Micros, Decider),
    ) {
        if let Some(buckets) = buckets {
            self.buckets = buckets;
        }
        self.frontier = frontier;
        for lease in &behind {
            if let Some(end) = lease.hold {
                self.holds.insert((end, lease.seq));
            }
        }
        self.log.extend(behind);
    }

    /// Sets the class of the lease booked last.
    pub(super) fn mark_last(&mut self, rank: u8, overtakes_left: u16) {
        if let Some(lease) = self.log.back_mut() {
            lease.rank = rank;
            lease.overtakes_left = overtakes_left;
        }
    }

    /// A tag no recent lease id carries (see [`TAG_SHIFT`]).
    pub(super) fn fresh_tag(&mut self) -> u32 {
        self.tags = (self.tags + 1) % (1 << (64 - TAG_SHIFT));
        self.tags = self.tags.max(1);
        self.tags
    }
}
