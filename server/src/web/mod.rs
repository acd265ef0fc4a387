//! The HTTP side of the server: the Prometheus endpoint (`GET /metrics`) and the live status page
//! (`GET /`, its data at `GET /api/status`), on the metrics listener and, if set, on a
//! `status_listen` of its own. The page is one embedded file (`page.html`: no build step, no
//! CDN) that polls the JSON; the JSON is `ListServices` (see [`status`]). With `[auth]` the page
//! and its JSON need a token, as `Authorization: Bearer <token>` or as the password of HTTP Basic
//! auth (so a browser asks for it); `/metrics` stays open to scrapers, as before.

pub mod status;

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{
    net::TcpListener,
    sync::watch,
    task::{JoinHandle, JoinSet},
};

use crate::{auth::BearerAuth, backend::Backend, limiter::Limiter};

/// The page, embedded in the binary.
const PAGE: &str = include_str!("page.html");

/// What `/api/status` answers: its status (503 when the backend did not answer) and JSON text.
pub type StatusAnswer = (StatusCode, String);

/// Makes the answer to `/api/status`.
pub type StatusFeed =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = StatusAnswer> + Send>> + Send + Sync>;

/// Run before each scrape: refreshes the gauges read from the live state (budget use).
pub type ScrapeHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What one listener serves.
#[derive(Clone)]
pub struct Routes {
    /// `GET /metrics`, when metrics are on, and what to refresh before rendering.
    pub metrics: Option<(PrometheusHandle, ScrapeHook)>,
    /// `GET /` and `GET /api/status`, when the page is on.
    pub status: Option<StatusFeed>,
    /// Checks the page's token.
    pub auth: BearerAuth,
}

/// Where the HTTP side listens; each is off when `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Listeners {
    /// `metrics_listen`: `/metrics` and the status page.
    pub metrics: Option<SocketAddr>,
    /// `status_listen`: the status page alone.
    pub status: Option<SocketAddr>,
}

/// Binds the configured listeners and serves them until `stop` turns true; the tasks end then.
pub async fn start<B: Backend>(
    listeners: Listeners,
    limiter: &Arc<Limiter<B>>,
    auth: &BearerAuth,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    if auth.enabled() && (listeners.metrics.is_some() || listeners.status.is_some()) {
        tracing::warn!(
            "the status page takes its token over plain HTTP: reach it through TLS (a proxy) \
             or a private network, and give it read-only [auth] status_tokens"
        );
    }
    let snapshots = Arc::new(status::Snapshots::new(limiter.clone()));
    let feed: StatusFeed = {
        let snapshots = snapshots.clone();
        Arc::new(move || {
            let snapshots = snapshots.clone();
            Box::pin(async move { status::answer(&*snapshots.get().await) })
        })
    };
    let mut tasks = Vec::new();
    if let Some(addr) = listeners.metrics {
        let handle = crate::metrics::install().map_err(|e| format!("metrics: {e}"))?;
        let budgets: ScrapeHook = {
            let snapshots = snapshots.clone();
            Arc::new(move || {
                let snapshots = snapshots.clone();
                Box::pin(async move { status::record_budgets(&*snapshots.get().await) })
            })
        };
        let routes = Routes {
            metrics: Some((handle, budgets)),
            status: Some(feed.clone()),
            auth: auth.clone(),
        };
        let listener = bind("metrics_listen", addr).await?;
        tracing::info!(
            metrics_addr = %local(&listener)?,
            "serving metrics at /metrics, the status page at /"
        );
        tasks.push(spawn(listener, routes, stop.clone()));
    }
    if let Some(addr) = listeners.status {
        let routes = Routes {
            metrics: None,
            status: Some(feed),
            auth: auth.clone(),
        };
        let listener = bind("status_listen", addr).await?;
        tracing::info!(status_addr = %local(&listener)?, "serving the status page at /");
        tasks.push(spawn(listener, routes, stop));
    }
    Ok(tasks)
}

async fn bind(setting: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{setting}: cannot listen on {addr}: {e}"))
}

fn local(listener: &TcpListener) -> Result<SocketAddr, String> {
    listener.local_addr().map_err(|e| e.to_string())
}

fn spawn(listener: TcpListener, routes: Routes, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(serve(listener, routes, async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    }))
}

/// Serves `routes` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: impl Future<Output = ()>) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let routes = routes.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let routes = routes.clone();
                        async move { Ok::<_, Infallible>(routes.answer(&req).await) }
                    });
                    if let Err(e) = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(error = %e, "http connection ended");
                    }
                });
            }
            Some(_done) = connections.join_next() => {}
        }
    }
    connections.shutdown().await;
}

impl Routes {
    async fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match (path, &self.metrics, &self.status) {
            ("/metrics", Some((handle, before)), _) => {
                before().await;
                handle.run_upkeep();
                let mut response = text(StatusCode::OK, &handle.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            ("/" | "/api/status", _, Some(feed)) => {
                let authorization = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes);
                if !self.auth.allows_bearer_or_basic(authorization) {
                    let mut response = text(StatusCode::UNAUTHORIZED, "a token is needed\n");
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(
                            "Basic realm=\"sluice status\", charset=\"UTF-8\"",
                        ),
                    );
                    return response;
                }
                if path == "/" {
                    let mut response = text(StatusCode::OK, PAGE);
                    set_type(&mut response, "text/html; charset=utf-8");
                    return response;
                }
                let (status, body) = feed().await;
                let mut response = text(status, &body);
                set_type(&mut response, "application/json");
                response
            }
            _ => text(StatusCode::NOT_FOUND, &self.not_found()),
        }
    }

    fn not_found(&self) -> String {
        let mut paths = Vec::new();
        if self.metrics.is_some() {
            paths.push("GET /metrics");
        }
        if self.status.is_some() {
            paths.push("GET / (status page), GET /api/status");
        }
        format!("not found: try {}\n", paths.join(", "))
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    set_type(&mut response, "text/plain; charset=utf-8");
    // Live data: never cached; the page is not to be framed by another site.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn set_type(response: &mut Response<Full<Bytes>>, content_type: &'static str) {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
}
