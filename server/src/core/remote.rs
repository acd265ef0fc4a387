//! Acquires and their answers in the form they travel to a ledger kept in another process (the
//! Redis module, `redis-module/`), encoded with [`codec`](super::codec): what a caller asks
//! ([`AcquireRequest`]) and what the ledger answers ([`AcquireAnswer`]). The ledger decides them
//! with this crate's own [`Ledger`](super::Ledger), so both ends agree by construction.

use super::{
    codec::{CodecError, Decode, Encode, Reader, Writer},
    AcquireError, Class, Cost, Decision, Micros,
};

/// One acquire, as a remote ledger takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquireRequest {
    /// What the call spends.
    pub cost: Cost,
    /// Longest acceptable wait, µs.
    pub max_wait: Micros,
    /// Priority class.
    pub class: Class,
    /// Past this time (in the ledger's clock) the caller was answered with an error: nothing is
    /// booked.
    pub deadline: Option<Micros>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// The acquires of one service in one call, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcquireRequests(pub Vec<AcquireRequest>);

/// What a remote ledger answers to one [`AcquireRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireAnswer {
    /// Granted or denied.
    Decided(Decision),
    /// Refused (request id reused with another cost, too many leases, totals too large).
    Refused(AcquireError),
    /// Its deadline had passed: nothing was booked.
    PastDeadline,
}

impl Encode for AcquireRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        self.cost.encode(out);
        out.put_varint(self.max_wait);
        self.class.encode(out);
        self.deadline.encode(out);
        self.request_id.encode(out);
    }
}

impl Decode for AcquireRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            cost: Decode::decode(r)?,
            max_wait: r.varint()?,
            class: Decode::decode(r)?,
            deadline: Decode::decode(r)?,
            request_id: Decode::decode(r)?,
        })
    }
}

impl Encode for AcquireRequests {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
}

impl Decode for AcquireRequests {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Vec::decode(r).map(Self)
    }
}

impl Encode for AcquireAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Decided(decision) => {
                out.put_u8(0);
                decision.encode(out);
            }
            Self::Refused(error) => {
                out.put_u8(1);
                error.encode(out);
            }
            Self::PastDeadline => out.put_u8(2),
        }
    }
}

impl Decode for AcquireAnswer {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.tag("acquire answer", 3)? {
            0 => Self::Decided(Decision::decode(r)?),
            1 => Self::Refused(AcquireError::decode(r)?),
            _ => Self::PastDeadline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{from_bytes, to_bytes, Decider, Grant, LeaseId, Scope};

    #[test]
    fn requests_and_answers_round_trip() {
        let requests = AcquireRequests(vec![
            AcquireRequest {
                cost: Cost([1, 500, 0, 0]),
                max_wait: 2_000_000,
                class: Class::TOP,
                deadline: Some(1_700_000_000_000_000),
                request_id: Some("job-1".into()),
            },
            AcquireRequest {
                cost: Cost([1, 0, 0, 0]),
                max_wait: 0,
                class: Class::TOP,
                deadline: None,
                request_id: None,
            },
        ]);
        let back: AcquireRequests = from_bytes(&to_bytes(&requests)).expect("round trip");
        assert_eq!(back, requests);
        let answers = [
            AcquireAnswer::Decided(Decision::Granted(Grant {
                lease_id: LeaseId { nonce: 7, seq: 3 },
                slot: 10,
                wait: 4,
                decider: Decider::Now,
                scope: Scope::Shared,
            })),
            AcquireAnswer::Refused(AcquireError::Full),
            AcquireAnswer::PastDeadline,
        ];
        for answer in answers {
            let back: AcquireAnswer = from_bytes(&to_bytes(&answer)).expect("round trip");
            assert_eq!(back, answer);
        }
        assert!(from_bytes::<AcquireAnswer>(&[1, 9]).is_err());
    }
}
