//! `sliding_window`: the exact log algorithm. A lease booked at slot `s` occupies `[s, s + W)`.
//! A new slot `t` fits when the costs of leases with `s > t − W` plus the new cost stay within the
//! amount: every window holding `t` holds no other lease. With cumulative sums kept in the log,
//! the earliest such `t` is one binary search away. The log is ordered by each lease's `reach`
//! (the latest slot booked up to it): in one service that is its slot, since slots are booked in
//! order; in a family's ancestor a member's call may sit behind a sibling's queued slot, and the
//! queued slot then counts from now on (the check stays safe: never more than the amount in any
//! window).

use std::collections::VecDeque;

use super::{lease::Lease, Micros};

/// The sliding-window arithmetic over one dimension of a service's lease log.
#[derive(Clone, Copy, Debug)]
pub struct SlidingWindow {
    /// At most this much in every interval of length `window`.
    pub amount: u64,
    /// Window length.
    pub window: Micros,
    /// Dimension index in the log's costs.
    pub dimension: usize,
}

impl SlidingWindow {
    /// Earliest `t ≥ t0` at which `cost` fits, given the log (whose first lease's cumulative
    /// sums start after `base`). Leases queued after `t0` count as if they were in its window.
    pub(crate) fn earliest(
        &self,
        log: &VecDeque<Lease>,
        base: &[u128; 4],
        cost: u64,
        t0: Micros,
    ) -> Micros {
        let d = self.dimension;
        let total = log.back().map_or(0, |l| l.cum[d] - base[d]);
        let fill = total + u128::from(cost);
        if fill <= u128::from(self.amount) {
            return t0;
        }
        // The leases up to and including index m must have left the window.
        let need = fill - u128::from(self.amount);
        let m = log.partition_point(|l| l.cum[d] - base[d] < need);
        match log.get(m) {
            Some(lease) => t0.max(lease.reach.saturating_add(self.window)),
            // Unreachable when cost <= amount; never grant in that case.
            None => Micros::MAX,
        }
    }

    /// Cost booked in the window that ends at `now` (including slots booked ahead of `now`), and
    /// the time until all of it has left the window.
    pub(crate) fn usage(
        &self,
        log: &VecDeque<Lease>,
        base: &[u128; 4],
        now: Micros,
    ) -> (u128, Micros) {
        let d = self.dimension;
        let total = log.back().map_or(0, |l| l.cum[d] - base[d]);
        let gone = log.partition_point(|l| l.reach.saturating_add(self.window) <= now);
        let before = if gone == 0 {
            0
        } else {
            log[gone - 1].cum[d] - base[d]
        };
        let reset = log
            .iter()
            .skip(gone)
            .rev()
            .find(|l| l.cost.0[d] > 0)
            .map_or(0, |l| {
                l.reach.saturating_add(self.window).saturating_sub(now)
            });
        (total - before, reset)
    }
}
