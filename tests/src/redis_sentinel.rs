//! Redis Sentinel for tests: a master, its replica and three sentinels started on free ports
//! (optionally with a password, or TLS-only under one test CA), so tests can kill the master and
//! watch the sentinels promote the replica.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    pki::TestCa,
    redis_server::{free_port, redis_command, RedisServer, START_TIMEOUT},
};

/// The master name the sentinels of [`RedisSentinel`] watch.
pub const SENTINEL_MASTER: &str = "sluice-test";

/// A master, its replica and three sentinels watching them: a master unreachable for the
/// sentinels' `down-after-milliseconds` is failed over to the replica (two sentinels agree).
pub struct RedisSentinel {
    /// The master at start.
    pub master: RedisServer,
    /// Its replica.
    pub replica: RedisServer,
    sentinels: Vec<(Child, u16, tempfile::TempDir)>,
    /// With TLS: the CA that signed every node's certificate (PEM), and where it lives.
    tls: Option<(Vec<u8>, tempfile::TempDir)>,
}

impl RedisSentinel {
    /// Starts the five processes and waits until the sentinels know the master, its replica and
    /// each other.
    pub fn start(down_after_ms: u32) -> anyhow::Result<Self> {
        Self::start_with(down_after_ms, None, false, false)
    }

    /// [`Self::start`], the master and the replica loading the Sluice Redis module.
    pub fn start_with_module(down_after_ms: u32) -> anyhow::Result<Self> {
        Self::start_with(down_after_ms, None, false, true)
    }

    /// [`Self::start`], the master and replica requiring `password` (the sentinels know it).
    pub fn start_with_password(down_after_ms: u32, password: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(down_after_ms, password, false, false)
    }

    /// [`Self::start`] with every node speaking TLS only (certificates of one test CA:
    /// [`Self::ca_file`]), replication and the sentinels' own links included.
    pub fn start_tls(down_after_ms: u32) -> anyhow::Result<Self> {
        Self::start_with(down_after_ms, None, true, false)
    }

    fn start_with(
        down_after_ms: u32,
        password: Option<&str>,
        tls: bool,
        module: bool,
    ) -> anyhow::Result<Self> {
        let ca_dir = tempfile::tempdir()?;
        let ca = tls.then(|| TestCa::new(ca_dir.path(), "ca")).transpose()?;
        let mut auth: Vec<&str> = match password {
            Some(p) => vec!["--requirepass", p, "--masterauth", p],
            None => Vec::new(),
        };
        if tls {
            auth.extend(["--tls-replication", "yes"]);
        }
        let start = |extra: &[&str]| match &ca {
            Some(ca) => RedisServer::start_tls_signed_by(ca, extra),
            None if module => RedisServer::start_with_module(extra),
            None => RedisServer::start_with(extra),
        };
        let master = start(&auth)?;
        let master_port = master.port.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", master_port.as_str()];
        replica_args.extend(auth.iter().copied());
        let replica = start(&replica_args)?;
        let auth_pass = password
            .map(|p| format!("sentinel auth-pass {SENTINEL_MASTER} {p}\n"))
            .unwrap_or_default();
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let dir = tempfile::tempdir()?;
            let listen = match &ca {
                Some(ca) => {
                    let cert = ca.issue(&format!("sentinel-{port}"), true)?;
                    format!(
                        "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                        cert.cert.display(),
                        cert.key.display(),
                        ca.cert().display()
                    )
                }
                None => format!("port {port}\n"),
            };
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "{listen}bind 127.0.0.1\ndir {}\nsentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds {SENTINEL_MASTER} {down_after_ms}\nsentinel failover-timeout {SENTINEL_MASTER} 10000\nsentinel parallel-syncs {SENTINEL_MASTER} 1\n{auth_pass}",
                    dir.path().display()
                ),
            )?;
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server --sentinel")?;
            sentinels.push((child, port, dir));
        }
        let tls = match &ca {
            Some(ca) => Some((std::fs::read(ca.cert())?, ca_dir)),
            None => None,
        };
        let set = Self {
            master,
            replica,
            sentinels,
            tls,
        };
        let deadline = Instant::now() + START_TIMEOUT * 3;
        for url in set.sentinel_urls() {
            loop {
                let ask = |args: &[&str]| redis_command(&url, set.ca_pem(), args);
                let replicas = ask(&["SENTINEL", "REPLICAS", SENTINEL_MASTER])
                    .map(|v| matches!(v, redis::Value::Array(a) if !a.is_empty()))
                    .unwrap_or(false);
                let peers = ask(&["SENTINEL", "SENTINELS", SENTINEL_MASTER])
                    .map(|v| matches!(v, redis::Value::Array(a) if a.len() == 2))
                    .unwrap_or(false);
                if replicas && peers {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the sentinel at {url} never saw the replica and its peers");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(set)
    }

    fn ca_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|(pem, _)| pem.as_slice())
    }

    /// With TLS: the CA file that verifies every node.
    pub fn ca_file(&self) -> Option<std::path::PathBuf> {
        self.tls.as_ref().map(|(_, dir)| dir.path().join("ca.pem"))
    }

    /// The sentinels' URLs (`rediss://` with TLS).
    pub fn sentinel_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.sentinels
            .iter()
            .map(|(_, port, _)| format!("{scheme}://127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the node the sentinels name as master now, if they agree on one.
    pub fn master_port(&self) -> Option<u16> {
        let url = self.sentinel_urls().into_iter().next()?;
        match redis_command(
            &url,
            self.ca_pem(),
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
        ) {
            Ok(redis::Value::Array(addr)) => match addr.get(1) {
                Some(redis::Value::BulkString(p)) => String::from_utf8_lossy(p).parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for (child, _, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
