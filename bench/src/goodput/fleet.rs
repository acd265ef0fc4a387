//! The fleet: `workers` tasks making calls of seeded heavy-tailed sizes against the simulated
//! provider through one [`Strategy`], recording when each call was wanted and when the call that
//! succeeded was sent, and its 429s; a client outside Sluice where the scenario has one; and the
//! figures computed from them.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sluice_client::{Client, Usage};
use sluice_server::{config::Config, provider::formats::parse_go_duration};
use sluice_sim::{SimClient, SimProvider, SimResponse};

use super::{
    sizes::{call_size, Rng},
    GoodputArgs, ProviderHeaders, ProviderStyle, DIMENSIONS,
};
use crate::target::{InProcess, Redis};

/// How workers cope with the provider's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Retry 429s with the SDKs' backoff.
    Naive,
    /// A shared cooldown set after a 429 (the seed article).
    Reactive,
    /// Acquire, call, report.
    Sluice,
    /// As `sluice`, every call in one priority class (what `sluice` is without priorities).
    SluiceFifo,
}

/// One call that succeeded.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// When the worker wanted to make it.
    pub want: Instant,
    /// When the attempt that succeeded was sent.
    pub sent: Instant,
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Made by an interactive worker.
    pub interactive: bool,
}

fn anyhow_of(e: sluice_sim::ClientError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

/// The wait a 429 names, as the SDKs read it: `retry-after-ms`, then `retry-after` (seconds),
/// honoured up to 60 s.
fn retry_after(r: &SimResponse) -> Option<Duration> {
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
    let wait = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| ms / 1000.0)
        .or_else(|| header("retry-after").and_then(|v| v.parse::<f64>().ok()))?;
    (0.0..=60.0)
        .contains(&wait)
        .then(|| Duration::from_secs_f64(wait))
}

/// The seed article's cooldown: the reset of an exhausted budget (its `header_ts_parser`), else
/// `retry-after`, else one second.
fn reset_of(r: &SimResponse) -> Duration {
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
    let mut wait = None;
    for dim in ["requests", "tokens"] {
        if header(&format!("x-ratelimit-remaining-{dim}")) == Some("0") {
            if let Some(reset) =
                header(&format!("x-ratelimit-reset-{dim}")).and_then(|v| parse_go_duration(v).ok())
            {
                wait = wait.max(Some(Duration::from_micros(reset)));
            }
        }
    }
    wait.or_else(|| retry_after(r))
        .unwrap_or(Duration::from_secs(1))
}

/// The Sluice config for the provider: its published limits (times `configured`) as token
/// buckets, a header table for its header names over the benchmark's window, adoption of the
/// provider's budgets, and an adaptive budget where the provider sends no headers; `backend` is
/// the `[backend]` section (empty: memory).
fn sluice_config(args: &GoodputArgs, backend: &str) -> anyhow::Result<Config> {
    let window = format!("{}ms", args.window.as_millis());
    let limits: Vec<String> = args
        .budgets()
        .iter()
        .map(|(d, amount)| {
            let amount = ((*amount as f64) * args.configured).round().max(1.0) as u64;
            format!(
                "{{ dimension = \"{}\", amount = {amount}, window = \"{window}\", algorithm = \"token_bucket\" }}",
                DIMENSIONS[*d]
            )
        })
        .collect();
    let (names, format): (Vec<(&str, &str)>, &str) = match args.style {
        ProviderStyle::Openai => (
            vec![("requests", "requests"), ("tokens", "tokens")],
            "duration",
        ),
        ProviderStyle::Anthropic => (
            vec![
                ("requests", "requests"),
                ("input-tokens", "input_tokens"),
                ("output-tokens", "output_tokens"),
            ],
            "rfc3339",
        ),
    };
    let mut rules = Vec::new();
    for (name, dimension) in names {
        let (limit, remaining, reset) = match args.style {
            ProviderStyle::Openai => (
                format!("x-ratelimit-limit-{name}"),
                format!("x-ratelimit-remaining-{name}"),
                format!("x-ratelimit-reset-{name}"),
            ),
            ProviderStyle::Anthropic => (
                format!("anthropic-ratelimit-{name}-limit"),
                format!("anthropic-ratelimit-{name}-remaining"),
                format!("anthropic-ratelimit-{name}-reset"),
            ),
        };
        rules.push(format!("  {{ name = \"{limit}\", dimension = \"{dimension}\", meaning = \"limit\", window = \"{window}\" }},"));
        rules.push(format!("  {{ name = \"{remaining}\", dimension = \"{dimension}\", meaning = \"remaining\", window = \"{window}\" }},"));
        rules.push(format!("  {{ name = \"{reset}\", dimension = \"{dimension}\", meaning = \"reset\", format = \"{format}\", window = \"{window}\" }},"));
    }
    let toml = format!(
        "{backend}\n[[services]]\nname = \"provider\"\nprofile = \"custom\"\nadopt_provider_limits = true\nadaptive = {}\nlimits = [\n  {}\n]\nheaders = [\n{}\n]\n",
        args.headers == ProviderHeaders::None,
        limits.join(",\n  "),
        rules.join("\n")
    );
    Ok(Config::parse(&toml)?)
}

/// What the fleet did: its successful calls, when it got a 429, and what the client outside
/// Sluice got through.
pub struct Outcome {
    /// Successful calls.
    pub calls: Vec<Call>,
    /// When each 429 the fleet got was answered.
    pub limited: Vec<Instant>,
    /// Successful calls of the client outside Sluice.
    pub outside: Vec<Call>,
}

/// Spends `args.outside` of the provider's budget directly, without Sluice, in calls of the
/// average size, evenly spaced, until `end`; a 429 is not retried.
async fn spend_outside(
    args: GoodputArgs,
    provider: std::net::SocketAddr,
    end: Instant,
) -> anyhow::Result<Vec<Call>> {
    let mut calls = Vec::new();
    let per_window = (args.requests as f64 * args.outside).max(1.0);
    let interval = args.window.div_f64(per_window);
    let tokens: u64 = match args.style {
        ProviderStyle::Openai => ((args.tokens as f64 * args.outside) / per_window) as u64,
        ProviderStyle::Anthropic => ((args.tokens as f64 * args.outside) / per_window) as u64,
    };
    let output = match args.style {
        ProviderStyle::Openai => tokens / 4,
        ProviderStyle::Anthropic => {
            ((args.output_tokens as f64 * args.outside) / per_window) as u64
        }
    };
    let input = match args.style {
        ProviderStyle::Openai => tokens - output,
        ProviderStyle::Anthropic => tokens,
    };
    let mut sim = SimClient::connect(provider).await.map_err(anyhow_of)?;
    let mut next = Instant::now();
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let sent = Instant::now();
        let answer = sim.call(input, output).await.map_err(anyhow_of)?;
        if answer.status == 200 {
            calls.push(Call {
                want: sent,
                sent,
                input,
                output,
                interactive: false,
            });
        }
        next += interval;
    }
    Ok(calls)
}

/// Runs the fleet until the warm-up and the measured time have passed.
pub async fn run(
    strategy: Strategy,
    args: &GoodputArgs,
    provider: &SimProvider,
) -> anyhow::Result<Outcome> {
    let end = Instant::now() + args.warmup + args.duration;
    let redis = match strategy {
        Strategy::Sluice | Strategy::SluiceFifo if args.replicas > 1 => {
            Some(Redis::new(None, false)?)
        }
        _ => None,
    };
    let backend = redis.as_ref().map_or(String::new(), |r| {
        r.backend_toml(&format!("goodput-{strategy:?}"))
    });
    let servers = match strategy {
        Strategy::Sluice | Strategy::SluiceFifo => (0..args.replicas.max(1))
            .map(|_| InProcess::sluice(1, sluice_config(args, &backend)?))
            .collect::<anyhow::Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let outside = (args.outside > 0.0)
        .then(|| tokio::spawn(spend_outside(args.clone(), provider.addr(), end)));
    let cooldown: Arc<Mutex<Instant>> = Arc::new(Mutex::new(Instant::now()));
    let mut workers = Vec::new();
    for w in 0..args.workers {
        let mut sim = SimClient::connect(provider.addr())
            .await
            .map_err(anyhow_of)?;
        let client = match servers.get(w % servers.len().max(1)) {
            Some(s) => Some(Client::connect(s.url()).await?),
            None => None,
        };
        let cooldown = cooldown.clone();
        let mut rng = Rng::new(args.seed.wrapping_mul(1_000_003).wrapping_add(w as u64));
        let interactive = w < args.interactive;
        let priority = match (strategy, interactive) {
            (Strategy::Sluice, true) => "interactive",
            _ => "batch",
        };
        let pause = args.interactive_pause;
        workers.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut limited = Vec::new();
            while Instant::now() < end {
                if interactive && !calls.is_empty() {
                    tokio::time::sleep(pause).await;
                }
                let (input, output) = call_size(&mut rng);
                let want = Instant::now();
                let mut failures = 0u32;
                let sent = loop {
                    if Instant::now() >= end {
                        break None;
                    }
                    let permit = match &client {
                        Some(client) => Some(
                            client
                                .acquire("provider")
                                .priority(priority)
                                .input_tokens(input)
                                .output_tokens(output)
                                .max_wait(Duration::from_secs(3600))
                                .await?,
                        ),
                        None => None,
                    };
                    if strategy == Strategy::Reactive {
                        let until = *cooldown.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                        tokio::time::sleep_until(until.into()).await;
                    }
                    let sent = Instant::now();
                    let answer = sim.call(input, output).await.map_err(anyhow_of)?;
                    if let Some(permit) = permit {
                        permit
                            .report(
                                answer.status,
                                &answer.headers,
                                Usage::from_json(&answer.body),
                            )
                            .await?;
                    }
                    if answer.status == 200 {
                        break Some(sent);
                    }
                    if answer.status == 429 {
                        limited.push(sent);
                    }
                    failures += 1;
                    match strategy {
                        Strategy::Naive => {
                            let backoff = retry_after(&answer).unwrap_or_else(|| {
                                let base = 0.5 * 2f64.powi(failures.min(5) as i32 - 1);
                                Duration::from_secs_f64(base.min(8.0) * (1.0 - 0.25 * rng.unit()))
                            });
                            tokio::time::sleep(backoff).await;
                        }
                        Strategy::Reactive => {
                            let until = Instant::now() + reset_of(&answer);
                            let mut shared =
                                cooldown.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                            *shared = (*shared).max(until);
                        }
                        Strategy::Sluice | Strategy::SluiceFifo => {}
                    }
                };
                if let Some(sent) = sent {
                    calls.push(Call {
                        want,
                        sent,
                        input,
                        output,
                        interactive,
                    });
                }
            }
            anyhow::Ok((calls, limited))
        }));
    }
    let mut calls = Vec::new();
    let mut limited = Vec::new();
    for w in workers {
        let (c, l) = w.await??;
        calls.extend(c);
        limited.extend(l);
    }
    let outside = match outside {
        Some(task) => task.await??,
        None => Vec::new(),
    };
    drop(servers);
    drop(redis);
    Ok(Outcome {
        calls,
        limited,
        outside,
    })
}

/// What a strategy achieved.
#[derive(Clone, Debug)]
pub struct Figures {
    strategy: Strategy,
    /// Per budget: dimension, achieved per window, limit.
    achieved: Vec<(usize, f64, u64)>,
    /// Per budget: what the client outside Sluice got through, per window.
    outside: Vec<f64>,
    calls: usize,
    limited: usize,
    delay_p50: Duration,
    delay_p99: Duration,
    /// Delays of interactive and batch calls, p50 and p99, when the fleet has both.
    by_class: Option<[Duration; 4]>,
}

/// Figures over the measured interval: successful calls sent in it, and the 429s the fleet got
/// for calls sent in it.
pub fn figures(strategy: Strategy, args: &GoodputArgs, outcome: &Outcome) -> Figures {
    let calls = &outcome.calls;
    let first_want = calls.iter().map(|c| c.want).min();
    let (from, to) = match first_want {
        Some(t) => (t + args.warmup, t + args.warmup + args.duration),
        None => return Figures::empty(strategy),
    };
    let within = |c: &&Call| c.sent >= from && c.sent < to;
    let measured: Vec<&Call> = calls.iter().filter(within).collect();
    let outside: Vec<&Call> = outcome.outside.iter().filter(within).collect();
    let windows = args.duration.as_secs_f64() / args.window.as_secs_f64();
    let spent = |calls: &[&Call], d: usize| -> f64 {
        let total: u64 = calls
            .iter()
            .map(|c| match d {
                0 => 1,
                1 => c.input + c.output,
                2 => c.input,
                _ => c.output,
            })
            .sum();
        total as f64 / windows
    };
    let achieved = args
        .budgets()
        .into_iter()
        .map(|(d, limit)| (d, spent(&measured, d), limit))
        .collect();
    let outside = args
        .budgets()
        .into_iter()
        .map(|(d, _)| spent(&outside, d))
        .collect();
    let limited = outcome
        .limited
        .iter()
        .filter(|t| **t >= from && **t < to)
        .count();
    let sorted = |keep: &dyn Fn(&Call) -> bool| {
        let mut delays: Vec<Duration> = measured
            .iter()
            .filter(|c| keep(c))
            .map(|c| c.sent - c.want)
            .collect();
        delays.sort_unstable();
        delays
    };
    let at = |delays: &[Duration], p: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let delays = sorted(&|_| true);
    let pick = |p: f64| at(&delays, p);
    let by_class = (args.interactive > 0).then(|| {
        let interactive = sorted(&|c| c.interactive);
        let batch = sorted(&|c| !c.interactive);
        [
            at(&interactive, 0.5),
            at(&interactive, 0.99),
            at(&batch, 0.5),
            at(&batch, 0.99),
        ]
    });
    Figures {
        strategy,
        achieved,
        outside,
        calls: measured.len() + limited,
        limited,
        delay_p50: pick(0.5),
        delay_p99: pick(0.99),
        by_class,
    }
}

impl Figures {
    fn empty(strategy: Strategy) -> Self {
        Self {
            strategy,
            achieved: Vec::new(),
            outside: Vec::new(),
            calls: 0,
            limited: 0,
            delay_p50: Duration::ZERO,
            delay_p99: Duration::ZERO,
            by_class: None,
        }
    }

    fn percent(achieved: f64, limit: u64) -> f64 {
        100.0 * achieved / limit.max(1) as f64
    }

    /// One line of text.
    pub fn text(&self) -> String {
        let budgets: Vec<String> = self
            .achieved
            .iter()
            .zip(self.outside.iter().chain(std::iter::repeat(&0.0)))
            .map(|((d, a, l), o)| {
                let outside = if *o > 0.0 {
                    format!(" (+{:.1}% outside)", Self::percent(*o, *l))
                } else {
                    String::new()
                };
                format!("{} {:.1}%{outside}", DIMENSIONS[*d], Self::percent(*a, *l))
            })
            .collect();
        let classes = self
            .by_class
            .map_or(String::new(), |[ip50, ip99, bp50, bp99]| {
                format!(
                    "  interactive p50 {:.3}s p99 {:.3}s, batch p50 {:.3}s p99 {:.3}s",
                    ip50.as_secs_f64(),
                    ip99.as_secs_f64(),
                    bp50.as_secs_f64(),
                    bp99.as_secs_f64()
                )
            });
        format!(
            "{:<11} of limit: {}  429s {} ({:.2}% of {} calls)  delay p50 {:.3}s p99 {:.3}s{classes}",
            format!("{:?}", self.strategy).to_lowercase(),
            budgets.join(", "),
            self.limited,
            100.0 * self.limited as f64 / self.calls.max(1) as f64,
            self.calls,
            self.delay_p50.as_secs_f64(),
            self.delay_p99.as_secs_f64(),
        )
    }

    /// One line of JSON.
    pub fn json(&self) -> serde_json::Value {
        let budgets: serde_json::Map<String, serde_json::Value> = self
            .achieved
            .iter()
            .zip(self.outside.iter().chain(std::iter::repeat(&0.0)))
            .map(|((d, a, l), o)| {
                (
                    DIMENSIONS[*d].to_string(),
                    serde_json::json!({
                        "per_window": a.round(),
                        "limit": l,
                        "percent": (Self::percent(*a, *l) * 10.0).round() / 10.0,
                        "outside_percent": (Self::percent(*o, *l) * 10.0).round() / 10.0,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "strategy": format!("{:?}", self.strategy).to_lowercase(),
            "achieved": budgets,
            "calls": self.calls,
            "http_429": self.limited,
            "http_429_rate": self.limited as f64 / self.calls.max(1) as f64,
            "delay_s": { "p50": self.delay_p50.as_secs_f64(), "p99": self.delay_p99.as_secs_f64() },
            "delay_by_class_s": self.by_class.map(|[ip50, ip99, bp50, bp99]| serde_json::json!({
                "interactive": { "p50": ip50.as_secs_f64(), "p99": ip99.as_secs_f64() },
                "batch": { "p50": bp50.as_secs_f64(), "p99": bp99.as_secs_f64() },
            })),
        })
    }
}
