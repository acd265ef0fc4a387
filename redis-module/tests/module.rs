//! The module loaded into a real `redis-server`: its decisions are the memory ledger's, decision
//! for decision (the same random calls sent to both, at the same times, give the same answers,
//! lease ids included); its state survives an RDB reload and an AOF rewrite, replicates to a
//! replica, expires when the ledger would be forgotten; bad calls get errors and change nothing.

use anyhow::{ensure, Context as _};
use proptest::prelude::*;
use redis::Value;
use sluice_e2e::{micros, redis_server::RedisServer};
use sluice_server::core::{
    from_bytes, to_bytes, AcquireAnswer, AcquireRequest, AcquireRequests, Algorithm, Class, Cost,
    Dimension, Ledger, LimitSpec, Micros, ServiceSnapshot, ServiceSpec, MAX_LEASES,
};

const SECOND: Micros = 1_000_000;

/// A decision time near the real one, so keys' TTLs stay reasonable.
fn start_time() -> Micros {
    micros(std::time::SystemTime::now())
}

fn connect(server: &RedisServer) -> anyhow::Result<redis::Connection> {
    Ok(redis::Client::open(server.url())?.get_connection()?)
}

fn spec() -> ServiceSpec {
    ServiceSpec::new(
        "openai/gpt-4o",
        vec![
            LimitSpec::new(Dimension::Requests, 5, SECOND, Algorithm::SlidingWindow),
            LimitSpec::new(
                Dimension::Tokens,
                1_000,
                SECOND,
                Algorithm::TokenBucket { burst: 1_000 },
            ),
        ],
    )
}

const NONCE: u64 = 0x5eed;

fn acquire_cmd(
    key: &str,
    spec: &ServiceSpec,
    now: Micros,
    requests: &[AcquireRequest],
) -> redis::Cmd {
    let mut cmd = redis::cmd("SLUICE.ACQUIRE");
    cmd.arg(key)
        .arg(0)
        .arg(now)
        .arg(MAX_LEASES)
        .arg(1)
        .arg(to_bytes(spec))
        .arg(NONCE)
        .arg(to_bytes(&AcquireRequests(requests.to_vec())));
    cmd
}

fn answers(value: Vec<Vec<u8>>) -> anyhow::Result<Vec<AcquireAnswer>> {
    value
        .iter()
        .map(|bytes| from_bytes(bytes).map_err(anyhow::Error::from))
        .collect()
}

fn status(
    con: &mut redis::Connection,
    key: &str,
    spec: &ServiceSpec,
    now: Micros,
) -> anyhow::Result<ServiceSnapshot> {
    let bytes: Vec<u8> = redis::cmd("SLUICE.STATUS")
        .arg(key)
        .arg(now)
        .arg(to_bytes(spec))
        .query(con)?;
    let (snapshot, _held): (ServiceSnapshot, u64) = from_bytes(&bytes)?;
    Ok(snapshot)
}

fn request(tokens: u64, max_wait: Micros, id: Option<u32>) -> AcquireRequest {
    AcquireRequest {
        cost: Cost([1, tokens, 0, 0]),
        max_wait,
        class: Class::TOP,
        deadline: None,
        request_id: id.map(|i| format!("job-{i}")),
    }
}

/// What the memory ledger answers to the same requests.
fn memory_answers(
    ledger: &mut Ledger,
    spec: &ServiceSpec,
    now: Micros,
    requests: &[AcquireRequest],
) -> Vec<AcquireAnswer> {
    requests
        .iter()
        .map(|r| {
            match ledger.acquire_in_class(
                spec,
                now,
                r.cost,
                r.max_wait,
                r.request_id.as_deref(),
                r.class,
            ) {
                Ok(decision) => AcquireAnswer::Decided(decision),
                Err(error) => AcquireAnswer::Refused(error),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random batches at random times: the module answers exactly as the memory ledger does.
    #[test]
    fn decides_as_the_memory_ledger(
        batches in prop::collection::vec(
            (0u64..400_000, prop::collection::vec((0u64..400, 0u64..2_000_000, prop::option::of(0u32..6)), 1..6)),
            1..12,
        )
    ) {
        let server = RedisServer::start_with_module(&[]).expect("redis-server with the module");
        let mut con = connect(&server).expect("connect");
        let spec = spec();
        let mut ledger = Ledger::new(&spec, NONCE);
        let mut now = start_time();
        for (step, calls) in batches {
            now += step;
            let requests: Vec<AcquireRequest> =
                calls.into_iter().map(|(t, w, id)| request(t, w, id)).collect();
            let got: Vec<Vec<u8>> = acquire_cmd("svc", &spec, now, &requests).query(&mut con).expect("acquire");
            let got = answers(got).expect("answers decode");
            prop_assert_eq!(got, memory_answers(&mut ledger, &spec, now, &requests));
            prop_assert_eq!(
                status(&mut con, "svc", &spec, now).expect("status"),
                ledger.snapshot(&spec, now)
            );
        }
    }
}

#[test]
fn state_survives_an_rdb_reload_and_an_aof_rewrite() -> anyhow::Result<()> {
    let server = RedisServer::start_with_module(&[
        "--enable-debug-command",
        "yes",
        "--aof-use-rdb-preamble",
        "no",
    ])?;
    let mut con = connect(&server)?;
    let spec = spec();
    let mut ledger = Ledger::new(&spec, NONCE);
    let now = start_time();
    let requests: Vec<_> = (0..4).map(|i| request(100, 5 * SECOND, Some(i))).collect();
    let got: Vec<Vec<u8>> = acquire_cmd("svc", &spec, now, &requests).query(&mut con)?;
    ensure!(answers(got)? == memory_answers(&mut ledger, &spec, now, &requests));
    let before = status(&mut con, "svc", &spec, now)?;

    redis::cmd("DEBUG").arg("RELOAD").query::<()>(&mut con)?;
    ensure!(
        status(&mut con, "svc", &spec, now)? == before,
        "RDB reload changed the state"
    );

    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query::<()>(&mut con)?;
    // Turning the AOF on rewrites it; wait for the rewrite to finish.
    for _ in 0..500 {
        let info: String = redis::cmd("INFO").arg("persistence").query(&mut con)?;
        if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    redis::cmd("DEBUG").arg("LOADAOF").query::<()>(&mut con)?;
    ensure!(
        status(&mut con, "svc", &spec, now)? == before,
        "AOF reload changed the state"
    );

    // The reloaded state decides on exactly like the memory ledger.
    let later = now + SECOND / 2;
    let more: Vec<_> = (4..8).map(|i| request(300, 5 * SECOND, Some(i))).collect();
    let got: Vec<Vec<u8>> = acquire_cmd("svc", &spec, later, &more).query(&mut con)?;
    ensure!(answers(got)? == memory_answers(&mut ledger, &spec, later, &more));
    Ok(())
}

#[test]
fn replicas_follow_with_the_primary_time() -> anyhow::Result<()> {
    let primary = RedisServer::start_with_module(&[])?;
    let port = primary
        .url()
        .rsplit(':')
        .next()
        .context("port")?
        .trim_end_matches('/')
        .to_string();
    let replica = RedisServer::start_with_module(&["--replicaof", "127.0.0.1", &port])?;
    let mut p = connect(&primary)?;
    let mut r = connect(&replica)?;
    for _ in 0..500 {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r)?;
        if info.contains("master_link_status:up") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let spec = spec();
    // Decided on the primary's own clock (-1): the replica must replay them at that time.
    let requests: Vec<_> = (0..7).map(|i| request(50, 3 * SECOND, Some(i))).collect();
    let got: Vec<Vec<u8>> = redis::cmd("SLUICE.ACQUIRE")
        .arg("svc")
        .arg(0)
        .arg(-1)
        .arg(MAX_LEASES)
        .arg(1)
        .arg(to_bytes(&spec))
        .arg(NONCE)
        .arg(to_bytes(&AcquireRequests(requests)))
        .query(&mut p)?;
    ensure!(answers(got)?.len() == 7);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p)?;
    ensure!(acked == 1, "the replica did not acknowledge");
    let at = start_time();
    ensure!(
        status(&mut p, "svc", &spec, at)? == status(&mut r, "svc", &spec, at)?,
        "the replica's state differs from the primary's"
    );
    Ok(())
}

#[test]
fn keys_expire_when_the_ledger_would_be_forgotten() -> anyhow::Result<()> {
    let server = RedisServer::start_with_module(&[])?;
    let mut con = connect(&server)?;
    let spec = spec();
    let now = start_time();
    let got: Vec<Vec<u8>> =
        acquire_cmd("svc", &spec, now, &[request(10, 0, None)]).query(&mut con)?;
    ensure!(matches!(answers(got)?[..], [AcquireAnswer::Decided(_)]));
    let ttl: i64 = redis::cmd("PTTL").arg("svc").query(&mut con)?;
    // Retention (the longest span: one window) plus a second.
    let expected = ((spec.retention() + SECOND) / 1000) as i64;
    ensure!(
        ttl > expected - 1_000 && ttl <= expected + 1,
        "PTTL {ttl}, expected about {expected}"
    );
    // A call that books nothing on a service with no state stores nothing.
    let late = AcquireRequest {
        deadline: Some(now - 1),
        ..request(10, 0, None)
    };
    let got: Vec<Vec<u8>> = acquire_cmd("other", &spec, now, &[late]).query(&mut con)?;
    ensure!(answers(got)? == [AcquireAnswer::PastDeadline]);
    let exists: i64 = redis::cmd("EXISTS").arg("other").query(&mut con)?;
    ensure!(exists == 0, "a call that booked nothing created a key");
    Ok(())
}

#[test]
fn bad_calls_get_errors_and_change_nothing() -> anyhow::Result<()> {
    let server = RedisServer::start_with_module(&[])?;
    let mut con = connect(&server)?;
    let spec = spec();
    let now = start_time();
    let good = to_bytes(&AcquireRequests(vec![request(1, 0, None)]));
    let cases: Vec<(redis::Cmd, &str)> = vec![
        (
            redis::cmd("SLUICE.ACQUIRE").arg("svc").clone(),
            "wrong number",
        ),
        (
            {
                let mut c = acquire_cmd("svc", &spec, now, &[]);
                c.arg("extra");
                c
            },
            "number",
        ),
        (
            redis::cmd("SLUICE.ACQUIRE")
                .arg("svc")
                .arg(0)
                .arg("soon")
                .arg(MAX_LEASES)
                .arg(1)
                .arg(to_bytes(&spec))
                .arg(NONCE)
                .arg(&good)
                .clone(),
            "now",
        ),
        (
            redis::cmd("SLUICE.ACQUIRE")
                .arg("svc")
                .arg(0)
                .arg(now)
                .arg(MAX_LEASES)
                .arg(1)
                .arg(b"\x01\xff".as_slice())
                .arg(NONCE)
                .arg(&good)
                .clone(),
            "malformed",
        ),
        (
            redis::cmd("SLUICE.ACQUIRE")
                .arg("svc")
                .arg(0)
                .arg(now)
                .arg(MAX_LEASES)
                .arg(1)
                .arg(to_bytes(&spec))
                .arg(NONCE)
                .arg(&good[..good.len() - 1])
                .clone(),
            "malformed",
        ),
        (
            redis::cmd("SLUICE.ACQUIRE")
                .arg("svc")
                .arg(1)
                .arg("svc2")
                .arg(now)
                .arg(MAX_LEASES)
                .arg(1)
                .arg(to_bytes(&spec))
                .arg(NONCE)
                .arg(&good)
                .clone(),
            "fewer keys",
        ),
        (
            redis::cmd("SLUICE.REPORT")
                .arg("svc")
                .arg(now)
                .arg(to_bytes(&spec))
                .arg(NONCE)
                .arg(b"\x01".as_slice())
                .clone(),
            "malformed",
        ),
    ];
    for (cmd, expected) in cases {
        let error = cmd
            .query::<Value>(&mut con)
            .err()
            .context("a bad call succeeded")?;
        ensure!(
            error.to_string().contains(expected),
            "{error} does not say {expected:?}"
        );
    }
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con)?;
    ensure!(keys.is_empty(), "bad calls left keys: {keys:?}");
    // A key count far beyond the arguments is refused, not allocated (and Redis still answers).
    let error = redis::cmd("SLUICE.ACQUIRE")
        .arg("svc")
        .arg(1_000_000_000_000u64)
        .arg(now)
        .arg(MAX_LEASES)
        .query::<Value>(&mut con)
        .err()
        .context("a huge key count succeeded")?;
    ensure!(error.to_string().contains("wrong number"), "{error}");
    // Redis asks which arguments are keys: only positions that exist are named.
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("SLUICE.ACQUIRE")
        .arg("a")
        .arg(5)
        .arg("b")
        .query(&mut con)?;
    ensure!(keys == ["a", "b"], "GETKEYS named {keys:?}");
    let none = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("SLUICE.ACQUIRE")
        .query::<Value>(&mut con);
    ensure!(
        none.is_err(),
        "GETKEYS of no arguments named keys: {none:?}"
    );
    let pong: String = redis::cmd("PING").query(&mut con)?;
    ensure!(pong == "PONG");
    // A key of another type is refused, and kept.
    redis::cmd("SET")
        .arg("taken")
        .arg("x")
        .query::<()>(&mut con)?;
    let error = acquire_cmd("taken", &spec, now, &[request(1, 0, None)])
        .query::<Value>(&mut con)
        .err()
        .context("acquire on a string key succeeded")?;
    ensure!(error.to_string().contains("WRONGTYPE"), "{error}");
    let value: String = redis::cmd("GET").arg("taken").query(&mut con)?;
    ensure!(value == "x");
    // A call fails whole: a second section on a key of another type leaves the first section's
    // service untouched (nothing booked, nothing to replicate).
    let requests = to_bytes(&AcquireRequests(vec![request(1, 0, None)]));
    let error = redis::cmd("SLUICE.ACQUIRE")
        .arg("fresh")
        .arg(1)
        .arg("taken")
        .arg(now)
        .arg(MAX_LEASES)
        .arg(1)
        .arg(to_bytes(&spec))
        .arg(NONCE)
        .arg(&requests)
        .arg(1)
        .arg(to_bytes(&spec))
        .arg(NONCE)
        .arg(&requests)
        .query::<Value>(&mut con)
        .err()
        .context("a call with a WRONGTYPE section succeeded")?;
    ensure!(error.to_string().contains("WRONGTYPE"), "{error}");
    let exists: i64 = redis::cmd("EXISTS").arg("fresh").query(&mut con)?;
    ensure!(exists == 0, "the failed call booked on its first section");
    Ok(())
}

/// Replicas of a rolling reload take turns with the old and the new configuration: a bucket
/// drained under one is still drained when that configuration comes back, also after the state
/// was saved and reloaded (each bucket shape keeps its own state, as on the Lua engine).
#[test]
fn a_rolling_reload_never_restarts_a_bucket_full() -> anyhow::Result<()> {
    let server = RedisServer::start_with_module(&["--enable-debug-command", "yes"])?;
    let mut con = connect(&server)?;
    let bucket = |burst| {
        ServiceSpec::new(
            "svc",
            vec![LimitSpec::new(
                Dimension::Tokens,
                1_000,
                SECOND,
                Algorithm::TokenBucket { burst },
            )],
        )
    };
    let (old, new) = (bucket(1_000), bucket(500));
    let now = start_time();
    let take = |con: &mut redis::Connection, spec: &ServiceSpec, tokens| -> anyhow::Result<bool> {
        let got: Vec<Vec<u8>> =
            acquire_cmd("svc", spec, now, &[request(tokens, 0, None)]).query(con)?;
        Ok(matches!(
            answers(got)?[..],
            [AcquireAnswer::Decided(
                sluice_server::core::Decision::Granted(_)
            )]
        ))
    };
    ensure!(take(&mut con, &old, 1_000)?, "the old bucket starts full");
    ensure!(
        take(&mut con, &new, 500)?,
        "the new shape has a bucket of its own"
    );
    redis::cmd("DEBUG").arg("RELOAD").query::<()>(&mut con)?;
    ensure!(
        !take(&mut con, &old, 1_000)?,
        "the old bucket came back full"
    );
    ensure!(!take(&mut con, &new, 500)?, "the new bucket came back full");
    Ok(())
}

/// The module's ledgers live in Redis's heap: `used_memory` grows with the leases booked, so
/// `maxmemory` sees them.
#[test]
fn ledgers_count_in_redis_used_memory() -> anyhow::Result<()> {
    let server = RedisServer::start_with_module(&[])?;
    let mut con = connect(&server)?;
    let used = |con: &mut redis::Connection| -> anyhow::Result<i64> {
        let info: String = redis::cmd("INFO").arg("memory").query(con)?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("used_memory in INFO memory")
    };
    let before = used(&mut con)?;
    let spec = ServiceSpec::new(
        "svc",
        vec![LimitSpec::new(
            Dimension::Requests,
            1_000_000,
            SECOND,
            Algorithm::SlidingWindow,
        )],
    );
    let now = start_time();
    for batch in 0..20u32 {
        let requests: Vec<_> = (0..1_000)
            .map(|i| request(0, 0, Some(batch * 1_000 + i)))
            .collect();
        let got: Vec<Vec<u8>> = acquire_cmd("svc", &spec, now, &requests).query(&mut con)?;
        ensure!(got.len() == 1_000);
    }
    let grown = used(&mut con)? - before;
    // 20,000 leases with their request ids: well over a hundred bytes each.
    ensure!(grown > 2_000_000, "used_memory grew by only {grown} bytes");
    Ok(())
}
