//! Abuse on a real server: oversized messages, odd service names, token counts at the edges of
//! the number range, a flood of unknown services (the server's memory stays flat), and overload,
//! which is shed at once with RESOURCE_EXHAUSTED instead of queueing.

use std::time::{Duration, Instant};

use sluice::v1::{AcquireRequest, ReportResponseRequest};
use sluice_e2e::{redis_server::RedisServer, spawn_server};
use tonic::Code;

const CONFIG: &str = r#"
[[services]]
name = "svc"
limits = [
  { dimension = "requests", amount = 1000000, window = "1m" },
  { dimension = "tokens", amount = 1125899906842624, window = "1m" },
]
"#;

fn acquire(service: &str, tokens: u64) -> AcquireRequest {
    AcquireRequest {
        service: service.into(),
        tokens,
        ..AcquireRequest::default()
    }
}

/// Resident memory of a process, from /proc (Linux).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

#[tokio::test]
async fn odd_and_oversized_inputs_get_their_documented_status() -> anyhow::Result<()> {
    let server = spawn_server(CONFIG).await?;
    let mut client = server.raw_client().await?;

    // Token counts at the edges (the limit is 2^50 a minute, the largest accepted): 0, 1 and
    // 2^50 - 1 fill it exactly; 2^50 more is a denial (an answer, not an error); above 2^50 is
    // malformed.
    for tokens in [0, 1, (1 << 50) - 1] {
        let granted = client.acquire(acquire("svc", tokens)).await?.into_inner();
        assert!(granted.granted, "tokens {tokens}");
    }
    let full = client.acquire(acquire("svc", 1 << 50)).await?.into_inner();
    assert!(!full.granted);
    let cases = [
        ((1u64 << 50) + 1, Code::InvalidArgument),
        (1u64 << 53, Code::InvalidArgument),
        (u64::MAX, Code::InvalidArgument),
    ];
    for (tokens, code) in cases {
        let status = client
            .acquire(acquire("svc", tokens))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "tokens {tokens}: {status:?}");
    }

    // Names with odd bytes are malformed, not unknown.
    for name in [
        "svc\0",
        "svc\u{202e}",
        "ｓｖｃ",
        "svc\n",
        "svc name",
        "svc;DROP",
        "\u{feff}svc",
    ] {
        let status = client
            .acquire(acquire(name, 1))
            .await
            .expect_err("odd name");
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}: {status:?}");
    }

    // A message over the 1 MiB limit is refused before it is decoded.
    let huge = ReportResponseRequest {
        service: "svc".into(),
        status_code: 200,
        body: vec![b'x'; 2 * 1024 * 1024],
        ..ReportResponseRequest::default()
    };
    let status = client.report_response(huge).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The connection still serves (a token-free call: the token budget is spent).
    assert!(
        client
            .acquire(acquire("svc", 0))
            .await?
            .into_inner()
            .granted
    );
    Ok(())
}

#[tokio::test]
async fn a_flood_of_unknown_services_leaves_memory_flat() -> anyhow::Result<()> {
    let server = spawn_server(CONFIG).await?;
    let mut client = server.raw_client().await?;
    let flood = |from: usize, to: usize| {
        let mut client = client.clone();
        async move {
            for n in from..to {
                let status = client
                    .acquire(acquire(&format!("unknown-{n}"), 1))
                    .await
                    .expect_err("unknown");
                assert_eq!(status.code(), Code::NotFound);
            }
        }
    };
    // Warm up connection buffers and the allocator, then measure 10,000 more.
    flood(0, 1_000).await;
    let before = rss_kib(server.pid())?;
    flood(1_000, 11_000).await;
    let after = rss_kib(server.pid())?;
    assert!(
        after <= before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 10,000 unknown services"
    );
    assert!(
        client
            .acquire(acquire("svc", 1))
            .await?
            .into_inner()
            .granted
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_at_once_instead_of_queueing() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let config = format!(
        "max_in_flight = 4\n{CONFIG}\n[backend]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"3s\"\n",
        redis.url()
    );
    let server = spawn_server(&config).await?;
    let client = server.raw_client().await?;
    assert!(
        client
            .clone()
            .acquire(acquire("svc", 1))
            .await?
            .into_inner()
            .granted
    );

    // Redis frozen: every admitted call holds its place for the timeout.
    redis.pause()?;
    let started = Instant::now();
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let outcome = client.acquire(acquire("svc", 1)).await;
                (outcome.map(|_| ()).map_err(|s| s.code()), started.elapsed())
            })
        })
        .collect();
    let mut shed = Vec::new();
    let mut held = Vec::new();
    for call in calls {
        let (outcome, took) = call.await?;
        match outcome {
            Err(Code::ResourceExhausted) => shed.push(took),
            other => held.push((other, took)),
        }
    }
    redis.resume()?;
    assert!(
        held.len() <= 4,
        "more than max_in_flight admitted: {held:?}"
    );
    assert!(shed.len() >= 36, "shed {}", shed.len());
    // Shed calls are answered at once, long before an admitted call's timeout ends.
    let first_held = held
        .iter()
        .map(|(_, took)| *took)
        .min()
        .unwrap_or(Duration::from_secs(3));
    let slowest_shed = shed.iter().max().copied().unwrap_or_default();
    assert!(
        slowest_shed < first_held / 2,
        "slowest shed {slowest_shed:?}, first held call answered after {first_held:?}"
    );
    Ok(())
}
