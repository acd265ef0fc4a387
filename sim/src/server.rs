//! The simulated provider's HTTP server: one endpoint that takes a JSON body naming the call's
//! input and output tokens, checks every budget, and answers 200 with usage or 429, with the
//! configured header style. Every call is recorded.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinSet};

use crate::{
    budget::{Budget, Enforcement},
    headers::{self, BudgetView, HeaderMode, Style},
    sdk,
};

/// What the simulated provider enforces and how it answers.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Header set and bodies.
    pub style: Style,
    /// When rate-limit headers are sent.
    pub headers: HeaderMode,
    /// Budgets: dimension (0 requests, 1 tokens, 2 input tokens, 3 output tokens), amount per
    /// window, window, enforcement.
    pub budgets: Vec<(usize, u64, Duration, Enforcement)>,
    /// Time each answer takes (the model "thinking").
    pub latency: Duration,
}

/// One call as the provider saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// Arrival, since the provider started.
    pub at: Duration,
    /// 200 or 429 (400 for a body it could not read).
    pub status: u16,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

struct State {
    config: ProviderConfig,
    budgets: Vec<(usize, Budget)>,
    calls: Vec<CallRecord>,
}

/// A running simulated provider; stops when dropped.
pub struct SimProvider {
    addr: SocketAddr,
    started: Instant,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimProvider {
    /// Starts a provider on `127.0.0.1:0`.
    pub async fn start(config: ProviderConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let budgets = config
            .budgets
            .iter()
            .map(|&(d, amount, window, e)| (d, Budget::new(amount, window, e)))
            .collect();
        let started = Instant::now();
        let state = Arc::new(Mutex::new(State {
            config,
            budgets,
            calls: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = shared.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| {
                                let state = state.clone();
                                async move { Ok::<_, Infallible>(answer(&state, started, req).await) }
                            });
                            // A worker closing its connection mid-call is not the provider's error.
                            let _closed = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_done) = connections.join_next() => {}
                }
            }
        });
        Ok(Self {
            addr,
            started,
            state,
            task,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When the provider started: fixed windows are aligned to it.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }
}

impl Drop for SimProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn field(body: &serde_json::Value, name: &str) -> Option<u64> {
    match body.get(name) {
        None => Some(0),
        Some(v) => v.as_u64(),
    }
}

async fn answer(
    state: &Mutex<State>,
    started: Instant,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(
                StatusCode::BAD_REQUEST,
                Vec::new(),
                "unreadable body".into(),
            )
        }
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
    // An official SDK's request (it names a model), else the benchmark's own shape.
    let sdk_call = parsed.as_ref().and_then(sdk::read);
    let tokens = match &sdk_call {
        Some(call) => Some((call.input_tokens, call.output_tokens)),
        None => parsed
            .as_ref()
            .and_then(|v| Some((field(v, "input_tokens")?, field(v, "output_tokens")?))),
    };
    let now = started.elapsed();
    let (status, headers, body, latency) = {
        let Ok(mut state) = state.lock() else {
            return respond(StatusCode::INTERNAL_SERVER_ERROR, Vec::new(), String::new());
        };
        let Some((input, output)) = tokens else {
            state.calls.push(CallRecord {
                at: now,
                status: 400,
                input_tokens: 0,
                output_tokens: 0,
            });
            return respond(
                StatusCode::BAD_REQUEST,
                Vec::new(),
                r#"{"error":{"message":"body must be an SDK's model call or {\"input_tokens\":n,\"output_tokens\":m}"}}"#
                    .into(),
            );
        };
        let cost = [1, input + output, input, output];
        let fits = state.budgets.iter_mut().all(|(d, b)| b.fits(cost[*d], now));
        let style = state.config.style;
        let mut wait = Duration::ZERO;
        if fits {
            for (d, b) in &mut state.budgets {
                b.charge(cost[*d], now);
            }
        } else {
            for (d, b) in &mut state.budgets {
                wait = wait.max(b.wait_for(cost[*d], now));
            }
        }
        let send_headers = match state.config.headers {
            HeaderMode::Always => true,
            HeaderMode::On429 => !fits,
            HeaderMode::Never => false,
        };
        let mut headers = Vec::new();
        if send_headers {
            let views: Vec<BudgetView> = state
                .budgets
                .iter_mut()
                .map(|(d, b)| BudgetView {
                    dimension: *d,
                    limit: b.amount,
                    remaining: b.remaining(now),
                    reset: b.reset(now),
                })
                .collect();
            headers = headers::rate_limit_headers(style, &views, SystemTime::now());
        }
        let status = if fits { 200 } else { 429 };
        if !fits && style == Style::Anthropic && state.config.headers != HeaderMode::Never {
            let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
            headers.push(("retry-after".into(), secs.to_string()));
        }
        state.calls.push(CallRecord {
            at: now,
            status,
            input_tokens: input,
            output_tokens: output,
        });
        let (kind, body) = match (&sdk_call, fits) {
            (Some(call), true) => sdk::answer(style, call),
            (None, true) => (
                "application/json",
                headers::success_body(style, input, output),
            ),
            (_, false) => ("application/json", headers::limited_body(style).to_string()),
        };
        headers.push(("content-type".into(), kind.into()));
        (status, headers, body, state.config.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(code, headers, body)
}

fn respond(
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name),
            http::HeaderValue::try_from(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    if !response.headers().contains_key(http::header::CONTENT_TYPE) {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    response
}

impl std::fmt::Debug for SimProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProvider")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A budget description for [`ProviderConfig::budgets`].
pub fn budget(
    dimension: usize,
    amount: u64,
    window: Duration,
    enforcement: Enforcement,
) -> (usize, u64, Duration, Enforcement) {
    (dimension, amount, window, enforcement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimClient;

    #[tokio::test]
    async fn answers_like_openai_until_the_budget_is_spent(
    ) -> Result<(), crate::client::ClientError> {
        let provider = SimProvider::start(ProviderConfig {
            style: Style::OpenAi,
            headers: HeaderMode::Always,
            budgets: vec![
                budget(0, 2, Duration::from_secs(60), Enforcement::FixedWindow),
                budget(1, 1000, Duration::from_secs(60), Enforcement::TokenBucket),
            ],
            latency: Duration::ZERO,
        })
        .await?;
        let mut client = SimClient::connect(provider.addr()).await?;
        let first = client.call(100, 20).await?;
        assert_eq!(first.status, 200);
        assert_eq!(first.headers["x-ratelimit-limit-requests"], "2");
        assert_eq!(first.headers["x-ratelimit-remaining-requests"], "1");
        assert_eq!(first.headers["x-ratelimit-remaining-tokens"], "880");
        let usage: serde_json::Value = serde_json::from_slice(&first.body)?;
        assert_eq!(usage["usage"]["total_tokens"], 120);
        assert_eq!(client.call(1, 1).await?.status, 200);
        let limited = client.call(1, 1).await?;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.headers["x-ratelimit-remaining-requests"], "0");
        let statuses: Vec<u16> = provider.calls().iter().map(|c| c.status).collect();
        assert_eq!(statuses, vec![200, 200, 429]);
        Ok(())
    }

    #[tokio::test]
    async fn answers_like_anthropic_with_retry_after_on_429s_only(
    ) -> Result<(), crate::client::ClientError> {
        let provider = SimProvider::start(ProviderConfig {
            style: Style::Anthropic,
            headers: HeaderMode::On429,
            budgets: vec![budget(
                2,
                100,
                Duration::from_secs(60),
                Enforcement::TokenBucket,
            )],
            latency: Duration::ZERO,
        })
        .await?;
        let mut client = SimClient::connect(provider.addr()).await?;
        let ok = client.call(90, 5).await?;
        assert_eq!(ok.status, 200);
        assert!(ok
            .headers
            .get("anthropic-ratelimit-input-tokens-remaining")
            .is_none());
        let limited = client.call(20, 5).await?;
        assert_eq!(limited.status, 429);
        // 10 tokens short at 100 per minute: 6 s.
        assert_eq!(limited.headers["retry-after"], "6");
        assert_eq!(
            limited.headers["anthropic-ratelimit-input-tokens-remaining"],
            "10"
        );
        assert!(limited.body.starts_with(br#"{"type":"error""#));
        assert_eq!(client.call(1, 1).await?.status, 200);
        Ok(())
    }
}
