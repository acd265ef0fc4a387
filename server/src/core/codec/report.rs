//! The codec of a provider's answer as the core applies it: [`ReportCall`] and the orders it
//! carries ([`CooldownOrder`], [`OverloadOrder`], [`RemainingReading`], [`AdoptOrder`]; its usage
//! is a [`UsageUpdate`](crate::core::UsageUpdate), an array of options, coded generically).

use super::{CodecError, Decode, Encode, Reader, Writer};
use crate::core::{AdoptOrder, CooldownOrder, OverloadOrder, RemainingReading, ReportCall};

impl Encode for CooldownOrder {
    fn encode(&self, out: &mut Vec<u8>) {
        self.dimension.encode(out);
        out.put_varint(self.length);
        self.cause.encode(out);
    }
}

impl Decode for CooldownOrder {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(CooldownOrder {
            dimension: Decode::decode(r)?,
            length: r.varint()?,
            cause: Decode::decode(r)?,
        })
    }
}

impl Encode for OverloadOrder {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint(self.base);
        out.put_varint(self.cap);
        self.jitter_permille.encode(out);
        out.put_varint(self.at_least);
        self.cause.encode(out);
    }
}

impl Decode for OverloadOrder {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(OverloadOrder {
            base: r.varint()?,
            cap: r.varint()?,
            jitter_permille: Decode::decode(r)?,
            at_least: r.varint()?,
            cause: Decode::decode(r)?,
        })
    }
}

impl Encode for RemainingReading {
    fn encode(&self, out: &mut Vec<u8>) {
        self.limit.encode(out);
        out.put_varint(self.remaining);
        out.put_varint(self.tolerance);
    }
}

impl Decode for RemainingReading {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(RemainingReading {
            limit: Decode::decode(r)?,
            remaining: r.varint()?,
            tolerance: r.varint()?,
        })
    }
}

impl Encode for AdoptOrder {
    fn encode(&self, out: &mut Vec<u8>) {
        self.limit.encode(out);
        out.put_varint(self.amount);
        out.put_varint(self.burst);
    }
}

impl Decode for AdoptOrder {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(AdoptOrder {
            limit: Decode::decode(r)?,
            amount: r.varint()?,
            burst: r.varint()?,
        })
    }
}

impl Encode for ReportCall {
    fn encode(&self, out: &mut Vec<u8>) {
        self.lease.encode(out);
        self.usage.encode(out);
        self.cooldowns.encode(out);
        self.overload.encode(out);
        self.success.encode(out);
        self.remaining.encode(out);
        self.adopt.encode(out);
        self.throttled.encode(out);
        self.observation.encode(out);
    }
}

impl Decode for ReportCall {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(ReportCall {
            lease: Decode::decode(r)?,
            usage: Decode::decode(r)?,
            cooldowns: Decode::decode(r)?,
            overload: Decode::decode(r)?,
            success: Decode::decode(r)?,
            remaining: Decode::decode(r)?,
            adopt: Decode::decode(r)?,
            throttled: Decode::decode(r)?,
            observation: Decode::decode(r)?,
        })
    }
}
