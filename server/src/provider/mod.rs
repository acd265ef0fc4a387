//! Understanding providers' answers. Reported headers are validated here (bounded, well formed);
//! [`formats`] parses the many ways of writing counts and times, [`profile`] says which header of
//! which provider means what, [`reading`] turns one answer into a [`Reading`], and [`policy`]
//! decides what Sluice does about it (cooldowns, overload backoff, outside usage). Everything here
//! treats its input as untrusted: it bounds, validates and never panics.

pub mod formats;
pub mod policy;
pub mod profile;
pub mod reading;

pub use formats::{Ignored, TimeFormat};
pub use policy::{matching_limit, plan, Plan};
pub use profile::{BodyReader, HeaderRule, Meaning, Profile};
pub use reading::{read, DimensionReading, Reading};

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

/// True for a valid HTTP header name of at most 256 bytes.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_HEADER_NAME && name.bytes().all(is_token_byte)
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

/// Validated headers from literal pairs, for the provider tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> Vec<Header> {
    validate_headers(
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            rate_limit_headers(&test_headers(&[
                ("X-RateLimit-Remaining-Tokens", "5"),
                ("content-type", "json"),
                ("anthropic-ratelimit-tokens-remaining", "7"),
                ("RateLimit", "\"default\";r=50;t=30"),
            ])),
            vec![
                ("x-ratelimit-remaining-tokens".to_string(), "5".to_string()),
                (
                    "anthropic-ratelimit-tokens-remaining".to_string(),
                    "7".to_string()
                ),
                ("ratelimit".to_string(), "\"default\";r=50;t=30".to_string()),
            ]
        );
    }
}
