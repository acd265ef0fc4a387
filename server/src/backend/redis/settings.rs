//! The Redis backend's settings: where Redis is ([`RedisUrl`], whose password never shows), how
//! keys are named, how long a call may take, and what to answer when Redis cannot
//! ([`OnFailure`]). The config layer reads them from `[backend]`; tests and tools build them
//! directly.

use std::time::Duration;

/// What the Redis backend answers when Redis cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer `UNAVAILABLE` (the default): never a grant that hides an error.
    FailClosed,
    /// Grant without waiting and log a warning: the operator prefers over-admission to an outage.
    FailOpen,
    /// Decide in this replica's memory with its share of every limit (amount and burst divided by
    /// `replicas`, at least 1), until Redis answers again.
    Local {
        /// How many replicas share the limits.
        replicas: u32,
    },
}

/// Redis Sentinel: the sentinels to ask, and the name of the master they watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The sentinels (`redis://host:port`, with the sentinels' own password if they have one).
    pub nodes: Vec<RedisUrl>,
    /// The master's name in the sentinels' configuration (`sentinel monitor <name> …`).
    pub master: String,
}

/// How decisions run inside Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Lua functions (or scripts) over hashes and lists: any Redis 6.2 or later, managed
    /// services included.
    #[default]
    Lua,
    /// The Sluice Redis module's native commands (`redis-module/`): a fraction of the CPU per
    /// decision, on a Redis that loads the module (every node).
    Module,
}

impl Engine {
    /// The config spelling: `lua` or `module`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lua" => Some(Self::Lua),
            "module" => Some(Self::Module),
            _ => None,
        }
    }
}

/// Settings of the Redis backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL, possibly with ACL user and password. With [`Self::sentinel`]
    /// its host is not used: the sentinels name the master, and the URL gives the scheme (TLS or
    /// not), the user and the password to reach it with.
    pub url: RedisUrl,
    /// Find the master through Redis Sentinel, and follow it when it fails over.
    pub sentinel: Option<SentinelConfig>,
    /// Connect to a Redis Cluster (the URL names one of its nodes).
    pub cluster: bool,
    /// Namespace of every key, inside the hash tag: `{<prefix>:<service>}`.
    pub key_prefix: String,
    /// Bound on every Redis call.
    pub timeout: Duration,
    /// Behaviour when Redis fails.
    pub on_failure: OnFailure,
    /// PEM file of the CA that signed the server's certificate (`rediss://` only); without it
    /// the system's trust store is used.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// How decisions run inside Redis.
    pub engine: Engine,
}

impl RedisConfig {
    /// Redis at `url` with the defaults of the config's `[backend]`: one server (not a cluster),
    /// keys under [`DEFAULT_KEY_PREFIX`], calls bounded by [`DEFAULT_REDIS_TIMEOUT`], fail closed,
    /// the system's trust store.
    pub fn new(url: RedisUrl) -> Self {
        Self {
            url,
            sentinel: None,
            cluster: false,
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            on_failure: OnFailure::FailClosed,
            tls_ca_file: None,
            engine: Engine::Lua,
        }
    }

    /// The same, deciding with `engine`.
    pub fn engine(self, engine: Engine) -> Self {
        Self { engine, ..self }
    }

    /// The same, on a Redis Cluster if `cluster`.
    pub fn cluster(self, cluster: bool) -> Self {
        Self { cluster, ..self }
    }

    /// The same, finding the master named `master` through the sentinels at `nodes`.
    pub fn sentinel(self, nodes: Vec<RedisUrl>, master: impl Into<String>) -> Self {
        Self {
            sentinel: Some(SentinelConfig {
                nodes,
                master: master.into(),
            }),
            ..self
        }
    }

    /// The same, with keys under `prefix`.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            key_prefix: prefix.into(),
            ..self
        }
    }

    /// The same, with every call bounded by `timeout`.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }
}

/// A Redis URL. Its password never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the scheme (`redis://` or `rediss://`) and that a host follows.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or_else(|| {
                format!(
                    "{:?} must start with redis:// or rediss://",
                    RedisUrl(url.to_string()).to_string()
                )
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err("has no host".into());
        }
        Ok(Self(url.to_string()))
    }

    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RedisUrl {
    /// The URL with any password replaced by `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        match rest.rsplit_once('@') {
            Some((auth, host)) => {
                let user = auth.split_once(':').map_or("", |(u, _)| u);
                write!(f, "{scheme}://{user}:***@{host}")
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// Default key prefix of the Redis backend.
pub const DEFAULT_KEY_PREFIX: &str = "sluice";
/// Default bound on a Redis call.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Checks a Redis key prefix: 1–64 bytes, no braces (they would break the hash tag), no spaces.
pub fn validate_key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 64 {
        return Err(format!("{prefix:?} must be 1 to 64 bytes long"));
    }
    if prefix
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{prefix:?} must not contain braces or whitespace"));
    }
    Ok(())
}
