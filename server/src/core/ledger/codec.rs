//! The [`Ledger`]'s binary encoding (see `core::codec`), here for its private fields: every field,
//! so a decoded ledger decides exactly as the original. The lease log dominates the size, so a
//! lease is written against its neighbours: a flags byte for its optional parts, its slot as the
//! step from the previous lease's, `reach` and the end of its in-flight slot from its own slot
//! (wrapping differences, exact for any value), its id as a tag and its position's difference
//! from the expected one, and no running totals (`cum` is the previous lease's plus its cost,
//! the first's `base` plus its cost, and is rebuilt so on decoding). An entry of `by_request` or
//! `holds` that names a lease of the log carrying it is a flag of that lease; the other entries
//! follow the log, sorted. Each entry has one encoding, so equal ledgers give equal bytes, and
//! decoding refuses anything else, so what decodes encodes to the same bytes.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{Ledger, POSITION_MASK, TAG_SHIFT};
use crate::core::{
    codec::{CodecError, Decode, Encode, Reader, Writer},
    lease::Lease,
    Cost, Decider, LeaseId, Micros,
};

/// Lease flags: it has a request id, …
const REQUEST_ID: u8 = 1;
/// … which `by_request` maps to it, …
const INDEXED: u8 = 1 << 1;
/// … it has an in-flight slot's end, …
const HOLD: u8 = 1 << 2;
/// … which `holds` holds, …
const HELD: u8 = 1 << 3;
/// … it booked leases in its ancestors, …
const UPLINKS: u8 = 1 << 4;
/// … and its cost is not the one it requested.
const RECONCILED: u8 = 1 << 5;
const ALL_FLAGS: u8 = REQUEST_ID | INDEXED | HOLD | HELD | UPLINKS | RECONCILED;
/// The fewest bytes a lease takes: flags, slot, reach, four costs, decider, tag, position, rank
/// and overtakes.
const MIN_LEASE_LEN: usize = 12;

/// What a lease is written against: the lease before it.
struct Prev {
    slot: Micros,
    cum: [u128; 4],
    /// The position the lease at hand has if it is where [`Ledger::lease`] looks for it.
    position: u64,
}

impl Prev {
    fn after(&self, lease: &Lease) -> Prev {
        Prev {
            slot: lease.slot,
            cum: lease.cum,
            position: (self.position + 1) & POSITION_MASK,
        }
    }
}

/// The entries of `by_request` and `holds` decoded so far.
#[derive(Default)]
struct Entries {
    by_request: HashMap<Box<str>, u64>,
    holds: BTreeSet<(Micros, u64)>,
}

impl Ledger {
    fn encode_lease(&self, lease: &Lease, prev: &Prev, out: &mut Vec<u8>) {
        let (id, seq) = (lease.request_id.as_deref(), lease.seq);
        // Flags stand only for entries that `lease` finds (`indexed_by_lease`, `held_by_lease`).
        let in_place = seq & POSITION_MASK == prev.position;
        let indexed = in_place && id.is_some_and(|id| self.by_request.get(id) == Some(&seq));
        let held = in_place
            && lease
                .hold
                .is_some_and(|end| self.holds.contains(&(end, seq)));
        let flags = [
            (id.is_some(), REQUEST_ID),
            (indexed, INDEXED),
            (lease.hold.is_some(), HOLD),
            (held, HELD),
            (lease.uplinks.is_some(), UPLINKS),
            (lease.cost != lease.requested, RECONCILED),
        ]
        .iter()
        .fold(0, |f, &(on, bit)| if on { f | bit } else { f });
        out.put_u8(flags);
        out.put_varint(lease.slot.wrapping_sub(prev.slot));
        out.put_varint(lease.reach.wrapping_sub(lease.slot));
        lease.cost.encode(out);
        if flags & RECONCILED != 0 {
            lease.requested.encode(out);
        }
        lease.decider.encode(out);
        if let Some(id) = id {
            out.put_str(id);
        }
        if let Some(end) = lease.hold {
            out.put_varint(end.wrapping_sub(lease.slot));
        }
        if let Some(uplinks) = &lease.uplinks {
            uplinks.encode(out);
        }
        out.put_varint(seq >> TAG_SHIFT);
        out.put_varint((seq & POSITION_MASK) ^ prev.position);
        out.put_u8(lease.rank);
        lease.overtakes_left.encode(out);
    }

    /// Reads a lease written by [`Ledger::encode_lease`], and the entries its flags stand for.
    fn decode_lease(
        r: &mut Reader<'_>,
        prev: &Prev,
        entries: &mut Entries,
    ) -> Result<Lease, CodecError> {
        let flags = r.u8()?;
        let has = |bit: u8| flags & bit != 0;
        if flags & !ALL_FLAGS != 0
            || (has(INDEXED) && !has(REQUEST_ID))
            || (has(HELD) && !has(HOLD))
        {
            return Err(CodecError::BadTag {
                what: "lease flags",
                tag: flags,
            });
        }
        let slot = prev.slot.wrapping_add(r.varint()?);
        let reach = slot.wrapping_add(r.varint()?);
        let cost = Cost::decode(r)?;
        let requested = match has(RECONCILED) {
            true => Cost::decode(r)?,
            false => cost,
        };
        if has(RECONCILED) && requested == cost {
            return Err(CodecError::Invalid("lease requested its cost"));
        }
        let decider = Decider::decode(r)?;
        let request_id = has(REQUEST_ID).then(|| Box::<str>::decode(r)).transpose()?;
        let hold = has(HOLD)
            .then(|| r.varint().map(|d| slot.wrapping_add(d)))
            .transpose()?;
        let uplinks = has(UPLINKS)
            .then(|| Vec::<LeaseId>::decode(r).map(Vec::into_boxed_slice))
            .transpose()?;
        let tag = r.varint()?;
        let position = r.varint()? ^ prev.position;
        if tag >> (64 - TAG_SHIFT) != 0 || position & !POSITION_MASK != 0 {
            return Err(CodecError::Invalid("lease seq"));
        }
        if (has(INDEXED) || has(HELD)) && position != prev.position {
            return Err(CodecError::Invalid("indexed lease out of place"));
        }
        let seq = position | tag << TAG_SHIFT;
        let mut cum = prev.cum;
        for (c, add) in cum.iter_mut().zip(cost.0) {
            *c = c
                .checked_add(u128::from(add))
                .ok_or(CodecError::Invalid("lease totals"))?;
        }
        if let (true, Some(id)) = (has(INDEXED), &request_id) {
            if entries.by_request.insert(id.clone(), seq).is_some() {
                return Err(CodecError::Invalid("request id indexed twice"));
            }
        }
        if let (true, Some(end)) = (has(HELD), hold) {
            entries.holds.insert((end, seq));
        }
        Ok(Lease {
            slot,
            reach,
            cost,
            requested,
            cum,
            decider,
            request_id,
            hold,
            uplinks,
            seq,
            rank: r.u8()?,
            overtakes_left: Decode::decode(r)?,
        })
    }

    /// Whether `by_request` maps `id` to `seq` through a lease of the log (a flag of it).
    fn indexed_by_lease(&self, id: &str, seq: u64) -> bool {
        self.lease(seq)
            .is_some_and(|l| l.request_id.as_deref() == Some(id))
    }

    /// Whether `holds` holds `(end, seq)` through a lease of the log (a flag of it).
    fn held_by_lease(&self, (end, seq): (Micros, u64)) -> bool {
        self.lease(seq).is_some_and(|l| l.hold == Some(end))
    }
}

impl Encode for Ledger {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.nonce);
        out.put_varint(self.front_seq);
        self.base.encode(out);
        self.buckets.encode(out);
        self.adopted.encode(out);
        self.cooldowns.encode(out);
        self.overload_streak.encode(out);
        self.adaptive.encode(out);
        self.scale.encode(out);
        out.put_varint(self.last_slot);
        self.frontier.encode(out);
        out.put_varint(self.cooldown_horizon);
        self.tags.encode(out);
        self.last_report.encode(out);
        out.put_varint(self.high_water);
        self.max_leases.encode(out);
        out.put_varint(self.log.len() as u64);
        let mut prev = Prev {
            slot: 0,
            cum: self.base,
            position: self.front_seq & POSITION_MASK,
        };
        for lease in &self.log {
            self.encode_lease(lease, &prev, out);
            prev = prev.after(lease);
        }
        let mut ids: Vec<(&str, u64)> = self
            .by_request
            .iter()
            .filter(|&(id, &seq)| !self.indexed_by_lease(id, seq))
            .map(|(id, &seq)| (&**id, seq))
            .collect();
        ids.sort_unstable();
        ids.encode(out);
        let holds: Vec<_> = self
            .holds
            .iter()
            .filter(|&&hold| !self.held_by_lease(hold))
            .collect();
        holds.encode(out);
    }
}

impl Decode for Ledger {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let nonce = r.u64()?;
        let front_seq = r.varint()?;
        let base = <[u128; 4]>::decode(r)?;
        let buckets: Vec<_> = Decode::decode(r)?;
        let adopted: Vec<_> = Decode::decode(r)?;
        if adopted.len() != buckets.len() {
            return Err(CodecError::Invalid("ledger limits"));
        }
        let cooldowns = Decode::decode(r)?;
        let overload_streak = Decode::decode(r)?;
        let adaptive = Decode::decode(r)?;
        let scale = Decode::decode(r)?;
        let last_slot = r.varint()?;
        let frontier = Decode::decode(r)?;
        let cooldown_horizon = r.varint()?;
        let tags = Decode::decode(r)?;
        let last_report = Decode::decode(r)?;
        let high_water = r.varint()?;
        let max_leases = Decode::decode(r)?;
        let count = r.count()?;
        if count > r.remaining() / MIN_LEASE_LEN {
            return Err(CodecError::TooLong);
        }
        let mut log = VecDeque::with_capacity(count);
        let mut entries = Entries::default();
        let mut prev = Prev {
            slot: 0,
            cum: base,
            position: front_seq & POSITION_MASK,
        };
        for _ in 0..count {
            let lease = Ledger::decode_lease(r, &prev, &mut entries)?;
            prev = prev.after(&lease);
            log.push_back(lease);
        }
        let Entries {
            mut by_request,
            mut holds,
        } = entries;
        let mut ids: Vec<(&str, u64)> = Vec::new();
        for _ in 0..r.count()? {
            let entry = (r.str()?, r.varint()?);
            if ids.last().is_some_and(|last| last.0 >= entry.0) {
                return Err(CodecError::Invalid("request ids out of order"));
            }
            if by_request.insert(entry.0.into(), entry.1).is_some() {
                return Err(CodecError::Invalid("request id indexed twice"));
            }
            ids.push(entry);
        }
        let mut others: Vec<(Micros, u64)> = Vec::new();
        for _ in 0..r.count()? {
            let hold = (r.varint()?, r.varint()?);
            if others.last().is_some_and(|last| *last >= hold) {
                return Err(CodecError::Invalid("holds out of order"));
            }
            if !holds.insert(hold) {
                return Err(CodecError::Invalid("hold held twice"));
            }
            others.push(hold);
        }
        let ledger = Ledger {
            nonce,
            log,
            front_seq,
            base,
            buckets,
            adopted,
            cooldowns,
            overload_streak,
            adaptive,
            scale,
            last_slot,
            frontier,
            cooldown_horizon,
            by_request,
            holds,
            tags,
            last_report,
            high_water,
            max_leases,
        };
        // An entry a lease's flag stands for is not written after the log (one encoding each).
        if ids
            .iter()
            .any(|&(id, seq)| ledger.indexed_by_lease(id, seq))
            || others.iter().any(|&hold| ledger.held_by_lease(hold))
        {
            return Err(CodecError::Invalid("entry not flagged on its lease"));
        }
        Ok(ledger)
    }
}

#[cfg(test)]
impl Ledger {
    /// Maps `request_id` to lease `seq`, whether or not the log holds it (the codec's tests: no
    /// operation leaves such an entry, yet the codec keeps whatever the map holds).
    pub(in crate::core) fn index_request(&mut self, request_id: &str, seq: u64) {
        self.by_request.insert(request_id.into(), seq);
    }

    /// Panics unless `other` holds exactly this state, field by field (the codec's tests).
    pub(in crate::core) fn assert_same_state(&self, other: &Ledger) {
        let Ledger {
            nonce,
            log,
            front_seq,
            base,
            buckets,
            adopted,
            cooldowns,
            overload_streak,
            adaptive,
            scale,
            last_slot,
            frontier,
            cooldown_horizon,
            by_request,
            holds,
            tags,
            last_report,
            high_water,
            max_leases,
        } = self;
        assert_eq!(format!("{log:?}"), format!("{:?}", other.log), "log");
        assert_eq!(by_request, &other.by_request, "by_request");
        assert_eq!(holds, &other.holds, "holds");
        assert_eq!(
            (nonce, front_seq, base, buckets, adopted, cooldowns),
            (
                &other.nonce,
                &other.front_seq,
                &other.base,
                &other.buckets,
                &other.adopted,
                &other.cooldowns
            )
        );
        assert_eq!(
            (overload_streak, adaptive, scale, last_slot, frontier),
            (
                &other.overload_streak,
                &other.adaptive,
                &other.scale,
                &other.last_slot,
                &other.frontier
            )
        );
        assert_eq!(
            (cooldown_horizon, tags, last_report, high_water, max_leases),
            (
                &other.cooldown_horizon,
                &other.tags,
                &other.last_report,
                &other.high_water,
                &other.max_leases
            )
        );
    }
}

impl Encode for super::BucketStates {
    fn encode(&self, out: &mut Vec<u8>) {
        self.buckets.encode(out);
        self.adopted.encode(out);
    }
}

impl Decode for super::BucketStates {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let buckets: Vec<crate::core::TokenBucket> = Decode::decode(r)?;
        let adopted: Vec<Option<(u64, u64)>> = Decode::decode(r)?;
        if buckets.len() != adopted.len() {
            return Err(CodecError::Invalid("bucket states of different lengths"));
        }
        Ok(Self { buckets, adopted })
    }
}
