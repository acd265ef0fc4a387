//! `memory`: the memory backend's footprint. Configures many services, books many live leases
//! through the limiter (no gRPC: the question is what the state costs), and reads the process's
//! resident set size from `/proc/self/status` before and after.

use std::{sync::Arc, time::Instant};

use sluice_server::{
    backend::{Clock, MemoryBackend},
    config::Config,
    core::Decision,
    limiter::{AcquireRequest, Limiter},
};

/// Options of `memory`.
#[derive(Clone, Debug, clap::Args)]
pub struct FootprintArgs {
    /// Services configured.
    #[arg(long, default_value_t = 100_000)]
    pub services: usize,
    /// Live leases booked, spread evenly over the services.
    #[arg(long, default_value_t = 1_000_000)]
    pub leases: usize,
    /// Give every acquire a request id (36 bytes, as the Rust client's UUIDs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub request_ids: bool,
}

/// Resident set size in bytes, from `/proc/self/status` (0 where there is none).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs the footprint measurement and prints it.
pub async fn run(args: FootprintArgs) -> anyhow::Result<()> {
    let before = rss();
    let mut toml = String::with_capacity(args.services * 120);
    for i in 0..args.services {
        toml.push_str(&format!(
            "[[services]]\nname = \"svc-{i}\"\nlimits = [{{ dimension = \"requests\", amount = 1000000, window = \"1h\" }}, {{ dimension = \"tokens\", amount = 1000000000, window = \"1h\" }}]\n"
        ));
    }
    let config = Config::parse(&toml)?;
    drop(toml);
    let parsed = rss();
    let specs: Vec<_> = config.services.into_iter().map(Arc::new).collect();
    let backend = MemoryBackend::new(&specs, Clock::new());
    let limiter = Limiter::new(specs, backend);
    let configured = rss();
    let start = Instant::now();
    let per_service = args.leases.div_ceil(args.services.max(1));
    let mut booked = 0usize;
    'outer: for round in 0..per_service {
        for s in 0..args.services {
            if booked == args.leases {
                break 'outer;
            }
            let request = AcquireRequest {
                service: format!("svc-{s}"),
                tokens: 500,
                request_id: if args.request_ids {
                    format!("{s:08x}-{round:04x}-4000-8000-{booked:012x}")
                } else {
                    String::new()
                },
                ..AcquireRequest::default()
            };
            match limiter.acquire(&request).await?.1 {
                Decision::Granted(_) => booked += 1,
                Decision::Denied { .. } => anyhow::bail!("denied: the limits should hold it all"),
            }
        }
    }
    let elapsed = start.elapsed();
    let after = rss();
    println!(
        "memory backend: {} services, {} live leases (request ids: {}): RSS {:.0} MiB at start, {:.0} MiB after parsing the config, {:.0} MiB configured, {:.0} MiB with the leases ({:.0} bytes per lease); booked in {:.2}s",
        args.services,
        booked,
        args.request_ids,
        mib(before),
        mib(parsed),
        mib(configured),
        mib(after),
        after.saturating_sub(configured) as f64 / booked.max(1) as f64,
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "services": args.services,
            "leases": booked,
            "request_ids": args.request_ids,
            "rss_mib": { "start": mib(before).round(), "parsed": mib(parsed).round(), "configured": mib(configured).round(), "with_leases": mib(after).round() },
            "bytes_per_lease": (after.saturating_sub(configured) as f64 / booked.max(1) as f64).round(),
        })
    );
    Ok(())
}
