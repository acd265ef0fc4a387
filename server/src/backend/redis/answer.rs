//! One acquire's answer as the backend reads it: a script's reply (`acquire.lua`, `family.lua`:
//! flat arrays of strings, offsets named here) or the Redis module's decoded `AcquireAnswer`
//! (`native.rs`), what either tells of Redis's clock, and the [`Decision`] it carries.

use super::{
    protocol::{number, protocol},
    AcquireCall, BackendError,
};
use crate::core::{
    AcquireAnswer, AcquireError, Decider, Decision, Grant, LeaseId, Micros, Scope, ServiceSpec,
};

/// Offsets in `acquire.lua`'s (and `family.lua`'s) reply of a grant `{'G', seq, slot, wait,
/// decider, nonce}` or a denial `{'D', retry_after, decider}`.
mod grant {
    pub const SEQ: usize = 1;
    pub const SLOT: usize = 2;
    pub const WAIT: usize = 3;
    pub const DECIDER: usize = 4;
    pub const NONCE: usize = 5;
    pub const RETRY_AFTER: usize = 1;
    pub const DENIAL_DECIDER: usize = 2;
}

/// What `acquire.lua` and `family.lua` return: one flat array, each acquire's reply as its
/// length then its elements (a table per reply would cost Redis a conversion per table).
pub(super) struct AcquireReplies(pub Vec<Vec<String>>);

impl AcquireReplies {
    /// The replies as answers.
    pub(super) fn answers(self) -> Vec<Answer> {
        self.0.into_iter().map(Answer::Script).collect()
    }
}

/// One acquire's answer: a script's reply, or the Redis module's (`native.rs`).
#[derive(Clone, Debug)]
pub(super) enum Answer {
    /// A reply of `acquire.lua` or `family.lua`.
    Script(Vec<String>),
    /// An answer of `SLUICE.ACQUIRE`.
    Native(AcquireAnswer),
}

/// What an answer tells of Redis's clock.
pub(super) enum ClockReading {
    /// A grant: its slot and wait (Redis's now is their difference).
    Grant { slot: Micros, wait: Micros },
    /// The decision ran after its deadline.
    Expired,
    /// Nothing.
    Nothing,
}

impl Answer {
    /// What the answer tells of Redis's clock.
    pub(super) fn clock_reading(&self) -> ClockReading {
        match self {
            Answer::Script(r) => match r.first().map(String::as_str) {
                Some("G") => slot_and_wait(r).map_or(ClockReading::Nothing, |(slot, wait)| {
                    ClockReading::Grant { slot, wait }
                }),
                Some("E") => ClockReading::Expired,
                _ => ClockReading::Nothing,
            },
            Answer::Native(AcquireAnswer::Decided(Decision::Granted(g))) => ClockReading::Grant {
                slot: g.slot,
                wait: g.wait,
            },
            Answer::Native(AcquireAnswer::PastDeadline) => ClockReading::Expired,
            Answer::Native(_) => ClockReading::Nothing,
        }
    }
}

/// The decision a reply of the Redis module's `SLUICE.ACQUIRE` carries.
fn native_decision(
    call: &AcquireCall<'_>,
    answer: AcquireAnswer,
) -> Result<Decision, BackendError> {
    match answer {
        AcquireAnswer::Decided(decision) => Ok(decision),
        AcquireAnswer::Refused(AcquireError::RequestIdReused(_)) => Err(BackendError::Refused(
            AcquireError::RequestIdReused(call.request_id.unwrap_or_default().to_string()),
        )),
        AcquireAnswer::Refused(error) => Err(BackendError::Refused(error)),
        AcquireAnswer::PastDeadline => Err(expired()),
    }
}

fn expired() -> BackendError {
    BackendError::Unavailable(
        "redis: the decision ran after its deadline; nothing was booked".into(),
    )
}

impl redis::FromRedisValue for AcquireReplies {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let redis::Value::Array(items) = v else {
            return Err("an acquire script's reply is not an array".into());
        };
        let mut replies = Vec::new();
        let mut items = items.into_iter();
        while let Some(len) = items.next() {
            let len = usize::from_redis_value(len)?;
            let reply: Vec<String> = items
                .by_ref()
                .take(len)
                .map(String::from_redis_value)
                .collect::<Result<_, _>>()?;
            if reply.len() != len {
                return Err("an acquire script's reply ends inside a reply".into());
            }
            replies.push(reply);
        }
        Ok(Self(replies))
    }
}

/// The slot and wait of a grant reply, if they read.
pub(super) fn slot_and_wait(reply: &[String]) -> Option<(Micros, Micros)> {
    Some((
        number(reply, grant::SLOT).ok()?,
        number(reply, grant::WAIT).ok()?,
    ))
}

/// The decision one acquire reply says.
pub(super) fn decision(
    spec: &ServiceSpec,
    call: &AcquireCall<'_>,
    reply: Answer,
) -> Result<Decision, BackendError> {
    let reply = match reply {
        Answer::Script(reply) => reply,
        Answer::Native(answer) => return native_decision(call, answer),
    };
    match reply.first().map(String::as_str) {
        Some("G") => {
            let nonce = reply
                .get(grant::NONCE)
                .and_then(|n| u64::from_str_radix(n, 16).ok())
                .ok_or_else(|| protocol("bad nonce"))?;
            Ok(Decision::Granted(Grant {
                lease_id: LeaseId {
                    nonce,
                    seq: number(&reply, grant::SEQ)?,
                },
                slot: number(&reply, grant::SLOT)?,
                wait: number(&reply, grant::WAIT)?,
                decider: decider(spec, reply.get(grant::DECIDER))?,
                scope: Scope::Shared,
            }))
        }
        Some("D") => Ok(Decision::Denied {
            retry_after: number(&reply, grant::RETRY_AFTER)?,
            decider: decider(spec, reply.get(grant::DENIAL_DECIDER))?,
            scope: Scope::Shared,
        }),
        Some("R") => Err(BackendError::Refused(AcquireError::RequestIdReused(
            call.request_id.unwrap_or_default().to_string(),
        ))),
        Some("F") => Err(BackendError::Refused(AcquireError::Full)),
        Some("O") => Err(BackendError::Refused(AcquireError::TotalTooLarge)),
        // The script found the service's state inconsistent; other services were decided.
        Some("X") => Err(BackendError::Failed(format!(
            "redis: {}",
            reply.get(1).map_or("acquire failed", String::as_str)
        ))),
        // Redis ran it after its caller was answered: nothing was booked.
        Some("E") => Err(expired()),
        _ => Err(protocol("unknown acquire answer")),
    }
}

/// What decided a slot, from its code (see LAYOUT.md, "Decider codes").
pub(super) fn decider(spec: &ServiceSpec, code: Option<&String>) -> Result<Decider, BackendError> {
    match code.map(String::as_str) {
        Some("n") => Ok(Decider::Now),
        Some("c") => Ok(Decider::Cooldown),
        Some(p) if p.starts_with('p') => {
            let (level, what) = p[1..]
                .split_once('_')
                .ok_or_else(|| protocol("unknown decider"))?;
            let level = level.parse().map_err(|_| protocol("unknown decider"))?;
            let limit = match what {
                "c" => None,
                i => Some(i.parse().map_err(|_| protocol("unknown decider"))?),
            };
            Ok(Decider::Ancestor { level, limit })
        }
        Some(i) => match i.parse::<usize>() {
            Ok(i) if i < spec.limits.len() => Ok(Decider::Limit(i)),
            // A slot booked under a config a reload replaced (or another replica's) may name
            // a limit this config does not have: the slot stands, its label is unknown.
            Ok(_) => Ok(Decider::Now),
            Err(_) => Err(protocol("unknown decider")),
        },
        None => Err(protocol("missing decider")),
    }
}
