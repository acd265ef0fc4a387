//! `goodput`: how much of a provider's limit a fleet of workers gets through, and at what cost in
//! 429s and waiting. A simulated provider (token buckets for requests and tokens, OpenAI- or
//! Anthropic-style headers and 429s) is started once per strategy, and the same fleet (same
//! heavy-tailed call sizes, same seed) runs against each, side by side:
//!
//! - **naive**: call; on a 429, retry after the provider's `retry-after` if it sent one, else an
//!   exponential backoff from 0.5 s to 8 s with jitter (what the official SDKs do);
//! - **reactive**: the seed article's approach: a shared cooldown, set only after a 429 until the
//!   reset the headers name; every worker waits it out before calling;
//! - **sluice**: acquire from a Sluice server (memory backend, configured with the provider's
//!   published limits), call, report the answer with its headers and usage.
//!
//! Figures are taken after a warm-up (the providers' buckets start full, which flatters
//! everyone), over whole windows. 429s are counted as the fleet saw them.
//!
//! Scenarios (`--scenario`) make the configuration wrong the way it is in practice: limits
//! configured twice the provider's (with OpenAI- or Anthropic-style headers, or none at all),
//! someone outside Sluice spending a quarter of the budget, three Sluice replicas sharing Redis.
//! Sluice then runs with `adopt_provider_limits` (and `adaptive` where the provider sends no
//! headers), as an operator who read the README would.

mod fleet;
mod sizes;

use std::time::Duration;

use sluice_sim::{budget, Enforcement, HeaderMode, ProviderConfig, SimProvider, Style};

use crate::decisions::duration;
pub use fleet::Strategy;

/// Options of `goodput`.
#[derive(Clone, Debug, clap::Args)]
pub struct GoodputArgs {
    /// Workers per strategy.
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Measured time.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub duration: Duration,
    /// Time before measuring (the providers' buckets start full).
    #[arg(long, default_value = "20s", value_parser = duration)]
    pub warmup: Duration,
    /// The provider's limit window (real providers: 1m; shorter runs faster, same shape).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub window: Duration,
    /// Requests per window.
    #[arg(long, default_value_t = 200)]
    pub requests: u64,
    /// Tokens per window (OpenAI style: input + output; Anthropic style: input tokens).
    #[arg(long, default_value_t = 60_000)]
    pub tokens: u64,
    /// Output tokens per window (Anthropic style only).
    #[arg(long, default_value_t = 15_000)]
    pub output_tokens: u64,
    /// Header set and 429s to imitate.
    #[arg(long, value_enum, default_value_t = ProviderStyle::Openai)]
    pub style: ProviderStyle,
    /// Time the provider takes to answer.
    #[arg(long, default_value = "200ms", value_parser = duration)]
    pub latency: Duration,
    /// Seed of the call sizes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Workers (of `workers`) that are interactive: one call, then a pause (see
    /// `interactive_pause`); the others are batch workers calling back to back. With Sluice,
    /// interactive calls use the `interactive` class and batch calls the `batch` class
    /// (`sluice-fifo`: every call in one class, for comparison).
    #[arg(long, default_value_t = 0)]
    pub interactive: usize,
    /// Pause of an interactive worker between its calls.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interactive_pause: Duration,
    /// Sluice's configured limits as a multiple of the provider's (2: configured twice too high).
    #[arg(long, default_value_t = 1.0)]
    pub configured: f64,
    /// Whether the provider sends rate-limit headers.
    #[arg(long, value_enum, default_value_t = ProviderHeaders::Always)]
    pub headers: ProviderHeaders,
    /// Share of the provider's budget spent by a client outside Sluice, evenly over time.
    #[arg(long, default_value_t = 0.0)]
    pub outside: f64,
    /// Sluice replicas (more than one share a Redis started here; workers spread over them).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// A preset of the options above (and a one-minute warm-up: steady state).
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
    /// Strategies to run, side by side.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "naive,reactive,sluice"
    )]
    pub strategies: Vec<Strategy>,
}

/// Which provider the simulation imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderStyle {
    /// Requests and total tokens; `x-ratelimit-*` headers with durations; no `retry-after`.
    Openai,
    /// Requests, input and output tokens; `anthropic-ratelimit-*` with RFC 3339 resets and
    /// `retry-after` on 429s.
    Anthropic,
}

/// Whether the simulated provider sends rate-limit headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderHeaders {
    /// On every answer.
    Always,
    /// Never, not even `retry-after` (Gemini, many gateways, self-hosted servers).
    None,
}

/// Preset situations of issue 16: the config is wrong, and Sluice must be right anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// (a) Limits configured 2x the provider's; OpenAI-style headers; token buckets.
    WrongLimits,
    /// (b) The same with Anthropic-style headers.
    WrongLimitsAnthropic,
    /// (c) A provider that sends no rate-limit headers; limits 2x too high.
    NoHeaders,
    /// (d) Someone outside Sluice spends a quarter of the budget.
    Outside,
    /// (e) Limits 2x too high, three Sluice replicas sharing Redis.
    Replicas,
}

impl GoodputArgs {
    /// Applies the preset `scenario`, if any.
    pub fn apply_scenario(&mut self) {
        let Some(scenario) = self.scenario else {
            return;
        };
        self.warmup = self.warmup.max(Duration::from_secs(60));
        match scenario {
            Scenario::WrongLimits => self.configured = 2.0,
            Scenario::WrongLimitsAnthropic => {
                self.configured = 2.0;
                self.style = ProviderStyle::Anthropic;
            }
            Scenario::NoHeaders => {
                self.configured = 2.0;
                self.headers = ProviderHeaders::None;
            }
            Scenario::Outside => self.outside = 0.25,
            Scenario::Replicas => {
                self.configured = 2.0;
                self.replicas = 3;
            }
        }
    }

    /// The provider's budgets: (dimension index, amount).
    pub fn budgets(&self) -> Vec<(usize, u64)> {
        match self.style {
            ProviderStyle::Openai => vec![(0, self.requests), (1, self.tokens)],
            ProviderStyle::Anthropic => vec![
                (0, self.requests),
                (2, self.tokens),
                (3, self.output_tokens),
            ],
        }
    }

    fn provider_config(&self) -> ProviderConfig {
        ProviderConfig {
            style: match self.style {
                ProviderStyle::Openai => Style::OpenAi,
                ProviderStyle::Anthropic => Style::Anthropic,
            },
            headers: match self.headers {
                ProviderHeaders::Always => HeaderMode::Always,
                ProviderHeaders::None => HeaderMode::Never,
            },
            budgets: self
                .budgets()
                .into_iter()
                .map(|(d, amount)| budget(d, amount, self.window, Enforcement::TokenBucket))
                .collect(),
            latency: self.latency,
        }
    }
}

const DIMENSIONS: [&str; 4] = ["requests", "tokens", "input_tokens", "output_tokens"];

/// Runs every chosen strategy at once, each against its own provider, and prints the figures.
pub async fn run(mut args: GoodputArgs) -> anyhow::Result<()> {
    args.apply_scenario();
    let mut runs = Vec::new();
    for &strategy in &args.strategies {
        let provider = SimProvider::start(args.provider_config()).await?;
        let args = args.clone();
        runs.push(tokio::spawn(async move {
            let outcome = fleet::run(strategy, &args, &provider).await?;
            anyhow::Ok((strategy, outcome))
        }));
    }
    println!(
        "goodput: {}{} workers, {:?} provider ({:?} headers{}), window {:?}, limits {} \
         (Sluice configured {}x, {} replica(s)), measured {:?} after {:?}",
        args.scenario
            .map_or(String::new(), |s| format!("scenario {s:?}: ")),
        args.workers,
        args.style,
        args.headers,
        if args.outside > 0.0 {
            format!(", {:.0}% spent outside Sluice", 100.0 * args.outside)
        } else {
            String::new()
        },
        args.window,
        args.budgets()
            .iter()
            .map(|(d, a)| format!("{} {a}", DIMENSIONS[*d]))
            .collect::<Vec<_>>()
            .join(", "),
        args.configured,
        args.replicas,
        args.duration,
        args.warmup
    );
    for run in runs {
        let (strategy, outcome) = run.await??;
        let figures = fleet::figures(strategy, &args, &outcome);
        println!("{}", figures.text());
        println!("{}", figures.json());
    }
    Ok(())
}
