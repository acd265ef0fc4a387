//! What a ledger shows: the live state of its limits (GetStatus), and where a lease or a request
//! id's lease stands.

use super::*;

impl Ledger {
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
                        burst: limit.amount,
                        adopted: false,
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
                        burst: adaptive::scaled(shape.burst, scale),
                        adopted: limit.is_other_budget(shape.amount, shape.burst),
                        used: adaptive::share(level, scale),
                        remaining: adaptive::share(shape.burst.saturating_sub(level), scale),
                        reset_after,
                    }
                }
                None => {
                    let w = self.window_at(spec, i, scale);
                    let (used, reset_after) = w.usage(&self.log, &self.base, now);
                    let used = u64::try_from(used).unwrap_or(u64::MAX);
                    let amount = self.amount(spec, i);
                    LimitSnapshot {
                        amount: w.amount,
                        burst: w.amount,
                        adopted: limit.is_other_budget(amount, amount),
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

    /// Number of leases held.
    pub fn lease_count(&self) -> usize {
        self.log.len()
    }
}
