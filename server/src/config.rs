//! The TOML configuration: raw serde structs that mirror the file, and [`Config`], the validated
//! result. Validation happens once at start; every error names the service and the field, e.g.
//! `service "openai/gpt-4o": limits[1].window: invalid duration "1x"`.

use std::{collections::HashSet, net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    core::{Algorithm, Dimension, LimitSpec, Micros, ServiceSpec, MAX_AMOUNT},
    duration::parse_duration,
};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Provider profiles `ReportResponse` knows.
pub const PROFILES: [&str; 6] = [
    "generic",
    "openai",
    "anthropic",
    "azure_openai",
    "groq",
    "gemini",
];
const MAX_WINDOW: Micros = 31 * 86_400 * 1_000_000;
const MAX_NAME_LEN: usize = 128;

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
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// State backend.
    pub backend: BackendConfig,
    /// The configured services, in file order.
    pub services: Vec<ServiceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    shutdown_grace: Option<String>,
    #[serde(default)]
    backend: RawBackend,
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<String>,
    // Redis settings are accepted so that a file written for a later version reads; the Redis
    // backend itself is not built yet. `url` may hold a password: it is never logged.
    #[allow(dead_code)]
    url: Option<String>,
    #[allow(dead_code)]
    cluster: Option<bool>,
    #[allow(dead_code)]
    key_prefix: Option<String>,
    #[allow(dead_code)]
    timeout: Option<String>,
    on_failure: Option<String>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    dimension: String,
    amount: u64,
    window: String,
    algorithm: Option<String>,
    burst: Option<u64>,
}

/// Checks a service name: 1–128 bytes of `[A-Za-z0-9._:/-]`.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("service name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "service name is {} bytes long (at most {MAX_NAME_LEN})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:/-".contains(*c)))
    {
        return Err(format!(
            "service name contains {c:?} (allowed: letters, digits and . _ : / -)"
        ));
    }
    Ok(())
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        raw.validate().map_err(ConfigError::Invalid)
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
        let backend = match self.backend.kind.as_deref().unwrap_or("memory") {
            "memory" => BackendConfig::Memory,
            "redis" => {
                return Err(
                    "backend.kind: \"redis\" is not available in this version (use \"memory\")"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "backend.kind: unknown backend {other:?} (expected \"memory\" or \"redis\")"
                ))
            }
        };
        if let Some(f) = self.backend.on_failure.as_deref() {
            if f != "fail_closed" && f != "fail_open" {
                return Err(format!(
                    "backend.on_failure: {f:?} (expected \"fail_closed\" or \"fail_open\")"
                ));
            }
        }
        if self.services.is_empty() {
            return Err("no [[services]] configured".into());
        }
        let mut seen = HashSet::new();
        let mut services = Vec::with_capacity(self.services.len());
        for (index, raw) in self.services.into_iter().enumerate() {
            let name = raw.name.clone();
            validate_service_name(&name).map_err(|e| format!("services[{index}].name: {e}"))?;
            if !seen.insert(name.clone()) {
                return Err(format!("service {name:?}: name: defined twice"));
            }
            let spec = raw
                .validate(index)
                .map_err(|e| format!("service {name:?}: {e}"))?;
            services.push(spec);
        }
        Ok(Config {
            listen,
            shutdown_grace,
            backend,
            services,
        })
    }
}

impl RawService {
    fn validate(self, index: usize) -> Result<ServiceSpec, String> {
        let profile = self.profile.unwrap_or_else(|| "generic".into());
        if !PROFILES.contains(&profile.as_str()) {
            return Err(format!(
                "profile: unknown profile {profile:?} (expected one of {})",
                PROFILES.join(", ")
            ));
        }
        if self.limits.is_empty() {
            return Err("limits: at least one limit is required".into());
        }
        let mut limits: Vec<LimitSpec> = Vec::with_capacity(self.limits.len());
        for (i, raw) in self.limits.into_iter().enumerate() {
            let limit = raw.validate().map_err(|e| format!("limits[{i}].{e}"))?;
            if limits
                .iter()
                .any(|l| l.dimension == limit.dimension && l.window == limit.window)
            {
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
        Ok(ServiceSpec {
            index,
            name: self.name,
            profile,
            limits,
            default_cooldown,
            max_cooldown,
        })
    }
}

impl RawLimit {
    fn validate(self) -> Result<LimitSpec, String> {
        let dimension = Dimension::parse(&self.dimension).ok_or_else(|| {
            format!(
                "dimension: unknown dimension {:?} (expected requests, tokens, input_tokens or output_tokens)",
                self.dimension
            )
        })?;
        if self.amount == 0 || self.amount > MAX_AMOUNT {
            return Err(format!("amount: {} is not in 1..=2^53", self.amount));
        }
        let window = duration_field("window", &self.window)?;
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
                    return Err(format!("burst: {burst} is not in 1..=2^53"));
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (GOOD.replace("kind = \"memory\"", "kind = \"redis\""), "backend.kind"),
            (GOOD.replace("default_cooldown", "default_cooldwn"), "default_cooldwn"),
            (GOOD.replace("127.0.0.1:6000", "nowhere"), "listen"),
            (format!("{GOOD}\n[[services]]\nname = \"openai/gpt-4o\"\nlimits = [{{ dimension = \"requests\", amount = 1, window = \"1s\" }}]"), "defined twice"),
            (GOOD.replace("window = \"1m\" },", "window = \"1m\", burst = 3 },"), "limits[0].burst"),
            ("listen = \"127.0.0.1:1\"".to_string(), "no [[services]]"),
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
    fn service_names_are_checked() {
        assert!(validate_service_name("anthropic/claude-sonnet:v1.2_x").is_ok());
        assert!(validate_service_name("").is_err());
        assert!(validate_service_name(&"a".repeat(129)).is_err());
        assert!(validate_service_name(&"a".repeat(128)).is_ok());
        assert!(validate_service_name("a b").is_err());
        assert!(validate_service_name("é").is_err());
    }
}
