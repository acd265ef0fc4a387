//! Real Redis processes for tests: [`RedisServer`] starts one `redis-server` on a free port,
//! [`RedisCluster`] three masters joined with `redis-cli --cluster create`. Nothing depends on a
//! Redis on 6379; every process is killed when its handle is dropped. No persistence, loopback
//! only, state in a temporary directory.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One `redis-server` process.
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// A port that is free now, and whose cluster bus port (+10000) is free too.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port < 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair found")
}

fn redis_command(port: u16, args: &[&str]) -> anyhow::Result<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query(&mut con)?)
}

/// Runs a command against the server on `port` and returns its reply as text.
pub fn redis_text(port: u16, args: &[&str]) -> anyhow::Result<String> {
    Ok(match redis_command(port, args)? {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::SimpleString(s) => s,
        redis::Value::VerbatimString { text, .. } => text,
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Okay => "OK".to_string(),
        other => format!("{other:?}"),
    })
}

impl RedisServer {
    /// Starts a standalone server.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let mut last_error = None;
        // A port found free may be taken before redis binds it: try a few.
        for _ in 0..5 {
            match Self::try_start(extra) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis did not start")))
    }

    fn try_start(extra: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(port, &dir, &extra)?;
        let mut server = Self {
            child,
            port,
            dir,
            extra,
        };
        server.wait_for_ping()?;
        Ok(server)
    }

    fn spawn(port: u16, dir: &tempfile::TempDir, extra: &[String]) -> anyhow::Result<Child> {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is Redis installed? .ci/run installs it)")
    }

    fn wait_for_ping(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server on port {port} exited with {status}");
            }
            if redis_text(port, &["PING"]).is_ok_and(|r| r == "PONG") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer PING");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process: clients see the connection drop and nothing answers on the port.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        self.child.wait()?;
        Ok(())
    }

    /// Starts the process again on the same port, with empty data (nothing is persisted).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.child = Self::spawn(self.port, &self.dir, &self.extra)?;
        self.wait_for_ping()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a command and returns its reply as text.
    pub fn text(&self, args: &[&str]) -> anyhow::Result<String> {
        redis_text(self.port, args)
    }

    /// Runs a command and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<redis::Value> {
        redis_command(self.port, args)
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis-server:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three `redis-server` masters forming a Redis Cluster (no replicas).
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits until every node reports it healthy.
    pub fn start() -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ])?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &nodes {
            loop {
                let info = node.text(&["CLUSTER", "INFO"]).unwrap_or_default();
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("cluster never became healthy: {info}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Self { nodes })
    }

    /// The URL of the first node; cluster clients discover the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }
}
