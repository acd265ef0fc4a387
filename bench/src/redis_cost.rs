//! `redis-cost`: what one decision costs inside Redis. A Sluice server on Redis (or a Redis
//! Cluster) takes `Acquire` load over gRPC while Redis's own counters are read at the start and
//! the end of the measured time: its CPU (`INFO cpu`, user + system, every node of a cluster
//! summed) and its commands (`INFO commandstats`, which counts the commands scripts call too).
//! Printed per decision, beside decisions per second: Redis's single thread is what every
//! replica shares, so its CPU per decision is how large a fleet one Redis serves.

use std::collections::BTreeMap;

use crate::{
    decisions::{grpc_acquires, start_sluice, Backend, LoadArgs},
    target::Redis,
};

/// Redis's counters at one moment, summed over its nodes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// CPU seconds, user + system.
    pub(crate) cpu: f64,
    /// CPU seconds in the kernel (system): mostly the network.
    sys: f64,
    /// Calls per command.
    calls: BTreeMap<String, u64>,
}

pub(crate) fn read_counters(urls: &[String]) -> anyhow::Result<Counters> {
    let mut total = Counters::default();
    for url in urls {
        let mut connection = redis::Client::open(url.as_str())?.get_connection()?;
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query(&mut connection)?;
        for line in info.lines() {
            if let Some(v) = line.strip_prefix("used_cpu_user:") {
                total.cpu += v.trim().parse::<f64>().unwrap_or(0.0);
            }
            if let Some(v) = line.strip_prefix("used_cpu_sys:") {
                let sys = v.trim().parse::<f64>().unwrap_or(0.0);
                total.cpu += sys;
                total.sys += sys;
            }
            // cmdstat_zadd:calls=12,usec=34,usec_per_call=...
            if let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            {
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|c| c.parse::<u64>().ok())
                    .unwrap_or(0);
                *total.calls.entry(name.to_string()).or_default() += calls;
            }
        }
    }
    Ok(total)
}

/// `redis-cost`: decisions per second and Redis CPU and commands per decision.
pub async fn run(
    cluster: bool,
    module: bool,
    redis_url: Option<String>,
    args: &LoadArgs,
) -> anyhow::Result<()> {
    let redis = if module {
        Redis::with_module(redis_url, cluster)?
    } else {
        Redis::new(redis_url, cluster)?
    };
    let urls = redis.node_urls();
    let backend = if cluster {
        Backend::Cluster
    } else {
        Backend::Redis
    };
    let server = start_sluice(backend, Some(&redis), args)?;
    let load = args.load();
    let name = format!(
        "sluice {}{} ({} services, {:?})",
        if cluster { "redis cluster" } else { "redis" },
        if module { " module" } else { "" },
        args.services.max(1),
        args.mix
    )
    .to_lowercase();
    let url = server.url();
    let run = tokio::spawn({
        let args = args.clone();
        async move { grpc_acquires(&name, &url, &args, load).await }
    });
    tokio::time::sleep(load.warmup).await;
    let before = read_counters(&urls)?;
    let summary = run.await??;
    let after = read_counters(&urls)?;

    let decisions = (summary.per_sec * load.duration.as_secs_f64()).max(1.0);
    let cpu_us = (after.cpu - before.cpu) * 1e6 / decisions;
    let sys_us = (after.sys - before.sys) * 1e6 / decisions;
    let mut per_command: Vec<(String, f64)> = after
        .calls
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "ping" | "cluster|slots"))
        .map(|(name, calls)| {
            let was = before.calls.get(name).copied().unwrap_or(0);
            (name.clone(), calls.saturating_sub(was) as f64 / decisions)
        })
        .filter(|(_, per)| *per > 0.0)
        .collect();
    per_command.sort_by(|a, b| b.1.total_cmp(&a.1));
    let commands: f64 = per_command.iter().map(|(_, per)| per).sum();
    summary.print();
    let breakdown: Vec<String> = per_command
        .iter()
        .map(|(name, per)| format!("{name} {per:.2}"))
        .collect();
    println!(
        "redis per decision: {cpu_us:.1} us CPU ({sys_us:.1} us system), {commands:.2} commands ({})",
        breakdown.join(", ")
    );
    println!(
        "{}",
        serde_json::json!({
            "name": summary.name,
            "decisions_per_sec": summary.per_sec,
            "grant_ratio": summary.grant_ratio,
            "redis_cpu_us_per_decision": cpu_us,
            "redis_system_cpu_us_per_decision": sys_us,
            "redis_commands_per_decision": commands,
            "commands": per_command.iter().cloned().collect::<BTreeMap<String, f64>>(),
        })
    );
    Ok(())
}
