//! Numbers no one can guess or repeat: a keyed hash (the process's random `RandomState` keys)
//! of a counter, optionally mixed with a name. Lease-id nonces (so an id names one state of one
//! service of one process) and overload jitter come from it; nothing here needs a seed, and
//! nothing needs cryptographic strength.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

/// A source of unpredictable, never repeated 64-bit numbers.
#[derive(Debug, Default)]
pub struct Unpredictable {
    keys: RandomState,
    drawn: AtomicU64,
}

impl Unpredictable {
    /// A source with keys of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next number.
    pub fn next_u64(&self) -> u64 {
        self.next_for(b"")
    }

    /// The next number, mixed with `name` (two names never share a number's stream).
    pub fn next_for(&self, name: &[u8]) -> u64 {
        let mut hasher = self.keys.build_hasher();
        hasher.write(name);
        hasher.write_u64(self.drawn.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    }

    /// The next number in `lo..=hi`.
    pub fn next_in(&self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi.saturating_sub(lo)) + 1;
        lo + u32::try_from(self.next_u64() % span).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_repeats_and_stays_in_range() {
        let source = Unpredictable::new();
        let drawn: std::collections::HashSet<u64> =
            (0..10_000).map(|_| source.next_u64()).collect();
        assert_eq!(drawn.len(), 10_000);
        assert_ne!(source.next_for(b"a"), source.next_for(b"a"));
        let jitters: Vec<u32> = (0..10_000).map(|_| source.next_in(800, 1200)).collect();
        assert!(jitters.iter().all(|j| (800..=1200).contains(j)));
        assert!(jitters.contains(&800) && jitters.contains(&1200));
        // Another source has other keys.
        assert_ne!(
            Unpredictable::new().next_u64(),
            Unpredictable::new().next_u64()
        );
    }
}
