//! Duration strings as written in the config and in Go-style provider headers: a sequence of
//! `<number><unit>` parts such as `250ms`, `1m30s`, `1.5s` or `2m59.56s`, with units `us` (or
//! `µs`), `ms`, `s`, `m`, `h` and `d`. Parsed exactly to microseconds; overflow is an error.

use crate::core::Micros;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write e.g. \"250ms\", \"1m30s\", \"1h\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, u128); 7] = [
    ("us", 1),
    ("µs", 1),
    ("ms", 1_000),
    ("s", 1_000_000),
    ("m", 60_000_000),
    ("h", 3_600_000_000),
    ("d", 86_400_000_000),
];

/// Parses a duration string into microseconds.
pub fn parse_duration(input: &str) -> Result<Micros, DurationError> {
    let err = |reason| DurationError {
        input: input.chars().take(64).collect(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let (number, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(|| err("unknown unit"))?;
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') || whole.len() > 15 {
            return Err(err("bad number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("bad number"))?
        };
        let mut part = whole * scale;
        let mut place = scale;
        for digit in frac.chars().take(12) {
            place /= 10;
            let d = digit.to_digit(10).ok_or_else(|| err("bad number"))?;
            part += u128::from(d) * place;
        }
        total += part;
        if total > u128::from(Micros::MAX >> 1) {
            return Err(err("too large"));
        }
        rest = tail;
    }
    Micros::try_from(total).map_err(|_| err("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_and_go_style_durations() {
        for (input, micros) in [
            ("250ms", 250_000),
            ("1s", 1_000_000),
            ("1m", 60_000_000),
            ("1h", 3_600_000_000),
            ("1d", 86_400_000_000),
            ("1m30s", 90_000_000),
            ("1.5s", 1_500_000),
            ("2m59.56s", 179_560_000),
            ("6m0s", 360_000_000),
            ("1h2m3.5s", 3_723_500_000),
            ("20ms", 20_000),
            ("0s", 0),
            ("0", 0),
            ("7us", 7),
            ("7µs", 7),
            (".5s", 500_000),
        ] {
            assert_eq!(parse_duration(input), Ok(micros), "{input}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for input in [
            "",
            "5",
            "s",
            "1x",
            "-1s",
            "1..5s",
            "1.2.3s",
            "1 s",
            "99999999999999999999d",
            "1e3s",
        ] {
            assert!(parse_duration(input).is_err(), "{input:?} should fail");
        }
    }
}
