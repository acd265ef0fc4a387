//! `module-alone`: what a decision of the Redis module (`redis-module/`) costs Redis with no
//! gRPC, no network wait and no Sluice server around it: the module's counterpart of
//! `bench/redis_alone.py` (BENCHMARKS.md, section 6.6), with the same load. A `redis-server`
//! started on a free port with the module loaded takes `SLUICE.ACQUIRE` calls through
//! `redis-cli --pipe`: 16 acquires per call, either of 16 services picked at random among N (one
//! acquire each) or of one service (16 acquires), each with a request id, one request limit and
//! one token limit (sliding windows of 1 s, far above the load), time moving 40,000 decisions a
//! second. Prints Redis CPU (`INFO cpu`) per decision.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use anyhow::Context;
use sluice_e2e::redis_server::RedisServer;
use sluice_server::core::{
    to_bytes, AcquireRequest, AcquireRequests, Algorithm, Class, Cost, Dimension, LimitSpec,
    ServiceSpec, MAX_LEASES,
};

use crate::redis_cost::read_counters;

/// Options of `module-alone`.
#[derive(clap::Args)]
pub struct ModuleAloneArgs {
    /// Services the load is spread over (1: every acquire on one service).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Measured calls.
    #[arg(long, default_value_t = 8000)]
    calls: usize,
    /// Calls before measuring.
    #[arg(long, default_value_t = 4000)]
    warmup: usize,
    /// Acquires per call.
    #[arg(long, default_value_t = 16)]
    per_call: usize,
    /// The module (default: `libsluice_redis_module.so` beside this binary).
    #[arg(long)]
    module: Option<std::path::PathBuf>,
}

const RATE: u64 = 40_000;

/// A small deterministic generator (xorshift), so runs send the same load.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn spec(i: usize) -> Vec<u8> {
    let second = 1_000_000;
    to_bytes(&ServiceSpec::new(
        &format!("bench-{i}"),
        vec![
            LimitSpec::new(
                Dimension::Requests,
                1_000_000_000,
                second,
                Algorithm::SlidingWindow,
            ),
            LimitSpec::new(
                Dimension::Tokens,
                1_000_000_000_000,
                second,
                Algorithm::SlidingWindow,
            ),
        ],
    ))
}

/// `calls` calls as RESP, time moving from `now`.
fn load(
    a: &ModuleAloneArgs,
    specs: &[Vec<u8>],
    now: &mut u64,
    rng: &mut Rng,
    calls: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..calls {
        *now += a.per_call as u64 * 1_000_000 / RATE;
        let groups: Vec<(usize, usize)> = if a.services >= a.per_call {
            let mut picked = Vec::with_capacity(a.per_call);
            while picked.len() < a.per_call {
                let s = (rng.next() % a.services as u64) as usize;
                if !picked.contains(&(s, 1)) {
                    picked.push((s, 1));
                }
            }
            picked
        } else {
            vec![(0, a.per_call)]
        };
        let mut cmd = redis::cmd("SLUICE.ACQUIRE");
        cmd.arg(format!("{{alone:bench-{}}}:m", groups[0].0))
            .arg(groups.len() - 1);
        for (s, _) in &groups[1..] {
            cmd.arg(format!("{{alone:bench-{s}}}:m"));
        }
        cmd.arg(*now).arg(MAX_LEASES);
        for &(s, count) in &groups {
            let requests = (0..count)
                .map(|_| AcquireRequest {
                    cost: Cost([1, 100, 0, 0]),
                    max_wait: 0,
                    class: Class::TOP,
                    deadline: None,
                    request_id: Some(format!("{:016x}{:016x}", rng.next(), rng.next())),
                })
                .collect();
            cmd.arg(1)
                .arg(specs[s].as_slice())
                .arg(rng.next())
                .arg(to_bytes(&AcquireRequests(requests)));
        }
        out.extend(cmd.get_packed_command());
    }
    out
}

fn cli(port: u16, args: &[&str], input: Option<&[u8]>) -> anyhow::Result<String> {
    let mut child = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-cli")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.unwrap_or_default())?;
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `module-alone` and prints Redis CPU per decision.
pub fn run(a: ModuleAloneArgs) -> anyhow::Result<()> {
    let module = match &a.module {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder")?
            .join("libsluice_redis_module.so"),
    };
    anyhow::ensure!(
        module.exists(),
        "{} not found: build it with `cargo build --release -p sluice-redis-module`",
        module.display()
    );
    let module = module.to_str().context("the module's path is not UTF-8")?;
    let redis = RedisServer::start_with(&["--loadmodule", module])?;
    let (port, urls) = (redis.port, [redis.url()]);
    let specs: Vec<Vec<u8>> = (0..a.services).map(spec).collect();
    let (mut now, mut rng) = (1_800_000_000_000_000u64, Rng(0x9e37_79b9_7f4a_7c15));
    let warm = load(&a, &specs, &mut now, &mut rng, a.warmup);
    cli(port, &["--pipe"], Some(&warm))?;
    let measured = load(&a, &specs, &mut now, &mut rng, a.calls);
    let before = read_counters(&urls)?.cpu;
    let out = cli(port, &["--pipe"], Some(&measured))?;
    let after = read_counters(&urls)?.cpu;
    anyhow::ensure!(
        out.contains("errors: 0"),
        "the module answered errors: {}",
        out.trim()
    );
    let decisions = (a.calls * a.per_call) as f64;
    println!(
        "module alone, {} services, {} acquires per call: {:.2} us CPU per decision",
        a.services,
        a.per_call,
        (after - before) * 1e6 / decisions
    );
    Ok(())
}
