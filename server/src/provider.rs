//! Reading a provider's answer, first version: validate the reported headers (bounded, well
//! formed), derive a cooldown from a 429, 503 or 529 (`retry-after-ms`, then `retry-after` as
//! seconds or HTTP-date, else the service's default), and keep the rate-limit headers for
//! `GetStatus`. Everything here treats its input as untrusted: it bounds, validates and never
//! panics.

use chrono::DateTime;

use crate::core::{Micros, ServiceSpec, MICROS_PER_SEC};

/// Most headers one report may carry.
pub const MAX_HEADERS: usize = 100;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME: usize = 256;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Largest response body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Most rate-limit headers remembered per service.
const MAX_KEPT_HEADERS: usize = 32;

/// One reported header, name lower-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Lower-cased name.
    pub name: String,
    /// Value as sent.
    pub value: String,
}

/// Checks header count, sizes and characters, and lower-cases the names.
pub fn validate_headers(headers: Vec<(String, String)>) -> Result<Vec<Header>, String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!(
            "headers: {} headers (at most {MAX_HEADERS})",
            headers.len()
        ));
    }
    headers
        .into_iter()
        .enumerate()
        .map(|(i, (name, value))| {
            if name.is_empty() || name.len() > MAX_HEADER_NAME {
                return Err(format!(
                    "headers[{i}].name: {} bytes (1 to {MAX_HEADER_NAME})",
                    name.len()
                ));
            }
            if !name.bytes().all(is_token_byte) {
                return Err(format!("headers[{i}].name: not a valid HTTP header name"));
            }
            if value.len() > MAX_HEADER_VALUE {
                return Err(format!(
                    "headers[{i}].value: {} bytes (at most {MAX_HEADER_VALUE})",
                    value.len()
                ));
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(format!("headers[{i}].value: contains control characters"));
            }
            Ok(Header {
                name: name.to_ascii_lowercase(),
                value,
            })
        })
        .collect()
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.trim())
}

/// A cooldown derived from a provider's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CooldownAdvice {
    /// Length from now.
    pub length: Micros,
    /// Where the length came from.
    pub source: &'static str,
}

/// True for statuses that pause the whole service: 429 (rate limited), 503 (unavailable) and
/// 529 (Anthropic: overloaded).
pub fn is_throttle_status(status: u32) -> bool {
    matches!(status, 429 | 503 | 529)
}

/// Derives the cooldown a response asks for, with notes on what was ignored. `now` is wall-clock
/// time, needed for HTTP-date values.
pub fn cooldown_advice(
    spec: &ServiceSpec,
    status: u32,
    headers: &[Header],
    now: Micros,
    notes: &mut Vec<String>,
) -> Option<CooldownAdvice> {
    if !is_throttle_status(status) {
        return None;
    }
    let mut advice = None;
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(v) = header(headers, name) {
            match parse_seconds(v, 1_000) {
                Some(length) => {
                    advice = Some(CooldownAdvice {
                        length,
                        source: "retry-after-ms",
                    });
                    break;
                }
                None => notes.push(format!("ignored unparseable {name}")),
            }
        }
    }
    if advice.is_none() {
        if let Some(v) = header(headers, "retry-after") {
            match parse_retry_after(v, now) {
                Some(length) => {
                    advice = Some(CooldownAdvice {
                        length,
                        source: "retry-after",
                    })
                }
                None => notes.push("ignored unparseable retry-after".into()),
            }
        }
    }
    let mut advice = advice.unwrap_or(CooldownAdvice {
        length: spec.default_cooldown,
        source: "default_cooldown",
    });
    if advice.length > spec.max_cooldown {
        notes.push(format!(
            "cooldown clamped to max_cooldown ({})",
            crate::core::format_duration(spec.max_cooldown)
        ));
        advice.length = spec.max_cooldown;
    }
    (advice.length > 0).then_some(advice)
}

/// Parses a non-negative decimal number of `unit` microseconds (e.g. seconds, "1.5").
fn parse_seconds(v: &str, unit: Micros) -> Option<Micros> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() && frac.is_empty()
        || whole.len() > 12
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut total = if whole.is_empty() {
        0
    } else {
        whole.parse::<Micros>().ok()?.checked_mul(unit)?
    };
    let mut place = unit;
    for d in frac.bytes().take(9) {
        place /= 10;
        total = total.checked_add(Micros::from(d - b'0') * place)?;
    }
    Some(total)
}

/// `retry-after`: delay-seconds (fractions accepted, as OpenAI sends) or an HTTP-date.
fn parse_retry_after(v: &str, now: Micros) -> Option<Micros> {
    if let Some(micros) = parse_seconds(v, MICROS_PER_SEC) {
        return Some(micros);
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?;
    let at = u64::try_from(at.timestamp_micros()).ok()?;
    Some(at.saturating_sub(now))
}

/// The headers worth remembering for `GetStatus`: rate-limit and retry headers, at most 32.
pub fn rate_limit_headers(headers: &[Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|h| {
            let n = h.name.as_str();
            n.contains("ratelimit") || n.contains("retry-after")
        })
        .take(MAX_KEPT_HEADERS)
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Algorithm, Dimension, LimitSpec};

    fn spec() -> ServiceSpec {
        ServiceSpec {
            index: 0,
            name: "s".into(),
            profile: "generic".into(),
            limits: vec![LimitSpec::new(
                Dimension::Requests,
                1,
                MICROS_PER_SEC,
                Algorithm::SlidingWindow,
            )],
            default_cooldown: 2 * MICROS_PER_SEC,
            max_cooldown: 60 * MICROS_PER_SEC,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<Header> {
        validate_headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    // Wed, 21 Oct 2015 07:28:00 GMT
    const NOW: Micros = 1_445_412_480 * MICROS_PER_SEC;

    fn advice(status: u32, pairs: &[(&str, &str)]) -> (Option<CooldownAdvice>, Vec<String>) {
        let mut notes = Vec::new();
        let a = cooldown_advice(&spec(), status, &h(pairs), NOW, &mut notes);
        (a, notes)
    }

    #[test]
    fn reads_retry_after_in_every_form() {
        let len =
            |status, pairs: &[(&str, &str)]| advice(status, pairs).0.map(|a| (a.length, a.source));
        assert_eq!(
            len(429, &[("Retry-After", "7")]),
            Some((7_000_000, "retry-after"))
        );
        assert_eq!(
            len(429, &[("retry-after", "1.5")]),
            Some((1_500_000, "retry-after"))
        );
        assert_eq!(
            len(503, &[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]),
            Some((30_000_000, "retry-after"))
        );
        assert_eq!(
            len(429, &[("retry-after", "20"), ("retry-after-ms", "250")]),
            Some((250_000, "retry-after-ms"))
        );
        assert_eq!(len(529, &[]), Some((2_000_000, "default_cooldown")));
        assert_eq!(len(200, &[("retry-after", "5")]), None);
        assert_eq!(len(500, &[("retry-after", "5")]), None);
    }

    #[test]
    fn bad_values_fall_back_with_a_note_and_are_clamped() {
        let (a, notes) = advice(429, &[("retry-after", "soon")]);
        assert_eq!(a.map(|a| a.source), Some("default_cooldown"));
        assert_eq!(notes, vec!["ignored unparseable retry-after".to_string()]);
        let (a, notes) = advice(429, &[("retry-after", "99999")]);
        assert_eq!(a.map(|a| a.length), Some(60_000_000));
        assert!(notes[0].contains("clamped"));
        let (a, _) = advice(429, &[("retry-after", "-3")]);
        assert_eq!(a.map(|a| a.source), Some("default_cooldown"));
        // A date in the past asks for no wait.
        assert_eq!(
            advice(429, &[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]).0,
            None
        );
    }

    #[test]
    fn header_validation_bounds_everything() {
        let many: Vec<(String, String)> = (0..101).map(|i| (format!("h{i}"), "v".into())).collect();
        assert!(validate_headers(many).unwrap_err().contains("101 headers"));
        let bad = |n: &str, v: &str| validate_headers(vec![(n.into(), v.into())]).is_err();
        assert!(bad("", "v"));
        assert!(bad("bad name", "v"));
        assert!(bad(&"n".repeat(257), "v"));
        assert!(bad("n", &"v".repeat(8 * 1024 + 1)));
        assert!(bad("n", "line\nbreak"));
        assert!(!bad("X-RateLimit-Remaining-Tokens", "149984"));
        assert_eq!(
            rate_limit_headers(&h(&[
                ("X-RateLimit-Remaining-Tokens", "5"),
                ("content-type", "json")
            ])),
            vec![("x-ratelimit-remaining-tokens".to_string(), "5".to_string())]
        );
    }
}
