//! One budget of the simulated provider, over one dimension (requests, tokens, input or output
//! tokens): how much fits now, how to charge it, and what the headers say about it.

use std::time::Duration;

/// How a budget refills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// At most `amount` per window; windows are aligned to the provider's start.
    FixedWindow,
    /// Capacity `amount`, refilled continuously at `amount / window` (OpenAI and Anthropic
    /// describe their limits this way).
    TokenBucket,
}

/// The live state of one budget.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Per window.
    pub amount: u64,
    /// Window length.
    pub window: Duration,
    /// How it refills.
    pub enforcement: Enforcement,
    /// Fixed window: index of the current window and what it has used.
    window_index: u64,
    used: u64,
    /// Token bucket: level (used capacity) at `updated`.
    level: f64,
    updated: Duration,
}

impl Budget {
    /// A full budget.
    pub fn new(amount: u64, window: Duration, enforcement: Enforcement) -> Self {
        Self {
            amount,
            window,
            enforcement,
            window_index: 0,
            used: 0,
            level: 0.0,
            updated: Duration::ZERO,
        }
    }

    /// Brings the state to `now` (time since the provider started).
    fn advance(&mut self, now: Duration) {
        match self.enforcement {
            Enforcement::FixedWindow => {
                let index = (now.as_nanos() / self.window.as_nanos().max(1)) as u64;
                if index != self.window_index {
                    self.window_index = index;
                    self.used = 0;
                }
            }
            Enforcement::TokenBucket => {
                let elapsed = now.saturating_sub(self.updated).as_secs_f64();
                let rate = self.amount as f64 / self.window.as_secs_f64();
                self.level = (self.level - elapsed * rate).max(0.0);
                self.updated = self.updated.max(now);
            }
        }
    }

    /// What is left at `now`, whole units.
    pub fn remaining(&mut self, now: Duration) -> u64 {
        self.advance(now);
        match self.enforcement {
            Enforcement::FixedWindow => self.amount.saturating_sub(self.used),
            Enforcement::TokenBucket => (self.amount as f64 - self.level).max(0.0).floor() as u64,
        }
    }

    /// Time from `now` until the budget is wholly replenished (what OpenAI's `reset` means).
    pub fn reset(&mut self, now: Duration) -> Duration {
        self.advance(now);
        match self.enforcement {
            Enforcement::FixedWindow => {
                if self.used == 0 {
                    return Duration::ZERO;
                }
                let end = u128::from(self.window_index + 1) * self.window.as_nanos();
                Duration::from_nanos(u64::try_from(end).unwrap_or(u64::MAX)).saturating_sub(now)
            }
            Enforcement::TokenBucket => {
                let rate = self.amount as f64 / self.window.as_secs_f64();
                Duration::from_secs_f64(self.level / rate)
            }
        }
    }

    /// Time from `now` until `cost` fits (what a `retry-after` says).
    pub fn wait_for(&mut self, cost: u64, now: Duration) -> Duration {
        if self.fits(cost, now) {
            return Duration::ZERO;
        }
        match self.enforcement {
            Enforcement::FixedWindow => self.reset(now),
            Enforcement::TokenBucket => {
                let rate = self.amount as f64 / self.window.as_secs_f64();
                let excess = self.level + cost as f64 - self.amount as f64;
                Duration::from_secs_f64(excess.max(0.0) / rate)
            }
        }
    }

    /// True if `cost` fits at `now`.
    pub fn fits(&mut self, cost: u64, now: Duration) -> bool {
        self.advance(now);
        match self.enforcement {
            Enforcement::FixedWindow => self.used + cost <= self.amount,
            Enforcement::TokenBucket => self.level + cost as f64 <= self.amount as f64 + 1e-9,
        }
    }

    /// Spends `cost` at `now` (after [`Budget::fits`]).
    pub fn charge(&mut self, cost: u64, now: Duration) {
        self.advance(now);
        match self.enforcement {
            Enforcement::FixedWindow => self.used += cost,
            Enforcement::TokenBucket => self.level += cost as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fixed_windows_reset_at_their_boundaries() {
        let mut b = Budget::new(2, Duration::from_secs(1), Enforcement::FixedWindow);
        assert!(b.fits(2, 100 * MS));
        b.charge(2, 100 * MS);
        assert!(!b.fits(1, 999 * MS));
        assert_eq!(b.remaining(999 * MS), 0);
        assert_eq!(b.reset(400 * MS), 600 * MS);
        assert!(b.fits(2, 1000 * MS));
        assert_eq!(b.reset(1000 * MS), Duration::ZERO);
    }

    #[test]
    fn buckets_refill_continuously() {
        let mut b = Budget::new(10, Duration::from_secs(1), Enforcement::TokenBucket);
        b.charge(10, Duration::ZERO);
        assert!(!b.fits(1, 50 * MS));
        assert!(b.fits(1, 100 * MS));
        assert_eq!(b.remaining(500 * MS), 5);
        assert_eq!(b.reset(500 * MS), 500 * MS);
    }
}
