//! The connection to Redis and how it is made. A server starts whether or not Redis answers: the
//! first attempt is made at start, and if it fails a background task keeps trying with a short
//! capped backoff, so the server turns ready soon after Redis appears. Until then every call
//! fails as an outage would (and follows `on_failure`). Once made, the connection is multiplexed
//! and reconnects by itself (the redis crate's `ConnectionManager`, its cluster connection, or
//! for Sentinel [`SentinelLink`], which follows the master).

use std::{
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use redis::{
    aio::ConnectionManager, aio::ConnectionManagerConfig, cluster::ClusterClient,
    cluster_async::ClusterConnection, Cmd, FromRedisValue, RedisError,
};

use super::sentinel::SentinelLink;
use super::settings::{RedisConfig, RedisUrl, SentinelConfig};
use super::RedisSetupError;

/// First wait between connection attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between connection attempts: Redis is found at most this long after it appears.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A multiplexed connection that reconnects by itself: to one Redis, or to a cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelLink>),
}

impl Connection {
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        match self.clone() {
            Connection::Single(mut c) => cmd.query_async(&mut c).await,
            Connection::Cluster(mut c) => cmd.query_async(&mut c).await,
            Connection::Sentinel(link) => {
                let value = link.query(cmd).await?;
                T::from_redis_value(value).map_err(RedisError::from)
            }
        }
    }
}

/// Where and how to connect.
struct Target {
    url: RedisUrl,
    sentinel: Option<SentinelConfig>,
    cluster: bool,
    timeout: Duration,
    ca: Option<Vec<u8>>,
}

impl Target {
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    async fn open(&self) -> Result<Connection, RedisError> {
        if let Some(sentinel) = &self.sentinel {
            let link = SentinelLink::new(sentinel, &self.url, self.ca.as_deref(), self.timeout)?;
            link.connect().await?;
            return Ok(Connection::Sentinel(Arc::new(link)));
        }
        if self.cluster {
            let mut builder = ClusterClient::builder([self.url.expose()])
                .connection_timeout(self.timeout)
                .response_timeout(self.timeout);
            if let Some(certificates) = self.certificates() {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            return Ok(Connection::Cluster(client.get_async_connection().await?));
        }
        let client = match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(self.url.expose(), certificates),
            None => redis::Client::open(self.url.expose()),
        }?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2);
        Ok(Connection::Single(
            ConnectionManager::new_with_config(client, manager).await?,
        ))
    }

    /// One attempt, bounded by the timeout (a black-holed Redis must not hold the start).
    async fn attempt(&self) -> Result<Connection, String> {
        match tokio::time::timeout(self.timeout + self.timeout, self.open()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout * 2)),
        }
    }
}

/// The connection, once made, and why it is not made yet.
#[derive(Default)]
struct Shared {
    connection: OnceLock<Connection>,
    last_error: Mutex<String>,
}

/// The backend's link to Redis.
pub(super) struct Link {
    shared: Arc<Shared>,
    /// The task that keeps trying to connect; aborted when the link is dropped.
    connector: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        let task = self
            .connector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl Link {
    fn target(config: &RedisConfig) -> Result<Target, RedisSetupError> {
        // rediss:// URLs use rustls with the ring provider; a provider installed before wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = match &config.tls_ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|source| RedisSetupError::TlsCa {
                    path: path.display().to_string(),
                    source,
                })?,
            ),
            None => None,
        };
        Ok(Target {
            url: config.url.clone(),
            sentinel: config.sentinel.clone(),
            cluster: config.cluster,
            timeout: config.timeout,
            ca,
        })
    }

    fn with(connection: Option<Connection>, last_error: String) -> Self {
        let shared = Shared::default();
        if let Some(connection) = connection {
            let _ = shared.connection.set(connection);
        }
        *shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = last_error;
        Self {
            shared: Arc::new(shared),
            connector: Mutex::new(None),
        }
    }

    /// Connects now, or fails.
    pub(super) async fn connect(config: &RedisConfig) -> Result<Self, RedisSetupError> {
        let target = Self::target(config)?;
        let connection = target
            .open()
            .await
            .map_err(|source| RedisSetupError::Connect {
                url: config.url.to_string(),
                source,
            })?;
        Ok(Self::with(Some(connection), String::new()))
    }

    /// Connects now if Redis answers, else keeps trying in the background. Fails only on a setup
    /// error (an unreadable CA file).
    pub(super) async fn start(config: &RedisConfig) -> Result<Self, RedisSetupError> {
        let target = Self::target(config)?;
        let url = config.url.to_string();
        match target.attempt().await {
            Ok(connection) => {
                tracing::info!(%url, cluster = target.cluster, "connected to redis");
                Ok(Self::with(Some(connection), String::new()))
            }
            Err(e) => {
                tracing::error!(%url, error = %e, "cannot connect to redis; retrying in the background");
                let link = Self::with(None, e);
                let task = tokio::spawn(keep_trying(target, link.shared.clone(), url));
                *link
                    .connector
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(task);
                Ok(link)
            }
        }
    }

    /// The connection, or why there is none yet.
    pub(super) fn get(&self) -> Result<&Connection, String> {
        self.shared.connection.get().ok_or_else(|| {
            let why = self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            format!("not connected yet ({why})")
        })
    }
}

/// Tries to connect until it succeeds, waiting [`FIRST_BACKOFF`] doubling to [`MAX_BACKOFF`]
/// between attempts. Logs the first few failures, then every 64th, so a long outage does not
/// flood the log.
async fn keep_trying(target: Target, shared: Arc<Shared>, url: String) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 2u64.. {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        match target.attempt().await {
            Ok(connection) => {
                let _ = shared.connection.set(connection);
                tracing::info!(%url, attempt, "connected to redis");
                return;
            }
            Err(e) => {
                if attempt <= 3 || attempt % 64 == 0 {
                    tracing::warn!(%url, attempt, error = %e, "still cannot connect to redis");
                }
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = e;
            }
        }
    }
}
