//! Latency and throughput figures of one load run: decisions per second and latency percentiles,
//! printed as a line of text and a line of JSON.

use std::time::Duration;

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// What was measured, e.g. `memory` or `noop`.
    pub name: String,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Measured time (warm-up excluded).
    pub elapsed: Duration,
    /// Answers that booked a slot.
    pub granted: u64,
    /// Answers that refused one.
    pub denied: u64,
    /// Failed calls.
    pub errors: u64,
    /// Latency of every answered call, in microseconds.
    pub latencies: Vec<u32>,
}

/// The figures of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Name of the run.
    pub name: String,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Answers per second.
    pub per_sec: f64,
    /// Fraction of answers that were grants.
    pub grant_ratio: f64,
    /// Failed calls.
    pub errors: u64,
    /// Latency percentiles in microseconds: p50, p90, p99, max.
    pub p50: u32,
    /// 90th percentile.
    pub p90: u32,
    /// 99th percentile.
    pub p99: u32,
    /// Slowest.
    pub max: u32,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Measured {
    /// Sorts the latencies and computes the figures.
    pub fn summary(mut self) -> Summary {
        self.latencies.sort_unstable();
        let answered = self.granted + self.denied;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        Summary {
            per_sec: answered as f64 / secs,
            grant_ratio: if answered == 0 {
                0.0
            } else {
                self.granted as f64 / answered as f64
            },
            errors: self.errors,
            p50: percentile(&self.latencies, 0.50),
            p90: percentile(&self.latencies, 0.90),
            p99: percentile(&self.latencies, 0.99),
            max: self.latencies.last().copied().unwrap_or(0),
            name: self.name,
            concurrency: self.concurrency,
        }
    }
}

fn ms(us: u32) -> String {
    format!("{:.3}ms", f64::from(us) / 1000.0)
}

impl Summary {
    /// One line of text.
    pub fn text(&self) -> String {
        format!(
            "{:<22} c={:<4} {:>9.0} decisions/s  granted {:>5.1}%  p50 {}  p90 {}  p99 {}  max {}  errors {}",
            self.name,
            self.concurrency,
            self.per_sec,
            self.grant_ratio * 100.0,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.errors
        )
    }

    /// One line of JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "concurrency": self.concurrency,
            "decisions_per_sec": self.per_sec.round(),
            "grant_ratio": self.grant_ratio,
            "errors": self.errors,
            "latency_us": { "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max },
        })
    }

    /// Prints both lines.
    pub fn print(&self) {
        println!("{}", self.text());
        println!("{}", self.json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let m = Measured {
            name: "t".into(),
            concurrency: 1,
            elapsed: Duration::from_secs(2),
            granted: 75,
            denied: 25,
            errors: 0,
            latencies: (1..=100).rev().collect(),
        };
        let s = m.summary();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (51, 90, 99, 100));
        assert_eq!(s.per_sec, 50.0);
        assert_eq!(s.grant_ratio, 0.75);
    }
}
