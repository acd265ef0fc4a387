//! The codec of what configures a service and names its leases: [`ServiceSpec`] with its
//! [`LimitSpec`]s, [`Cost`], priority [`Class`], [`LeaseId`], [`Scope`], and the per-limit state
//! a ledger keeps ([`TokenBucket`], [`Adaptive`]). A decoded limit is checked as far as the
//! arithmetic needs (amounts and bursts in `1..=MAX_AMOUNT`, a window above zero), so a spec
//! from untrusted bytes cannot divide by zero later.

use super::{CodecError, Decode, Encode, Reader, Writer};
use crate::core::{
    adaptive::{Adaptive, FULL},
    Algorithm, Class, Cost, Dimension, LeaseId, LimitSpec, Mode, Scope, ServiceSpec, TokenBucket,
    MAX_AMOUNT,
};

impl Encode for Dimension {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.index() as u8);
    }
}

impl Decode for Dimension {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let tag = r.tag("dimension", Dimension::ALL.len() as u8)?;
        Ok(Dimension::ALL[usize::from(tag)])
    }
}

impl Encode for Algorithm {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Algorithm::SlidingWindow => out.put_u8(0),
            Algorithm::TokenBucket { burst } => {
                out.put_u8(1);
                out.put_varint(*burst);
            }
            Algorithm::Concurrent => out.put_u8(2),
        }
    }
}

impl Decode for Algorithm {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("algorithm", 3)? {
            0 => Algorithm::SlidingWindow,
            1 => Algorithm::TokenBucket { burst: r.varint()? },
            _ => Algorithm::Concurrent,
        })
    }
}

impl Encode for Mode {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(match self {
            Mode::Enforce => 0,
            Mode::Shadow => 1,
        });
    }
}

impl Decode for Mode {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("mode", 2)? {
            0 => Mode::Enforce,
            _ => Mode::Shadow,
        })
    }
}

impl Encode for LimitSpec {
    fn encode(&self, out: &mut Vec<u8>) {
        self.dimension.encode(out);
        out.put_varint(self.amount);
        out.put_varint(self.window);
        self.algorithm.encode(out);
        out.put_str(&self.name);
    }
}

impl Decode for LimitSpec {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let limit = LimitSpec {
            dimension: Dimension::decode(r)?,
            amount: r.varint()?,
            window: r.varint()?,
            algorithm: Algorithm::decode(r)?,
            name: String::decode(r)?,
        };
        let in_range = |n: u64| (1..=MAX_AMOUNT).contains(&n);
        if !in_range(limit.amount) {
            return Err(CodecError::Invalid("limit amount"));
        }
        if limit.window == 0 {
            return Err(CodecError::Invalid("limit window"));
        }
        match limit.algorithm {
            Algorithm::TokenBucket { burst } if !in_range(burst) => {
                Err(CodecError::Invalid("limit burst"))
            }
            _ => Ok(limit),
        }
    }
}

impl Encode for ServiceSpec {
    fn encode(&self, out: &mut Vec<u8>) {
        self.index.encode(out);
        out.put_str(&self.name);
        out.put_str(&self.profile);
        self.limits.encode(out);
        out.put_varint(self.default_cooldown);
        out.put_varint(self.max_cooldown);
        out.put_varint(self.quota_cooldown);
        self.adopt_provider_limits.encode(out);
        self.adaptive.encode(out);
        self.parent.encode(out);
        self.family.encode(out);
        self.mode.encode(out);
    }
}

impl Decode for ServiceSpec {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(ServiceSpec {
            index: Decode::decode(r)?,
            name: Decode::decode(r)?,
            profile: Decode::decode(r)?,
            limits: Decode::decode(r)?,
            default_cooldown: r.varint()?,
            max_cooldown: r.varint()?,
            quota_cooldown: r.varint()?,
            adopt_provider_limits: Decode::decode(r)?,
            adaptive: Decode::decode(r)?,
            parent: Decode::decode(r)?,
            family: Decode::decode(r)?,
            mode: Decode::decode(r)?,
        })
    }
}

impl Encode for Cost {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
}

impl Decode for Cost {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Decode::decode(r).map(Cost)
    }
}

impl Encode for Class {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.rank);
        self.max_overtakes.encode(out);
    }
}

impl Decode for Class {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Class {
            rank: r.u8()?,
            max_overtakes: Decode::decode(r)?,
        })
    }
}

impl Encode for LeaseId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.nonce);
        out.put_varint(self.seq);
    }
}

impl Decode for LeaseId {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(LeaseId {
            nonce: r.u64()?,
            seq: r.varint()?,
        })
    }
}

impl Encode for Scope {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(match self {
            Scope::Shared => 0,
            Scope::Local => 1,
            Scope::FailOpen => 2,
        });
    }
}

impl Decode for Scope {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("scope", 3)? {
            0 => Scope::Shared,
            1 => Scope::Local,
            _ => Scope::FailOpen,
        })
    }
}

impl Encode for TokenBucket {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint128(self.tat_scaled);
    }
}

impl Decode for TokenBucket {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(TokenBucket {
            tat_scaled: r.varint128()?,
        })
    }
}

impl Encode for Adaptive {
    fn encode(&self, out: &mut Vec<u8>) {
        self.scale.encode(out);
        out.put_varint(self.since);
        out.put_varint(self.episode_end);
        self.peak.encode(out);
    }
}

impl Decode for Adaptive {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let adaptive = Adaptive {
            scale: Decode::decode(r)?,
            since: r.varint()?,
            episode_end: r.varint()?,
            peak: Decode::decode(r)?,
        };
        // Scales never exceed the whole budget (the arithmetic relies on it).
        if adaptive.scale.max(adaptive.peak) > FULL {
            return Err(CodecError::Invalid("adaptive scale"));
        }
        Ok(adaptive)
    }
}
