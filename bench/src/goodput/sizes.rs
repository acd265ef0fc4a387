//! Call sizes: heavy-tailed (log-normal) input and output token counts from a small seeded
//! generator, so every strategy sees the same sequence.

/// SplitMix64: tiny, seeded, good enough for simulation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Log-normal with the given median and spread, clamped to `[lo, hi]`.
    pub fn log_normal(&mut self, median: f64, sigma: f64, lo: u64, hi: u64) -> u64 {
        let x = median * (sigma * self.normal()).exp();
        (x.round() as u64).clamp(lo, hi)
    }
}

/// One call: input tokens and output tokens.
pub fn call_size(rng: &mut Rng) -> (u64, u64) {
    let input = rng.log_normal(600.0, 1.0, 20, 12_000);
    let output = rng.log_normal(150.0, 0.8, 1, 2_000);
    (input, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_heavy_tailed_and_bounded() {
        let mut rng = Rng::new(7);
        let mut inputs: Vec<u64> = (0..10_000).map(|_| call_size(&mut rng).0).collect();
        inputs.sort_unstable();
        let median = inputs[5_000];
        let p99 = inputs[9_900];
        assert!((500..700).contains(&median), "median {median}");
        assert!(p99 > 5 * median, "p99 {p99} is not a heavy tail");
        assert!(inputs[0] >= 20 && inputs[9_999] <= 12_000);
    }
}
