//! [`read`]: what one provider answer says, through its [`Profile`]: the retry wait, and per
//! dimension the limit, the remaining budget and when it resets; from the body, a quota or spend
//! cap and Gemini's retry delay. Values that cannot be read are noted and skipped, never fatal.

use serde_json::Value;

use super::{
    formats::{parse_count, parse_go_duration, parse_wait, TimeFormat},
    profile::{BodyReader, Meaning, Profile},
    Header,
};
use crate::core::{Dimension, Micros, MICROS_PER_SEC};

/// What the headers say about one dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DimensionReading {
    /// The provider's budget size.
    pub limit: Option<u64>,
    /// What is left.
    pub remaining: Option<u64>,
    /// Time until it is full again.
    pub reset: Option<Micros>,
    /// The provider's window for it, when the profile knows.
    pub window: Option<Micros>,
}

/// What one answer says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// How long to wait before retrying, and which header or field said so.
    pub retry_after: Option<(Micros, &'static str)>,
    /// Per dimension, indexed by [`Dimension::index`].
    pub dimensions: [DimensionReading; 4],
    /// A quota or spend cap that retrying will not fix soon, e.g. `enforced_spend_limit_reached`.
    pub quota: Option<String>,
    /// What was ignored, for the report's `detail`.
    pub notes: Vec<String>,
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

/// Reads an answer: `headers` (names lower-cased), `body` (possibly empty) at wall-clock `now`.
pub fn read(profile: &Profile, headers: &[Header], body: &[u8], now: Micros) -> Reading {
    let mut reading = Reading::default();
    read_retry_after(headers, now, &mut reading);
    for rule in &profile.rules {
        let Some(value) = header(headers, &rule.name) else {
            continue;
        };
        let dim = &mut reading.dimensions[rule.dimension.index()];
        let result = match rule.meaning {
            Meaning::Limit => parse_count(value).map(|v| dim.limit = Some(v)),
            Meaning::Remaining => parse_count(value).map(|v| dim.remaining = Some(v)),
            Meaning::Reset => parse_wait(rule.format, value, now).map(|v| dim.reset = Some(v)),
        };
        match result {
            Ok(()) => dim.window = dim.window.or(rule.window),
            Err(e) => reading.notes.push(format!("ignored {}: {e}", rule.name)),
        }
    }
    if profile.ietf {
        read_ietf(headers, &mut reading);
    }
    if !body.is_empty() && profile.body != BodyReader::None {
        read_body(profile.body, body, &mut reading);
    }
    reading
}

fn read_retry_after(headers: &[Header], now: Micros, reading: &mut Reading) {
    for (name, format, source) in [
        ("retry-after-ms", TimeFormat::Milliseconds, "retry-after-ms"),
        (
            "x-ms-retry-after-ms",
            TimeFormat::Milliseconds,
            "retry-after-ms",
        ),
        ("retry-after", TimeFormat::RetryAfter, "retry-after"),
    ] {
        if let Some(value) = header(headers, name) {
            match parse_wait(format, value, now) {
                Ok(wait) => {
                    reading.retry_after = Some((wait, source));
                    return;
                }
                Err(e) => reading.notes.push(format!("ignored {name}: {e}")),
            }
        }
    }
}

/// The parameters of the first item of a structured-field list: `"default";r=50;t=30`.
fn sf_params(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value
        .split(',')
        .next()
        .unwrap_or("")
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
}

/// What an IETF field sets; counts of seconds for the times.
#[derive(Clone, Copy)]
enum IetfField {
    Limit,
    Remaining,
    ResetSeconds,
    WindowSeconds,
}

/// Where each IETF value is: the header, and the structured-field parameter (or the whole value).
const IETF: [(&str, Option<&str>, IetfField); 7] = [
    ("ratelimit-policy", Some("q"), IetfField::Limit),
    ("ratelimit-policy", Some("w"), IetfField::WindowSeconds),
    ("ratelimit", Some("r"), IetfField::Remaining),
    ("ratelimit", Some("t"), IetfField::ResetSeconds),
    ("ratelimit-limit", None, IetfField::Limit),
    ("ratelimit-remaining", None, IetfField::Remaining),
    ("ratelimit-reset", None, IetfField::ResetSeconds),
];

/// The IETF fields, as the requests budget; a value already set by an earlier source stays.
fn read_ietf(headers: &[Header], reading: &mut Reading) {
    let dim = &mut reading.dimensions[Dimension::Requests.index()];
    let mut bad = false;
    for (name, param, field) in IETF {
        let Some(value) = header(headers, name) else {
            continue;
        };
        let raw = match param {
            None => Some(value),
            Some(key) => sf_params(value).find(|(k, _)| *k == key).map(|(_, v)| v),
        };
        let Some(raw) = raw else {
            continue;
        };
        let Ok(v) = parse_count(raw) else {
            bad = true;
            continue;
        };
        let seconds = v.saturating_mul(MICROS_PER_SEC);
        match field {
            IetfField::Limit => dim.limit = dim.limit.or(Some(v)),
            IetfField::Remaining => dim.remaining = dim.remaining.or(Some(v)),
            IetfField::ResetSeconds => dim.reset = dim.reset.or(Some(seconds)),
            IetfField::WindowSeconds => dim.window = dim.window.or(Some(seconds)),
        }
    }
    if bad {
        reading
            .notes
            .push("ignored malformed RateLimit fields".into());
    }
}

fn read_body(reader: BodyReader, body: &[u8], reading: &mut Reading) {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        reading.notes.push("body is not JSON: ignored".into());
        return;
    };
    let error = &json["error"];
    match reader {
        BodyReader::None => {}
        BodyReader::Anthropic => {
            let code = error["details"]["error_code"].as_str().unwrap_or("");
            if code == "enforced_spend_limit_reached" {
                reading.quota = Some(code.to_string());
            }
        }
        BodyReader::Gemini => {
            let details = error["details"].as_array().map_or(&[][..], Vec::as_slice);
            for detail in details.iter().take(16) {
                let kind = detail["@type"].as_str().unwrap_or("");
                if kind.ends_with("google.rpc.RetryInfo") {
                    if let Some(delay) = detail["retryDelay"].as_str() {
                        match parse_go_duration(delay.trim()) {
                            Ok(wait) if reading.retry_after.is_none() => {
                                reading.retry_after = Some((wait, "retryDelay"));
                            }
                            Ok(_) => {}
                            Err(e) => reading.notes.push(format!("ignored retryDelay: {e}")),
                        }
                    }
                } else if kind.ends_with("google.rpc.QuotaFailure") {
                    let violations = detail["violations"]
                        .as_array()
                        .map_or(&[][..], Vec::as_slice);
                    for v in violations.iter().take(16) {
                        let id = v["quotaId"].as_str().unwrap_or("");
                        if id.contains("PerDay") && id.len() <= 256 {
                            reading.quota = Some(id.to_string());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_headers as headers;

    const S: Micros = MICROS_PER_SEC;
    // 2025-02-24T22:25:00Z
    const NOW: Micros = 1_740_435_900 * S;

    fn read_as(profile: &str, pairs: &[(&str, &str)], body: &str) -> Reading {
        read(
            &Profile::builtin(profile).unwrap(),
            &headers(pairs),
            body.as_bytes(),
            NOW,
        )
    }

    fn dim(
        limit: Option<u64>,
        remaining: Option<u64>,
        reset: Option<Micros>,
        window: Option<Micros>,
    ) -> DimensionReading {
        DimensionReading {
            limit,
            remaining,
            reset,
            window,
        }
    }

    #[test]
    fn openai_headers() {
        let r = read_as(
            "openai",
            &[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-limit-tokens", "150000"),
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-remaining-tokens", "149984"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s"),
                ("retry-after-ms", "1500"),
            ],
            "",
        );
        let minute = Some(60 * S);
        assert_eq!(r.dimensions[0], dim(Some(60), Some(59), Some(S), minute));
        assert_eq!(
            r.dimensions[1],
            dim(Some(150_000), Some(149_984), Some(360 * S), minute)
        );
        assert_eq!(r.retry_after, Some((1_500_000, "retry-after-ms")));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn anthropic_headers_and_spend_cap() {
        let r = read_as(
            "anthropic",
            &[
                ("retry-after", "23"),
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2025-02-24T22:25:32Z"),
                ("anthropic-ratelimit-input-tokens-limit", "40000"),
                ("anthropic-ratelimit-input-tokens-remaining", "39000"),
                (
                    "anthropic-ratelimit-input-tokens-reset",
                    "2025-02-24T22:25:01Z",
                ),
                ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            ],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Spend limit","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
        );
        assert_eq!(r.retry_after, Some((23 * S, "retry-after")));
        assert_eq!(r.dimensions[0].remaining, Some(0));
        assert_eq!(r.dimensions[0].reset, Some(32 * S));
        assert_eq!(
            r.dimensions[2],
            dim(Some(40_000), Some(39_000), Some(S), Some(60 * S))
        );
        assert_eq!(r.dimensions[3].remaining, Some(8_000));
        assert_eq!(r.quota.as_deref(), Some("enforced_spend_limit_reached"));
        // An ordinary rate-limit error is not a quota.
        let r = read_as(
            "anthropic",
            &[],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert_eq!(r.quota, None);
    }

    #[test]
    fn groq_means_requests_per_day() {
        let r = read_as(
            "groq",
            &[
                ("x-ratelimit-remaining-requests", "14370"),
                ("x-ratelimit-reset-requests", "2m59.56s"),
                ("x-ratelimit-reset-tokens", "7.66s"),
                ("retry-after", "2"),
            ],
            "",
        );
        assert_eq!(
            r.dimensions[0],
            dim(None, Some(14_370), Some(179_560_000), Some(86_400 * S))
        );
        assert_eq!(r.dimensions[1].reset, Some(7_660_000));
        assert_eq!(r.dimensions[1].window, Some(60 * S));
    }

    #[test]
    fn azure_reads_ms_retry_and_second_resets() {
        let r = read_as(
            "azure_openai",
            &[
                ("x-ms-retry-after-ms", "250"),
                ("retry-after", "1"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "12"),
            ],
            "",
        );
        assert_eq!(r.retry_after, Some((250_000, "retry-after-ms")));
        assert_eq!(r.dimensions[1].reset, Some(12 * S));
    }

    #[test]
    fn gemini_reads_the_body() {
        let body = r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"m","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
            {"@type":"type.googleapis.com/google.rpc.Help","links":[]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
        let r = read_as("gemini", &[], body);
        assert_eq!(r.retry_after, Some((1_500_000, "retryDelay")));
        assert_eq!(
            r.quota.as_deref(),
            Some("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
        );
        // A per-minute quota is an ordinary rate limit.
        let r = read_as(
            "gemini",
            &[],
            r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel"}]}]}}"#,
        );
        assert_eq!(r.quota, None);
        let r = read_as("gemini", &[], "<html>bad gateway</html>");
        assert_eq!(r.notes, vec!["body is not JSON: ignored".to_string()]);
    }

    #[test]
    fn generic_reads_github_and_ietf_fields() {
        let r = read_as(
            "generic",
            &[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4999"),
                ("x-ratelimit-reset", "1740435960"),
            ],
            "",
        );
        assert_eq!(
            r.dimensions[0],
            dim(Some(5_000), Some(4_999), Some(60 * S), None)
        );
        let r = read_as(
            "generic",
            &[
                ("ratelimit-policy", "\"default\";q=100;w=10"),
                ("ratelimit", "\"default\";r=50;t=30"),
            ],
            "",
        );
        assert_eq!(
            r.dimensions[0],
            dim(Some(100), Some(50), Some(30 * S), Some(10 * S))
        );
        let r = read_as(
            "generic",
            &[
                ("ratelimit-limit", "10"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "7"),
            ],
            "",
        );
        assert_eq!(r.dimensions[0], dim(Some(10), Some(0), Some(7 * S), None));
    }

    #[test]
    fn malformed_values_are_noted_not_fatal() {
        let r = read_as(
            "openai",
            &[
                ("x-ratelimit-remaining-tokens", "lots"),
                ("x-ratelimit-reset-tokens", "soon"),
                ("x-ratelimit-remaining-requests", "12"),
                ("retry-after", "tomorrow"),
            ],
            "",
        );
        assert_eq!(r.dimensions[0].remaining, Some(12));
        assert_eq!(r.dimensions[1], DimensionReading::default());
        assert_eq!(r.retry_after, None);
        assert_eq!(r.notes.len(), 3, "{:?}", r.notes);
    }

    #[test]
    fn custom_profiles_map_any_header() {
        let profile = Profile::custom(vec![
            crate::provider::HeaderRule {
                name: "x-acme-tokens-left".into(),
                dimension: Dimension::Tokens,
                meaning: Meaning::Remaining,
                format: TimeFormat::Seconds,
                window: Some(60 * S),
            },
            crate::provider::HeaderRule {
                name: "x-acme-tokens-reset-at".into(),
                dimension: Dimension::Tokens,
                meaning: Meaning::Reset,
                format: TimeFormat::EpochSeconds,
                window: Some(60 * S),
            },
        ]);
        let r = read(
            &profile,
            &headers(&[
                ("X-Acme-Tokens-Left", "77"),
                ("x-acme-tokens-reset-at", "1740435945"),
            ]),
            b"",
            NOW,
        );
        assert_eq!(
            r.dimensions[1],
            dim(None, Some(77), Some(45 * S), Some(60 * S))
        );
    }

    proptest::proptest! {
        /// Any header values and any body, through every profile: a reading, never a panic,
        /// never a wait beyond the parsers' bound.
        #[test]
        fn reading_is_total(
            values in proptest::collection::vec(".{0,40}", 6),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            p in 0usize..6,
        ) {
            let names = [
                "retry-after", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-tokens-reset", "ratelimit", "ratelimit-policy",
            ];
            let pairs: Vec<Header> = names
                .iter()
                .zip(&values)
                .map(|(n, v)| Header { name: n.to_string(), value: v.clone() })
                .collect();
            let profile = Profile::builtin(crate::provider::profile::BUILTIN[p]).unwrap();
            let r = read(&profile, &pairs, &body, NOW);
            if let Some((wait, _)) = r.retry_after {
                proptest::prop_assert!(wait <= 10 * 365 * 86_400 * S);
            }
        }
    }
}
