//! Where a test server keeps its state: [`Store`] is the memory backend, a single Redis or a
//! three-master Redis Cluster, each started fresh for the test and with its own key prefix, so
//! the same scenario runs unchanged on every backend (see [`on_every_backend!`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{
    redis_server::{RedisCluster, RedisServer},
    spawn_server, spawn_server_with, TestServer,
};

/// A state backend for test servers.
pub enum Store {
    /// The embedded memory backend (each server has its own state).
    Memory,
    /// One Redis shared by every server of the test.
    Redis(RedisServer, String),
    /// A Redis Cluster shared by every server of the test.
    Cluster(RedisCluster, String),
    /// One Redis with the Sluice module loaded, the servers deciding with it
    /// (`engine = "module"`).
    ModuleRedis(RedisServer, String),
    /// A Redis Cluster whose nodes load the Sluice module, the servers deciding with it.
    ModuleCluster(RedisCluster, String),
}

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Store {
    /// The memory backend.
    pub fn memory() -> anyhow::Result<Self> {
        Ok(Store::Memory)
    }

    /// A fresh single Redis.
    pub fn redis() -> anyhow::Result<Self> {
        Ok(Store::Redis(RedisServer::start()?, unique_prefix()))
    }

    /// A fresh three-master Redis Cluster.
    pub fn cluster() -> anyhow::Result<Self> {
        Ok(Store::Cluster(RedisCluster::start()?, unique_prefix()))
    }

    /// A fresh single Redis with the Sluice module, decided by the module.
    pub fn module_redis() -> anyhow::Result<Self> {
        Ok(Store::ModuleRedis(
            RedisServer::start_with_module(&[])?,
            unique_prefix(),
        ))
    }

    /// A fresh three-master Redis Cluster with the Sluice module, decided by the module.
    pub fn module_cluster() -> anyhow::Result<Self> {
        Ok(Store::ModuleCluster(
            RedisCluster::start_with_module()?,
            unique_prefix(),
        ))
    }

    /// `config` with this store's `[backend]` section appended.
    pub fn config(&self, config: &str) -> String {
        match self {
            Store::Memory => config.to_string(),
            Store::Redis(redis, prefix) => format!(
                "{config}\n[backend]\nkind = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"2s\"\n",
                redis.url()
            ),
            Store::Cluster(cluster, prefix) => format!(
                "{config}\n[backend]\nkind = \"redis\"\nurl = \"{}\"\ncluster = true\nkey_prefix = \"{prefix}\"\ntimeout = \"2s\"\n",
                cluster.url()
            ),
            Store::ModuleRedis(redis, prefix) => format!(
                "{config}\n[backend]\nkind = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"2s\"\nengine = \"module\"\n",
                redis.url()
            ),
            Store::ModuleCluster(cluster, prefix) => format!(
                "{config}\n[backend]\nkind = \"redis\"\nurl = \"{}\"\ncluster = true\nkey_prefix = \"{prefix}\"\ntimeout = \"2s\"\nengine = \"module\"\n",
                cluster.url()
            ),
        }
    }

    /// Starts a `sluice-server` on this store.
    pub async fn spawn_server(&self, config: &str) -> anyhow::Result<TestServer> {
        spawn_server(&self.config(config)).await
    }

    /// Starts a `sluice-server` on this store with extra command-line arguments.
    pub async fn spawn_server_with(
        &self,
        config: &str,
        args: &[&str],
    ) -> anyhow::Result<TestServer> {
        spawn_server_with(&self.config(config), args).await
    }

    /// The Redis processes behind this store (none for memory).
    pub fn redis_nodes(&self) -> Vec<&RedisServer> {
        match self {
            Store::Memory => Vec::new(),
            Store::Redis(redis, _) | Store::ModuleRedis(redis, _) => vec![redis],
            Store::Cluster(cluster, _) | Store::ModuleCluster(cluster, _) => {
                cluster.nodes.iter().collect()
            }
        }
    }

    /// Every key of `service` under this store's prefix, over all nodes, with the node holding it.
    pub fn keys(&self, service: &str) -> anyhow::Result<Vec<(String, &RedisServer)>> {
        let prefix = match self {
            Store::Memory => return Ok(Vec::new()),
            Store::Redis(_, p)
            | Store::Cluster(_, p)
            | Store::ModuleRedis(_, p)
            | Store::ModuleCluster(_, p) => p,
        };
        let mut keys = Vec::new();
        for node in self.redis_nodes() {
            let reply = node.command(&["KEYS", &format!("{{{prefix}:{service}}}:*")])?;
            if let redis::Value::Array(items) = reply {
                for item in items {
                    if let redis::Value::BulkString(b) = item {
                        keys.push((String::from_utf8_lossy(&b).into_owned(), node));
                    }
                }
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(keys)
    }
}

/// Runs an `async fn(&Store) -> anyhow::Result<()>` scenario once per backend: generates a module
/// of the same name with the tests `memory`, `redis`, `redis_cluster` and `redis_module` (a Redis
/// with the Sluice module, `engine = "module"`).
#[macro_export]
macro_rules! on_every_backend {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() -> anyhow::Result<()> {
                super::$scenario(&$crate::Store::memory()?).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() -> anyhow::Result<()> {
                super::$scenario(&$crate::Store::redis()?).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() -> anyhow::Result<()> {
                super::$scenario(&$crate::Store::cluster()?).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_module() -> anyhow::Result<()> {
                super::$scenario(&$crate::Store::module_redis()?).await
            }
        }
    };
}
