//! The decision benchmarks: `Acquire` over gRPC against a Sluice server (memory or Redis backend,
//! started here or given by address), against the no-op server, and raw script calls (`FCALL`,
//! or `EVALSHA` where Redis refuses functions) against Redis;
//! and `suite`, which runs them all in one process and prints the ratios the targets are stated
//! in.

use std::{sync::Arc, time::Duration};

use sluice::v1::{rate_limiter_client::RateLimiterClient, AcquireRequest};
use sluice_server::config::Config;
use tonic::transport::{Channel, Endpoint};

use crate::{
    load::{drive, Load, Operation, Outcome},
    raw_redis,
    stats::Summary,
    target::{services_toml, InProcess, Mix, Redis},
};

/// Where decisions are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The embedded memory backend.
    Memory,
    /// One Redis.
    Redis,
    /// A three-master Redis Cluster.
    Cluster,
}

/// Options shared by the decision benchmarks.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadArgs {
    /// Concurrent callers.
    #[arg(short, long, default_value_t = 64)]
    pub concurrency: usize,
    /// Measured time.
    #[arg(short, long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Time before measuring.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub warmup: Duration,
    /// Total acquires per second (open loop); default: as fast as answers come.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Services configured (`bench-0` …). Each caller stays on one of them (caller i on
    /// `bench-{i mod services}`) unless `--spread`.
    #[arg(long, default_value_t = 1)]
    pub services: usize,
    /// Every acquire goes to the next service in turn, so the load reaches every configured
    /// service (caller i's k-th acquire: `bench-{(i + k * concurrency) mod services}`), and a
    /// script call rarely carries two acquires of one service.
    #[arg(long)]
    pub spread: bool,
    /// `grant`: every acquire is granted; `deny`: every acquire is refused.
    #[arg(long, value_enum, default_value_t = Mix::Grant)]
    pub mix: Mix,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Send a request id with every acquire, as the Rust client does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub request_ids: bool,
    /// Worker threads of an in-process server's runtime.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
}

impl LoadArgs {
    /// The load shape.
    pub fn load(&self) -> Load {
        Load {
            concurrency: self.concurrency.max(1),
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
        }
    }
}

/// Parses `10s`, `500ms`, `2m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    sluice_server::core::parse_duration(s)
        .map(Duration::from_micros)
        .map_err(|e| e.to_string())
}

/// `Acquire` calls over gRPC to `url`.
pub async fn grpc_acquires(
    name: &str,
    url: &str,
    args: &LoadArgs,
    load: Load,
) -> anyhow::Result<Summary> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel: Channel = Endpoint::from_shared(url.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        channels.push(RateLimiterClient::new(channel));
    }
    let services: Arc<Vec<String>> = Arc::new(
        (0..args.services.max(1))
            .map(|i| format!("bench-{i}"))
            .collect(),
    );
    let run = std::process::id();
    let request_ids = args.request_ids;
    let (spread, callers) = (args.spread, args.concurrency.max(1) as u64);
    let op: Operation = Arc::new(move |task, i| {
        let mut client = channels[task % channels.len()].clone();
        let n = services.len() as u64;
        let pick = if spread {
            (task as u64 + i.wrapping_mul(callers)) % n
        } else {
            task as u64 % n
        };
        let service = services[pick as usize].clone();
        Box::pin(async move {
            let request = AcquireRequest {
                service,
                tokens: 100,
                request_id: if request_ids {
                    format!("{run}-{task}-{i}")
                } else {
                    String::new()
                },
                ..AcquireRequest::default()
            };
            let answer = client.acquire(request).await?.into_inner();
            Ok(if answer.granted {
                Outcome::Granted
            } else {
                Outcome::Denied
            })
        })
    });
    Ok(drive(name, load, op).await?.summary())
}

/// Starts a Sluice server on `backend` (and its Redis) with the benchmark's services.
pub fn start_sluice(
    backend: Backend,
    redis: Option<&Redis>,
    args: &LoadArgs,
) -> anyhow::Result<InProcess> {
    let mut toml = services_toml(args.services.max(1), args.mix);
    if backend != Backend::Memory {
        let redis = redis.ok_or_else(|| anyhow::anyhow!("the redis backend needs a redis"))?;
        toml.push_str(&redis.backend_toml(&format!("bench-{}", std::process::id())));
    }
    InProcess::sluice(args.server_threads, Config::parse(&toml)?)
}

/// `decisions`: one backend (or `--addr`), one load.
pub async fn decisions(
    backend: Backend,
    addr: Option<String>,
    redis_url: Option<String>,
    args: &LoadArgs,
) -> anyhow::Result<Summary> {
    if let Some(addr) = addr {
        return grpc_acquires("sluice (external)", &addr, args, args.load()).await;
    }
    let redis = match backend {
        Backend::Memory => None,
        Backend::Redis => Some(Redis::new(redis_url, false)?),
        Backend::Cluster => Some(Redis::new(redis_url, true)?),
    };
    let server = start_sluice(backend, redis.as_ref(), args)?;
    let name = format!("sluice {backend:?}").to_lowercase();
    grpc_acquires(&name, &server.url(), args, args.load()).await
}

/// `baseline`: the no-op gRPC server, then raw script calls on Redis.
pub async fn baseline(redis_url: Option<String>, args: &LoadArgs) -> anyhow::Result<Vec<Summary>> {
    let noop = InProcess::noop(args.server_threads)?;
    let grpc = grpc_acquires("noop gRPC", &noop.url(), args, args.load()).await?;
    drop(noop);
    let redis = Redis::new(redis_url, false)?;
    let raw = raw_redis::script_calls(&redis, args.services, args.mix, args.load())
        .await?
        .summary();
    Ok(vec![grpc, raw])
}

fn ratio(a: &Summary, b: &Summary) -> f64 {
    a.per_sec / b.per_sec.max(1e-9)
}

/// `suite`: every figure the targets need, from one run, with the ratios (with `module`, the
/// Redis backend decides with the Sluice Redis module).
pub async fn suite(redis_url: Option<String>, module: bool, args: &LoadArgs) -> anyhow::Result<()> {
    let load = args.load();
    let redis = if module {
        Redis::with_module(redis_url, false)?
    } else {
        Redis::new(redis_url, false)?
    };
    let noop = {
        let server = InProcess::noop(args.server_threads)?;
        grpc_acquires("noop gRPC", &server.url(), args, load).await?
    };
    noop.print();
    let memory = {
        let server = start_sluice(Backend::Memory, None, args)?;
        grpc_acquires("sluice memory", &server.url(), args, load).await?
    };
    memory.print();
    let on_redis = {
        let server = start_sluice(Backend::Redis, Some(&redis), args)?;
        grpc_acquires("sluice redis", &server.url(), args, load).await?
    };
    on_redis.print();
    let raw = raw_redis::script_calls(&redis, args.services, args.mix, load)
        .await?
        .summary();
    raw.print();
    // Latency at half of each backend's peak.
    let half = |peak: &Summary| Load {
        rate: Some(peak.per_sec / 2.0),
        ..load
    };
    let memory_half = {
        let server = start_sluice(Backend::Memory, None, args)?;
        grpc_acquires("sluice memory @50%", &server.url(), args, half(&memory)).await?
    };
    memory_half.print();
    let redis_half = {
        let server = start_sluice(Backend::Redis, Some(&redis), args)?;
        grpc_acquires("sluice redis @50%", &server.url(), args, half(&on_redis)).await?
    };
    redis_half.print();
    let ratios = serde_json::json!({
        "memory_vs_noop": ratio(&memory, &noop),
        "redis_vs_noop": ratio(&on_redis, &noop),
        "raw_evalsha_vs_noop": ratio(&raw, &noop),
        "memory_p99_at_half_peak_ms": f64::from(memory_half.p99) / 1000.0,
        "redis_p99_at_half_peak_ms": f64::from(redis_half.p99) / 1000.0,
    });
    println!(
        "ratios: memory/noop {:.1}% (target >= 95%), redis/noop {:.1}% (target >= 60%), raw script/noop {:.1}%; p99 at half peak: memory {:.3} ms (target <= 2), redis {:.3} ms (target <= 5)",
        ratio(&memory, &noop) * 100.0,
        ratio(&on_redis, &noop) * 100.0,
        ratio(&raw, &noop) * 100.0,
        f64::from(memory_half.p99) / 1000.0,
        f64::from(redis_half.p99) / 1000.0,
    );
    println!("{ratios}");
    Ok(())
}
