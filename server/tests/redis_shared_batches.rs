//! On a single Redis, concurrent acquires of different services share script calls: one
//! `acquire.lua` call decides each service's acquires in turn. One call of interleaved acquires
//! of twelve services must decide each service exactly as alone (in order, up to its limit);
//! under concurrent load, each service is exact (no more grants than its limit, the same lease
//! for a retried request id) with far fewer script calls than acquires. Redis is real; its
//! command counters say how many script calls were made.

use std::{collections::HashMap, sync::Arc, time::Duration};

use sluice_e2e::redis_server::RedisServer;
use sluice_server::{
    backend::{AcquireCall, RedisBackend},
    config::{Config, RedisConfig, RedisUrl},
    core::{Class, Cost, Decision, ServiceSpec},
    limiter::{AcquireRequest, Limiter},
};

const SERVICES: usize = 12;
const CALLS: usize = 25;

fn config() -> String {
    let mut text = String::new();
    for i in 0..SERVICES {
        // Service i allows i + 3 requests an hour and 10 × (i + 3) tokens.
        let amount = i + 3;
        text.push_str(&format!(
            "[[services]]\nname = \"s{i}\"\nlimits = [\n  {{ dimension = \"requests\", amount = {amount}, window = \"1h\" }},\n  {{ dimension = \"tokens\", amount = {}, window = \"1h\" }},\n]\n",
            10 * amount
        ));
    }
    text
}

/// Script calls Redis ran to the end (`FCALL`, or `EVALSHA` and `EVAL` where functions are
/// refused): a call that found no function loaded fails and is followed by the real one.
fn script_calls(redis: &RedisServer) -> anyhow::Result<u64> {
    Ok(redis.calls_of("fcall")? + redis.calls_of("evalsha")? + redis.calls_of("eval")?)
}

async fn start(redis: &RedisServer) -> anyhow::Result<(Vec<Arc<ServiceSpec>>, RedisBackend)> {
    let specs: Vec<_> = Config::parse(&config())?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = RedisConfig::new(RedisUrl::parse(&redis.url()).map_err(anyhow::Error::msg)?)
        .key_prefix("shared")
        .timeout(Duration::from_secs(10));
    let backend = RedisBackend::connect(&specs, &config).await?;
    Ok((specs, backend))
}

#[tokio::test]
async fn one_script_call_decides_many_services() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let (specs, backend) = start(&redis).await?;
    let before = script_calls(&redis)?;
    // Eight calls of every service, interleaved, in one script call.
    let ids: Vec<String> = (0..8 * SERVICES).map(|i| format!("r{i}")).collect();
    let calls: Vec<(&ServiceSpec, AcquireCall<'_>)> = (0..8 * SERVICES)
        .map(|i| {
            let call = AcquireCall {
                cost: Cost::of_call(5, 0, 0),
                max_wait: 0,
                request_id: Some(ids[i].as_str()),
                class: Class::TOP,
            };
            (specs[i % SERVICES].as_ref(), call)
        })
        .collect();
    let decisions = backend.acquire_across(&calls).await?;
    assert_eq!(script_calls(&redis)? - before, 1, "one script call");
    for (i, spec) in specs.iter().enumerate() {
        let mine: Vec<bool> = decisions
            .iter()
            .zip(&calls)
            .filter(|(_, (s, _))| s.name == spec.name)
            .map(|(d, _)| matches!(d, Ok(Decision::Granted(_))))
            .collect();
        // In order: the first i + 3 (up to eight) granted, the rest denied.
        let expected: Vec<bool> = (0..8).map(|k| k < i + 3).collect();
        assert_eq!(mine, expected, "{}", spec.name);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_of_many_services_share_script_calls_and_stay_exact() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let (specs, backend) = start(&redis).await?;
    let limiter = Arc::new(Limiter::new(specs, backend));
    let before = script_calls(&redis)?;

    // Every service's calls at once, interleaved: 5 tokens each, with request ids.
    let request = |service: usize, call: usize| AcquireRequest {
        service: format!("s{service}"),
        tokens: 5,
        request_id: format!("r-{service}-{call}"),
        ..AcquireRequest::default()
    };
    let mut calls = Vec::new();
    for call in 0..CALLS {
        for service in 0..SERVICES {
            let limiter = limiter.clone();
            let request = request(service, call);
            calls.push(tokio::spawn(async move {
                (request.clone(), limiter.acquire(&request).await)
            }));
        }
    }
    let mut granted: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for call in calls {
        let (request, answer) = call.await?;
        if let Decision::Granted(g) = answer?.1 {
            granted
                .entry(request.service.clone())
                .or_default()
                .push((request.request_id.clone(), g.lease_id.to_string()));
        }
    }
    let script_calls = script_calls(&redis)? - before;

    for i in 0..SERVICES {
        let grants = granted.get(&format!("s{i}")).map_or(0, Vec::len);
        // Requests bind first (i + 3 of them, each well within the token budget).
        assert_eq!(grants, i + 3, "service s{i}");
    }
    // Shared, the load takes a few dozen calls (batches of up to 16; 27 here, 60 when each
    // service queued alone); `one_script_call_decides_many_services` checks the sharing exactly.
    let acquires = (SERVICES * CALLS) as u64;
    assert!(
        script_calls < acquires / 2,
        "{script_calls} script calls for {acquires} acquires"
    );

    // A retried request id gets its lease back, whichever batch carried it.
    for (service, leases) in &granted {
        for (request_id, lease) in leases {
            let retried = AcquireRequest {
                service: service.clone(),
                tokens: 5,
                request_id: request_id.clone(),
                ..AcquireRequest::default()
            };
            match limiter.acquire(&retried).await?.1 {
                Decision::Granted(g) => assert_eq!(&g.lease_id.to_string(), lease),
                other => panic!("retry of {request_id} answered {other:?}"),
            }
        }
    }
    Ok(())
}
