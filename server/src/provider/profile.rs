//! Header profiles: which response headers of a provider say what about which budget. A
//! [`Profile`] is a table of [`HeaderRule`]s (header name → dimension, meaning, time format, the
//! window the provider means) plus how to read the body; the built-in ones encode the facts of
//! each provider's documentation, and `custom` is the same table written in the config (the
//! general form of the seed article's `token_header` / `requests_header` / `header_ts_parser`).

use super::formats::TimeFormat;
use crate::core::{Dimension, Micros, MICROS_PER_SEC};

/// What a header says about its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// The budget's size.
    Limit,
    /// What is left of it.
    Remaining,
    /// When it is full again (or, on a 429, when to retry).
    Reset,
}

impl Meaning {
    /// The config spelling.
    pub fn from_config(name: &str) -> Option<Self> {
        Some(match name {
            "limit" => Meaning::Limit,
            "remaining" => Meaning::Remaining,
            "reset" => Meaning::Reset,
            _ => return None,
        })
    }
}

/// One header of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRule {
    /// Lower-cased header name.
    pub name: String,
    /// The budget it is about.
    pub dimension: Dimension,
    /// What it says.
    pub meaning: Meaning,
    /// How a reset is written (ignored for counts).
    pub format: TimeFormat,
    /// The provider's window for this budget, when known (to pick the matching configured limit).
    pub window: Option<Micros>,
}

/// Where the body may say more than the headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyReader {
    /// Nothing in the body.
    None,
    /// Anthropic: `error.type` (`rate_limit_error`, `overloaded_error`) and the spend cap
    /// (`error.details.error_code = "enforced_spend_limit_reached"`).
    Anthropic,
    /// Gemini: `error.details[]` with `RetryInfo.retryDelay` and `QuotaFailure.violations[].quotaId`.
    Gemini,
}

/// How to read one provider's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Profile name (`openai`, …, `custom`).
    pub name: String,
    /// The rate-limit headers.
    pub rules: Vec<HeaderRule>,
    /// Also read the IETF `RateLimit` / `RateLimit-Policy` fields and their older
    /// `RateLimit-Limit/-Remaining/-Reset` form (as the requests budget).
    pub ietf: bool,
    /// What the body can add.
    pub body: BodyReader,
    /// How far a `remaining` may be from the truth by the provider's rounding (Anthropic rounds
    /// token counts to the nearest thousand): differences within it are not outside usage.
    pub rounding: [u64; 4],
}

/// Names of the built-in profiles; `custom` is configured per service.
pub const BUILTIN: [&str; 6] = [
    "generic",
    "openai",
    "anthropic",
    "azure_openai",
    "groq",
    "gemini",
];

const MINUTE: Micros = 60 * MICROS_PER_SEC;
const DAY: Micros = 86_400 * MICROS_PER_SEC;

fn rule(
    name: &str,
    dimension: Dimension,
    meaning: Meaning,
    format: TimeFormat,
    window: Option<Micros>,
) -> HeaderRule {
    HeaderRule {
        name: name.to_string(),
        dimension,
        meaning,
        format,
        window,
    }
}

/// `<prefix>-limit-<dim>`, `-remaining-<dim>`, `-reset-<dim>` for requests and tokens (OpenAI's
/// naming, also Azure's and Groq's).
fn openai_style(format: TimeFormat, windows: [Option<Micros>; 2]) -> Vec<HeaderRule> {
    let mut rules = Vec::new();
    for (suffix, dimension, window) in [
        ("requests", Dimension::Requests, windows[0]),
        ("tokens", Dimension::Tokens, windows[1]),
    ] {
        for (part, meaning) in [
            ("limit", Meaning::Limit),
            ("remaining", Meaning::Remaining),
            ("reset", Meaning::Reset),
        ] {
            rules.push(rule(
                &format!("x-ratelimit-{part}-{suffix}"),
                dimension,
                meaning,
                format,
                window,
            ));
        }
    }
    rules
}

impl Profile {
    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Option<Self> {
        let mut profile = Profile {
            name: name.to_string(),
            rules: Vec::new(),
            ietf: false,
            body: BodyReader::None,
            rounding: [0; 4],
        };
        match name {
            "openai" => {
                profile.rules = openai_style(TimeFormat::Duration, [Some(MINUTE), Some(MINUTE)]);
            }
            "azure_openai" => {
                // Azure's resets may be integer seconds rather than durations (unconfirmed):
                // read both, durations first.
                profile.rules = openai_style(TimeFormat::Duration, [Some(MINUTE), Some(MINUTE)]);
                for r in profile
                    .rules
                    .iter_mut()
                    .filter(|r| r.meaning == Meaning::Reset)
                {
                    r.format = TimeFormat::SecondsOrEpoch;
                }
            }
            "groq" => {
                // Same names as OpenAI; requests are per day, tokens per minute.
                profile.rules = openai_style(TimeFormat::Duration, [Some(DAY), Some(MINUTE)]);
            }
            "anthropic" => {
                for (dim_name, dimension) in [
                    ("requests", Dimension::Requests),
                    ("tokens", Dimension::Tokens),
                    ("input-tokens", Dimension::InputTokens),
                    ("output-tokens", Dimension::OutputTokens),
                ] {
                    for (part, meaning) in [
                        ("limit", Meaning::Limit),
                        ("remaining", Meaning::Remaining),
                        ("reset", Meaning::Reset),
                    ] {
                        profile.rules.push(rule(
                            &format!("anthropic-ratelimit-{dim_name}-{part}"),
                            dimension,
                            meaning,
                            TimeFormat::Rfc3339,
                            Some(MINUTE),
                        ));
                    }
                }
                profile.body = BodyReader::Anthropic;
                // "remaining rounded to the nearest thousand" for token budgets.
                profile.rounding = [0, 500, 500, 500];
            }
            "gemini" => profile.body = BodyReader::Gemini,
            "generic" => {
                profile.rules = openai_style(TimeFormat::SecondsOrEpoch, [None, None]);
                for (part, meaning) in [
                    ("limit", Meaning::Limit),
                    ("remaining", Meaning::Remaining),
                    ("reset", Meaning::Reset),
                ] {
                    profile.rules.push(rule(
                        &format!("x-ratelimit-{part}"),
                        Dimension::Requests,
                        meaning,
                        TimeFormat::SecondsOrEpoch,
                        None,
                    ));
                }
                profile.ietf = true;
            }
            _ => return None,
        }
        Some(profile)
    }

    /// A `custom` profile from configured rules (plus the generic `retry-after` handling that
    /// every profile has).
    pub fn custom(rules: Vec<HeaderRule>) -> Self {
        Profile {
            name: "custom".into(),
            rules,
            ietf: false,
            body: BodyReader::None,
            rounding: [0; 4],
        }
    }
}
