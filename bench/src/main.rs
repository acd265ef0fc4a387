//! `sluice-bench`: Sluice's benchmarks, one command each.
//!
//! - `decisions`: `Acquire` throughput and latency over gRPC against a Sluice server;
//! - `baseline`: the same load against a no-op gRPC server, and raw script calls (`FCALL`) on Redis;
//! - `suite`: all of these in one run, with the ratios the targets are stated in;
//! - `goodput`: a fleet of workers against a simulated provider, three strategies side by side;
//! - `redis-cost`: Redis CPU and commands per decision, beside decisions per second;
//! - `chaos`: replicas and Redis killed, frozen and reloaded at random under load, then checked;
//! - `memory`: the memory backend's footprint with many services and live leases;
//! - `config`: the services the decision benchmarks use, for a server started elsewhere.
//!
//! Build it in release mode: `cargo run --release -p sluice-bench -- <command>`.

mod chaos;
mod decisions;
mod footprint;
mod goodput;
mod load;
mod module_alone;
mod noop;
mod raw_redis;
mod redis_cost;
mod sdk_latency;
mod stats;
mod target;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice-bench", about = "Sluice benchmarks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Acquire throughput and latency against a Sluice server.
    Decisions {
        /// Backend of the server started here.
        #[arg(long, value_enum, default_value_t = decisions::Backend::Memory)]
        backend: decisions::Backend,
        /// A server started elsewhere (`http://host:port`), with the services `config` prints.
        #[arg(long)]
        addr: Option<String>,
        /// Redis to use (default: a `redis-server` started on a free port).
        #[arg(long)]
        redis_url: Option<String>,
        #[command(flatten)]
        load: decisions::LoadArgs,
    },
    /// The ceilings: the no-op gRPC server and raw script calls on Redis.
    Baseline {
        /// Redis to use (default: a `redis-server` started on a free port).
        #[arg(long)]
        redis_url: Option<String>,
        #[command(flatten)]
        load: decisions::LoadArgs,
    },
    /// Every decision figure from one run, with the ratios to the no-op server.
    Suite {
        /// Redis to use (default: a `redis-server` started on a free port).
        #[arg(long)]
        redis_url: Option<String>,
        /// The Redis backend decides with the Sluice Redis module (`engine = "module"`).
        #[arg(long)]
        module: bool,
        #[command(flatten)]
        load: decisions::LoadArgs,
    },
    /// Redis CPU and commands per decision (INFO cpu, commandstats) under Acquire load.
    RedisCost {
        /// A three-master Redis Cluster instead of one Redis.
        #[arg(long)]
        cluster: bool,
        /// Decide with the Sluice Redis module (`engine = "module"`), loaded into the Redis
        /// started here (from beside this binary; `cargo build --release -p sluice-redis-module`).
        #[arg(long)]
        module: bool,
        /// Redis to use (default: started on free ports).
        #[arg(long)]
        redis_url: Option<String>,
        #[command(flatten)]
        load: decisions::LoadArgs,
    },
    /// The Redis module's CPU per decision in Redis alone (no gRPC, no server).
    ModuleAlone(module_alone::ModuleAloneArgs),
    /// Faults at random under load (replicas killed, Redis frozen and killed, reloads), checked.
    Chaos(chaos::ChaosArgs),
    /// Workers against a simulated provider: naive retries, reactive cooldown, and Sluice.
    Goodput(goodput::GoodputArgs),
    /// The memory backend's footprint: many services, many live leases.
    Memory(footprint::FootprintArgs),
    /// What Sluice's Python transport adds to an official SDK call.
    SdkLatency(sdk_latency::SdkLatencyArgs),
    /// Prints the services of the decision benchmarks as a config file.
    Config {
        /// Number of services.
        #[arg(long, default_value_t = 1)]
        services: usize,
        /// Which limits.
        #[arg(long, value_enum, default_value_t = target::Mix::Grant)]
        mix: target::Mix,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The load generator's own runtime; servers started here run on theirs.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Decisions {
                backend,
                addr,
                redis_url,
                load,
            } => decisions::decisions(backend, addr, redis_url, &load)
                .await?
                .print(),
            Command::Baseline { redis_url, load } => {
                for s in decisions::baseline(redis_url, &load).await? {
                    s.print();
                }
            }
            Command::Suite {
                redis_url,
                module,
                load,
            } => decisions::suite(redis_url, module, &load).await?,
            Command::RedisCost {
                cluster,
                module,
                redis_url,
                load,
            } => redis_cost::run(cluster, module, redis_url, &load).await?,
            Command::ModuleAlone(args) => module_alone::run(args)?,
            Command::Chaos(args) => chaos::run(args).await?,
            Command::Goodput(args) => goodput::run(args).await?,
            Command::Memory(args) => footprint::run(args).await?,
            Command::SdkLatency(args) => sdk_latency::run(args).await?,
            Command::Config { services, mix } => print!("{}", target::services_toml(services, mix)),
        }
        anyhow::Ok(())
    })
}
