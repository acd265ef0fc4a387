//! [`plan`]: what Sluice does about one provider answer, from its [`Reading`]. The rules:
//!
//! - a rate-limit 429 cools down the dimension the headers point at (a budget with `remaining:
//!   0`), until that budget's reset or `retry-after`; with no pointer, the whole service until
//!   `retry-after` or the latest reset named, else the service's `default_cooldown`;
//! - a quota or spend-cap 429 (Anthropic's `enforced_spend_limit_reached`, a Gemini per-day
//!   quota) cools the service down for the named time, else for `quota_cooldown`: no retry storm;
//! - an overload (503, Anthropic's 529) asks the backend for a short cooldown that doubles on
//!   every repeat (with jitter) and is reset by the next success;
//! - a success whose headers say `remaining: 0` cools that dimension down until its reset, so the
//!   next call does not draw a 429;
//! - every other `remaining` is handed to the backend, which charges what it does not know of as
//!   outside usage (held for the configured window: conservative when the provider refills
//!   sooner).
//!
//! - a `limit` header is the provider's budget: with `adopt_provider_limits`, it replaces the
//!   configured amount of the limit it matches (a token bucket's rate and burst follow it).
//!
//! Every cooldown is clamped to the service's `max_cooldown`, with a note.

use super::{profile::Profile, reading::Reading};
use crate::core::{
    format_duration, AdoptOrder, Algorithm, CooldownCause, CooldownOrder, Dimension, LimitSpec,
    Micros, OverloadOrder, RemainingReading, ServiceSpec,
};

/// Doublings of an overload cooldown before it stops growing.
const MAX_OVERLOAD_DOUBLINGS: u32 = 6;

/// What to do about one answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Cooldowns to set (lengthen only).
    pub cooldowns: Vec<CooldownOrder>,
    /// An overload to count.
    pub overload: Option<OverloadOrder>,
    /// A success: resets the overload count.
    pub success: bool,
    /// The provider's remaining budgets, for the limits they match.
    pub remaining: Vec<RemainingReading>,
    /// Provider budgets to adopt.
    pub adopt: Vec<AdoptOrder>,
    /// A 429 that is not a quota or spend cap (an adaptive budget lowers itself).
    pub throttled: bool,
}

/// The configured limit a provider budget of `dimension` over `window` corresponds to: the one with
/// that window, or, when the provider's window is unknown, the shortest one of the dimension.
pub fn matching_limit(
    spec: &ServiceSpec,
    dimension: Dimension,
    window: Option<Micros>,
) -> Option<usize> {
    let candidates = spec
        .limits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.dimension == dimension && l.algorithm != Algorithm::Concurrent);
    match window {
        Some(w) => candidates
            .filter(|(_, l)| l.window == w)
            .map(|(i, _)| i)
            .next(),
        None => candidates
            .min_by_key(|(_, l): &(usize, &LimitSpec)| l.window)
            .map(|(i, _)| i),
    }
}

/// Plans the effects of an answer with HTTP `status`. `jitter_permille` (800–1200) scales an
/// overload cooldown.
pub fn plan(
    spec: &ServiceSpec,
    profile: &Profile,
    status: u32,
    reading: &Reading,
    jitter_permille: u32,
    notes: &mut Vec<String>,
) -> Plan {
    let mut plan = Plan::default();
    let cause = |source: String| CooldownCause {
        status_code: status,
        source,
    };
    let mut cooldown =
        |dimension: Dimension, length: Micros, source: String, notes: &mut Vec<String>| {
            let length = if length > spec.max_cooldown {
                notes.push(format!(
                    "cooldown of {} clamped to max_cooldown ({})",
                    format_duration(length),
                    format_duration(spec.max_cooldown)
                ));
                spec.max_cooldown
            } else {
                length
            };
            if length > 0 {
                plan.cooldowns.push(CooldownOrder {
                    dimension,
                    length,
                    cause: cause(source),
                });
            }
        };
    let retry = reading.retry_after;
    let at_zero: Vec<(Dimension, Option<Micros>)> = Dimension::ALL
        .iter()
        .filter_map(|&d| {
            let r = &reading.dimensions[d.index()];
            (r.remaining == Some(0)).then_some((d, r.reset))
        })
        .collect();
    let latest_reset = reading.dimensions.iter().filter_map(|d| d.reset).max();
    match status {
        429 => {
            if let Some(quota) = &reading.quota {
                let (length, from) = match (retry, latest_reset) {
                    (Some((r, _)), _) => (r, "retry-after"),
                    (None, Some(reset)) => (reset, "reset"),
                    (None, None) => (spec.quota_cooldown, "quota_cooldown"),
                };
                cooldown(
                    Dimension::Requests,
                    length,
                    format!("429 quota {quota} ({from})"),
                    notes,
                );
            } else if !at_zero.is_empty() {
                plan.throttled = true;
                for (dimension, reset) in &at_zero {
                    let (length, from) = match (reset, retry) {
                        (Some(reset), _) => (*reset, "reset"),
                        (None, Some((r, source))) => (r, source),
                        (None, None) => (spec.default_cooldown, "default_cooldown"),
                    };
                    cooldown(
                        *dimension,
                        length,
                        format!("429 {} {from}", dimension.as_str()),
                        notes,
                    );
                }
            } else {
                plan.throttled = true;
                let (length, from) = match (retry, latest_reset) {
                    (Some((r, source)), _) => (r, source),
                    (None, Some(reset)) => (reset, "reset"),
                    (None, None) => (spec.default_cooldown, "default_cooldown"),
                };
                cooldown(Dimension::Requests, length, format!("429 {from}"), notes);
            }
        }
        503 | 529 => {
            let cap = spec
                .default_cooldown
                .saturating_mul(1 << MAX_OVERLOAD_DOUBLINGS)
                .min(spec.max_cooldown);
            plan.overload = Some(OverloadOrder {
                base: spec.default_cooldown,
                cap,
                jitter_permille,
                at_least: retry.map_or(0, |(r, _)| r.min(spec.max_cooldown)),
                cause: cause(format!("{status} overloaded")),
            });
        }
        200..=299 => {
            plan.success = true;
            for (dimension, reset) in &at_zero {
                if let Some(reset) = reset {
                    cooldown(
                        *dimension,
                        *reset,
                        format!("{status} {} remaining 0", dimension.as_str()),
                        notes,
                    );
                }
            }
        }
        _ => {}
    }
    if status == 429 || (200..=299).contains(&status) {
        if spec.adopt_provider_limits {
            adopt(spec, reading, &mut plan, notes);
        }
        for dimension in Dimension::ALL {
            let r = &reading.dimensions[dimension.index()];
            let Some(remaining) = r.remaining else {
                continue;
            };
            if remaining == 0 && r.reset.is_some() {
                // The cooldown until the reset covers it; a charge would outlast the reset.
                continue;
            }
            match matching_limit(spec, dimension, r.window) {
                Some(limit) => plan.remaining.push(RemainingReading {
                    limit,
                    remaining,
                    tolerance: profile.rounding[dimension.index()],
                }),
                None => notes.push(format!(
                    "remaining {} matches no configured limit",
                    dimension.as_str()
                )),
            }
        }
    }
    plan
}

/// Orders the provider's `limit` budgets adopted in place of the matching limits'
/// amounts, with a note for each change and for each budget that cannot be adopted.
fn adopt(spec: &ServiceSpec, reading: &Reading, plan: &mut Plan, notes: &mut Vec<String>) {
    for dimension in Dimension::ALL {
        let r = &reading.dimensions[dimension.index()];
        let Some(amount) = r.limit else { continue };
        let Some(i) = matching_limit(spec, dimension, r.window) else {
            continue;
        };
        let limit = &spec.limits[i];
        match AdoptOrder::new(i, limit, amount) {
            Err(why) => notes.push(format!(
                "provider budget {amount} for {} not adopted ({why})",
                limit.name
            )),
            Ok(order) => {
                if amount != limit.amount {
                    notes.push(format!(
                        "adopted provider budget {amount} for {} (configured {})",
                        limit.name, limit.amount
                    ));
                }
                plan.adopt.push(order);
            }
        }
    }
}
