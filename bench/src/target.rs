//! What the load is aimed at: a `sluice-server` (the library's `run`) or the no-op server, each on
//! its own two-thread runtime in its own OS thread, so the load generator's runtime does not
//! schedule the server's work; or a server somebody else started (`--addr`). Also the Redis the
//! Redis backend uses: started here on a free port unless a URL is given.

use std::{net::SocketAddr, thread::JoinHandle};

use anyhow::Context;
use sluice_e2e::redis_server::{RedisCluster, RedisServer};
use sluice_server::config::Config;
use tokio::sync::oneshot;

/// A server running in this process; stopped when dropped.
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts `serve(listener, shutdown)` on a fresh runtime with `threads` workers.
    fn start<F, Fut>(threads: usize, serve: F) -> anyhow::Result<Self>
    where
        F: FnOnce(tokio::net::TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let (stop, stopped) = oneshot::channel();
        let (ready, bound) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                ready.send(listener.local_addr()?)?;
                serve(listener, stopped).await
            })
        });
        let addr = bound
            .recv()
            .context("the server thread ended before binding")?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A `sluice-server` with `config`.
    pub fn sluice(threads: usize, config: Config) -> anyhow::Result<Self> {
        Self::start(threads, move |listener, stopped| async move {
            sluice_server::run(listener, config, async move {
                let _ = stopped.await;
            })
            .await?;
            Ok(())
        })
    }

    /// The no-op server.
    pub fn noop(threads: usize) -> anyhow::Result<Self> {
        Self::start(threads, crate::noop::serve)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("server ended with an error: {e:#}"),
                Err(_) => eprintln!("server thread panicked"),
            }
        }
    }
}

/// The Redis a benchmark uses: given by URL, or started here (and stopped when dropped).
pub enum Redis {
    /// Somebody else's.
    External(String, bool),
    /// One `redis-server` started on a free port.
    Single(RedisServer),
    /// A three-master cluster started on free ports.
    Cluster(RedisCluster),
    /// One of the above with the Sluice module loaded, decided by the module
    /// (`engine = "module"`).
    Module(Box<Redis>),
}

impl Redis {
    /// Connects to `url`, or starts a server (or a cluster) when `url` is `None`.
    pub fn new(url: Option<String>, cluster: bool) -> anyhow::Result<Self> {
        Ok(match (url, cluster) {
            (Some(url), cluster) => Redis::External(url, cluster),
            (None, false) => Redis::Single(RedisServer::start()?),
            (None, true) => Redis::Cluster(RedisCluster::start()?),
        })
    }

    /// [`Redis::new`] with the Sluice module loaded (started here) or assumed loaded (`url`),
    /// decided by the module.
    pub fn with_module(url: Option<String>, cluster: bool) -> anyhow::Result<Self> {
        let redis = match (url, cluster) {
            (Some(url), cluster) => Redis::External(url, cluster),
            (None, false) => Redis::Single(RedisServer::start_with_module(&[])?),
            (None, true) => Redis::Cluster(RedisCluster::start_with_module()?),
        };
        Ok(Redis::Module(Box::new(redis)))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        match self {
            Redis::External(url, _) => url.clone(),
            Redis::Single(r) => r.url(),
            Redis::Cluster(c) => c.url(),
            Redis::Module(r) => r.url(),
        }
    }

    /// The URL of every node (an external cluster: the one node given).
    pub fn node_urls(&self) -> Vec<String> {
        match self {
            Redis::Cluster(c) => c.nodes.iter().map(RedisServer::url).collect(),
            Redis::Module(r) => r.node_urls(),
            _ => vec![self.url()],
        }
    }

    /// True for a cluster.
    pub fn cluster(&self) -> bool {
        match self {
            Redis::Module(r) => r.cluster(),
            r => matches!(r, Redis::External(_, true) | Redis::Cluster(_)),
        }
    }

    /// The `[backend]` section for a server using it, with its own key prefix.
    pub fn backend_toml(&self, prefix: &str) -> String {
        format!(
            "[backend]\nkind = \"redis\"\nurl = \"{}\"\ncluster = {}\nkey_prefix = \"{prefix}\"\n{}",
            self.url(),
            self.cluster(),
            if matches!(self, Redis::Module(_)) {
                "engine = \"module\"\n"
            } else {
                ""
            }
        )
    }
}

/// Which limits the benchmark's services have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Limits far above the load: every acquire is granted (and booked).
    Grant,
    /// One request per hour: after the first, every acquire is denied (nothing is written).
    Deny,
    /// As `grant`, each service also holding an in-flight slot per call (a `concurrent` limit far
    /// above the load, lease timeout 1 s: the benchmark never reports).
    InFlight,
    /// As `grant`, every service a child of `bench-org`: each decision spans two ledgers (on
    /// Redis, the family script).
    Family,
}

/// The services `bench-0` … `bench-{n-1}`, each with a request and a token limit.
pub fn services_toml(n: usize, mix: Mix) -> String {
    let (requests, tokens, window) = match mix {
        Mix::Deny => (1, 1_000_000, "1h"),
        _ => (1_000_000_000u64, 1_000_000_000_000u64, "1s"),
    };
    let mut out = String::new();
    let mut parent = "";
    if mix == Mix::Family {
        out.push_str(&format!(
            "[[services]]\nname = \"bench-org\"\nlimits = [{{ dimension = \"tokens\", amount = {tokens}, window = \"{window}\" }}]\n\n"
        ));
        parent = "parent = \"bench-org\"\n";
    }
    let in_flight = if mix == Mix::InFlight {
        "  { dimension = \"concurrent\", amount = 1000000000, timeout = \"1s\" },\n"
    } else {
        ""
    };
    for i in 0..n {
        out.push_str(&format!(
            "[[services]]\nname = \"bench-{i}\"\n{parent}limits = [\n{in_flight}  {{ dimension = \"requests\", amount = {requests}, window = \"{window}\" }},\n  {{ dimension = \"tokens\", amount = {tokens}, window = \"{window}\" }},\n]\n\n"
        ));
    }
    out
}
