//! The TOML configuration: raw serde structs that mirror the file, and [`Config`], the validated
//! result. Validation happens once at start; every error names the service and the field, e.g.
//! `service "openai/gpt-4o": limits[1].window: invalid duration "1x"`. One file per section:
//! `services` (limits, profiles, header rules, families), `backend`, `envoy`, `security` (`[auth]`,
//! `[tls]`), `priorities`; this one reads the file and puts the sections together.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::Duration,
};

use serde::Deserialize;

mod backend;
mod envoy;
mod priorities;
mod security;
mod services;

use self::{
    backend::RawBackend,
    envoy::RawEnvoy,
    priorities::{validate_priorities, RawPriority},
    security::{RawAuth, RawTls},
    services::{resolve_families, RawService},
};

pub use crate::backend::{
    validate_key_prefix, Engine, OnFailure, RedisConfig, RedisUrl, SentinelConfig,
    DEFAULT_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT,
};
pub use crate::core::{validate_service_name, MAX_ANCESTORS};
use crate::{
    auth::{validate_token, AuthConfig, Secret},
    core::{
        Algorithm, Dimension, LimitSpec, Micros, Mode, Priorities, ServiceSpec, MAX_AMOUNT,
        MIN_SHARE,
    },
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
    /// Where the status page (`GET /`, its data at `GET /api/status`) listens on its own; it is
    /// also served on the metrics listener. Off when `None`.
    pub status_listen: Option<SocketAddr>,
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
    status_listen: Option<String>,
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
    crate::core::parse_duration(value).map_err(|e| format!("{field}: {e}"))
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
        let address = |field: &str, value: &Option<String>| match value {
            Some(a) => a
                .parse()
                .map(Some)
                .map_err(|_| format!("{field}: {a:?} is not an address like \"127.0.0.1:9090\"")),
            None => Ok(None),
        };
        let metrics_listen = address("metrics_listen", &self.metrics_listen)?;
        let status_listen = address("status_listen", &self.status_listen)?;
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
            status_listen,
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

#[cfg(test)]
mod tests;
