//! End-to-end test harness: [`spawn_server`] writes a config file, starts a real `sluice-server`
//! process listening on port 0, learns its address from its log, and polls gRPC health until it
//! serves. The process is killed when the [`TestServer`] is dropped.

pub mod pki;
pub mod polyglot;
pub mod provider;
pub mod proxy;
pub mod redis_sentinel;
pub mod redis_server;
pub mod sdk;
mod store;

pub use store::Store;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The services the clients' test scripts (`clients/python/tests`, `clients/node/test`) expect:
/// `llm` with request and token limits, and `slow`, one request per second.
pub const WORKER_EXAMPLES_CONFIG: &str = r#"
[[services]]
name = "llm"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 100000, window = "1m" },
]

[[services]]
name = "slow"
limits = [{ dimension = "requests", amount = 1, window = "1s" }]

[[services]]
name = "pool"
limits = [{ dimension = "concurrent", amount = 1, timeout = "10m" }]
"#;

/// How long a server may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `sluice-server` process.
pub struct TestServer {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: Arc<Mutex<String>>,
    config: PathBuf,
}

/// The `sluice-server` binary: `SLUICE_SERVER_BIN`, else the one next to the test executable
/// (built by `cargo test --workspace`), else built now. `cargo test -p sluice-e2e` alone does not
/// rebuild an existing binary: after changing the server, run the workspace tests (or
/// `cargo build -p sluice-server`) first.
fn server_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("SLUICE_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    // Test executables live in target/<profile>/deps; the server binary one level up.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let bin = profile_dir.join(format!("sluice-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "sluice-server", "--bin", "sluice-server"])
            .status()
            .context("building sluice-server")?;
        if !status.success() {
            bail!("cargo build -p sluice-server failed");
        }
    }
    Ok(bin)
}

fn config_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "sluice-e2e-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Starts a server with `config` (TOML; `listen` is overridden to port 0) and waits until its
/// health service answers SERVING.
pub async fn spawn_server(config: &str) -> anyhow::Result<TestServer> {
    spawn_server_with(config, &[]).await
}

/// [`spawn_server`] with extra command-line arguments, e.g. `["--log-format", "json"]`.
pub async fn spawn_server_with(config: &str, args: &[&str]) -> anyhow::Result<TestServer> {
    let mut server = spawn_server_unready(config, args).await?;
    server.wait_until_serving().await?;
    Ok(server)
}

/// Starts a server and waits until it listens, not until it is ready (e.g. its Redis is away).
pub async fn spawn_server_unready(config: &str, args: &[&str]) -> anyhow::Result<TestServer> {
    let path = config_path();
    std::fs::write(&path, config)?;
    let mut child = Command::new(server_binary()?)
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sluice-server")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = mpsc::channel();
    let log_writer = log.clone();
    // Drains the server's log for the whole run, so the pipe never fills up.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // `addr=127.0.0.1:1234` in text logs, `"addr":"127.0.0.1:1234"` in JSON logs.
            if let Some(addr) = line.split(" addr=").nth(1) {
                let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                let _ = addr_tx.send(addr);
            } else if let Some(addr) = line.split("\"addr\":\"").nth(1) {
                let addr = addr.split('"').next().unwrap_or("").to_string();
                let _ = addr_tx.send(addr);
            }
            if let Ok(mut log) = log_writer.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(START_TIMEOUT)).await?;
    let mut server = TestServer {
        child,
        url: String::new(),
        addr: String::new(),
        log,
        config: path,
    };
    let addr = match addr {
        Ok(addr) => addr,
        Err(_) => bail!("server did not report its address; log:\n{}", server.log()),
    };
    server.url = format!("http://{addr}");
    server.addr = addr;
    Ok(server)
}

impl TestServer {
    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of the metrics endpoint, as the server logged it (`--metrics-listen`).
    pub fn metrics_addr(&self) -> anyhow::Result<String> {
        self.logged_addr("metrics_addr")
    }

    /// The address of the status page's own listener, as logged (`--status-listen`).
    pub fn status_addr(&self) -> anyhow::Result<String> {
        self.logged_addr("status_addr")
    }

    fn logged_addr(&self, field: &str) -> anyhow::Result<String> {
        let log = self.log();
        log.split(&format!("{field}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no {field} in the log:\n{log}"))
    }

    /// The body of `GET /metrics`.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        let (status, body) = http_get(&self.metrics_addr()?, "/metrics").await?;
        anyhow::ensure!(status.contains("200"), "GET /metrics: {status}");
        Ok(body)
    }

    /// Replaces the server's config file (it is read again on SIGHUP or `Admin/ReloadConfig`).
    pub fn write_config(&self, config: &str) -> anyhow::Result<()> {
        // Written aside and renamed, so a reload never reads half a file.
        let staged = self.config.with_extension("toml.new");
        std::fs::write(&staged, config)?;
        std::fs::rename(&staged, &self.config)?;
        Ok(())
    }

    /// Sends `signal` (e.g. `"HUP"`) to the server.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }

    /// Waits until the log contains `text` `times` times (the server logs it asynchronously).
    pub async fn wait_for_log(&self, text: &str, times: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while self.log().matches(text).count() < times {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{text:?} never appeared {times} times in the log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A health client on a fresh connection.
    pub async fn health(&self) -> anyhow::Result<HealthClient<tonic::transport::Channel>> {
        let channel = tonic::transport::Endpoint::from_shared(self.url.clone())?
            .connect()
            .await?;
        Ok(HealthClient::new(channel))
    }

    /// A raw gRPC client of the API.
    pub async fn raw_client(
        &self,
    ) -> anyhow::Result<sluice::v1::rate_limiter_client::RateLimiterClient<tonic::transport::Channel>>
    {
        Ok(sluice::v1::rate_limiter_client::RateLimiterClient::connect(self.url.clone()).await?)
    }

    /// The Rust client.
    pub async fn client(&self) -> anyhow::Result<sluice_client::Client> {
        Ok(sluice_client::Client::connect(self.url.clone()).await?)
    }

    /// The health status the server reports for the API now.
    pub async fn serving_status(&self) -> anyhow::Result<ServingStatus> {
        let request = HealthCheckRequest {
            service: "sluice.v1.RateLimiter".into(),
        };
        let status = self
            .health()
            .await?
            .check(request)
            .await?
            .into_inner()
            .status;
        ServingStatus::try_from(status).map_err(|e| anyhow::anyhow!("health status: {e}"))
    }

    /// Waits until health reports SERVING.
    pub async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut backoff = Duration::from_millis(5);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited with {status}; log:\n{}", self.log());
            }
            if let Ok(mut health) = self.health().await {
                let request = HealthCheckRequest {
                    service: "sluice.v1.RateLimiter".into(),
                };
                if let Ok(r) = health.check(request).await {
                    if r.into_inner().status == ServingStatus::Serving as i32 {
                        return Ok(());
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("server never became healthy; log:\n{}", self.log());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits for the process to exit, returning its exit code.
    pub async fn terminate(mut self) -> anyhow::Result<Option<i32>> {
        self.signal("TERM")?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("server did not exit after SIGTERM; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// `GET path` over plain HTTP/1.0: the status line and the body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(String, String)> {
    let (status, _, body) = http_get_with(addr, path, None).await?;
    Ok((status, body))
}

/// `GET path` over plain HTTP/1.0 with an optional `Authorization` value: the status line, the
/// headers (lowercased) and the body.
pub async fn http_get_with(
    addr: &str,
    path: &str,
    authorization: Option<&str>,
) -> anyhow::Result<(String, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end in {response:?}"))?;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_string(), headers.to_lowercase(), body.to_string()))
}

/// The value of the Prometheus sample whose line starts with `series` (name and labels as
/// rendered).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The server's slot time of a permit, in microseconds since the Unix epoch.
pub fn micros(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
