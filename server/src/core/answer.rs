//! What the ledger answers: the [`Decision`] of an acquire and what decided it ([`Decider`]), the
//! [`ReportOutcome`] of a report, cooldowns and their causes, and the [`ServiceSnapshot`] a
//! status shows. Plain data, shared by every backend.

use super::{Dimension, LeaseId, Micros, Scope};

/// What decided a slot's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decider {
    /// Nothing: the slot is now.
    Now,
    /// The service's cooldown.
    Cooldown,
    /// The limit at this index of the service's limits.
    Limit(usize),
    /// An ancestor's state, `level` parents up (1: the parent): its limit at index `limit`, or
    /// its cooldown when `None`.
    Ancestor {
        /// 1 for the parent, 2 for its parent, …
        level: u8,
        /// The ancestor's limit index; `None` for its cooldown.
        limit: Option<u16>,
    },
}

impl Decider {
    /// This decider as seen from `levels` below: a descendant that many levels down.
    pub fn lift(self, levels: usize) -> Decider {
        let levels = u8::try_from(levels).unwrap_or(u8::MAX);
        if levels == 0 {
            return self;
        }
        match self {
            Decider::Now => Decider::Now,
            Decider::Cooldown => Decider::Ancestor {
                level: levels,
                limit: None,
            },
            Decider::Limit(i) => Decider::Ancestor {
                level: levels,
                limit: Some(u16::try_from(i).unwrap_or(u16::MAX)),
            },
            Decider::Ancestor { level, limit } => Decider::Ancestor {
                level: level.saturating_add(levels),
                limit,
            },
        }
    }

    /// This decider (as seen from a service) as seen from its ancestor `levels` up: what the
    /// ancestor's own lease records. A descendant's decision is `Now` to the ancestor.
    pub fn lower(self, levels: usize) -> Decider {
        if levels == 0 {
            return self;
        }
        match self {
            Decider::Ancestor { level, limit } if usize::from(level) == levels => match limit {
                None => Decider::Cooldown,
                Some(i) => Decider::Limit(usize::from(i)),
            },
            Decider::Ancestor { level, limit } if usize::from(level) > levels => {
                Decider::Ancestor {
                    level: level - levels as u8,
                    limit,
                }
            }
            _ => Decider::Now,
        }
    }
}

/// A booked slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The lease's id.
    pub lease_id: LeaseId,
    /// Slot time.
    pub slot: Micros,
    /// `slot − now`: how long the caller sleeps before its call.
    pub wait: Micros,
    /// What decided the slot time.
    pub decider: Decider,
    /// Which state booked it.
    pub scope: Scope,
}

/// The answer to an acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A slot was booked.
    Granted(Grant),
    /// The earliest slot was further than `max_wait`; nothing was recorded.
    Denied {
        /// Earliest slot − now (a hint).
        retry_after: Micros,
        /// What decided that slot.
        decider: Decider,
        /// Which state decided it.
        scope: Scope,
    },
}

/// Why a cooldown was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CooldownCause {
    /// HTTP status of the provider's answer.
    pub status_code: u32,
    /// Where the length came from, e.g. `retry-after`, `default_cooldown`.
    pub source: String,
}

/// A time before which no slot is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cooldown {
    /// End of the cooldown.
    pub until: Micros,
    /// What set it.
    pub cause: CooldownCause,
}

/// A provider's answer as last reported: status and its rate-limit headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// When it was reported.
    pub at: Micros,
    /// HTTP status.
    pub status_code: u32,
    /// Rate-limit related headers, lower-cased names.
    pub headers: Vec<(String, String)>,
}

/// What a report changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportOutcome {
    /// Cooldown still active after the report.
    pub cooldown_remaining: Micros,
    /// The report set or lengthened the cooldown.
    pub cooldown_set: bool,
    /// The lease was found and its usage replaced (false when no usage was given, too).
    pub usage_applied: bool,
    /// A lease id was given but is unknown or expired.
    pub lease_unknown: bool,
    /// Cost charged as usage from outside Sluice, because the provider's remaining budget was
    /// below the ledger's view.
    pub outside_usage: u64,
    /// The report ended the lease's in-flight slot (false when it had none, or it had already
    /// been released by an earlier report or by its timeout).
    pub released: bool,
    /// The leases the reported lease booked in its ancestors (parent first), which the same
    /// report must reach.
    pub uplinks: Vec<LeaseId>,
    /// The adaptive scale in force after the report, permille (1000: the whole budget).
    pub adaptive_scale: u32,
    /// The report lowered the adaptive budget.
    pub adaptive_lowered: bool,
    /// Which state took the report.
    pub scope: Scope,
}

/// The live state of one limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSnapshot {
    /// The amount in force: an adopted provider budget, else the configured amount; at the
    /// adaptive scale.
    pub amount: u64,
    /// The burst in force: a token bucket's capacity (of the adopted provider budget, else the
    /// configured one), at the adaptive scale; the amount for other limits.
    pub burst: u64,
    /// Whether the budget in force is a provider budget the service adopted, unlike the
    /// configured one (see [`LimitSpec::is_other_budget`](super::LimitSpec::is_other_budget)).
    pub adopted: bool,
    /// Cost booked in the window ending now (bucket: fill level).
    pub used: u64,
    /// What one call could take now, before queued slots are considered.
    pub remaining: u64,
    /// Time until the limit is wholly free.
    pub reset_after: Micros,
}

/// The live state of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// The time the snapshot was taken at.
    pub now: Micros,
    /// One per limit, in spec order.
    pub limits: Vec<LimitSnapshot>,
    /// Active service-wide cooldown and its remaining time.
    pub cooldown: Option<(Micros, CooldownCause)>,
    /// Active cooldowns of the token dimensions (calls that spend them wait).
    pub dimension_cooldowns: Vec<(Dimension, Micros, CooldownCause)>,
    /// Leases whose slot is still in the future.
    pub queued: u64,
    /// Last reported provider answer.
    pub last_report: Option<Observation>,
    /// The adaptive scale in force, permille (1000: the whole configured budget).
    pub adaptive_scale: u32,
    /// Which state this is.
    pub scope: Scope,
}
