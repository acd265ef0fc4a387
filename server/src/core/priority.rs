//! Priority classes. An acquire names a class; a class of higher rank is booked ahead of the
//! queued (not yet started) leases of lower classes, which are re-booked right behind it in their
//! order, each at or after its old slot. A lower class is never starved: each of its leases may be
//! overtaken only so many times, derived from the class's minimum share (a share of 0.1 lets a
//! lease be overtaken 9 times, so under contention at least one slot in ten is the class's).
//! Within a class, arrival order holds: a class never overtakes its own.

/// A priority class as the ledger uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    /// 0 is the highest; a lease is overtaken only by lower ranks.
    pub rank: u8,
    /// How often one lease of this class may be overtaken.
    pub max_overtakes: u16,
}

impl Class {
    /// The highest class, never overtaken: what an acquire without priorities is.
    pub const TOP: Class = Class {
        rank: 0,
        max_overtakes: 0,
    };

    /// A class of `rank` that keeps at least `min_share` (0 < share ≤ 1) of the slots its leases
    /// compete for: each lease may be overtaken `ceil(1 / min_share) − 1` times.
    pub fn with_min_share(rank: u8, min_share: f64) -> Class {
        let overtakes = (1.0 / min_share.clamp(1.0 / 1000.0, 1.0)).ceil() - 1.0;
        Class {
            rank,
            max_overtakes: overtakes as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimum_share_bounds_the_overtakes() {
        assert_eq!(Class::with_min_share(2, 0.1).max_overtakes, 9);
        assert_eq!(Class::with_min_share(1, 0.2).max_overtakes, 4);
        assert_eq!(Class::with_min_share(1, 0.3).max_overtakes, 3);
        assert_eq!(Class::with_min_share(1, 1.0).max_overtakes, 0);
        assert_eq!(Class::with_min_share(1, 0.0).max_overtakes, 999);
    }
}
