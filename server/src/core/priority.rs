//! Priority classes. An acquire names a class; a class of higher rank is booked ahead of the
//! queued (not yet started) leases of lower classes, which are re-booked right behind it in their
//! order, each at or after its old slot. A lower class is never starved: each of its leases may be
//! overtaken only so many times, derived from the class's minimum share (a share of 0.1 lets a
//! lease be overtaken 9 times, so under contention at least one slot in ten is the class's).
//! Within a class, arrival order holds: a class never overtakes its own.

/// The smallest minimum share: a lease is overtaken at most 63 times.
pub const MIN_SHARE: f64 = 1.0 / 64.0;

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

    /// A class of `rank` that keeps at least `min_share` (1/64 ≤ share ≤ 1) of the slots its
    /// leases compete for: each lease may be overtaken `ceil(1 / min_share) − 1` times (at most
    /// 63, fewer than the times the clients ask again for a moved slot).
    pub fn with_min_share(rank: u8, min_share: f64) -> Class {
        let overtakes = (1.0 / min_share.clamp(MIN_SHARE, 1.0)).ceil() - 1.0;
        Class {
            rank,
            max_overtakes: overtakes as u16,
        }
    }
}

/// The configured classes, highest first, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Priorities {
    /// (name, class), highest first; a class's rank is its position.
    classes: Vec<(String, Class)>,
    /// The class of an acquire that names none.
    default: Class,
}

impl Priorities {
    /// Classes from `(name, min_share)`, highest first (the first is never overtaken, its share
    /// is ignored). The class named `default` takes acquires that name none; without one, the
    /// highest does.
    pub fn new(classes: &[(String, f64)]) -> Self {
        let classes: Vec<(String, Class)> = classes
            .iter()
            .enumerate()
            .map(|(i, (name, share))| {
                let rank = u8::try_from(i).unwrap_or(u8::MAX);
                let class = if i == 0 {
                    Class::TOP
                } else {
                    Class::with_min_share(rank, *share)
                };
                (name.clone(), class)
            })
            .collect();
        let default = classes
            .iter()
            .find(|(n, _)| n == "default")
            .or(classes.first())
            .map_or(Class::TOP, |(_, c)| *c);
        Self { classes, default }
    }

    /// The built-in classes: `interactive`, `default` (keeps half the slots it competes for) and
    /// `batch` (keeps a tenth).
    pub fn builtin() -> Self {
        Self::new(&[
            ("interactive".to_string(), 1.0),
            ("default".to_string(), 0.5),
            ("batch".to_string(), 0.1),
        ])
    }

    /// The class called `name`; the default class for an empty name.
    pub fn class(&self, name: &str) -> Option<Class> {
        if name.is_empty() {
            return Some(self.default);
        }
        self.classes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
    }

    /// The class names, highest first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.classes.iter().map(|(n, _)| n.as_str())
    }
}

impl Default for Priorities {
    fn default() -> Self {
        Self::builtin()
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
        assert_eq!(Class::with_min_share(1, 0.0).max_overtakes, 63);
    }

    #[test]
    fn classes_are_ranked_in_order_and_the_default_takes_unnamed_calls() {
        let p = Priorities::builtin();
        assert_eq!(p.class("interactive"), Some(Class::TOP));
        assert_eq!(p.class("batch"), Some(Class::with_min_share(2, 0.1)));
        assert_eq!(p.class(""), p.class("default"));
        assert_eq!(p.class("urgent"), None);
        let only = Priorities::new(&[("hi".into(), 1.0), ("lo".into(), 0.2)]);
        assert_eq!(only.class(""), Some(Class::TOP));
        assert_eq!(only.names().collect::<Vec<_>>(), ["hi", "lo"]);
    }
}
