//! Total parsers for the values providers put in rate-limit headers and bodies: counts and the
//! many ways of saying "when". Every function takes any string and answers a value or
//! [`Ignored`]; none panics, none overflows, and absolute times are turned into waits from `now`.

use chrono::DateTime;

use crate::core::{Micros, MICROS_PER_SEC};

/// How a header value says when a budget resets (or when to retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// Go-style duration: `1s`, `6m0s`, `20ms`, `2m59.56s`, `1h2m3.5s` (OpenAI, Groq).
    Duration,
    /// RFC 3339 time: `2025-02-24T22:25:32Z` (Anthropic).
    Rfc3339,
    /// Seconds, integer or fractional: `37`, `1.5`.
    Seconds,
    /// Milliseconds, integer or fractional: `1500`.
    Milliseconds,
    /// Seconds since the Unix epoch: `1735689600` (GitHub).
    EpochSeconds,
    /// HTTP-date: `Wed, 21 Oct 2015 07:28:00 GMT`.
    HttpDate,
    /// Seconds, or an epoch time when the number is too large to be a wait (generic headers).
    SecondsOrEpoch,
    /// `retry-after`: delay-seconds or an HTTP-date.
    RetryAfter,
}

impl TimeFormat {
    /// The config spelling of the formats a custom profile may name.
    pub fn from_config(name: &str) -> Option<Self> {
        Some(match name {
            "duration" => TimeFormat::Duration,
            "rfc3339" => TimeFormat::Rfc3339,
            "seconds" => TimeFormat::Seconds,
            "milliseconds" => TimeFormat::Milliseconds,
            "epoch_seconds" => TimeFormat::EpochSeconds,
            "http_date" => TimeFormat::HttpDate,
            _ => return None,
        })
    }
}

/// A value that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Ignored(pub &'static str);

/// Longest wait any parser returns (then clamped by the service's `max_cooldown`): 10 years.
const MAX_WAIT: Micros = 10 * 365 * 86_400 * MICROS_PER_SEC;
/// Longest value read at all.
const MAX_LEN: usize = 64;
/// Numbers above this are epoch seconds, not waits (2001-09-09).
const EPOCH_THRESHOLD: Micros = 1_000_000_000;

/// Reads a wait from `value` in `format`, relative to wall-clock `now` (µs since the epoch). A
/// time in the past is a wait of 0.
pub fn parse_wait(format: TimeFormat, value: &str, now: Micros) -> Result<Micros, Ignored> {
    let v = value.trim().trim_matches('"');
    if v.is_empty() {
        return Err(Ignored("empty"));
    }
    if v.len() > MAX_LEN {
        return Err(Ignored("too long"));
    }
    let wait = match format {
        TimeFormat::Duration => parse_go_duration(v)?,
        TimeFormat::Seconds => parse_decimal(v, MICROS_PER_SEC)?,
        TimeFormat::Milliseconds => parse_decimal(v, 1_000)?,
        TimeFormat::EpochSeconds => parse_decimal(v, MICROS_PER_SEC)?.saturating_sub(now),
        TimeFormat::SecondsOrEpoch => {
            let micros = parse_decimal(v, MICROS_PER_SEC)?;
            if micros >= EPOCH_THRESHOLD * MICROS_PER_SEC {
                micros.saturating_sub(now)
            } else {
                micros
            }
        }
        TimeFormat::Rfc3339 => {
            let at =
                DateTime::parse_from_rfc3339(v).map_err(|_| Ignored("not an RFC 3339 time"))?;
            absolute(at.timestamp_micros(), now)
        }
        TimeFormat::HttpDate => {
            let at = DateTime::parse_from_rfc2822(v).map_err(|_| Ignored("not an HTTP-date"))?;
            absolute(at.timestamp_micros(), now)
        }
        TimeFormat::RetryAfter => match parse_decimal(v, MICROS_PER_SEC) {
            Ok(micros) => micros,
            Err(_) => {
                let at = DateTime::parse_from_rfc2822(v)
                    .map_err(|_| Ignored("neither seconds nor an HTTP-date"))?;
                absolute(at.timestamp_micros(), now)
            }
        },
    };
    Ok(wait.min(MAX_WAIT))
}

fn absolute(at: i64, now: Micros) -> Micros {
    u64::try_from(at).map_or(0, |at| at.saturating_sub(now))
}

/// Reads a count (`149984`; `1.5e3` and negatives are refused; fractions are floored, as some
/// proxies send `59.0`).
pub fn parse_count(value: &str) -> Result<u64, Ignored> {
    let v = value.trim().trim_matches('"');
    if v.is_empty() || v.len() > 20 {
        return Err(Ignored("not a count"));
    }
    let whole = v.split_once('.').map_or(v, |(w, f)| {
        if f.bytes().all(|b| b.is_ascii_digit()) {
            w
        } else {
            ""
        }
    });
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Ignored("not a count"));
    }
    whole.parse().map_err(|_| Ignored("count too large"))
}

/// A non-negative decimal number of `unit` µs: `37`, `1.5`, `.25` (saturating).
pub fn parse_decimal(v: &str, unit: Micros) -> Result<Micros, Ignored> {
    crate::core::duration::decimal(v, unit).map_err(Ignored)
}

/// A Go-style duration (`time.Duration.String()`): a sequence of decimal numbers with units
/// `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; also a protobuf Duration string such as `34s` or `1.5s`.
pub fn parse_go_duration(v: &str) -> Result<Micros, Ignored> {
    crate::core::duration::parse_go_duration(v).map_err(Ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Micros = MICROS_PER_SEC;
    // Wed, 21 Oct 2015 07:28:00 GMT
    const NOW: Micros = 1_445_412_480 * S;

    #[test]
    fn every_reference_format_parses() {
        let cases: &[(TimeFormat, &str, Micros)] = &[
            (TimeFormat::Duration, "1s", S),
            (TimeFormat::Duration, "6m0s", 360 * S),
            (TimeFormat::Duration, "20ms", 20_000),
            (TimeFormat::Duration, "2m59.56s", 179_560_000),
            (TimeFormat::Duration, "1h2m3.5s", 3_723_500_000),
            (TimeFormat::Duration, "7.66s", 7_660_000),
            (TimeFormat::Duration, "34s", 34 * S),
            (TimeFormat::Duration, "0", 0),
            (TimeFormat::Rfc3339, "2015-10-21T07:28:30Z", 30 * S),
            (TimeFormat::Rfc3339, "2015-10-21T09:28:30+02:00", 30 * S),
            (TimeFormat::Seconds, "37", 37 * S),
            (TimeFormat::Seconds, "1.5", 1_500_000),
            (TimeFormat::Milliseconds, "1500", 1_500_000),
            (TimeFormat::EpochSeconds, "1445412540", 60 * S),
            (
                TimeFormat::HttpDate,
                "Wed, 21 Oct 2015 07:28:10 GMT",
                10 * S,
            ),
            (TimeFormat::SecondsOrEpoch, "30", 30 * S),
            (TimeFormat::SecondsOrEpoch, "1445412490", 10 * S),
            (TimeFormat::RetryAfter, "20", 20 * S),
            (
                TimeFormat::RetryAfter,
                "Wed, 21 Oct 2015 07:28:05 GMT",
                5 * S,
            ),
            // Past times are no wait.
            (TimeFormat::Rfc3339, "2015-10-21T07:00:00Z", 0),
            (TimeFormat::EpochSeconds, "1", 0),
        ];
        for (format, value, expected) in cases {
            assert_eq!(
                parse_wait(*format, value, NOW),
                Ok(*expected),
                "{format:?} {value:?}"
            );
        }
    }

    #[test]
    fn garbage_is_ignored_with_a_reason() {
        for (format, value) in [
            (TimeFormat::Duration, "5"),
            (TimeFormat::Duration, "s"),
            (TimeFormat::Duration, "1x"),
            (TimeFormat::Duration, "-1s"),
            (TimeFormat::Seconds, "-3"),
            (TimeFormat::Seconds, "1e3"),
            (TimeFormat::Seconds, ""),
            (TimeFormat::Rfc3339, "yesterday"),
            (TimeFormat::HttpDate, "2015-10-21"),
            (TimeFormat::RetryAfter, "soon"),
            (TimeFormat::Milliseconds, "1.2.3"),
        ] {
            assert!(
                parse_wait(format, value, NOW).is_err(),
                "{format:?} {value:?}"
            );
        }
        assert_eq!(parse_count("149984"), Ok(149_984));
        assert_eq!(parse_count("59.0"), Ok(59));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("99999999999999999999999").is_err());
        assert!(parse_count("many").is_err());
    }

    #[test]
    fn absurd_waits_are_bounded() {
        assert_eq!(
            parse_wait(TimeFormat::Seconds, "999999999999999", NOW),
            Ok(MAX_WAIT)
        );
        assert_eq!(
            parse_wait(TimeFormat::Rfc3339, "9999-12-31T23:59:59Z", NOW),
            Ok(MAX_WAIT)
        );
        assert_eq!(
            parse_wait(TimeFormat::Duration, "99999999h99999999h", NOW),
            Ok(MAX_WAIT)
        );
    }

    const FORMATS: [TimeFormat; 8] = [
        TimeFormat::Duration,
        TimeFormat::Rfc3339,
        TimeFormat::Seconds,
        TimeFormat::Milliseconds,
        TimeFormat::EpochSeconds,
        TimeFormat::HttpDate,
        TimeFormat::SecondsOrEpoch,
        TimeFormat::RetryAfter,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any string in any format: a bounded value or an error, never a panic.
        #[test]
        fn parsers_are_total(value in any::<String>(), now in any::<u64>(), f in 0usize..8) {
            if let Ok(wait) = parse_wait(FORMATS[f], &value, now) {
                prop_assert!(wait <= MAX_WAIT);
            }
            let _ = parse_count(&value);
        }

        /// Strings that look like header values (digits, units, separators) exercise the
        /// parsers' inner paths more than arbitrary text does.
        #[test]
        fn header_like_strings_are_total(value in "[0-9a-zA-Z .:,+\\-µ]{0,40}", f in 0usize..8) {
            if let Ok(wait) = parse_wait(FORMATS[f], &value, NOW) {
                prop_assert!(wait <= MAX_WAIT);
            }
        }

        /// Go durations round-trip their components.
        #[test]
        fn go_durations_add_up(h in 0u64..100, m in 0u64..60, ms in 0u64..60_000) {
            let text = format!("{h}h{m}m{}.{:03}s", ms / 1000, ms % 1000);
            prop_assert_eq!(
                parse_go_duration(&text),
                Ok(h * 3_600 * S + m * 60 * S + ms * 1_000)
            );
        }
    }
}
