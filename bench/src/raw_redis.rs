//! The Redis ceiling: the acquire script itself, sent as raw `FCALL` commands (`EVALSHA` where
//! Redis refuses functions) by many concurrent callers over one multiplexed (pipelining)
//! connection, with no gRPC in front. This is what Redis can decide per second on this machine.

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionLike;
use sluice_server::{
    backend::{AcquireCall, Backend, RedisBackend},
    config::{Config, RedisConfig, RedisUrl},
    core::Cost,
};

use crate::{
    load::{drive, Load, Operation, Outcome},
    stats::Measured,
    target::{services_toml, Mix, Redis},
};

/// A connection that pipelines concurrent commands: one Redis or a cluster.
#[derive(Clone)]
enum Multiplexed {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Multiplexed {
    async fn query(&self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self.clone() {
            Multiplexed::Single(mut c) => c.req_packed_command(cmd).await,
            Multiplexed::Cluster(mut c) => c.req_packed_command(cmd).await,
        }
    }
}

/// Measures raw calls of the acquire script on `redis`, over `services` services of `mix`.
pub async fn script_calls(
    redis: &Redis,
    services: usize,
    mix: Mix,
    load: Load,
) -> anyhow::Result<Measured> {
    let config = Config::parse(&services_toml(services, mix))?;
    let specs: Vec<_> = config.services.into_iter().map(Arc::new).collect();
    let redis_config = RedisConfig::new(RedisUrl::parse(&redis.url()).map_err(anyhow::Error::msg)?)
        .cluster(redis.cluster())
        .key_prefix(format!("raw-{}", std::process::id()))
        .timeout(Duration::from_secs(5));
    let backend = Arc::new(RedisBackend::connect(&specs, &redis_config).await?);
    let cost = Cost::of_call(100, 0, 0);
    // Loads the script (EVAL on NOSCRIPT) before the raw calls.
    for spec in &specs {
        backend
            .acquire(
                spec,
                AcquireCall {
                    cost,
                    max_wait: 0,
                    request_id: None,
                    class: sluice_server::core::Class::TOP,
                },
            )
            .await?;
    }
    let connection = if redis.cluster() {
        let client = redis::cluster::ClusterClient::new(vec![redis.url()])?;
        Multiplexed::Cluster(client.get_async_connection().await?)
    } else {
        let client = redis::Client::open(redis.url())?;
        Multiplexed::Single(client.get_multiplexed_async_connection().await?)
    };
    let op: Operation = Arc::new(move |task, _| {
        let (backend, connection) = (backend.clone(), connection.clone());
        let spec = specs[task % specs.len()].clone();
        Box::pin(async move {
            let cmd = backend.acquire_command(&spec, cost, 0)?;
            // One flat array: each acquire's reply as its length, then its elements (here, one
            // acquire: the kind is the second element).
            match connection.query(&cmd).await? {
                redis::Value::Array(items) => match items.get(1) {
                    Some(redis::Value::BulkString(b)) if b.as_slice() == b"G" => {
                        Ok(Outcome::Granted)
                    }
                    Some(_) => Ok(Outcome::Denied),
                    None => anyhow::bail!("an empty reply"),
                },
                other => anyhow::bail!("unexpected reply {other:?}"),
            }
        })
    });
    drive("redis raw script", load, op).await
}
