//! The status page: `GET /api/status` through a real server on every backend (on Redis, the
//! shared state: what one replica's answers did shows on another's page), guarded by `[auth]`
//! with a secret-looking header value hidden; and the page itself in headless Chromium, where a
//! reported 429 shows up as a cooldown within a second, with a screenshot saved under
//! `target/test-artifacts/`.

use std::{process::Stdio, time::Duration};

use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use sluice_e2e::{http_get_with as get, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CONFIG: &str = r#"
[[services]]
name = "llm"
limits = [
  { dimension = "requests", amount = 5, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m" },
]
"#;

const TOKEN: &str = "status-page-token-0123456789";
const READ_ONLY: &str = "read-only-dashboard-0123456789";

async fn status_json(addr: &str, authorization: Option<&str>) -> anyhow::Result<Value> {
    let (status, _, body) = get(addr, "/api/status", authorization).await?;
    anyhow::ensure!(status.contains("200"), "{status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// `/api/status` once `ready` says so (answers are reused for 250 ms), within 10 s.
async fn json_once(addr: &str, ready: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let json = status_json(addr, None).await?;
        if ready(&json) {
            return Ok(json);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never ready: {json}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn service<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["service"] == name))
        .unwrap_or_else(|| panic!("{name} not in {status}"))
}

sluice_e2e::on_every_backend!(the_json_shows_budgets_cooldowns_and_the_last_answer);

async fn the_json_shows_budgets_cooldowns_and_the_last_answer(store: &Store) -> anyhow::Result<()> {
    let args = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--status-listen",
        "127.0.0.1:0",
    ];
    let server = store.spawn_server_with(CONFIG, &args).await?;
    // A second replica: on Redis its page shows what the first one's answers did.
    let other = store.spawn_server_with(CONFIG, &args).await?;
    let addr = server.status_addr()?;

    let (status, headers, page) = get(&addr, "/", None).await?;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(page.contains("api/status") && page.contains("<title>Sluice status"));
    // The metrics listener serves the page too.
    let on_metrics = status_json(&server.metrics_addr()?, None).await?;
    assert_eq!(service(&on_metrics, "llm")["limits"][0]["used"], 0);

    let client = server.client().await?;
    let lease = client.acquire("llm").tokens(300).without_sleep().await?;
    client.acquire("llm").tokens(100).without_sleep().await?;
    let mut provider = HeaderMap::new();
    provider.insert("retry-after", HeaderValue::from_static("30"));
    provider.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("sk-looks-like-a-secret"),
    );
    lease
        .report(StatusCode::TOO_MANY_REQUESTS, &provider, None)
        .await?;

    let shared = !store.redis_nodes().is_empty();
    let seen_by = if shared { &other } else { &server };
    // An answer is shared by every viewer for 250 ms: read until the report shows.
    let json = json_once(&seen_by.status_addr()?, |json| {
        service(json, "llm")["last_report"].is_object()
    })
    .await?;
    let llm = service(&json, "llm");
    assert_eq!(llm["limits"][0]["used"], 2, "{llm}");
    assert_eq!(llm["limits"][0]["effective_amount"], 5);
    assert_eq!(llm["limits"][1]["used"], 400, "{llm}");
    assert_eq!(llm["limits"][1]["dimension"], "tokens");
    assert_eq!(llm["limits"][1]["window_ms"], 60_000);
    assert_eq!(llm["scope"], "shared");
    let cooldown = &llm["cooldowns"][0];
    assert_eq!(cooldown["status_code"], 429, "{llm}");
    let left = cooldown["remaining_ms"].as_u64().unwrap_or(0);
    assert!(left > 20_000 && left <= 30_000, "{cooldown}");
    let report = &llm["last_report"];
    assert_eq!(report["status_code"], 429);
    let headers = report["headers"].to_string();
    assert!(headers.contains(r#"["retry-after","30"]"#), "{headers}");
    assert!(
        !headers.contains("sk-looks"),
        "a secret-looking value is hidden: {headers}"
    );
    assert!(headers.contains("(hidden)"), "{headers}");
    assert!(json["generated_at_unix_ms"].as_u64().is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_page_and_its_json_need_the_token() -> anyhow::Result<()> {
    let config =
        format!("[auth]\ntokens = [\"{TOKEN}\"]\nstatus_tokens = [\"{READ_ONLY}\"]\n{CONFIG}");
    let server = Store::memory()?
        .spawn_server_with(&config, &["--status-listen", "127.0.0.1:0"])
        .await?;
    let addr = server.status_addr()?;
    for path in ["/", "/api/status"] {
        let (status, headers, body) = get(&addr, path, None).await?;
        assert!(status.contains("401"), "{path}: {status}");
        assert!(headers.contains("www-authenticate: basic"), "{headers}");
        assert!(!body.contains("llm"), "nothing shown without the token");
        let (status, _, _) = get(&addr, path, Some("Bearer wrong-token-0123456789")).await?;
        assert!(status.contains("401"), "{path}: {status}");
    }
    // With read-only status tokens configured, they open the page and its JSON (as Bearer, or
    // as the Basic password a browser sends after asking); the API token does not.
    let json = status_json(&addr, Some(&format!("Bearer {READ_ONLY}"))).await?;
    assert_eq!(service(&json, "llm")["limits"][0]["used"], 0);
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{READ_ONLY}"));
    let (status, _, page) = get(&addr, "/", Some(&format!("Basic {basic}"))).await?;
    assert!(status.contains("200") && page.contains("<title>Sluice status"));
    let (status, _, _) = get(&addr, "/api/status", Some(&format!("Bearer {TOKEN}"))).await?;
    assert!(status.contains("401"), "{status}");
    assert!(!page.contains(READ_ONLY) && !server.log().contains(READ_ONLY));
    assert!(server.log().contains("plain HTTP"), "the warning is logged");
    // The read-only token is nothing to the API.
    let mut raw = server.raw_client().await?;
    let mut request = tonic::Request::new(sluice::v1::GetStatusRequest {
        service: "llm".into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {READ_ONLY}").parse()?);
    let refused = raw.get_status(request).await.expect_err("not an API token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // Without status tokens, the API tokens open the page.
    let config = format!("[auth]\ntokens = [\"{TOKEN}\"]\n{CONFIG}");
    let server = Store::memory()?
        .spawn_server_with(&config, &["--status-listen", "127.0.0.1:0"])
        .await?;
    let addr = server.status_addr()?;
    let (status, _, _) = get(&addr, "/api/status", None).await?;
    assert!(status.contains("401"), "{status}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{TOKEN}"));
    let (status, _, _) = get(&addr, "/", Some(&format!("Basic {basic}"))).await?;
    assert!(status.contains("200"), "{status}");
    let json = status_json(&addr, Some(&format!("Bearer {TOKEN}"))).await?;
    assert_eq!(service(&json, "llm")["service"], "llm");
    assert!(!server.log().contains(TOKEN), "tokens never logged");
    Ok(())
}

/// The browser script's next line (it has a minute: Chromium's first start is slow).
async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<String> {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    line??.ok_or_else(|| anyhow::anyhow!("the browser script ended early"))
}

/// Where Debian's Chromium is (SLUICE_CHROMIUM overrides).
fn chromium() -> String {
    std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_reported_429_shows_as_a_cooldown_within_a_second() -> anyhow::Result<()> {
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/browser");
    anyhow::ensure!(
        std::path::Path::new(&chromium()).exists(),
        "this test needs Chromium at {} (Debian: apt-get install chromium; scripts/test installs it)",
        chromium()
    );
    anyhow::ensure!(
        std::path::Path::new(browser_dir)
            .join("node_modules/playwright-core")
            .exists(),
        "this test needs `npm ci` in {browser_dir} (scripts/test runs it)"
    );
    let artifacts = concat!(env!("CARGO_TARGET_TMPDIR"), "/../test-artifacts");
    std::fs::create_dir_all(artifacts)?;
    let screenshot = format!("{artifacts}/status-page.png");
    let _ = std::fs::remove_file(&screenshot);

    let server = Store::memory()?
        .spawn_server_with(CONFIG, &["--status-listen", "127.0.0.1:0"])
        .await?;
    let url = format!("http://{}/", server.status_addr()?);
    let client = server.client().await?;
    let lease = client.acquire("llm").tokens(250).without_sleep().await?;

    let mut node = tokio::process::Command::new("node")
        .arg(format!("{browser_dir}/status-page.mjs"))
        .args([url.as_str(), "llm", screenshot.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = node
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let stdout = node
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(next_line(&mut lines).await?, "ready");

    let mut provider = HeaderMap::new();
    provider.insert("retry-after", HeaderValue::from_static("30"));
    lease
        .report(StatusCode::TOO_MANY_REQUESTS, &provider, None)
        .await?;
    stdin.write_all(b"reported\n").await?;

    let seen = next_line(&mut lines).await?;
    let (after, text) = seen
        .strip_prefix("cooldown ")
        .and_then(|rest| rest.split_once(' '))
        .ok_or_else(|| anyhow::anyhow!("unexpected: {seen}"))?;
    let after: u64 = after.parse()?;
    assert!(
        after <= 1_000,
        "the cooldown showed {after} ms after the report"
    );
    assert!(
        text.contains("cooling down") && text.contains("429"),
        "{text}"
    );
    assert!(text.contains("1 / 5"), "the request bar: {text}");
    assert_eq!(
        next_line(&mut lines).await?,
        format!("screenshot {screenshot}")
    );
    assert!(
        std::fs::metadata(&screenshot)?.len() > 10_000,
        "a real image"
    );
    drop(stdin);
    let exit = tokio::time::timeout(Duration::from_secs(30), node.wait()).await??;
    assert!(exit.success(), "{exit}");
    Ok(())
}
