//! Live configuration: on SIGHUP, or on the Admin service's `ReloadConfig`, the config file is
//! read again and validated. A file that does not validate (or that the backend cannot hold) is
//! refused with a logged reason and the running config stays in force; a good one replaces the
//! services at once (see [`Limiter::reconfigure`] for what happens to their state). Settings bound
//! at start (listen address, backend, metrics address, admin switch, shutdown grace, TLS,
//! `max_in_flight`) are not changed by a reload: a change to them is logged as needing a restart.
//! Bearer tokens are reloaded (the tokens file is read again), so they can be rotated live.

use std::{path::PathBuf, sync::Arc};

use crate::{
    auth::{BearerAuth, Tokens},
    backend::Backend,
    cli::Cli,
    config::{Config, ConfigError},
    error::Error,
    limiter::{Limiter, ReloadSummary},
};

/// Where a running server reads its configuration again.
pub trait ConfigSource: Send + Sync + 'static {
    /// The configuration as it is now, validated.
    fn load(&self) -> Result<Config, ConfigError>;
    /// Where it comes from, for logs (e.g. the file's path).
    fn origin(&self) -> String;
}

impl ConfigSource for Cli {
    /// The config file with the command line's overrides applied again, so settings given on the
    /// command line do not read as changed.
    fn load(&self) -> Result<Config, ConfigError> {
        self.load_config()
    }

    fn origin(&self) -> String {
        self.config.display().to_string()
    }
}

/// A config file read as is (no command-line overrides).
#[derive(Clone, Debug)]
pub struct ConfigFile(pub PathBuf);

impl ConfigSource for ConfigFile {
    fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.0)
    }

    fn origin(&self) -> String {
        self.0.display().to_string()
    }
}

/// Why a reload was refused. The running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was started without a config file to read again.
    #[error("this server has no config file to reload")]
    NoSource,
    /// The file could not be read or does not validate.
    #[error("config refused: {0}")]
    Invalid(#[from] ConfigError),
    /// The backend cannot hold the new services.
    #[error("config refused: {0}")]
    Refused(#[from] Error),
    /// The tokens file could not be read or holds a bad token.
    #[error("config refused: {0}")]
    Tokens(String),
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The services added, removed, changed and kept.
    pub summary: ReloadSummary,
    /// Settings whose change needs a restart (and was not applied).
    pub needs_restart: Vec<&'static str>,
}

/// The settings a reload cannot change, as the server started with them.
#[derive(Debug)]
struct StartupSettings(Config);

impl StartupSettings {
    fn differences(&self, next: &Config) -> Vec<&'static str> {
        let now = &self.0;
        [
            ("listen", now.listen != next.listen),
            ("backend", now.backend != next.backend),
            ("metrics_listen", now.metrics_listen != next.metrics_listen),
            ("status_listen", now.status_listen != next.status_listen),
            ("admin", now.admin != next.admin),
            ("shutdown_grace", now.shutdown_grace != next.shutdown_grace),
            ("tls", now.tls != next.tls),
            ("max_in_flight", now.max_in_flight != next.max_in_flight),
            ("envoy", now.envoy != next.envoy),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

impl<B: Backend> crate::admin::ConfigReloader for Reloader<B> {
    fn reload<'a>(&'a self, trigger: &'static str) -> crate::admin::Reloading<'a> {
        Box::pin(async move {
            let done = Reloader::reload(self, trigger)
                .await
                .map_err(|e| e.to_string())?;
            Ok((done.summary, done.needs_restart))
        })
    }
}

/// Reloads a running limiter's services from its config source.
pub struct Reloader<B> {
    /// Held for a whole reload: reloads apply one after the other, in the order they read.
    running: tokio::sync::Mutex<()>,
    limiter: Arc<Limiter<B>>,
    source: Option<Arc<dyn ConfigSource>>,
    startup: StartupSettings,
    auth: BearerAuth,
}

impl<B> std::fmt::Debug for Reloader<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source.as_ref().map(|s| s.origin()))
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Reloader<B> {
    /// Reloads `limiter` from `source` (none: every reload is refused); `startup` is the config
    /// the server started with.
    pub fn new(
        limiter: Arc<Limiter<B>>,
        source: Option<Arc<dyn ConfigSource>>,
        startup: &Config,
        auth: BearerAuth,
    ) -> Self {
        let mut settings = startup.clone();
        settings.services.clear();
        settings.profiles.clear();
        Self {
            running: tokio::sync::Mutex::new(()),
            limiter,
            source,
            startup: StartupSettings(settings),
            auth,
        }
    }

    /// Reads the config again and applies it, logging the outcome; `trigger` (e.g. `SIGHUP`) is
    /// logged with it.
    pub async fn reload(&self, trigger: &'static str) -> Result<Reloaded, ReloadError> {
        let result = self.apply().await;
        match &result {
            Ok(done) => {
                let s = &done.summary;
                tracing::info!(
                    trigger,
                    added = ?s.added,
                    removed = ?s.removed,
                    changed = ?s.changed,
                    unchanged = s.unchanged.len(),
                    "config reloaded"
                );
                if !done.needs_restart.is_empty() {
                    tracing::warn!(
                        trigger,
                        settings = ?done.needs_restart,
                        "config reload: these settings changed but take effect only at a restart"
                    );
                }
            }
            Err(e) => tracing::error!(
                trigger,
                reason = %e,
                "config reload refused; the running config stays in force"
            ),
        }
        result
    }

    async fn apply(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        // Reading and parsing touch the file system: keep them off the async workers.
        let loader = source.clone();
        let (config, tokens) = tokio::task::spawn_blocking(move || {
            let config = loader.load()?;
            let tokens = config.auth.as_ref().map(Tokens::load).transpose();
            Ok::<_, ReloadError>((config, tokens.map_err(ReloadError::Tokens)?))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("config reader failed: {e}")))??;
        let mut needs_restart = self.startup.differences(&config);
        // Removing [auth] would open the port to anyone: that takes a restart, not a reload (a
        // file edited by mistake must not do it). Tokens still rotate while [auth] stays.
        let tokens = match tokens {
            None if self.startup.0.auth.is_some() => {
                needs_restart.push("auth");
                None
            }
            tokens => Some(tokens),
        };
        let summary = self
            .limiter
            .reconfigure(config.services, config.profiles)
            .await?;
        self.limiter.set_priorities(config.priorities);
        // Last: a reload refused above leaves the tokens as they were.
        if let Some(tokens) = tokens {
            self.auth.replace(tokens);
        }
        Ok(Reloaded {
            summary,
            needs_restart,
        })
    }
}

/// Reloads on every SIGHUP until the task is aborted.
#[cfg(unix)]
pub(crate) async fn reload_on_hangup<B: Backend>(reloader: Arc<Reloader<B>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with the Admin RPC");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        // The outcome is logged by reload().
        let _ = reloader.reload("SIGHUP").await;
    }
}

/// Signals do not exist here: reload with the Admin RPC.
#[cfg(not(unix))]
pub(crate) async fn reload_on_hangup<B: Backend>(_reloader: Arc<Reloader<B>>) {
    std::future::pending::<()>().await
}
