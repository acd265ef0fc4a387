//! How the simulated provider words its answers: OpenAI's `x-ratelimit-*` headers with Go-style
//! durations, or Anthropic's `anthropic-ratelimit-*` headers with RFC 3339 resets and a
//! `retry-after` on 429s; and when it sends them.

use std::time::{Duration, SystemTime};

/// Whose header set and bodies to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets like `6m0s`; usage as
    /// `prompt_tokens` / `completion_tokens`.
    OpenAi,
    /// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
    /// resets as RFC 3339 times, `retry-after` seconds on 429; usage as `input_tokens` /
    /// `output_tokens`.
    Anthropic,
}

/// When rate-limit headers are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMode {
    /// On every answer.
    Always,
    /// Only on 429s.
    On429,
    /// Never, not even `retry-after` on a 429 (Gemini, many gateways, self-hosted servers).
    Never,
}

/// What one budget says in the headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BudgetView {
    /// 0 requests, 1 tokens, 2 input tokens, 3 output tokens.
    pub dimension: usize,
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// A Go-style duration as OpenAI writes it: `350ms`, `1.5s`, `6m0s`; rounded up to the
/// millisecond so a reset is never early.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (minutes, ms) = (ms / 60_000, ms % 60_000);
    let seconds = format!("{}.{:03}", ms / 1000, ms % 1000);
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    if minutes == 0 {
        format!("{seconds}s")
    } else {
        format!("{minutes}m{seconds}s")
    }
}

fn rfc3339_after(now: SystemTime, d: Duration) -> String {
    // Anthropic names whole seconds: round up, so the reset is never early.
    let at = now + d;
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() + u64::from(t.subsec_nanos() > 0));
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The rate-limit headers for `views`.
pub(crate) fn rate_limit_headers(
    style: Style,
    views: &[BudgetView],
    now: SystemTime,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in views {
        match style {
            Style::OpenAi => {
                let name = match v.dimension {
                    0 => "requests",
                    1 => "tokens",
                    _ => continue,
                };
                out.push((format!("x-ratelimit-limit-{name}"), v.limit.to_string()));
                out.push((
                    format!("x-ratelimit-remaining-{name}"),
                    v.remaining.to_string(),
                ));
                out.push((format!("x-ratelimit-reset-{name}"), go_duration(v.reset)));
            }
            Style::Anthropic => {
                let name = ["requests", "tokens", "input-tokens", "output-tokens"][v.dimension];
                let prefix = format!("anthropic-ratelimit-{name}");
                out.push((format!("{prefix}-limit"), v.limit.to_string()));
                out.push((format!("{prefix}-remaining"), v.remaining.to_string()));
                out.push((format!("{prefix}-reset"), rfc3339_after(now, v.reset)));
            }
        }
    }
    out
}

/// The JSON body of a success: usage in the provider's own field names.
pub(crate) fn success_body(style: Style, input: u64, output: u64) -> String {
    match style {
        Style::OpenAi => format!(
            r#"{{"object":"chat.completion","choices":[],"usage":{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{}}}}}"#,
            input + output
        ),
        Style::Anthropic => format!(
            r#"{{"type":"message","content":[],"usage":{{"input_tokens":{input},"output_tokens":{output}}}}}"#
        ),
    }
}

/// The JSON body of a 429.
pub(crate) fn limited_body(style: Style) -> &'static str {
    match style {
        Style::OpenAi => {
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#
        }
        Style::Anthropic => {
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}"#
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_like_openai() {
        assert_eq!(go_duration(Duration::from_micros(11_200)), "12ms");
        assert_eq!(go_duration(Duration::from_millis(1_000)), "1s");
        assert_eq!(go_duration(Duration::from_millis(7_660)), "7.66s");
        assert_eq!(go_duration(Duration::from_millis(360_000)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(179_560)), "2m59.56s");
    }

    #[test]
    fn anthropic_resets_round_up_to_the_second() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_740_435_931_200);
        assert_eq!(
            rfc3339_after(now, Duration::from_millis(300)),
            "2025-02-24T22:25:32Z"
        );
    }
}
