//! [`Permit`]: a granted slot. After the API call, [`Permit::report`] tells Sluice what the
//! provider answered, so a 429 pauses every worker and real usage replaces the estimate.

use std::time::{Duration, SystemTime};

use sluice::v1::{Header, ReportResponseRequest};

use crate::{acquire::from_proto, Client, Error};

/// Most headers sent with one report (the server's bound).
const MAX_HEADERS: usize = 100;

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

/// A granted slot for one API call.
#[derive(Clone, Debug)]
pub struct Permit {
    client: Client,
    service: String,
    lease_id: String,
    wait: Duration,
    slot_time: SystemTime,
    limit: String,
}

/// True for headers that carry rate-limit or retry information; only those are sent.
fn is_rate_limit_header(name: &str) -> bool {
    name.contains("ratelimit")
        || name.contains("rate-limit")
        || name.contains("retry-after")
        || name.starts_with("anthropic-")
}

impl Permit {
    pub(crate) fn new(
        client: Client,
        service: String,
        lease_id: String,
        wait: Duration,
        slot_time: SystemTime,
        limit: String,
    ) -> Self {
        Self {
            client,
            service,
            lease_id,
            wait,
            slot_time,
            limit,
        }
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

    /// Reports the provider's answer: its HTTP status (`u16` or `http::StatusCode`), its response
    /// headers (rate-limit and retry headers are sent) and, if known, the real usage.
    pub async fn report(
        &self,
        status: impl Into<u16>,
        headers: &http::HeaderMap,
        usage: Option<Usage>,
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
            body: Vec::new(),
        };
        let answer = self
            .client
            .rpc()
            .report_response(request)
            .await?
            .into_inner();
        Ok(ReportOutcome {
            cooldown: from_proto(answer.cooldown),
            cooldown_set: answer.cooldown_set,
            detail: answer.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
