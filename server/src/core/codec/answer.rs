//! The codec of what the core answers and what an operator asks: [`Decision`] (a [`Grant`] and
//! what decided it, a [`Decider`]), [`AcquireError`], [`ReportOutcome`], [`ServiceSnapshot`] with
//! its [`LimitSnapshot`]s, cooldowns and [`Observation`], and [`AdminOp`].

use super::{CodecError, Decode, Encode, Reader, Writer};
use crate::core::{
    AcquireError, AdminOp, Cooldown, CooldownCause, Decider, Decision, Grant, LimitSnapshot,
    Observation, ReportOutcome, ServiceSnapshot,
};

impl Encode for Decider {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Decider::Now => out.put_u8(0),
            Decider::Cooldown => out.put_u8(1),
            Decider::Limit(i) => {
                out.put_u8(2);
                i.encode(out);
            }
            Decider::Ancestor { level, limit } => {
                out.put_u8(3);
                out.put_u8(*level);
                limit.encode(out);
            }
        }
    }
}

impl Decode for Decider {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("decider", 4)? {
            0 => Decider::Now,
            1 => Decider::Cooldown,
            2 => Decider::Limit(Decode::decode(r)?),
            _ => Decider::Ancestor {
                level: r.u8()?,
                limit: Decode::decode(r)?,
            },
        })
    }
}

impl Encode for Grant {
    fn encode(&self, out: &mut Vec<u8>) {
        self.lease_id.encode(out);
        out.put_varint(self.slot);
        out.put_varint(self.wait);
        self.decider.encode(out);
        self.scope.encode(out);
    }
}

impl Decode for Grant {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Grant {
            lease_id: Decode::decode(r)?,
            slot: r.varint()?,
            wait: r.varint()?,
            decider: Decode::decode(r)?,
            scope: Decode::decode(r)?,
        })
    }
}

impl Encode for Decision {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Decision::Granted(grant) => {
                out.put_u8(0);
                grant.encode(out);
            }
            Decision::Denied {
                retry_after,
                decider,
                scope,
            } => {
                out.put_u8(1);
                out.put_varint(*retry_after);
                decider.encode(out);
                scope.encode(out);
            }
        }
    }
}

impl Decode for Decision {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("decision", 2)? {
            0 => Decision::Granted(Decode::decode(r)?),
            _ => Decision::Denied {
                retry_after: r.varint()?,
                decider: Decode::decode(r)?,
                scope: Decode::decode(r)?,
            },
        })
    }
}

impl Encode for AcquireError {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AcquireError::RequestIdReused(id) => {
                out.put_u8(0);
                out.put_str(id);
            }
            AcquireError::Full => out.put_u8(1),
            AcquireError::TotalTooLarge => out.put_u8(2),
        }
    }
}

impl Decode for AcquireError {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("acquire error", 3)? {
            0 => AcquireError::RequestIdReused(Decode::decode(r)?),
            1 => AcquireError::Full,
            _ => AcquireError::TotalTooLarge,
        })
    }
}

impl Encode for AdminOp {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(match self {
            AdminOp::ClearCooldowns => 0,
            AdminOp::Reset => 1,
        });
    }
}

impl Decode for AdminOp {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("admin op", 2)? {
            0 => AdminOp::ClearCooldowns,
            _ => AdminOp::Reset,
        })
    }
}

impl Encode for CooldownCause {
    fn encode(&self, out: &mut Vec<u8>) {
        self.status_code.encode(out);
        out.put_str(&self.source);
    }
}

impl Decode for CooldownCause {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(CooldownCause {
            status_code: Decode::decode(r)?,
            source: Decode::decode(r)?,
        })
    }
}

impl Encode for Cooldown {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint(self.until);
        self.cause.encode(out);
    }
}

impl Decode for Cooldown {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Cooldown {
            until: r.varint()?,
            cause: Decode::decode(r)?,
        })
    }
}

impl Encode for Observation {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint(self.at);
        self.status_code.encode(out);
        self.headers.encode(out);
    }
}

impl Decode for Observation {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Observation {
            at: r.varint()?,
            status_code: Decode::decode(r)?,
            headers: Decode::decode(r)?,
        })
    }
}

impl Encode for ReportOutcome {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint(self.cooldown_remaining);
        self.cooldown_set.encode(out);
        self.usage_applied.encode(out);
        self.lease_unknown.encode(out);
        out.put_varint(self.outside_usage);
        self.released.encode(out);
        self.uplinks.encode(out);
        self.adaptive_scale.encode(out);
        self.adaptive_lowered.encode(out);
        self.scope.encode(out);
    }
}

impl Decode for ReportOutcome {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(ReportOutcome {
            cooldown_remaining: r.varint()?,
            cooldown_set: Decode::decode(r)?,
            usage_applied: Decode::decode(r)?,
            lease_unknown: Decode::decode(r)?,
            outside_usage: r.varint()?,
            released: Decode::decode(r)?,
            uplinks: Decode::decode(r)?,
            adaptive_scale: Decode::decode(r)?,
            adaptive_lowered: Decode::decode(r)?,
            scope: Decode::decode(r)?,
        })
    }
}

impl Encode for LimitSnapshot {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint(self.amount);
        out.put_varint(self.burst);
        self.adopted.encode(out);
        out.put_varint(self.used);
        out.put_varint(self.remaining);
        out.put_varint(self.reset_after);
    }
}

impl Decode for LimitSnapshot {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(LimitSnapshot {
            amount: r.varint()?,
            burst: r.varint()?,
            adopted: Decode::decode(r)?,
            used: r.varint()?,
            remaining: r.varint()?,
            reset_after: r.varint()?,
        })
    }
}

impl Encode for ServiceSnapshot {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint(self.now);
        self.limits.encode(out);
        self.cooldown.encode(out);
        self.dimension_cooldowns.encode(out);
        out.put_varint(self.queued);
        self.last_report.encode(out);
        self.adaptive_scale.encode(out);
        self.scope.encode(out);
    }
}

impl Decode for ServiceSnapshot {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(ServiceSnapshot {
            now: r.varint()?,
            limits: Decode::decode(r)?,
            cooldown: Decode::decode(r)?,
            dimension_cooldowns: Decode::decode(r)?,
            queued: r.varint()?,
            last_report: Decode::decode(r)?,
            adaptive_scale: Decode::decode(r)?,
            scope: Decode::decode(r)?,
        })
    }
}
