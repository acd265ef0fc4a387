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

use crate::pki::TestCa;

pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` process.
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    tls: bool,
    ca: Option<Vec<u8>>,
}

/// A port that is free now, and whose cluster bus port (+10000) is free too.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port < 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair found")
}

pub(crate) fn redis_command(
    url: &str,
    ca: Option<&[u8]>,
    args: &[&str],
) -> anyhow::Result<redis::Value> {
    let client = match ca {
        Some(ca) => {
            // rediss:// needs a TLS crypto provider; installing it twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.to_vec()),
                },
            )?
        }
        None => redis::Client::open(url)?,
    };
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query(&mut con)?)
}

/// Runs a command against the server at `url` and returns its reply as text.
fn redis_text(url: &str, ca: Option<&[u8]>, args: &[&str]) -> anyhow::Result<String> {
    Ok(match redis_command(url, ca, args)? {
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

    /// Starts a server that only speaks TLS, with a certificate from a test CA made by `openssl`.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(&["--tls"])
    }

    /// Starts a standalone server with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_signed_by(None, extra)
    }

    /// A TLS-only server whose certificate `ca` signs (servers that must trust each other, e.g. a
    /// master, its replica and their sentinels), with extra arguments.
    pub fn start_tls_signed_by(ca: &TestCa, extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["--tls"];
        args.extend(extra);
        Self::start_signed_by(Some(ca), &args)
    }

    fn start_signed_by(ca: Option<&TestCa>, extra: &[&str]) -> anyhow::Result<Self> {
        let mut last_error = None;
        // A port found free may be taken before redis binds it: try a few.
        for _ in 0..5 {
            match Self::try_start(extra, ca) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis did not start")))
    }

    fn try_start(extra: &[&str], signer: Option<&TestCa>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let tls = extra.contains(&"--tls");
        let mut extra: Vec<String> = extra
            .iter()
            .filter(|a| **a != "--tls")
            .map(|s| s.to_string())
            .collect();
        let own;
        let signer = match (tls, signer) {
            (false, _) => None,
            (true, Some(ca)) => Some(ca),
            (true, None) => {
                own = TestCa::new(dir.path(), "ca")?;
                Some(&own)
            }
        };
        let mut ca = None;
        if let Some(signer) = signer {
            extra.extend(Self::tls_args(port, signer)?);
            ca = Some(std::fs::read(signer.cert())?);
        }
        let child = Self::spawn(if tls { 0 } else { port }, &dir, &extra)?;
        let mut server = Self {
            child,
            port,
            dir,
            extra,
            tls,
            ca,
        };
        server.wait_for_ping()?;
        Ok(server)
    }

    /// TLS arguments with a server certificate for 127.0.0.1 signed by `ca` (see [`TestCa`]).
    fn tls_args(port: u16, ca: &TestCa) -> anyhow::Result<Vec<String>> {
        let server = ca.issue(&format!("redis-{port}"), true)?;
        let file = |p: &std::path::Path| p.display().to_string();
        Ok(vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file(&server.cert),
            "--tls-key-file".into(),
            file(&server.key),
            "--tls-ca-cert-file".into(),
            file(&ca.cert()),
            "--tls-auth-clients".into(),
            "no".into(),
        ])
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
            let error = match redis_text(&self.url(), self.ca.as_deref(), &["PING"]) {
                Ok(reply) if reply == "PONG" => return Ok(()),
                Ok(reply) => anyhow::anyhow!("PING answered {reply:?}"),
                // A server with a password answers, just not to strangers.
                Err(e) if e.to_string().contains("NOAUTH") => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer PING: {error:#}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The CA (PEM) that signed a TLS server's certificate.
    pub fn ca_file(&self) -> Option<std::path::PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// Kills the process: clients see the connection drop and nothing answers on the port.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        self.child.wait()?;
        Ok(())
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing answers, as when Redis
    /// is black-holed by the network.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.send("-STOP")
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.send("-CONT")
    }

    fn send(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {signal} redis-server failed");
        }
        Ok(())
    }

    /// Starts the process again on the same port, with empty data (nothing is persisted).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        let port = if self.tls { 0 } else { self.port };
        self.child = Self::spawn(port, &self.dir, &self.extra)?;
        self.wait_for_ping()
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://127.0.0.1:<port>` when it speaks TLS (trust
    /// [`RedisServer::ca_file`] to verify it).
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://127.0.0.1:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// Runs a command and returns its reply as text.
    pub fn text(&self, args: &[&str]) -> anyhow::Result<String> {
        redis_text(&self.url(), self.ca.as_deref(), args)
    }

    /// Runs a command and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<redis::Value> {
        redis_command(&self.url(), self.ca.as_deref(), args)
    }

    /// Calls of `command` (lowercase, as `INFO commandstats` names it, e.g. `fcall` or
    /// `function|load`) that ran to the end so far, scripts' own calls included.
    pub fn calls_of(&self, command: &str) -> anyhow::Result<u64> {
        let info = self.text(&["INFO", "commandstats"])?;
        let field = |rest: &str, name: &str| -> u64 {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
            .map_or(0, |rest| {
                field(rest, "calls=") - field(rest, "failed_calls=")
            }))
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

/// The Sluice Redis module built beside the running test binary
/// (`target/<profile>/libsluice_redis_module.so`; `cargo test --workspace` builds it).
pub fn sluice_module() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("the test binary has no folder")?;
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        let candidate = dir.join("libsluice_redis_module.so");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "libsluice_redis_module.so is not built beside {} (cargo build -p sluice-redis-module)",
        deps.display()
    )
}

impl RedisServer {
    /// Starts one with the Sluice module loaded, and `extra` arguments.
    pub fn start_with_module(extra: &[&str]) -> anyhow::Result<Self> {
        let module = sluice_module()?;
        let module = module.to_str().context("the module's path is not UTF-8")?;
        let mut args = vec!["--loadmodule", module];
        args.extend(extra);
        Self::start_with(&args)
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
        Self::create(3, 0, 5000, false)
    }

    /// [`Self::start`], every node with the Sluice module loaded.
    pub fn start_with_module() -> anyhow::Result<Self> {
        Self::create(3, 0, 5000, true)
    }

    /// Starts three masters each with a replica (six nodes), a node timeout of `node_timeout_ms`
    /// (a master unreachable that long is failed over to its replica), and waits until every
    /// master has its replica in sync.
    pub fn start_replicated(node_timeout_ms: u32) -> anyhow::Result<Self> {
        Self::create(6, 1, node_timeout_ms, false)
    }

    /// [`Self::start_replicated`], every node loading the Sluice Redis module.
    pub fn start_replicated_with_module(node_timeout_ms: u32) -> anyhow::Result<Self> {
        Self::create(6, 1, node_timeout_ms, true)
    }

    /// `count` nodes with `replicas` replicas per master: created, and healthy on every node
    /// (replicas in sync with their masters).
    fn create(
        count: usize,
        replicas: usize,
        node_timeout_ms: u32,
        module: bool,
    ) -> anyhow::Result<Self> {
        let timeout = node_timeout_ms.to_string();
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout,
        ];
        let mut nodes = Vec::new();
        for _ in 0..count {
            nodes.push(if module {
                RedisServer::start_with_module(&args)?
            } else {
                RedisServer::start_with(&args)?
            });
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let known = format!("cluster_known_nodes:{count}");
        let deadline = Instant::now() + START_TIMEOUT * 3;
        for node in &nodes {
            loop {
                let info = node.text(&["CLUSTER", "INFO"]).unwrap_or_default();
                let replication = node.text(&["INFO", "replication"]).unwrap_or_default();
                let synced = replicas == 0
                    || if replication.contains("role:master") {
                        replication.contains(&format!("connected_slaves:{replicas}"))
                    } else {
                        replication.contains("master_link_status:up")
                    };
                if info.contains("cluster_state:ok") && info.contains(&known) && synced {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("cluster never became healthy: {info}{replication}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Self { nodes })
    }

    /// The node that is master of `key`'s hash slot now.
    pub fn master_of(&self, key: &str) -> anyhow::Result<usize> {
        let slot: i64 = self.nodes[0].text(&["CLUSTER", "KEYSLOT", key])?.parse()?;
        for (i, node) in self.nodes.iter().enumerate() {
            let replication = node.text(&["INFO", "replication"]).unwrap_or_default();
            if !replication.contains("role:master") {
                continue;
            }
            let redis::Value::Array(ranges) = node.command(&["CLUSTER", "SLOTS"])? else {
                continue;
            };
            // CLUSTER SLOTS: [start, end, [master host, port, id], replicas...] per range.
            for range in ranges {
                let redis::Value::Array(fields) = range else {
                    continue;
                };
                let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                    (fields.first(), fields.get(1))
                else {
                    continue;
                };
                let Some(redis::Value::Array(master)) = fields.get(2) else {
                    continue;
                };
                if (*start..=*end).contains(&slot)
                    && matches!(master.get(1), Some(redis::Value::Int(p)) if *p == i64::from(node.port))
                {
                    return Ok(i);
                }
            }
        }
        bail!("no master serves slot {slot} of {key}")
    }

    /// The URL of the first node; cluster clients discover the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }
}
