//! Redis Sentinel: the master is whichever node the sentinels name. The link asks them
//! (`SENTINEL get-master-addr-by-name`, then checks the node's `ROLE`), keeps one multiplexed
//! connection to that master, and drops it as soon as a call shows the node is gone or no longer
//! the master (an I/O error, a timeout, `READONLY`, `MASTERDOWN`): the next call asks the
//! sentinels again, so a failover is followed without a restart. While no master can be found,
//! calls fail as in an outage (and follow `on_failure`).

use std::{
    future::Future,
    pin::Pin,
    sync::{PoisonError, RwLock},
    time::Duration,
};

use redis::{
    aio::MultiplexedConnection,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
    AsyncConnectionConfig, Cmd, ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind,
    TlsCertificates, TlsMode,
};

use super::settings::{RedisUrl, SentinelConfig};

/// A call's future, boxed as a trait object: the sentinel client's futures nest deep, and every
/// caller's future (up to a test's) would otherwise carry their whole type.
pub(super) type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, RedisError>> + Send + 'a>>;

/// The master found through the sentinels, and the connection to it while it lasts.
pub(super) struct SentinelLink {
    client: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<Option<MultiplexedConnection>>,
    timeout: Duration,
}

/// Whether `e` says the connection no longer reaches a master: ask the sentinels again.
fn master_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

impl SentinelLink {
    /// A link to the master `sentinel` names; `url` gives the scheme, user and password to reach
    /// it with (its host is not used); `ca` (PEM), if any, verifies TLS servers (the master and
    /// `rediss://` sentinels) in place of the system's roots.
    pub(super) fn new(
        sentinel: &SentinelConfig,
        url: &RedisUrl,
        ca: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, RedisError> {
        let certificates = || TlsCertificates {
            client_tls: None,
            root_cert: ca.map(<[u8]>::to_vec),
        };
        let mut addrs = Vec::with_capacity(sentinel.nodes.len());
        let mut sentinel_auth = None;
        for node in &sentinel.nodes {
            let info = node.expose().into_connection_info()?;
            addrs.push(info.addr().clone());
            // One user and password for every sentinel: the first URL's that has them.
            if sentinel_auth.is_none() && info.redis_settings().password().is_some() {
                sentinel_auth = Some(info.redis_settings().clone());
            }
        }
        let mut builder =
            SentinelClientBuilder::new(addrs, sentinel.master.clone(), SentinelServerType::Master)?;
        if let Some(auth) = &sentinel_auth {
            if let Some(user) = auth.username() {
                builder = builder.set_client_to_sentinel_username(user);
            }
            if let Some(password) = auth.password() {
                builder = builder.set_client_to_sentinel_password(password);
            }
        }
        let tls_sentinels = sentinel
            .nodes
            .iter()
            .any(|n| n.expose().starts_with("rediss://"));
        if tls_sentinels && ca.is_some() {
            builder = builder.set_client_to_sentinel_certificates(certificates());
        }
        let master = url.expose().into_connection_info()?;
        let settings = master.redis_settings();
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        builder = builder.set_client_to_redis_db(settings.db());
        if url.expose().starts_with("rediss://") {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
            if ca.is_some() {
                builder = builder.set_client_to_redis_certificates(certificates());
            }
        }
        Ok(Self {
            client: tokio::sync::Mutex::new(builder.build()?),
            current: RwLock::new(None),
            timeout,
        })
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection to the master, asking the sentinels for it if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(connection) = self.cached() {
            return Ok(connection);
        }
        let mut client = self.client.lock().await;
        // Another call may have found the master while this one waited.
        if let Some(connection) = self.cached() {
            return Ok(connection);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = client.get_async_connection_with_config(&config).await?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        tracing::info!("connected to the redis master the sentinels name");
        Ok(connection)
    }

    /// Runs `cmd` on the master; a failure that says the master moved forgets the connection.
    pub(super) fn query<'a>(&'a self, cmd: &'a Cmd) -> Boxed<'a, redis::Value> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let result = cmd.query_async(&mut connection).await;
            if let Err(e) = &result {
                if master_moved(e) {
                    tracing::warn!(error = %e, "lost the redis master; asking the sentinels again");
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
                }
            }
            result
        })
    }

    /// Finds the master now (for the first connection, which must succeed or be retried).
    pub(super) fn connect(&self) -> Boxed<'_, ()> {
        Box::pin(async move { self.connection().await.map(|_| ()) })
    }
}
