//! `[backend]`: memory (the default) or Redis, checked into [`BackendConfig`] (the Redis
//! settings themselves are the backend's: `backend::redis::settings`).

use super::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) kind: Option<String>,
    // May hold a password: it is never logged.
    pub(super) url: Option<String>,
    pub(super) cluster: Option<bool>,
    pub(super) key_prefix: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) on_failure: Option<String>,
    /// With `on_failure = "local"`: how many replicas share the limits.
    pub(super) replicas: Option<u32>,
    pub(super) tls_ca_file: Option<String>,
    /// Redis Sentinel: the sentinels' URLs, and the name of the master they watch.
    pub(super) sentinels: Option<Vec<String>>,
    pub(super) sentinel_master: Option<String>,
    /// How decisions run inside Redis: `lua` (the default) or `module`.
    pub(super) engine: Option<String>,
}

impl RawBackend {
    /// `sentinels` and `sentinel_master`, which come together.
    fn sentinel(&self) -> Result<Option<SentinelConfig>, String> {
        match (&self.sentinels, &self.sentinel_master) {
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err("backend.sentinel_master: required with backend.sentinels".into())
            }
            (None, Some(_)) => {
                Err("backend.sentinels: required with backend.sentinel_master".into())
            }
            (Some(nodes), Some(master)) => {
                if nodes.is_empty() || nodes.len() > 16 {
                    return Err("backend.sentinels: from 1 to 16 sentinel URLs".into());
                }
                if master.is_empty()
                    || !master
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(format!(
                        "backend.sentinel_master: {master:?} is not a master name ([A-Za-z0-9._-])"
                    ));
                }
                let nodes = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        RedisUrl::parse(n).map_err(|e| format!("backend.sentinels[{i}]: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(SentinelConfig {
                    nodes,
                    master: master.clone(),
                }))
            }
        }
    }

    pub(super) fn validate(self) -> Result<BackendConfig, String> {
        let on_failure = match (self.on_failure.as_deref(), self.replicas) {
            (None | Some("fail_closed"), None) => OnFailure::FailClosed,
            (Some("fail_open"), None) => OnFailure::FailOpen,
            (Some("local"), Some(replicas)) if (1..=10_000).contains(&replicas) => {
                OnFailure::Local { replicas }
            }
            (Some("local"), Some(_)) => {
                return Err("backend.replicas: must be from 1 to 10000".into())
            }
            (Some("local"), None) => {
                return Err(
                    "backend.replicas: required with on_failure = \"local\" (how many replicas share the limits)"
                        .into(),
                )
            }
            (None | Some("fail_closed" | "fail_open"), Some(_)) => {
                return Err("backend.replicas: only applies to on_failure = \"local\"".into())
            }
            (Some(f), _) => {
                return Err(format!(
                    "backend.on_failure: {f:?} (expected \"fail_closed\", \"fail_open\" or \"local\")"
                ))
            }
        };
        match self.kind.as_deref().unwrap_or("memory") {
            "memory" => {
                let redis_only = [
                    ("url", self.url.is_some()),
                    ("cluster", self.cluster.is_some()),
                    ("key_prefix", self.key_prefix.is_some()),
                    ("timeout", self.timeout.is_some()),
                    ("on_failure", self.on_failure.is_some()),
                    ("tls_ca_file", self.tls_ca_file.is_some()),
                    ("sentinels", self.sentinels.is_some()),
                    ("sentinel_master", self.sentinel_master.is_some()),
                    ("engine", self.engine.is_some()),
                ];
                if let Some((field, _)) = redis_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "backend.{field}: only applies to kind = \"redis\" (the memory backend cannot fail and has no keys)"
                    ));
                }
                Ok(BackendConfig::Memory)
            }
            "redis" => {
                let sentinel = self.sentinel()?;
                let url = match (self.url.as_deref(), &sentinel) {
                    (Some(url), _) => url.to_string(),
                    // The sentinels name the master; no credentials, no TLS.
                    (None, Some(s)) => format!("redis://{}", s.master),
                    (None, None) => return Err(
                        "backend.url: required when kind = \"redis\" (or give backend.sentinels)"
                            .into(),
                    ),
                };
                let url = RedisUrl::parse(&url).map_err(|e| format!("backend.url: {e}"))?;
                if sentinel.is_some() && self.cluster == Some(true) {
                    return Err("backend.sentinels: not with cluster = true (a cluster fails over by itself)".into());
                }
                let key_prefix = self
                    .key_prefix
                    .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
                validate_key_prefix(&key_prefix).map_err(|e| format!("backend.key_prefix: {e}"))?;
                let timeout = match &self.timeout {
                    Some(t) => Duration::from_micros(duration_field("backend.timeout", t)?),
                    None => DEFAULT_REDIS_TIMEOUT,
                };
                if timeout.is_zero() || timeout > Duration::from_secs(60) {
                    return Err("backend.timeout: must be more than 0 and at most 60s".into());
                }
                if self.tls_ca_file.is_some() && !url.expose().starts_with("rediss://") {
                    return Err("backend.tls_ca_file: needs a rediss:// url".into());
                }
                let engine = match self.engine.as_deref() {
                    None => Engine::Lua,
                    Some(e) => Engine::parse(e).ok_or_else(|| {
                        format!("backend.engine: {e:?} (expected \"lua\" or \"module\")")
                    })?,
                };
                Ok(BackendConfig::Redis(RedisConfig {
                    url,
                    sentinel,
                    cluster: self.cluster.unwrap_or(false),
                    key_prefix,
                    timeout,
                    on_failure,
                    tls_ca_file: self.tls_ca_file.map(Into::into),
                    engine,
                }))
            }
            other => Err(format!(
                "backend.kind: unknown backend {other:?} (expected \"memory\" or \"redis\")"
            )),
        }
    }
}
