//! Command-line arguments of `sluice-server`. Each flag has an environment fallback and overrides
//! the matching setting of the config file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use crate::config::{BackendConfig, Config, ConfigError, RedisConfig, RedisUrl};

/// Sluice: rate-limit coordination for fleets of workers calling rate-limited APIs.
#[derive(Debug, Parser)]
#[command(name = "sluice-server", version, about)]
pub struct Cli {
    /// Path to the TOML config file.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: PathBuf,
    /// Listen address, overriding the config's `listen` (port 0 picks a free port).
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Time allowed to drain in-flight calls on shutdown, e.g. "10s".
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", value_parser = parse_grace)]
    pub shutdown_grace: Option<Duration>,
    /// Redis URL (`redis://[user:password@]host:port`, `rediss://` for TLS): selects the Redis
    /// backend, overriding the config's `backend.url`.
    #[arg(long, env = "SLUICE_BACKEND_URL", value_parser = parse_backend_url, hide_env_values = true)]
    pub backend_url: Option<RedisUrl>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), overriding the config's
    /// `metrics_listen`; off unless set.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the status page (`GET /`, JSON at `/api/status`) on this address, overriding the
    /// config's `status_listen`; it is also served on the metrics listener. Off unless set.
    #[arg(long, env = "SLUICE_STATUS_LISTEN")]
    pub status_listen: Option<SocketAddr>,
    /// Serve the `sluice.v1.Admin` service (set or clear cooldowns, reset a service), as the
    /// config's `admin = true`; off unless set. Expose it only to operators.
    #[arg(long, env = "SLUICE_ADMIN")]
    pub admin: bool,
    /// Validate the config file and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Log lines as `text` (default) or `json` (one object per line); `RUST_LOG` sets the level.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable, with `key=value` fields.
    Text,
    /// One JSON object per line, fields under `fields`.
    Json,
}

impl LogFormat {
    /// Installs the global `tracing` subscriber: stderr, level from `RUST_LOG` (default `info`),
    /// colours only on a terminal.
    pub fn init(self) {
        use std::io::IsTerminal;
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self {
            LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}

fn parse_backend_url(s: &str) -> Result<RedisUrl, String> {
    RedisUrl::parse(s)
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    crate::core::parse_duration(s)
        .map(Duration::from_micros)
        .map_err(|e| e.to_string())
}

impl Cli {
    /// Loads the config file and applies the command-line overrides.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.config)?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(grace) = self.shutdown_grace {
            config.shutdown_grace = grace;
        }
        if let Some(addr) = self.metrics_listen {
            config.metrics_listen = Some(addr);
        }
        if let Some(addr) = self.status_listen {
            config.status_listen = Some(addr);
        }
        if self.admin {
            config.admin = true;
        }
        if let Some(url) = &self.backend_url {
            match &mut config.backend {
                BackendConfig::Redis(redis) => redis.url = url.clone(),
                BackendConfig::Memory => {
                    config.backend = BackendConfig::Redis(RedisConfig::new(url.clone()))
                }
            }
        }
        Ok(config)
    }
}
