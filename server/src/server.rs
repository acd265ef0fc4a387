//! [`run`]: serves the `RateLimiter` service, gRPC health and reflection on one listener until the
//! shutdown future resolves; then reports NOT_SERVING, stops accepting, and drains in-flight calls
//! within the configured grace period. A housekeeping task drops expired state meanwhile.

use std::{future::Future, sync::Arc, time::Duration};

use sluice::{
    envoy_rls::rate_limit_service_server::RateLimitServiceServer,
    v1::{admin_server::AdminServer, rate_limiter_server::RateLimiterServer},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::{wrappers::TcpListenerStream, StreamExt};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, ServerTlsConfig},
};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    admin::AdminService,
    auth::{BearerAuth, Tokens},
    backend::{Backend, Clock, MemoryBackend, RedisBackend, RedisSetupError},
    config::{BackendConfig, Config},
    envoy::{EnvoyConfig, EnvoyService},
    grpc::{InFlight, RateLimiterService},
    limiter::Limiter,
    reload::{reload_on_hangup, ConfigSource, Reloader},
    tls::TlsConfig,
};

/// The service name under which health is reported, besides `""`.
pub const HEALTH_SERVICE: &str = "sluice.v1.RateLimiter";
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(1);
/// How often the backend's readiness is checked for the health service.
const READINESS_PERIOD: Duration = Duration::from_millis(250);

/// The server could not start or failed while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not load the API's descriptor.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The Redis backend could not start.
    #[error(transparent)]
    Backend(#[from] RedisSetupError),
    /// The serving task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The metrics endpoint or the status page could not start.
    #[error("{0}")]
    Http(String),
    /// A file named by the config (tokens, certificates) could not be used.
    #[error("{0}")]
    Setup(String),
}

/// Largest request accepted, in bytes: a report's headers and body at their limits fit with room
/// to spare. Larger messages are refused with `OUT_OF_RANGE` before they are decoded.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Serves Sluice on `listener` until `shutdown` resolves, then drains. The services are fixed:
/// see [`run_with`] for a server that reloads its config.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with(listener, config, None, shutdown).await
}

/// [`run`], reloading the services from `source` on SIGHUP and on the Admin service's
/// `ReloadConfig` (see [`crate::reload`]).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    source: Option<Arc<dyn ConfigSource>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let startup = config.clone();
    let specs: Vec<_> = config.services.into_iter().map(Arc::new).collect();
    let profiles = config.profiles;
    let priorities = config.priorities;
    let tokens = config.auth.as_ref().map(Tokens::load).transpose();
    let options = Options {
        grace: config.shutdown_grace,
        metrics_listen: config.metrics_listen,
        status_listen: config.status_listen,
        admin: config.admin,
        auth: BearerAuth::new(tokens.map_err(ServeError::Setup)?),
        tls: config
            .tls
            .as_ref()
            .map(TlsConfig::server_config)
            .transpose()
            .map_err(ServeError::Setup)?,
        max_in_flight: config.max_in_flight,
        envoy: config.envoy.clone(),
        startup,
        source,
    };
    match config.backend {
        BackendConfig::Memory => {
            let backend = MemoryBackend::new(&specs, Clock::new());
            serve(
                listener,
                Limiter::new(specs, backend)
                    .with_profiles(profiles)
                    .with_priorities(priorities.clone()),
                options,
                shutdown,
            )
            .await
        }
        BackendConfig::Redis(redis) => {
            let backend = RedisBackend::start(&specs, &redis).await?;
            serve(
                listener,
                Limiter::new(specs, backend)
                    .with_profiles(profiles)
                    .with_priorities(priorities),
                options,
                shutdown,
            )
            .await
        }
    }
}

/// What `serve` needs besides the limiter.
struct Options {
    grace: Duration,
    metrics_listen: Option<std::net::SocketAddr>,
    status_listen: Option<std::net::SocketAddr>,
    admin: bool,
    /// Checks bearer tokens on every service but health.
    auth: BearerAuth,
    tls: Option<ServerTlsConfig>,
    max_in_flight: usize,
    envoy: Option<EnvoyConfig>,
    /// The config the server started with.
    startup: Config,
    /// Where reloads read the config.
    source: Option<Arc<dyn ConfigSource>>,
}

async fn set_health(reporter: &mut HealthReporter, status: ServingStatus) {
    for name in ["", HEALTH_SERVICE] {
        reporter.set_service_status(name, status).await;
    }
}

async fn serve<B: Backend>(
    listener: TcpListener,
    limiter: Limiter<B>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let grace = options.grace;
    let limiter = Arc::new(limiter);
    let (web_stop, web_stopped) = tokio::sync::watch::channel(false);
    let web = crate::web::start(
        crate::web::Listeners {
            metrics: options.metrics_listen,
            status: options.status_listen,
        },
        &limiter,
        &options.auth,
        web_stopped,
    )
    .await
    .map_err(ServeError::Http)?;
    let (mut health, health_service) = tonic_health::server::health_reporter();
    // The first status is known before anyone can watch: watchers see changes only.
    let ready = limiter.backend().ready().await;
    log_readiness(&ready);
    set_health(&mut health, status_of(&ready)).await;
    let readiness = spawn_readiness(limiter.clone(), health.clone(), ready.is_ok());
    // Reflection describes the API and the health service; v1alpha is kept for older clients.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_alpha = reflection().build_v1alpha()?;
    let reflection = reflection().build_v1()?;

    let maintenance = spawn_maintenance(limiter.clone());
    let reloader = Arc::new(Reloader::new(
        limiter.clone(),
        options.source.clone(),
        &options.startup,
        options.auth.clone(),
    ));
    let hangups = options
        .source
        .is_some()
        .then(|| tokio::spawn(reload_on_hangup(reloader.clone())));
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let mut server = Server::builder();
    if let Some(tls) = options.tls {
        server = server.tls_config(tls)?;
        tracing::info!("serving TLS");
    }
    let auth = options.auth;
    let in_flight = InFlight::new(options.max_in_flight);
    let api = RateLimiterServer::new(
        RateLimiterService::new(limiter.clone()).with_in_flight(in_flight.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE);
    let admin = options.admin.then(|| {
        tracing::info!("serving sluice.v1.Admin");
        let service = AdminServer::new(AdminService::new(limiter.clone(), reloader.clone()))
            .max_decoding_message_size(MAX_MESSAGE);
        InterceptedService::new(service, auth.clone())
    });
    let envoy = options.envoy.map(|config| {
        tracing::info!("serving envoy.service.ratelimit.v3.RateLimitService");
        let service = RateLimitServiceServer::new(EnvoyService::new(
            limiter.clone(),
            config,
            in_flight.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE);
        InterceptedService::new(service, auth.clone())
    });
    // Health stays open to probes; everything else needs a token when tokens are configured.
    let router = server
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, auth.clone()))
        .add_service(InterceptedService::new(reflection_alpha, auth.clone()))
        .add_service(InterceptedService::new(api, auth))
        .add_optional_service(admin)
        .add_optional_service(envoy);
    let mut serving = tokio::spawn(router.serve_with_incoming_shutdown(
        incoming(listener),
        async {
            let _ = drain_rx.await;
        },
    ));

    let result = tokio::select! {
        result = &mut serving => Some(result),
        () = shutdown => None,
    };
    readiness.abort();
    if let Err(e) = readiness.await {
        if e.is_panic() {
            tracing::error!(error = %e, task = "readiness", "task panicked");
        }
    }
    let result = match result {
        Some(early) => early,
        None => {
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "shutting down: not serving, draining"
            );
            set_health(&mut health, ServingStatus::NotServing).await;
            // Watchers have been sent NOT_SERVING; ending their streams lets the drain finish
            // as soon as the calls in flight do, instead of waiting out the grace period.
            for name in ["", HEALTH_SERVICE] {
                health.clear_service_status(name).await;
            }
            let _ = drain_tx.send(());
            match tokio::time::timeout(grace, &mut serving).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("drain deadline passed; closing remaining connections");
                    serving.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    for (task, name) in [
        (Some(maintenance), "maintenance"),
        (hangups, "SIGHUP listener"),
    ] {
        let Some(task) = task else { continue };
        task.abort();
        if let Err(e) = task.await {
            if e.is_panic() {
                tracing::error!(error = %e, task = name, "task panicked");
            }
        }
    }
    let _ = web_stop.send(true);
    for task in web {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "http listener task failed");
        }
    }
    result??;
    tracing::info!("stopped");
    Ok(())
}

/// The connections `listener` accepts, with Nagle's algorithm off: answers are small frames
/// that must not wait for the peer's delayed ACK.
pub fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        }
        accepted
    })
}

/// Reports SERVING while the backend is ready and NOT_SERVING while it is not, logging each change
/// with its reason. Starts NOT_SERVING: a server is ready once its backend is.
fn spawn_readiness<B: Backend>(
    limiter: Arc<Limiter<B>>,
    mut health: HealthReporter,
    mut serving: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(READINESS_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ready = limiter.backend().ready().await;
            if serving != ready.is_ok() {
                log_readiness(&ready);
                set_health(&mut health, status_of(&ready)).await;
                serving = ready.is_ok();
            }
        }
    })
}

fn status_of(ready: &Result<(), String>) -> ServingStatus {
    match ready {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    }
}

fn log_readiness(ready: &Result<(), String>) {
    match ready {
        Ok(()) => tracing::info!("backend ready: serving"),
        Err(reason) => tracing::warn!(%reason, "backend not ready: health reports NOT_SERVING"),
    }
}

fn spawn_maintenance<B: Backend>(limiter: Arc<Limiter<B>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            limiter.backend().maintain().await;
        }
    })
}
