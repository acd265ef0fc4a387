//! Durations as text, in one place: the config's (`250ms`, `1m30s`, `1.5s`, `1d`), the Go-style
//! ones providers write in headers (`time.Duration.String()`: `6m0s`, `2m59.56s`, `350ms`,
//! `1.5s`, even `ns`), and Sluice's own writing of them. Both kinds are a sequence of
//! `<decimal><unit>` parts, read by one tokenizer; the config's parser is strict (an error says
//! what is wrong, overflow is refused), the headers' is total (it saturates, and its caller
//! bounds the wait).

use super::{Micros, MICROS_PER_SEC};

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write e.g. \"250ms\", \"1m30s\", \"1h\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// The config's units, in µs.
const CONFIG_UNITS: [(&str, Micros); 7] = [
    ("us", 1),
    ("µs", 1),
    ("ms", 1_000),
    ("s", MICROS_PER_SEC),
    ("m", 60 * MICROS_PER_SEC),
    ("h", 3_600 * MICROS_PER_SEC),
    ("d", 86_400 * MICROS_PER_SEC),
];

/// Go's units, in µs (0 for nanoseconds, counted in whole µs).
const GO_UNITS: [(&str, Micros); 7] = [
    ("ns", 0),
    ("us", 1),
    ("µs", 1),
    ("ms", 1_000),
    ("s", MICROS_PER_SEC),
    ("m", 60 * MICROS_PER_SEC),
    ("h", 3_600 * MICROS_PER_SEC),
];

/// Most parts a header's duration may have.
const MAX_GO_PARTS: usize = 8;

/// The `(number, unit)` parts of `s`, or why it is not a sequence of them.
fn parts(s: &str) -> impl Iterator<Item = Result<(&str, &str), &'static str>> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(number_len) = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')) else {
            rest = "";
            return Some(Err("missing unit"));
        };
        if number_len == 0 {
            rest = "";
            return Some(Err("expected a number"));
        }
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        rest = tail;
        Some(Ok((number, unit)))
    })
}

/// A non-negative decimal number of `unit` µs (`37`, `1.5`, `.25`), saturating: a whole part
/// beyond 15 digits is [`Micros::MAX`]. Digits past the 12th decimal are dropped.
pub fn decimal(number: &str, unit: Micros) -> Result<Micros, &'static str> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a number");
    }
    if whole.len() > 15 {
        return Ok(Micros::MAX);
    }
    let mut total = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<Micros>()
            .map_err(|_| "not a number")?
            .saturating_mul(unit)
    };
    let mut place = unit;
    for d in frac.bytes().take(12) {
        place /= 10;
        total = total.saturating_add(Micros::from(d - b'0') * place);
    }
    Ok(total)
}

/// A duration as written in the config, exactly in µs; `0` alone is zero.
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
    let mut total: Micros = 0;
    for part in parts(s) {
        let (number, unit) = part.map_err(err)?;
        let scale = CONFIG_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| err("unknown unit"))?;
        let (whole, _) = number.split_once('.').unwrap_or((number, ""));
        if whole.len() > 15 || number.matches('.').count() > 1 {
            return Err(err("bad number"));
        }
        let value = decimal(number, scale).map_err(|_| err("bad number"))?;
        total = total
            .checked_add(value)
            .filter(|t| *t <= Micros::MAX >> 1)
            .ok_or_else(|| err("too large"))?;
    }
    Ok(total)
}

/// A Go-style duration as a provider writes it (also a protobuf Duration string such as `34s`):
/// total, saturating (the caller bounds it).
pub fn parse_go_duration(v: &str) -> Result<Micros, &'static str> {
    if v == "0" {
        return Ok(0);
    }
    let mut total: Micros = 0;
    for (i, part) in parts(v).enumerate() {
        if i >= MAX_GO_PARTS {
            return Err("too many duration parts");
        }
        let (number, unit) = part.map_err(|e| match e {
            "missing unit" => "duration without a unit",
            _ => "not a duration",
        })?;
        let scale = GO_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, scale)| *scale)
            .ok_or("unknown duration unit")?;
        let value = if scale == 0 {
            decimal(number, 1)? / 1_000
        } else {
            decimal(number, scale)?
        };
        total = total.saturating_add(value);
    }
    Ok(total)
}

/// A duration as Sluice writes it: `1m30s`, `250ms`, `1d`, `0s`.
pub fn format_duration(micros: Micros) -> String {
    if micros == 0 {
        return "0s".to_string();
    }
    let mut rest = micros;
    let mut out = String::new();
    for (unit, size) in CONFIG_UNITS.iter().rev().filter(|(u, _)| *u != "µs") {
        if rest >= *size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
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
            if !input.ends_with('d') {
                assert_eq!(parse_go_duration(input), Ok(micros), "go {input}");
            }
        }
        assert_eq!(parse_go_duration("1500ns"), Ok(1));
        assert_eq!(parse_go_duration("1d"), Err("unknown duration unit"));
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
        // A header's absurd duration saturates instead (its caller bounds the wait).
        assert_eq!(parse_go_duration("99999999999999999999h"), Ok(Micros::MAX));
        assert!(parse_go_duration("1s1s1s1s1s1s1s1s1s").is_err());
    }

    #[test]
    fn formats_in_the_largest_units() {
        assert_eq!(format_duration(60 * MICROS_PER_SEC), "1m");
        assert_eq!(format_duration(90 * MICROS_PER_SEC), "1m30s");
        assert_eq!(format_duration(250_000), "250ms");
        assert_eq!(format_duration(86_400 * MICROS_PER_SEC), "1d");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(1_000_007), "1s7us");
        for micros in [1, 999, 1_500_000, 3_723_500_000, 86_400_000_001] {
            assert_eq!(parse_duration(&format_duration(micros)), Ok(micros));
        }
    }
}
