//! The Envoy front door, spoken to by a client generated from Envoy's published protos (Python,
//! `xds-protos`), on every backend: descriptors map to services by an explicit route or by the
//! `sluice_service` entry, a free slot is OK, a full limit is OVER_LIMIT with `retry-after` and
//! `x-ratelimit-*` headers, an unmapped descriptor is not limited, another domain is refused,
//! Envoy's calls count against the same budget as the workers', and a service in shadow mode
//! answers OK with the would-be refusal in `x-sluice-shadow-*` headers.

use std::path::PathBuf;

use serde_json::{json, Value};
use sluice_e2e::{polyglot, Store};

const CONFIG: &str = r#"
[[services]]
name = "openai/gpt-4o"
limits = [{ dimension = "requests", amount = 3, window = "1h" }]

[[services]]
name = "tokens"
limits = [{ dimension = "tokens", amount = 10, window = "1h" }]

[[services]]
name = "trial"
mode = "shadow"
limits = [{ dimension = "requests", amount = 1, window = "1h" }]

[envoy]
domain = "egress"

[[envoy.descriptors]]
entries = { provider = "openai", model = "gpt-4o" }
service = "openai/gpt-4o"
"#;

/// Runs the Python client with `calls`; one answer per call.
fn should_rate_limit(addr: &str, calls: &Value) -> anyhow::Result<Vec<Value>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("envoy/should_rate_limit.py");
    let script = script.to_string_lossy().into_owned();
    let calls = calls.to_string();
    let out = polyglot::run_python(&polyglot::root(), &[&script, addr, &calls], &[])?;
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

sluice_e2e::on_every_backend!(envoy_asks_and_gets_the_same_limits_as_the_workers);

async fn envoy_asks_and_gets_the_same_limits_as_the_workers(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    // A worker takes one of the three requests first.
    server
        .client()
        .await?
        .acquire("openai/gpt-4o")
        .without_sleep()
        .await?;

    let routed = json!([["provider", "openai"], ["model", "gpt-4o"], ["user", "u1"]]);
    let calls = json!([
        { "domain": "egress", "descriptors": [routed] },
        { "domain": "egress", "descriptors": [[["sluice_service", "openai/gpt-4o"]]] },
        { "domain": "egress", "descriptors": [routed] },
        { "domain": "egress", "descriptors": [[["path", "/health"]]] },
        { "domain": "other", "descriptors": [routed] },
        { "domain": "egress", "descriptors": [[["sluice_service", "tokens"]]], "hits": 7 },
        { "domain": "egress", "descriptors": [[["sluice_service", "tokens"]]], "hits": 7 },
        { "domain": "egress", "descriptors": [[["sluice_service", "nope"]]] },
        { "domain": "egress", "descriptors": [[["sluice_service", "trial"]]] },
        { "domain": "egress", "descriptors": [[["sluice_service", "trial"]]] },
    ]);
    let answers = should_rate_limit(&server.addr, &calls)?;
    assert_eq!(answers.len(), 10, "{answers:?}");
    assert_eq!(answers[0]["overall"], "OK", "{answers:?}");
    assert_eq!(answers[1]["overall"], "OK", "{answers:?}");
    // The fourth request of the hour: over the limit, with headers for Envoy to return.
    let over = &answers[2];
    assert_eq!(over["overall"], "OVER_LIMIT", "{over}");
    assert_eq!(over["statuses"][0]["code"], "OVER_LIMIT");
    let reset = over["statuses"][0]["reset_seconds"].as_i64().unwrap_or(0);
    assert!((3_500..=3_600).contains(&reset), "{over}");
    let headers = &over["headers"];
    assert_eq!(headers["x-ratelimit-limit"], "3", "{over}");
    assert_eq!(headers["x-ratelimit-remaining"], "0", "{over}");
    let retry: i64 = headers["retry-after"].as_str().unwrap_or("").parse()?;
    assert!((3_500..=3_600).contains(&retry), "{over}");
    // Not mapped: not limited. Another domain: refused.
    assert_eq!(answers[3]["overall"], "OK");
    assert_eq!(answers[3]["statuses"][0]["code"], "OK");
    assert_eq!(answers[4]["error"], "INVALID_ARGUMENT", "{answers:?}");
    // hits_addend is the call's token cost: 7 fits a budget of 10, 7 more does not.
    assert_eq!(answers[5]["overall"], "OK");
    assert_eq!(answers[6]["overall"], "OVER_LIMIT");
    // A descriptor naming an unknown service is an error, as for a worker.
    assert_eq!(answers[7]["error"], "NOT_FOUND", "{answers:?}");

    // Shadow mode: both OK; the second would have been refused, and says so.
    assert_eq!(answers[8]["overall"], "OK", "{answers:?}");
    assert!(
        answers[8]["headers"].get("x-sluice-shadow").is_none(),
        "{answers:?}"
    );
    let shadowed = &answers[9];
    assert_eq!(shadowed["overall"], "OK", "{shadowed}");
    assert_eq!(
        shadowed["headers"]["x-sluice-shadow"], "over_limit",
        "{shadowed}"
    );
    assert_eq!(
        shadowed["headers"]["x-sluice-shadow-limit"], "requests/1h",
        "{shadowed}"
    );
    let retry: i64 = shadowed["headers"]["x-sluice-shadow-retry-after"]
        .as_str()
        .unwrap_or("")
        .parse()?;
    assert!((3_500..=3_600).contains(&retry), "{shadowed}");
    // Over gRPC the same service grants at once and says what it decided.
    let answer = server
        .raw_client()
        .await?
        .acquire(sluice::v1::AcquireRequest {
            service: "trial".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(answer.granted, "{answer:?}");
    let shadow = answer
        .shadow
        .ok_or_else(|| anyhow::anyhow!("no shadow decision"))?;
    assert!(!shadow.granted, "{shadow:?}");
    assert_eq!(shadow.limit, "requests/1h");
    let trial = server.client().await?.status("trial").await?;
    assert_eq!((trial.mode.as_str(), trial.limits[0].used), ("shadow", 1));

    // Envoy's grants count against the workers' budget.
    let status = server.client().await?.status("openai/gpt-4o").await?;
    assert_eq!(status.limits[0].used, 3);
    Ok(())
}
