//! The TOML configuration: raw serde structs that mirror the file, and [`Config`], the validated
//! result. Validation happens once at start; every error names the service and the field, e.g.
//! `service "openai/gpt-4o": limits[1].window: invalid duration "1x"`.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::Duration,
};

use serde::Deserialize;

pub use crate::backend::{
    validate_key_prefix, OnFailure, RedisConfig, RedisUrl, DEFAULT_KEY_PREFIX,
    DEFAULT_REDIS_TIMEOUT,
};
pub use crate::core::{validate_service_name, MAX_ANCESTORS};
use crate::{
    auth::{validate_token, AuthConfig, Secret},
    core::{
        Algorithm, Dimension, LimitSpec, Micros, Priorities, ServiceSpec, MAX_AMOUNT, MIN_SHARE,
    },
    duration::parse_duration,
    envoy::{DescriptorRoute, EnvoyConfig, DEFAULT_SERVICE_KEY},
    provider::{is_header_name, profile::BUILTIN, HeaderRule, Meaning, Profile, TimeFormat},
    tls::TlsConfig,
};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
const MAX_WINDOW: Micros = 31 * 86_400 * 1_000_000;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown fields.
    #[error("config is not valid: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("config is not valid: {0}")]
    Invalid(String),
}

/// Where rate-limit state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendConfig {
    /// In-process, the default.
    Memory,
    /// Shared by many replicas in Redis or Redis Cluster.
    Redis(RedisConfig),
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Where the Prometheus endpoint listens (`GET /metrics`); off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the `sluice.v1.Admin` service (operator actions); off by default.
    pub admin: bool,
    /// State backend.
    pub backend: BackendConfig,
    /// The configured services, in file order.
    pub services: Vec<ServiceSpec>,
    /// How to read each service's provider answers, in the same order.
    pub profiles: Vec<Profile>,
    /// Bearer tokens every call but health must carry; off when `None`.
    pub auth: Option<AuthConfig>,
    /// TLS (and mutual TLS) for the gRPC port; plaintext when `None`.
    pub tls: Option<TlsConfig>,
    /// Serve Envoy's rate limit API, mapping descriptors to services; off when `None`.
    pub envoy: Option<EnvoyConfig>,
    /// Priority classes, highest first.
    pub priorities: Priorities,
    /// Most API calls being decided at once; beyond it calls are refused at once with
    /// `RESOURCE_EXHAUSTED` instead of queueing.
    pub max_in_flight: usize,
}

pub use crate::grpc::DEFAULT_MAX_IN_FLIGHT;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    shutdown_grace: Option<String>,
    metrics_listen: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    backend: RawBackend,
    #[serde(default)]
    services: Vec<RawService>,
    auth: Option<RawAuth>,
    tls: Option<RawTls>,
    max_in_flight: Option<usize>,
    envoy: Option<RawEnvoy>,
    priorities: Option<Vec<RawPriority>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    name: String,
    min_share: Option<f64>,
}

/// Most priority classes.
const MAX_CLASSES: usize = 16;

/// Checks `[[priorities]]`: 1 to 16 classes, highest first, with distinct names of
/// `[a-z0-9_-]`, a `min_share` in (0, 1] for every class but the highest (default 0.1).
fn validate_priorities(raw: Option<Vec<RawPriority>>) -> Result<Priorities, String> {
    let Some(raw) = raw else {
        return Ok(Priorities::builtin());
    };
    if raw.is_empty() || raw.len() > MAX_CLASSES {
        return Err(format!("priorities: 1 to {MAX_CLASSES} classes"));
    }
    let mut classes = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let good = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !good {
            return Err(format!("priorities[{i}].name: 1 to 64 of [a-z0-9_-]"));
        }
        if classes.iter().any(|(n, _)| n == &p.name) {
            return Err(format!("priorities[{i}].name: {:?} twice", p.name));
        }
        let share = match (i, p.min_share) {
            (0, Some(_)) => {
                return Err("priorities[0].min_share: the highest class is never overtaken".into())
            }
            (0, None) => 1.0,
            (_, None) => 0.1,
            (_, Some(s)) if (MIN_SHARE..=1.0).contains(&s) => s,
            (_, Some(_)) => {
                return Err(format!(
                    "priorities[{i}].min_share: not in [1/64, 1] (0.015625 to 1)"
                ))
            }
        };
        classes.push((p.name, share));
    }
    Ok(Priorities::new(&classes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvoy {
    domain: Option<String>,
    service_key: Option<String>,
    #[serde(default)]
    descriptors: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    entries: std::collections::BTreeMap<String, String>,
    service: String,
}

impl RawEnvoy {
    fn validate(self, services: &[ServiceSpec]) -> Result<EnvoyConfig, String> {
        let mut routes = Vec::with_capacity(self.descriptors.len());
        for (i, route) in self.descriptors.into_iter().enumerate() {
            if route.entries.is_empty() {
                return Err(format!(
                    "envoy.descriptors[{i}].entries: at least one entry"
                ));
            }
            let Some(service) = services.iter().find(|s| s.name == route.service) else {
                return Err(format!(
                    "envoy.descriptors[{i}].service: {:?} is not a configured service",
                    route.service
                ));
            };
            // The service or an ancestor: a child's grant holds its parent's in-flight slot too.
            let mut at = Some(service);
            for _ in 0..=MAX_ANCESTORS {
                let Some(s) = at else { break };
                if s.concurrent().is_some() {
                    return Err(format!(
                        "envoy.descriptors[{i}].service: {:?} spends a concurrent limit (of {:?}), \
                         and Envoy never reports a call's end",
                        route.service, s.name
                    ));
                }
                at = s
                    .parent
                    .as_deref()
                    .and_then(|p| services.iter().find(|x| x.name == p));
            }
            routes.push(DescriptorRoute {
                entries: route.entries.into_iter().collect(),
                service: route.service,
            });
        }
        let service_key = self
            .service_key
            .unwrap_or_else(|| DEFAULT_SERVICE_KEY.to_string());
        if service_key.is_empty() {
            return Err("envoy.service_key: must not be empty".into());
        }
        Ok(EnvoyConfig {
            domain: self.domain,
            service_key,
            routes,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    // Secrets: never logged.
    #[serde(default)]
    tokens: Vec<String>,
    tokens_file: Option<String>,
}

impl RawAuth {
    fn validate(self) -> Result<AuthConfig, String> {
        for token in &self.tokens {
            validate_token(token).map_err(|e| format!("auth.tokens: {e}"))?;
        }
        if self.tokens.is_empty() && self.tokens_file.is_none() {
            return Err("auth: set tokens or tokens_file".into());
        }
        Ok(AuthConfig {
            tokens: self.tokens.into_iter().map(Secret::new).collect(),
            tokens_file: self.tokens_file.map(Into::into),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    client_ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<String>,
    // May hold a password: it is never logged.
    url: Option<String>,
    cluster: Option<bool>,
    key_prefix: Option<String>,
    timeout: Option<String>,
    on_failure: Option<String>,
    /// With `on_failure = "local"`: how many replicas share the limits.
    replicas: Option<u32>,
    tls_ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    profile: Option<String>,
    #[serde(default)]
    limits: Vec<RawLimit>,
    default_cooldown: Option<String>,
    max_cooldown: Option<String>,
    quota_cooldown: Option<String>,
    #[serde(default)]
    adopt_provider_limits: bool,
    /// Learn the budget from 429s.
    #[serde(default)]
    adaptive: bool,
    /// The service whose budget this one also spends.
    parent: Option<String>,
    /// The header table of a `custom` profile.
    headers: Option<Vec<RawHeaderRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderRule {
    name: String,
    dimension: String,
    meaning: String,
    format: Option<String>,
    window: Option<String>,
}

impl RawHeaderRule {
    fn validate(self) -> Result<HeaderRule, String> {
        if !is_header_name(&self.name) {
            return Err(format!("name: {:?} is not an HTTP header name", self.name));
        }
        let dimension = Dimension::parse(&self.dimension).ok_or_else(|| {
            format!(
                "dimension: unknown dimension {:?} (expected requests, tokens, input_tokens or output_tokens)",
                self.dimension
            )
        })?;
        let meaning = Meaning::from_config(&self.meaning).ok_or_else(|| {
            format!(
                "meaning: {:?} (expected limit, remaining or reset)",
                self.meaning
            )
        })?;
        let format = match (meaning, self.format.as_deref()) {
            (Meaning::Reset, Some(f)) => TimeFormat::from_config(f).ok_or_else(|| {
                format!("format: {f:?} (expected duration, rfc3339, seconds, milliseconds, epoch_seconds or http_date)")
            })?,
            (Meaning::Reset, None) => {
                return Err("format: required for a reset header".into());
            }
            (_, Some(_)) => return Err("format: only a reset header has a format".into()),
            (_, None) => TimeFormat::Seconds,
        };
        let window = self
            .window
            .as_deref()
            .map(|w| duration_field("window", w))
            .transpose()?;
        Ok(HeaderRule {
            name: self.name.to_ascii_lowercase(),
            dimension,
            meaning,
            format,
            window,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    dimension: String,
    amount: u64,
    window: Option<String>,
    algorithm: Option<String>,
    burst: Option<u64>,
    timeout: Option<String>,
}

/// How long a lease holds its in-flight slot when no `timeout` is configured.
const DEFAULT_LEASE_TIMEOUT: &str = "10m";

impl RawBackend {
    fn validate(self) -> Result<BackendConfig, String> {
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
                ];
                if let Some((field, _)) = redis_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "backend.{field}: only applies to kind = \"redis\" (the memory backend cannot fail and has no keys)"
                    ));
                }
                Ok(BackendConfig::Memory)
            }
            "redis" => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or("backend.url: required when kind = \"redis\"")?;
                let url = RedisUrl::parse(url).map_err(|e| format!("backend.url: {e}"))?;
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
                Ok(BackendConfig::Redis(RedisConfig {
                    url,
                    cluster: self.cluster.unwrap_or(false),
                    key_prefix,
                    timeout,
                    on_failure,
                    tls_ca_file: self.tls_ca_file.map(Into::into),
                }))
            }
            other => Err(format!(
                "backend.kind: unknown backend {other:?} (expected \"memory\" or \"redis\")"
            )),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(parse_error(text, &e)))?;
        raw.validate().map_err(ConfigError::Invalid)
    }
}

/// A TOML error as it may be logged: where it is and what is wrong, without the offending line
/// or any quoted value (they may hold a token or a password: a reload's refusal is logged and
/// returned over the Admin API).
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let mut message = String::new();
    for (i, part) in e.message().split('"').enumerate() {
        message.push_str(if i % 2 == 0 { part } else { "…" });
        message.push('"');
    }
    message.pop();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            // The key whose value is wrong: the word before the last `=` ahead of the error.
            let key = before[line_start..]
                .rsplit_once('=')
                .map(|(head, _)| {
                    head.trim_end()
                        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")
                })
                .filter(|k| !k.is_empty());
            match key {
                Some(key) => format!("line {line}, column {column} ({key}): {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

fn duration_field(field: &str, value: &str) -> Result<Micros, String> {
    parse_duration(value).map_err(|e| format!("{field}: {e}"))
}

impl RawConfig {
    fn validate(self) -> Result<Config, String> {
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen.parse().map_err(|_| {
            format!("listen: {listen:?} is not an address like \"127.0.0.1:50051\"")
        })?;
        let shutdown_grace = match &self.shutdown_grace {
            Some(s) => Duration::from_micros(duration_field("shutdown_grace", s)?),
            None => Duration::from_secs(10),
        };
        let metrics_listen = match &self.metrics_listen {
            Some(a) => Some(a.parse().map_err(|_| {
                format!("metrics_listen: {a:?} is not an address like \"127.0.0.1:9090\"")
            })?),
            None => None,
        };
        let backend = self.backend.validate()?;
        let auth = self.auth.map(RawAuth::validate).transpose()?;
        let tls = self.tls.map(|t| TlsConfig {
            cert_file: t.cert_file.into(),
            key_file: t.key_file.into(),
            client_ca_file: t.client_ca_file.map(Into::into),
        });
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight == 0 {
            return Err("max_in_flight: must be at least 1".into());
        }
        if self.services.is_empty() {
            return Err("no [[services]] configured".into());
        }
        let mut seen = HashSet::new();
        let mut services = Vec::with_capacity(self.services.len());
        let mut profiles = Vec::with_capacity(self.services.len());
        for (index, raw) in self.services.into_iter().enumerate() {
            let name = raw.name.clone();
            validate_service_name(&name).map_err(|e| format!("services[{index}].name: {e}"))?;
            if !seen.insert(name.clone()) {
                return Err(format!("service {name:?}: name: defined twice"));
            }
            let (spec, profile) = raw
                .validate(index)
                .map_err(|e| format!("service {name:?}: {e}"))?;
            services.push(spec);
            profiles.push(profile);
        }
        resolve_families(&mut services)?;
        let envoy = self.envoy.map(|e| e.validate(&services)).transpose()?;
        let priorities = validate_priorities(self.priorities)?;
        Ok(Config {
            envoy,
            priorities,
            listen,
            shutdown_grace,
            metrics_listen,
            admin: self.admin,
            backend,
            services,
            profiles,
            auth,
            tls,
            max_in_flight,
        })
    }
}

impl RawService {
    fn validate(self, index: usize) -> Result<(ServiceSpec, Profile), String> {
        let profile = self.profile.unwrap_or_else(|| "generic".into());
        let reader = match (profile.as_str(), self.headers) {
            ("custom", Some(rules)) if !rules.is_empty() => {
                let mut validated = Vec::with_capacity(rules.len());
                for (i, rule) in rules.into_iter().enumerate() {
                    validated.push(rule.validate().map_err(|e| format!("headers[{i}].{e}"))?);
                }
                Profile::custom(validated)
            }
            ("custom", _) => {
                return Err("headers: a custom profile needs a table of headers".into());
            }
            (name, None) => Profile::builtin(name).ok_or_else(|| {
                format!(
                    "profile: unknown profile {profile:?} (expected one of {})",
                    BUILTIN.join(", ") + ", custom"
                )
            })?,
            (_, Some(_)) => {
                return Err("headers: only a custom profile has a header table".into());
            }
        };
        if self.limits.is_empty() {
            return Err("limits: at least one limit is required".into());
        }
        let mut limits: Vec<LimitSpec> = Vec::with_capacity(self.limits.len());
        for (i, raw) in self.limits.into_iter().enumerate() {
            let limit = raw.validate().map_err(|e| format!("limits[{i}].{e}"))?;
            let concurrent = |l: &LimitSpec| l.algorithm == Algorithm::Concurrent;
            if concurrent(&limit) && limits.iter().any(concurrent) {
                return Err(format!("limits[{i}]: a second concurrent limit"));
            }
            if limits.iter().any(|l| {
                l.dimension == limit.dimension
                    && l.window == limit.window
                    && !concurrent(l)
                    && !concurrent(&limit)
            }) {
                return Err(format!(
                    "limits[{i}]: a second limit on {} with the same window",
                    limit.name
                ));
            }
            limits.push(limit);
        }
        let default_cooldown = match &self.default_cooldown {
            Some(s) => duration_field("default_cooldown", s)?,
            None => 1_000_000,
        };
        let max_cooldown = match &self.max_cooldown {
            Some(s) => duration_field("max_cooldown", s)?,
            None => 3_600_000_000,
        };
        if max_cooldown > MAX_WINDOW {
            return Err("max_cooldown: longer than 31d".into());
        }
        if default_cooldown > max_cooldown {
            return Err("default_cooldown: longer than max_cooldown".into());
        }
        let quota_cooldown = match &self.quota_cooldown {
            Some(s) => duration_field("quota_cooldown", s)?,
            None => max_cooldown,
        };
        if quota_cooldown > max_cooldown {
            return Err("quota_cooldown: longer than max_cooldown".into());
        }
        let spec = ServiceSpec {
            index,
            name: self.name,
            profile,
            limits,
            default_cooldown,
            max_cooldown,
            quota_cooldown,
            adopt_provider_limits: self.adopt_provider_limits,
            adaptive: self.adaptive,
            parent: self.parent,
            family: None,
        };
        Ok((spec, reader))
    }
}

/// Checks every `parent` (a configured service, no cycle, at most [`MAX_ANCESTORS`] levels) and
/// names each family member's root in `family`.
fn resolve_families(services: &mut [ServiceSpec]) -> Result<(), String> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut roots = Vec::with_capacity(services.len());
    for s in services.iter() {
        let mut at = s;
        let mut levels = 0;
        while let Some(parent) = &at.parent {
            let Some(&p) = index.get(parent.as_str()) else {
                return Err(format!(
                    "service {:?}: parent: {parent:?} is not a configured service",
                    s.name
                ));
            };
            levels += 1;
            if parent == &s.name || levels > MAX_ANCESTORS {
                return Err(format!(
                    "service {:?}: parent: a cycle or more than {MAX_ANCESTORS} levels of parents",
                    s.name
                ));
            }
            at = &services[p];
        }
        roots.push(at.name.clone());
    }
    let has_children: HashSet<&str> = services
        .iter()
        .filter_map(|s| s.parent.as_deref())
        .collect();
    let families: Vec<Option<String>> = services
        .iter()
        .zip(roots)
        .map(|(s, root)| {
            (s.parent.is_some() || has_children.contains(s.name.as_str())).then_some(root)
        })
        .collect();
    for (s, family) in services.iter_mut().zip(families) {
        s.family = family;
    }
    Ok(())
}

impl RawLimit {
    fn validate(self) -> Result<LimitSpec, String> {
        if self.amount == 0 || self.amount > MAX_AMOUNT {
            return Err(format!("amount: {} is not in 1..=2^50", self.amount));
        }
        if self.dimension == "concurrent" {
            return self.validate_concurrent();
        }
        let dimension = Dimension::parse(&self.dimension).ok_or_else(|| {
            format!(
                "dimension: unknown dimension {:?} (expected requests, tokens, input_tokens, \
                 output_tokens or concurrent)",
                self.dimension
            )
        })?;
        if self.timeout.is_some() {
            return Err("timeout: only a concurrent limit has a lease timeout".into());
        }
        let Some(window) = &self.window else {
            return Err("window: missing (e.g. window = \"1m\")".into());
        };
        let window = duration_field("window", window)?;
        if window == 0 || window > MAX_WINDOW {
            return Err(format!("window: {:?} is not in (0, 31d]", self.window));
        }
        let algorithm = match self.algorithm.as_deref().unwrap_or("sliding_window") {
            "sliding_window" => {
                if self.burst.is_some() {
                    return Err("burst: only a token_bucket limit has a burst".into());
                }
                Algorithm::SlidingWindow
            }
            "token_bucket" => {
                let burst = self.burst.unwrap_or(self.amount);
                if burst == 0 || burst > MAX_AMOUNT {
                    return Err(format!("burst: {burst} is not in 1..=2^50"));
                }
                Algorithm::TokenBucket { burst }
            }
            other => {
                return Err(format!(
                "algorithm: unknown algorithm {other:?} (expected sliding_window or token_bucket)"
            ))
            }
        };
        Ok(LimitSpec::new(dimension, self.amount, window, algorithm))
    }

    /// `{ dimension = "concurrent", amount, timeout }`: calls in flight, each holding its slot
    /// until its report or its lease timeout.
    fn validate_concurrent(self) -> Result<LimitSpec, String> {
        if self.window.is_some() {
            return Err(
                "window: a concurrent limit has no window (its leases end at their \
                        report or their timeout)"
                    .into(),
            );
        }
        if self.algorithm.is_some() || self.burst.is_some() {
            return Err("algorithm: a concurrent limit takes no algorithm or burst".into());
        }
        let timeout = self.timeout.as_deref().unwrap_or(DEFAULT_LEASE_TIMEOUT);
        let timeout = duration_field("timeout", timeout)?;
        if timeout == 0 || timeout > MAX_WINDOW {
            return Err(format!("timeout: {:?} is not in (0, 31d]", self.timeout));
        }
        Ok(LimitSpec::concurrent(self.amount, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Class;

    const GOOD: &str = r#"
        listen = "127.0.0.1:6000"
        [backend]
        kind = "memory"
        [[services]]
        name = "openai/gpt-4o"
        profile = "openai"
        limits = [
          { dimension = "requests", amount = 500, window = "1m" },
          { dimension = "tokens", amount = 30000, window = "1m", algorithm = "token_bucket", burst = 5000 },
        ]
        default_cooldown = "2s"
    "#;

    #[test]
    fn parses_a_good_file() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.listen.port(), 6000);
        let s = &c.services[0];
        assert_eq!(s.name, "openai/gpt-4o");
        assert_eq!(
            s.limits[1].algorithm,
            Algorithm::TokenBucket { burst: 5000 }
        );
        assert_eq!(s.limits[1].name, "tokens/1m");
        assert_eq!(s.default_cooldown, 2_000_000);
        assert_eq!(s.max_cooldown, 3_600_000_000);
    }

    #[test]
    fn errors_name_the_service_and_field() {
        let cases = [
            (GOOD.replace("\"1m\", algorithm", "\"1x\", algorithm"), "service \"openai/gpt-4o\": limits[1].window"),
            (GOOD.replace("\"requests\"", "\"bananas\""), "limits[0].dimension"),
            (GOOD.replace("amount = 500,", "amount = 0,"), "limits[0].amount"),
            (GOOD.replace("amount = 500,", "amount = -5,"), "amount"),
            (GOOD.replace("token_bucket", "leaky"), "limits[1].algorithm"),
            (GOOD.replace("\"openai\"", "\"acme\""), "profile"),
            (GOOD.replace("openai/gpt-4o", "bad name"), "services[0].name"),
            (GOOD.replace("kind = \"memory\"", "kind = \"redis\""), "backend.url: required"),
            (GOOD.replace("kind = \"memory\"", "kind = \"etcd\""), "backend.kind"),
            (GOOD.replace("kind = \"memory\"", "kind = \"memory\"\non_failure = \"fail_open\""), "backend.on_failure: only applies"),
            (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"http://x\""), "backend.url"),
            (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\non_failure = \"maybe\""), "backend.on_failure"),
            (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\nkey_prefix = \"a{b}\""), "backend.key_prefix"),
            (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\ntimeout = \"0s\""), "backend.timeout"),
            (GOOD.replace("kind = \"memory\"", "kind = \"redis\"\nurl = \"redis://x\"\ntls_ca_file = \"ca.pem\""), "backend.tls_ca_file: needs a rediss://"),
            (GOOD.replace("default_cooldown", "default_cooldwn"), "default_cooldwn"),
            (GOOD.replace("127.0.0.1:6000", "nowhere"), "listen"),
            (format!("metrics_listen = \"port 9\"\n{GOOD}"), "metrics_listen"),
            (format!("{GOOD}\n[[services]]\nname = \"openai/gpt-4o\"\nlimits = [{{ dimension = \"requests\", amount = 1, window = \"1s\" }}]"), "defined twice"),
            (GOOD.replace("window = \"1m\" },", "window = \"1m\", burst = 3 },"), "limits[0].burst"),
            ("listen = \"127.0.0.1:1\"".to_string(), "no [[services]]"),
            (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"concurrent\", amount = 5, window = \"1m\" }"), "limits[0].window: a concurrent limit has no window"),
            (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"concurrent\", amount = 5, timeout = \"0s\" }"), "limits[0].timeout"),
            (GOOD.replace("window = \"1m\" },", "window = \"1m\", timeout = \"1m\" },"), "limits[0].timeout: only a concurrent limit"),
            (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"requests\", amount = 500 }"), "limits[0].window: missing"),
            (GOOD.replace("{ dimension = \"requests\", amount = 500, window = \"1m\" }", "{ dimension = \"concurrent\", amount = 5 }, { dimension = \"concurrent\", amount = 9 }"), "limits[1]: a second concurrent limit"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn parents_form_families_and_bad_parents_are_refused() {
        let service = |name: &str, parent: &str| {
            let parent = if parent.is_empty() {
                String::new()
            } else {
                format!("parent = {parent:?}\n")
            };
            format!("[[services]]\nname = {name:?}\n{parent}limits = [{{ dimension = \"tokens\", amount = 10, window = \"1m\" }}]\n")
        };
        let text = [
            service("org", ""),
            service("org/a", "org"),
            service("org/a/x", "org/a"),
            service("alone", ""),
        ]
        .concat();
        let c = Config::parse(&text).unwrap();
        let families: Vec<Option<&str>> = c.services.iter().map(|s| s.family.as_deref()).collect();
        assert_eq!(families, [Some("org"), Some("org"), Some("org"), None]);
        assert_eq!(c.services[2].parent.as_deref(), Some("org/a"));
        // Envoy never reports: a route may not spend an in-flight limit, an ancestor's included.
        let pool = "[[services]]\nname = \"pool\"\nlimits = [{ dimension = \"concurrent\", amount = 4 }]\n";
        let envoy =
            "[envoy]\n[[envoy.descriptors]]\nentries = { model = \"x\" }\nservice = \"pool/x\"\n";
        let text = [pool, &service("pool/x", "pool"), envoy].concat();
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("spends a concurrent limit (of \"pool\")"),
            "{err}"
        );
        for (text, expected) in [
            (
                service("a", "nobody"),
                "service \"a\": parent: \"nobody\" is not a configured service",
            ),
            (service("a", "a"), "service \"a\": parent: a cycle"),
            (
                [service("a", "b"), service("b", "a")].concat(),
                "parent: a cycle",
            ),
            (
                [
                    service("a", ""),
                    service("b", "a"),
                    service("c", "b"),
                    service("d", "c"),
                    service("e", "d"),
                    service("f", "e"),
                ]
                .concat(),
                "service \"f\": parent: a cycle or more than 4 levels",
            ),
        ] {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn priority_classes_are_ranked_and_checked() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.priorities, Priorities::builtin());
        let text = format!("{GOOD}\n[[priorities]]\nname = \"live\"\n[[priorities]]\nname = \"default\"\nmin_share = 0.25\n[[priorities]]\nname = \"bulk\"\n");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.priorities.class("live"), Some(Class::TOP));
        assert_eq!(c.priorities.class(""), Some(Class::with_min_share(1, 0.25)));
        assert_eq!(
            c.priorities.class("bulk"),
            Some(Class::with_min_share(2, 0.1))
        );
        for (extra, expected) in [
            (
                "[[priorities]]\nname = \"top\"\nmin_share = 0.5\n",
                "priorities[0].min_share: the highest class",
            ),
            (
                "[[priorities]]\nname = \"a\"\n[[priorities]]\nname = \"b\"\nmin_share = 0\n",
                "priorities[1].min_share: not in [1/64, 1]",
            ),
            (
                "[[priorities]]\nname = \"a\"\n[[priorities]]\nname = \"a\"\n",
                "priorities[1].name: \"a\" twice",
            ),
            (
                "[[priorities]]\nname = \"Bad Name\"\n",
                "priorities[0].name",
            ),
            ("priorities = []\n", "priorities: 1 to 16 classes"),
        ] {
            let text = if extra.starts_with("priorities =") {
                format!("{extra}{GOOD}")
            } else {
                format!("{GOOD}\n{extra}")
            };
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn a_concurrent_limit_counts_calls_with_a_lease_timeout() {
        let text = GOOD.replace(
            "{ dimension = \"requests\", amount = 500, window = \"1m\" }",
            "{ dimension = \"concurrent\", amount = 8 }, { dimension = \"requests\", amount = 5, window = \"10m\" }",
        );
        let c = Config::parse(&text).unwrap();
        let limits = &c.services[0].limits;
        assert_eq!(limits[0], LimitSpec::concurrent(8, 600_000_000));
        assert_eq!(limits[0].dimension_name(), "concurrent");
        // A requests limit whose window equals the lease timeout is another limit.
        assert_eq!(limits[1].algorithm, Algorithm::SlidingWindow);
        assert_eq!(c.services[0].concurrent().map(|(i, _)| i), Some(0));
    }

    #[test]
    fn redis_settings_parse_and_passwords_stay_hidden() {
        let text = GOOD.replace(
            "kind = \"memory\"",
            "kind = \"redis\"\nurl = \"rediss://app:s3cret@redis.internal:6380/0\"\ncluster = true\nkey_prefix = \"prod\"\ntimeout = \"100ms\"\non_failure = \"fail_open\"",
        );
        let c = Config::parse(&text).unwrap();
        let BackendConfig::Redis(r) = &c.backend else {
            panic!("expected redis, got {:?}", c.backend)
        };
        assert!(r.cluster);
        assert_eq!(r.key_prefix, "prod");
        assert_eq!(r.timeout, Duration::from_millis(100));
        assert_eq!(r.on_failure, OnFailure::FailOpen);
        assert_eq!(r.url.expose(), "rediss://app:s3cret@redis.internal:6380/0");
        assert_eq!(r.url.to_string(), "rediss://app:***@redis.internal:6380/0");
        assert!(!format!("{c:?}").contains("s3cret"));
        let default = Config::parse(&GOOD.replace(
            "kind = \"memory\"",
            "kind = \"redis\"\nurl = \"redis://localhost\"",
        ))
        .unwrap();
        let BackendConfig::Redis(r) = default.backend else {
            panic!("expected redis")
        };
        assert_eq!(
            (r.cluster, r.key_prefix.as_str(), r.timeout, r.on_failure),
            (
                false,
                "sluice",
                DEFAULT_REDIS_TIMEOUT,
                OnFailure::FailClosed
            )
        );
        assert!(!format!("{:?}", RedisUrl::parse("redis://:pw@h").unwrap()).contains("pw"));
    }

    #[test]
    fn adaptive_budgets_are_off_unless_asked_and_must_be_booleans() {
        let text = r#"
            [[services]]
            name = "gemini/flash"
            adaptive = true
            limits = [{ dimension = "requests", amount = 60, window = "1m" }]
        "#;
        let c = Config::parse(text).unwrap();
        assert!(c.services[0].adaptive);
        assert_eq!(c.services[0].adaptive_period(), 60_000_000);
        let off = Config::parse(&text.replace("adaptive = true", "")).unwrap();
        assert!(!off.services[0].adaptive);
        let err =
            Config::parse(&text.replace("adaptive = true", "adaptive = \"yes\"")).unwrap_err();
        assert!(err.to_string().contains("adaptive"), "{err}");
    }

    #[test]
    fn custom_profiles_are_header_tables() {
        let text = r#"
            [[services]]
            name = "acme/llm"
            profile = "custom"
            quota_cooldown = "30m"
            adopt_provider_limits = true
            limits = [{ dimension = "tokens", amount = 1000, window = "1m" }]
            headers = [
              { name = "X-Acme-Tokens-Left", dimension = "tokens", meaning = "remaining", window = "1m" },
              { name = "x-acme-tokens-reset", dimension = "tokens", meaning = "reset", format = "epoch_seconds" },
            ]
        "#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.profiles[0].name, "custom");
        assert_eq!(c.profiles[0].rules[0].name, "x-acme-tokens-left");
        assert_eq!(c.profiles[0].rules[1].format, TimeFormat::EpochSeconds);
        assert_eq!(c.services[0].quota_cooldown, 1_800_000_000);
        assert!(c.services[0].adopt_provider_limits);
        assert!(
            !Config::parse(&text.replace("adopt_provider_limits = true", ""))
                .unwrap()
                .services[0]
                .adopt_provider_limits
        );
        for (bad, expected) in [
            (
                text.replace(
                    "meaning = \"reset\", format = \"epoch_seconds\"",
                    "meaning = \"reset\"",
                ),
                "headers[1].format: required",
            ),
            (
                text.replace("epoch_seconds", "fortnights"),
                "headers[1].format",
            ),
            (
                text.replace("\"remaining\"", "\"left\""),
                "headers[0].meaning",
            ),
            (
                text.replace("X-Acme-Tokens-Left", "bad name"),
                "headers[0].name",
            ),
            (
                text.replace("profile = \"custom\"", "profile = \"openai\""),
                "only a custom profile",
            ),
            (
                text.replace("\"30m\"", "\"2h\""),
                "quota_cooldown: longer than max_cooldown",
            ),
        ] {
            let err = Config::parse(&bad).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
        let err = Config::parse(&text.replace("headers = [", "xheaders = ["))
            .unwrap_err()
            .to_string();
        assert!(err.contains("xheaders"), "{err}");
    }

    #[test]
    fn service_names_are_checked() {
        assert!(validate_service_name("anthropic/claude-sonnet:v1.2_x").is_ok());
        assert!(validate_service_name("").is_err());
        assert!(validate_service_name(&"a".repeat(129)).is_err());
        assert!(validate_service_name(&"a".repeat(128)).is_ok());
        assert!(validate_service_name("a b").is_err());
        assert!(validate_service_name("é").is_err());
    }

    #[test]
    fn parse_errors_name_the_place_but_never_quote_a_value() {
        let text = "[auth]\ntokens = \"super-secret-token-value\"\n\n[[services]]\nname = \"a\"\nlimits = [{ dimension = \"requests\", amount = 1, window = \"1s\" }]\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(!err.contains("super-secret"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = Config::parse("listen = \"x\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bogus"),
            "unknown fields are still named: {err}"
        );
    }
}
