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

fn read_ietf(headers: &[Header], reading: &mut Reading) {
    let dim = &mut reading.dimensions[Dimension::Requests.index()];
    let mut bad = false;
    if let Some(policy) = header(headers, "ratelimit-policy") {
        for (key, value) in sf_params(policy) {
            match key {
                "q" => match parse_count(value) {
                    Ok(q) => dim.limit = dim.limit.or(Some(q)),
                    Err(_) => bad = true,
                },
                "w" => match parse_count(value) {
                    Ok(w) => {
                        dim.window = dim.window.or(Some(w.saturating_mul(MICROS_PER_SEC)));
                    }
                    Err(_) => bad = true,
                },
                _ => {}
            }
        }
    }
    if let Some(limit) = header(headers, "ratelimit") {
        for (key, value) in sf_params(limit) {
            match key {
                "r" => match parse_count(value) {
                    Ok(r) => dim.remaining = dim.remaining.or(Some(r)),
                    Err(_) => bad = true,
                },
                "t" => match parse_count(value) {
                    Ok(t) => dim.reset = dim.reset.or(Some(t.saturating_mul(MICROS_PER_SEC))),
                    Err(_) => bad = true,
                },
                _ => {}
            }
        }
    }
    for (name, meaning) in [
        ("ratelimit-limit", Meaning::Limit),
        ("ratelimit-remaining", Meaning::Remaining),
        ("ratelimit-reset", Meaning::Reset),
    ] {
        let Some(value) = header(headers, name) else {
            continue;
        };
        let ok = match meaning {
            Meaning::Limit => parse_count(value).map(|v| dim.limit = dim.limit.or(Some(v))),
            Meaning::Remaining => {
                parse_count(value).map(|v| dim.remaining = dim.remaining.or(Some(v)))
            }
            Meaning::Reset => parse_count(value)
                .map(|v| dim.reset = dim.reset.or(Some(v.saturating_mul(MICROS_PER_SEC)))),
        };
        bad |= ok.is_err();
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
