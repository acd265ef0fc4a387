//! A Redis state written by an earlier release is converted by the first call that may write, and
//! carries on: from the nine-key layout (a state hash, the log as a sorted set, lease records,
//! request ids, running totals per dimension, held slots) cooldowns, the adaptive budget under
//! its oldest field names, the usage of the retained leases, their ids (a report finds its lease)
//! and request ids (a retry gets its lease back); from the layout of 2026-12-06 (the state in a
//! string, request ids in a hash of their own) the state and request ids, into the ledger. The
//! old keys are gone afterwards. Redis is real; its clock is moved by hand.

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sluice_e2e::redis_server::RedisServer;
use sluice_server::{
    backend::RedisBackend,
    config::{Config, RedisConfig, RedisUrl},
    core::{Decider, Decision, ServiceSpec},
    limiter::{AcquireRequest, Limiter, ReportRequest, UsageReport},
};

const CONFIG: &str = r#"
[[services]]
name = "old"
adaptive = true
default_cooldown = "2s"
limits = [
  { dimension = "requests", amount = 10, window = "10s" },
  { dimension = "tokens", amount = 1000, window = "10s" },
]
"#;

const TAG: &str = "{upgrade:old}";
const NONCE: &str = "00000000000000ab";

fn key(suffix: &str) -> String {
    format!("{TAG}:{suffix}")
}

fn member(seq: u64) -> String {
    format!("{seq:016}")
}

/// Writes the state an earlier release would have left at `now`: leases 5, 6 and 8 booked at
/// now − 2 s, now − 1 s and now (1 request and 100, 200, 300 tokens; 7 was overtaken and booked
/// again as 8), lease 8 for request id `job-c`, a 429 cooldown until now + 5 s, and the adaptive
/// budget lowered to 70 % a second ago, under its oldest field names.
fn write_old_state(redis: &RedisServer, now: u64) -> anyhow::Result<()> {
    let s = |t: u64| t.to_string();
    let state = key("s");
    for (field, value) in [
        ("n", NONCE.to_string()),
        ("q", s(9)),
        ("hw", s(now)),
        ("ls", s(now)),
        ("ld", "n".into()),
        ("lr", s(0)),
        ("b0", s(0)),
        ("t0", s(3)),
        ("b1", s(0)),
        ("t1", s(600)),
        ("cu0", s(now + 5_000_000)),
        ("cs0", s(429)),
        ("cc0", "429 from the provider".into()),
        ("ch", s(now + 5_000_000)),
        ("as", s(700)),
        ("at", s(now - 1_000_000)),
        ("ae", s(now + 5_000_000)),
        ("ap", s(1000)),
        ("ar", s(now + 60_000_000)),
        ("ex", s(now + 30_000_000)),
        ("rx", s(1)),
    ] {
        redis.command(&["HSET", &state, field, &value])?;
    }
    for (seq, slot, tokens, cum0, cum1, rid) in [
        (5, now - 2_000_000, 100, 1, 100, ""),
        (6, now - 1_000_000, 200, 2, 300, ""),
        (8, now, 300, 3, 600, "job-c"),
    ] {
        let m = member(seq);
        redis.command(&["ZADD", &key("log"), &s(slot), &m])?;
        let record = format!("{slot} 1 {tokens} 0 0 1 {tokens} 0 0 n|{rid}");
        redis.command(&["HSET", &key("l"), &m, &record])?;
        redis.command(&["ZADD", &key("c0"), &s(cum0), &m])?;
        redis.command(&["ZADD", &key("c1"), &s(cum1), &m])?;
        if !rid.is_empty() {
            redis.command(&["HSET", &key("r"), rid, &m])?;
        }
    }
    Ok(())
}

fn now_micros() -> anyhow::Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64)
}

/// The service's specs and a limiter on `redis`, its clock set by hand to `now`.
async fn limiter(
    redis: &RedisServer,
    now: u64,
) -> anyhow::Result<(Vec<Arc<ServiceSpec>>, Limiter<RedisBackend>)> {
    let specs: Vec<_> = Config::parse(CONFIG)?
        .services
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = RedisConfig::new(RedisUrl::parse(&redis.url()).map_err(anyhow::Error::msg)?)
        .key_prefix("upgrade")
        .timeout(Duration::from_secs(5));
    let backend = RedisBackend::connect(&specs, &config)
        .await?
        .with_manual_time(Arc::new(AtomicU64::new(now)));
    Ok((specs.clone(), Limiter::new(specs, backend)))
}

/// [`limiter`], after three calls of 100 tokens granted (request ids `a`, `b`, `c`).
async fn limiter_with_three_leases(
    redis: &RedisServer,
    now: u64,
) -> anyhow::Result<(Vec<Arc<ServiceSpec>>, Limiter<RedisBackend>)> {
    let (specs, l) = limiter(redis, now).await?;
    for id in ["a", "b", "c"] {
        let (_, d) = l.acquire(&call(100, id)).await?;
        assert!(matches!(d, Decision::Granted(_)), "{d:?}");
    }
    Ok((specs, l))
}

fn call(tokens: u64, request_id: &str) -> AcquireRequest {
    AcquireRequest {
        service: "old".into(),
        tokens,
        request_id: request_id.into(),
        ..AcquireRequest::default()
    }
}

#[tokio::test]
async fn a_state_of_the_earlier_layout_is_converted_and_carries_on() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let now = now_micros()?;
    write_old_state(&redis, now)?;
    let (specs, l) = limiter(&redis, now).await?;

    // A retry of the call made before the upgrade gets its lease back.
    let (_, replay) = l.acquire(&call(300, "job-c")).await?;
    let Decision::Granted(grant) = replay else {
        anyhow::bail!("the retry was not granted: {replay:?}");
    };
    assert_eq!(
        (grant.lease_id.nonce, grant.lease_id.seq, grant.slot),
        (0xab, 8, now)
    );
    // The cooldown carried over.
    let (_, denied) = l.acquire(&call(10, "")).await?;
    assert!(
        matches!(
            denied,
            Decision::Denied {
                decider: Decider::Cooldown,
                retry_after: 5_000_000,
                ..
            }
        ),
        "{denied:?}"
    );
    // Usage, the adaptive budget and the lease count carried over.
    let status = l.status("old").await?.snapshot;
    assert_eq!(status.adaptive_scale, 700);
    assert_eq!(
        status
            .limits
            .iter()
            .map(|s| (s.used, s.amount))
            .collect::<Vec<_>>(),
        [(3, 7), (600, 700)]
    );
    assert_eq!(l.backend().lease_count(&specs[0]).await?, 3);

    // A report of the lease finds it: its real usage refunds the estimate.
    let answer = l
        .report(ReportRequest {
            service: "old".into(),
            lease_id: grant.lease_id.to_string(),
            status_code: 200,
            usage: Some(UsageReport {
                total_tokens: Some(100),
                ..UsageReport::default()
            }),
            ..ReportRequest::default()
        })
        .await?;
    assert!(!answer.detail.contains("unknown"), "{}", answer.detail);
    let status = l.status("old").await?.snapshot;
    assert_eq!(status.limits[1].used, 400);

    // The old keys are gone; the new ones expire.
    for old in ["s", "log", "l", "r", "c0", "c1", "c2", "c3", "h"] {
        assert_eq!(redis.text(&["EXISTS", &key(old)])?, "0", "{old} is left");
    }
    for new in ["ledger", "leases"] {
        let ttl: i64 = redis.text(&["PTTL", &key(new)])?.parse()?;
        assert!(ttl > 0, "{new} has no TTL ({ttl})");
    }
    Ok(())
}

/// A state lost on its own (evicted, or a call that failed half-way) leaves its log and request ids
/// behind: the next call starts the service afresh without them, so an old request id names no
/// lease of the new state.
#[tokio::test]
async fn a_state_lost_alone_starts_afresh_without_its_leftovers() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let now = now_micros()?;
    let (specs, l) = limiter_with_three_leases(&redis, now).await?;
    // The state alone is lost: its request ids stay in the ledger, its log beside it.
    redis.command(&["HDEL", &key("ledger"), ""])?;
    assert_eq!(redis.text(&["HEXISTS", &key("ledger"), "c"])?, "1");
    assert_eq!(redis.text(&["EXISTS", &key("leases")])?, "1");

    // "c" was the third lease (seq 2) of the lost state; the new state's first lease is seq 0,
    // and "c" is a new call, not a replay of anything left behind.
    let (_, first) = l.acquire(&call(100, "z")).await?;
    let (_, again) = l.acquire(&call(100, "c")).await?;
    match (first, again) {
        (Decision::Granted(z), Decision::Granted(c)) => {
            assert_eq!((z.lease_id.seq, c.lease_id.seq), (0, 1));
        }
        other => anyhow::bail!("not granted: {other:?}"),
    }
    // A retry of "c" finds its new lease (the log holds no leftover at its index).
    let (_, replay) = l.acquire(&call(100, "c")).await?;
    assert!(
        matches!(replay, Decision::Granted(ref g) if g.lease_id.seq == 1),
        "{replay:?}"
    );
    assert_eq!(l.backend().lease_count(&specs[0]).await?, 2);
    let status = l.status("old").await?.snapshot;
    assert_eq!(status.limits[0].used, 2, "the lost leases count no more");
    Ok(())
}

/// Puts a service's ledger back into the layout of 2026-12-06: the state in a string `:state`, the
/// request ids in a hash `:ids`, both with the ledger's TTL (the log and held slots kept their keys).
const TO_PREVIOUS_LAYOUT: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[2], redis.call('HGET', KEYS[1], ''), 'PX', ttl)
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] ~= '' then redis.call('HSET', KEYS[3], fields[i], fields[i + 1]) end
end
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('DEL', KEYS[1])
return 1
"#;

/// The layout of the release of 2026-12-06: the first call moves the state and the request ids
/// into the ledger; retries find their leases, usage carries on, the old keys are gone.
#[tokio::test]
async fn a_state_of_the_previous_layout_moves_into_the_ledger() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let now = now_micros()?;
    let (specs, l) = limiter_with_three_leases(&redis, now).await?;
    redis.command(&[
        "EVAL",
        TO_PREVIOUS_LAYOUT,
        "3",
        &key("ledger"),
        &key("state"),
        &key("ids"),
    ])?;
    assert_eq!(redis.text(&["EXISTS", &key("ledger")])?, "0");
    assert_eq!(redis.text(&["HLEN", &key("ids")])?, "3");

    // A retry of "b" gets its lease back; a new call books the next seq.
    let (_, replay) = l.acquire(&call(100, "b")).await?;
    assert!(
        matches!(replay, Decision::Granted(ref g) if g.lease_id.seq == 1),
        "{replay:?}"
    );
    let (_, next) = l.acquire(&call(100, "d")).await?;
    assert!(
        matches!(next, Decision::Granted(ref g) if g.lease_id.seq == 3),
        "{next:?}"
    );
    assert_eq!(l.backend().lease_count(&specs[0]).await?, 4);
    let status = l.status("old").await?.snapshot;
    assert_eq!(
        status.limits.iter().map(|s| s.used).collect::<Vec<_>>(),
        [4, 400]
    );
    for old in ["state", "ids"] {
        assert_eq!(redis.text(&["EXISTS", &key(old)])?, "0", "{old} is left");
    }
    assert_eq!(redis.text(&["HLEN", &key("ledger")])?, "5");
    let ttl: i64 = redis.text(&["PTTL", &key("ledger")])?.parse()?;
    assert!(ttl > 0, "the ledger has no TTL ({ttl})");
    Ok(())
}
