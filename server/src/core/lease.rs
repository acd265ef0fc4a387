//! A [`Lease`] is one granted slot, kept in its service's log until its longest window has passed,
//! so that its cost can still be corrected. A [`LeaseId`] names it on the wire.

use std::{fmt, str::FromStr};

use super::{Cost, Decider, Micros};

/// Identifies a lease: the booking process's nonce and the lease's sequence number in its service.
///
/// Written `<nonce as 16 hex digits>-<seq>`. The nonce makes ids of an earlier server process
/// unknown rather than confused with new leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseId {
    /// Random per ledger owner (process).
    pub nonce: u64,
    /// Position in the service's lease log since the process started.
    pub seq: u64,
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.nonce, self.seq)
    }
}

/// A lease id that is not of the form `<16 hex digits>-<decimal>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed lease id")]
pub struct MalformedLeaseId;

impl FromStr for LeaseId {
    type Err = MalformedLeaseId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (nonce, seq) = s.split_once('-').ok_or(MalformedLeaseId)?;
        if nonce.len() != 16 || seq.is_empty() || seq.len() > 20 {
            return Err(MalformedLeaseId);
        }
        Ok(LeaseId {
            nonce: u64::from_str_radix(nonce, 16).map_err(|_| MalformedLeaseId)?,
            seq: seq.parse().map_err(|_| MalformedLeaseId)?,
        })
    }
}

/// One granted slot in a service's log.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    /// When the caller may start its call.
    pub slot: Micros,
    /// The latest slot of this lease and every lease booked before it: the log's order key. In
    /// one service slots are booked in order and `reach == slot`; in a family's ancestor, a
    /// member's call may be booked behind a sibling's queued slot, and windows, pruning and the
    /// Redis log's scores go by `reach`, so the log stays ordered (see `family.rs`).
    pub reach: Micros,
    /// Current cost: the estimate, or the real usage once reported.
    pub cost: Cost,
    /// The cost as requested; a retried Acquire must ask for the same.
    pub requested: Cost,
    /// Sum of `cost` over the whole log up to and including this lease, per dimension.
    pub cum: [u128; 4],
    /// What decided the slot time.
    pub decider: Decider,
    /// Idempotency key, if the caller sent one.
    pub request_id: Option<Box<str>>,
    /// End of the in-flight slot this lease holds (services with a `concurrent` limit), until
    /// its report releases it.
    pub hold: Option<Micros>,
    /// The leases booked with this one in its ancestors (parent first), for a service in a family.
    pub uplinks: Option<Box<[LeaseId]>>,
    /// Its id's sequence number: position and tag (see the ledger).
    pub seq: u64,
    /// Priority class, 0 the highest.
    pub rank: u8,
    /// How many more times a higher class may still be booked ahead of it (its class's minimum
    /// share: once none are left, it keeps its place).
    pub overtakes_left: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_round_trip_and_reject_garbage() {
        let id = LeaseId {
            nonce: 0xdead_beef,
            seq: 42,
        };
        assert_eq!(id.to_string(), "00000000deadbeef-42");
        assert_eq!(id.to_string().parse::<LeaseId>(), Ok(id));
        for bad in [
            "",
            "-",
            "abc-1",
            "00000000deadbeef-",
            "00000000deadbeef-x",
            "zz00000000000000-1",
        ] {
            assert_eq!(bad.parse::<LeaseId>(), Err(MalformedLeaseId), "{bad:?}");
        }
    }
}
