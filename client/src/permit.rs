//! [`Permit`]: a granted slot. After the API call, [`Permit::report`] tells Sluice what the
//! provider answered, so a 429 pauses every worker and real usage replaces the estimate. A permit
//! dropped without a report (an error, a panic, a cancelled task) reports itself as abandoned, so
//! the call's in-flight slot is free at once instead of at its lease timeout.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use sluice::v1::{Header, ReportResponseRequest, Scope};

use crate::{convert::from_proto, Client, Error};

/// Most headers sent with one report (the server's bound).
const MAX_HEADERS: usize = 100;
/// Largest body sent with a report (the server's bound); a larger one is not sent.
const MAX_BODY: usize = 64 * 1024;

/// Real token usage of a call, as the provider reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens.
    pub output_tokens: Option<u64>,
    /// Total tokens; derived from input + output when absent.
    pub total_tokens: Option<u64>,
}

impl Usage {
    /// Usage from input and output token counts.
    pub fn tokens(input: u64, output: u64) -> Self {
        Self {
            input_tokens: Some(input),
            output_tokens: Some(output),
            total_tokens: Some(input.saturating_add(output)),
        }
    }

    /// Reads the usage from a provider's JSON response body, so a worker need not parse it:
    /// OpenAI chat completions (`usage.prompt_tokens`, `completion_tokens`, `total_tokens`),
    /// OpenAI responses and Anthropic messages (`usage.input_tokens`, `output_tokens`; Anthropic's
    /// `cache_creation_input_tokens` count as input, cache reads do not), and Gemini
    /// (`usageMetadata.promptTokenCount`, `candidatesTokenCount`, `totalTokenCount`). `None` when
    /// the body is not JSON or carries no usage.
    ///
    /// ```
    /// use sluice_client::Usage;
    /// let body = br#"{"id":"chatcmpl-1","usage":{"prompt_tokens":950,"completion_tokens":210,"total_tokens":1160}}"#;
    /// assert_eq!(Usage::from_json(body), Some(Usage::tokens(950, 210)));
    /// ```
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let count =
            |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_u64);
        if let Some(u) = json.get("usage").filter(|u| u.is_object()) {
            let input = count(u, "prompt_tokens").or_else(|| {
                count(u, "input_tokens")
                    .map(|i| i.saturating_add(count(u, "cache_creation_input_tokens").unwrap_or(0)))
            });
            let output = count(u, "completion_tokens").or_else(|| count(u, "output_tokens"));
            let total = count(u, "total_tokens")
                .or_else(|| input.zip(output).map(|(i, o)| i.saturating_add(o)));
            return (input.is_some() || output.is_some() || total.is_some()).then_some(Usage {
                input_tokens: input,
                output_tokens: output,
                total_tokens: total,
            });
        }
        let u = json.get("usageMetadata").filter(|u| u.is_object())?;
        let input = count(u, "promptTokenCount");
        let output = count(u, "candidatesTokenCount");
        let total = count(u, "totalTokenCount")
            .or_else(|| input.zip(output).map(|(i, o)| i.saturating_add(o)));
        Some(Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: total,
        })
    }
}

/// What the server did with a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportOutcome {
    /// Cooldown of the service still active.
    pub cooldown: Duration,
    /// This report set or lengthened the cooldown.
    pub cooldown_set: bool,
    /// What was applied or ignored.
    pub detail: String,
}

/// A granted slot for one API call. Clones share one lease: the last one dropped without a report
/// reports the call abandoned (when a tokio runtime is there to send it).
#[derive(Clone, Debug)]
pub struct Permit {
    client: Client,
    service: String,
    lease_id: String,
    /// Shared by clones; reports the lease abandoned when the last clone goes unreported.
    guard: Arc<ReleaseOnDrop>,
    wait: Duration,
    slot_time: SystemTime,
    limit: String,
    scope: Scope,
}

/// True for headers that carry rate-limit or retry information; only those are sent.
fn is_rate_limit_header(name: &str) -> bool {
    name.contains("ratelimit")
        || name.contains("rate-limit")
        || name.contains("retry-after")
        || name.starts_with("anthropic-")
}

/// The status code of a report for a call that got no answer.
const ABANDONED: u32 = 0;

/// Sends an "abandoned" report for a lease nobody reported: made as soon as a grant arrives, so
/// an acquire cancelled while it sleeps until its slot gives its in-flight slot back too (its
/// booking in the windows stays, as for any abandoned call).
#[derive(Debug)]
pub(crate) struct ReleaseOnDrop {
    client: Client,
    service: String,
    lease_id: String,
    reported: AtomicBool,
}

impl ReleaseOnDrop {
    /// A guard for `lease_id` of `service`.
    pub(crate) fn new(client: &Client, service: &str, lease_id: &str) -> Arc<Self> {
        Arc::new(Self {
            client: client.clone(),
            service: service.to_string(),
            lease_id: lease_id.to_string(),
            reported: AtomicBool::new(false),
        })
    }

    /// The lease it guards.
    pub(crate) fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// Sends nothing when dropped.
    pub(crate) fn disarm(&self) {
        self.reported.store(true, Ordering::Release);
    }

    fn request(&self, status_code: u32) -> ReportResponseRequest {
        ReportResponseRequest {
            service: self.service.clone(),
            lease_id: self.lease_id.clone(),
            status_code,
            ..ReportResponseRequest::default()
        }
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if self.reported.load(Ordering::Acquire) || self.lease_id.is_empty() {
            return;
        }
        // Outside a runtime nothing can be sent: the slot frees itself at its lease timeout.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let request = self.request(ABANDONED);
        // Fire and forget: the drop cannot wait, and a lost report only delays the slot's release
        // until its lease timeout.
        drop(runtime.spawn(async move {
            let _ = client.rpc().report_response(request).await;
        }));
    }
}

impl Permit {
    pub(crate) fn new(
        client: Client,
        guard: Arc<ReleaseOnDrop>,
        wait: Duration,
        slot_time: SystemTime,
        limit: String,
        scope: Scope,
    ) -> Self {
        Self {
            service: guard.service.clone(),
            lease_id: guard.lease_id.clone(),
            client,
            guard,
            wait,
            slot_time,
            limit,
            scope,
        }
    }

    /// Which state granted the slot: `Shared` normally; `Local` or `FailOpen` when the server's
    /// Redis was failing, so the grant does not count against the other replicas.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The service the slot is for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The lease id.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// How long the server asked to wait before the call (already slept, unless
    /// [`Acquire::without_sleep`](crate::Acquire::without_sleep) was used).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The slot's start, by the server's clock.
    pub fn slot_time(&self) -> SystemTime {
        self.slot_time
    }

    /// The limit or cooldown that decided the wait; empty when there was none.
    pub fn limit(&self) -> &str {
        &self.limit
    }

    /// Reports that the call got no answer (it was not made, or its answer was lost): the lease's
    /// in-flight slot is released and nothing else changes. Dropping an unreported permit does
    /// the same in the background.
    pub async fn abandon(&self) -> Result<ReportOutcome, Error> {
        self.send(self.guard.request(ABANDONED)).await
    }

    /// Gives up the permit without reporting it, e.g. to hand its lease id to another process that
    /// will report the call; the drop sends nothing.
    pub fn detach(self) -> String {
        self.guard.disarm();
        self.lease_id.clone()
    }

    async fn send(&self, request: ReportResponseRequest) -> Result<ReportOutcome, Error> {
        let answer = self
            .client
            .rpc()
            .report_response(request)
            .await?
            .into_inner();
        self.guard.reported.store(true, Ordering::Release);
        Ok(ReportOutcome {
            cooldown: from_proto(answer.cooldown),
            cooldown_set: answer.cooldown_set,
            detail: answer.detail,
        })
    }

    /// Reports the provider's answer: its HTTP status (`u16` or `http::StatusCode`), its response
    /// headers (rate-limit and retry headers are sent) and, if known, the real usage.
    pub async fn report(
        &self,
        status: impl Into<u16>,
        headers: &http::HeaderMap,
        usage: Option<Usage>,
    ) -> Result<ReportOutcome, Error> {
        self.report_with_body(status, headers, usage, &[]).await
    }

    /// [`Permit::report`] with the response body, for providers that put the retry time or the
    /// quota in it (Gemini's `RetryInfo`, Anthropic's spend cap). Worth sending for error answers;
    /// a body over 64 KiB is not sent.
    pub async fn report_with_body(
        &self,
        status: impl Into<u16>,
        headers: &http::HeaderMap,
        usage: Option<Usage>,
        body: &[u8],
    ) -> Result<ReportOutcome, Error> {
        let headers = headers
            .iter()
            .filter(|(name, _)| is_rate_limit_header(name.as_str()))
            .take(MAX_HEADERS)
            .map(|(name, value)| Header {
                name: name.as_str().to_string(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect();
        let request = ReportResponseRequest {
            service: self.service.clone(),
            lease_id: self.lease_id.clone(),
            status_code: u32::from(status.into()),
            headers,
            usage: usage.map(|u| sluice::v1::Usage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                total_tokens: u.total_tokens,
            }),
            body: if body.len() <= MAX_BODY {
                body.to_vec()
            } else {
                Vec::new()
            },
        };
        self.send(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_every_providers_body() {
        let anthropic = br#"{"type":"message","usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":500,"output_tokens":30}}"#;
        assert_eq!(Usage::from_json(anthropic), Some(Usage::tokens(112, 30)));
        let responses = br#"{"object":"response","usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}}"#;
        assert_eq!(Usage::from_json(responses), Some(Usage::tokens(5, 7)));
        let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"totalTokenCount":7}}"#;
        assert_eq!(Usage::from_json(gemini), Some(Usage::tokens(3, 4)));
        assert_eq!(Usage::from_json(b"not json"), None);
        assert_eq!(Usage::from_json(br#"{"usage":{}}"#), None);
        assert_eq!(Usage::from_json(br#"{"usage":"n/a"}"#), None);
        assert_eq!(Usage::from_json(br#"{"usage":{"prompt_tokens":-1}}"#), None);
    }

    #[test]
    fn only_rate_limit_headers_are_forwarded() {
        for name in [
            "x-ratelimit-remaining-tokens",
            "retry-after",
            "retry-after-ms",
            "x-ms-retry-after-ms",
            "anthropic-ratelimit-tokens-reset",
            "ratelimit-policy",
        ] {
            assert!(is_rate_limit_header(name), "{name}");
        }
        for name in [
            "content-type",
            "set-cookie",
            "authorization",
            "x-request-id",
        ] {
            assert!(!is_rate_limit_header(name), "{name}");
        }
    }
}
