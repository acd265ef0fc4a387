//! The ledgers one section of a call works on: its keys, open until the section is done, and the
//! state each holds (or a fresh one, stored only if something was booked on it). After the
//! decisions each key expires when its state would be forgotten, or is deleted if nothing is left.

#![allow(unsafe_code)]

use std::ffi::c_void;

use sluice_server::core::{from_bytes, Member, Micros, ServiceSpec};

use crate::{
    args::{wall_micros, CallError},
    redis::{Args, Context, OpenKey},
    value::{ledger_type, Stored},
};

/// A ledger of the section: in a key (owned by Redis) or new (owned here until stored).
enum Slot {
    Empty,
    InKey(*mut Stored),
    Fresh(Box<Stored>),
}

impl Slot {
    /// The ledger, unless there is none yet.
    fn stored_mut(&mut self) -> Option<&mut Stored> {
        match self {
            Slot::Empty => None,
            // SAFETY: the value of a key open until the section ends, borrowed through this slot
            // only (the keys of a section are distinct).
            Slot::InKey(value) => Some(unsafe { &mut **value }),
            Slot::Fresh(stored) => Some(stored),
        }
    }
}

/// The keys and ledgers of one section.
pub struct Slots<'a> {
    keys: Vec<OpenKey<'a>>,
    slots: Vec<Slot>,
}

impl<'a> Slots<'a> {
    /// Opens the keys at arguments `at`; refuses keys holding another type.
    pub fn open(cx: &Context<'a>, args: &Args<'_>, at: &[usize]) -> Result<Self, CallError> {
        let mut keys = Vec::with_capacity(at.len());
        let mut slots = Vec::with_capacity(at.len());
        for &i in at {
            let key = cx.open(args.raw(i).ok_or(CallError::Arity)?);
            let slot = match key.value::<Stored>(ledger_type()) {
                Ok(Some(value)) if !value.is_null() => Slot::InKey(value),
                Ok(_) => Slot::Empty,
                Err(_) => return Err(CallError::WrongType),
            };
            keys.push(key);
            slots.push(slot);
        }
        Ok(Self { keys, slots })
    }

    /// Whether no key of the section holds a state.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| matches!(s, Slot::Empty))
    }

    /// Checks, without changing anything, that the keys at arguments `at` hold no other type and
    /// that each configuration in `specs` can be read (unless it is the one stored).
    pub fn check(
        cx: &Context<'_>,
        args: &Args<'_>,
        at: &[usize],
        specs: &[&[u8]],
    ) -> Result<(), CallError> {
        for (&i, spec) in at.iter().zip(specs) {
            let key = cx.open_read(args.raw(i).ok_or(CallError::Arity)?);
            let stored = key
                .value::<Stored>(ledger_type())
                .map_err(|_| CallError::WrongType)?;
            let shaped = stored
                .and_then(crate::value::borrow)
                .is_some_and(|s| s.is_shaped_for(spec));
            if !shaped {
                from_bytes::<ServiceSpec>(spec).map_err(CallError::Codec)?;
            }
        }
        Ok(())
    }

    /// Makes ledger `i` ready for the encoded configuration `spec`: a state in the key is
    /// reshaped if it was shaped for another; none yet, a fresh one with `nonce`. True if a
    /// stored state changed.
    pub fn prepare(
        &mut self,
        i: usize,
        spec: &[u8],
        nonce: u64,
        max_leases: usize,
    ) -> Result<bool, CallError> {
        let slot = self.slots.get_mut(i).ok_or(CallError::Arity)?;
        match slot {
            Slot::InKey(value) => {
                // SAFETY: the value of a key open until this section ends; no other reference
                // to it exists (keys of a section are distinct).
                let stored = unsafe { &mut **value };
                stored.conform(spec).map_err(CallError::Codec)
            }
            Slot::Fresh(stored) => stored.conform(spec).map_err(CallError::Codec),
            Slot::Empty => {
                let stored = Stored::new(spec, nonce, max_leases).map_err(CallError::Codec)?;
                *slot = Slot::Fresh(Box::new(stored));
                Ok(false)
            }
        }
    }

    /// The section's only ledger (after `prepare`), if it has one ledger.
    pub fn single_mut(&mut self) -> Option<&mut Stored> {
        match self.slots.as_mut_slice() {
            [slot] => slot.stored_mut(),
            _ => None,
        }
    }

    /// Every ledger of the section as a family's members, the service first (after `prepare`
    /// of each).
    pub fn members(&mut self) -> Vec<Member<'_>> {
        self.slots
            .iter_mut()
            .filter_map(Slot::stored_mut)
            .map(|stored| Member {
                spec: &stored.spec,
                ledger: &mut stored.ledger,
            })
            .collect()
    }

    /// Stores new states that hold something, sets every key to expire when its state would be
    /// forgotten, and deletes keys whose state holds nothing any more. True if any key held or
    /// now holds a state (the call must be replicated).
    pub fn settle(self, now: Micros) -> bool {
        let mut touched = false;
        let wall_ms = (wall_micros() / 1000) as i64;
        for (key, slot) in self.keys.iter().zip(self.slots) {
            let stored: &Stored = match &slot {
                Slot::Empty => continue,
                // SAFETY: as in `prepare`.
                Slot::InKey(value) => unsafe { &**value },
                Slot::Fresh(stored) => stored,
            };
            let expires = stored.expires_at_ms(now);
            touched |= matches!(slot, Slot::InKey(_)) || expires.is_some();
            match expires {
                Some(at_ms) => {
                    // Redis expires by its own clock: the time left, from now on it.
                    let ttl_ms = at_ms.saturating_sub((now / 1000) as i64).max(1);
                    if let Slot::Fresh(stored) = slot {
                        let value = Box::into_raw(stored);
                        if !key.set_value(ledger_type(), value.cast::<c_void>()) {
                            // SAFETY: Redis refused the value, so it is still ours.
                            drop(unsafe { Box::from_raw(value) });
                            continue;
                        }
                    }
                    key.expire_at(wall_ms.saturating_add(ttl_ms));
                }
                None => {
                    if let Slot::InKey(_) = slot {
                        key.delete();
                    }
                }
            }
        }
        touched
    }
}
