//! `[[services]]`: each service's limits, profile, header rules and parent, checked into
//! [`ServiceSpec`]s; the family graph (parents, no cycle, at most [`MAX_ANCESTORS`] levels).

use super::*;
use crate::core::BrokenLineage;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) profile: Option<String>,
    #[serde(default)]
    pub(super) limits: Vec<RawLimit>,
    pub(super) default_cooldown: Option<String>,
    pub(super) max_cooldown: Option<String>,
    pub(super) quota_cooldown: Option<String>,
    #[serde(default)]
    pub(super) adopt_provider_limits: bool,
    /// Learn the budget from 429s.
    #[serde(default)]
    pub(super) adaptive: bool,
    /// The service whose budget this one also spends.
    pub(super) parent: Option<String>,
    /// The header table of a `custom` profile.
    pub(super) headers: Option<Vec<RawHeaderRule>>,
    /// `enforce` (the default) or `shadow`.
    pub(super) mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderRule {
    pub(super) name: String,
    pub(super) dimension: String,
    pub(super) meaning: String,
    pub(super) format: Option<String>,
    pub(super) window: Option<String>,
}

impl RawHeaderRule {
    pub(super) fn validate(self) -> Result<HeaderRule, String> {
        if !is_header_name(&self.name) {
            return Err(format!("name: {:?} is not an HTTP header name", self.name));
        }
        let dimension = Dimension::parse(&self.dimension).ok_or_else(|| {
            format!(
                "dimension: unknown dimension {:?} (expected requests, tokens, input_tokens or output_tokens)",
                self.dimension
            )
        })?;
        let meaning = Meaning::from_config(&self.meaning).ok_or_else(|| {
            format!(
                "meaning: {:?} (expected limit, remaining or reset)",
                self.meaning
            )
        })?;
        let format = match (meaning, self.format.as_deref()) {
            (Meaning::Reset, Some(f)) => TimeFormat::from_config(f).ok_or_else(|| {
                format!("format: {f:?} (expected duration, rfc3339, seconds, milliseconds, epoch_seconds or http_date)")
            })?,
            (Meaning::Reset, None) => {
                return Err("format: required for a reset header".into());
            }
            (_, Some(_)) => return Err("format: only a reset header has a format".into()),
            (_, None) => TimeFormat::Seconds,
        };
        let window = self
            .window
            .as_deref()
            .map(|w| duration_field("window", w))
            .transpose()?;
        Ok(HeaderRule {
            name: self.name.to_ascii_lowercase(),
            dimension,
            meaning,
            format,
            window,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) dimension: String,
    pub(super) amount: u64,
    pub(super) window: Option<String>,
    pub(super) algorithm: Option<String>,
    pub(super) burst: Option<u64>,
    pub(super) timeout: Option<String>,
}

/// How long a lease holds its in-flight slot when no `timeout` is configured.
pub(super) const DEFAULT_LEASE_TIMEOUT: &str = "10m";

impl RawService {
    pub(super) fn validate(self, index: usize) -> Result<(ServiceSpec, Profile), String> {
        let profile = self.profile.unwrap_or_else(|| "generic".into());
        let reader = match (profile.as_str(), self.headers) {
            ("custom", Some(rules)) if !rules.is_empty() => {
                let mut validated = Vec::with_capacity(rules.len());
                for (i, rule) in rules.into_iter().enumerate() {
                    validated.push(rule.validate().map_err(|e| format!("headers[{i}].{e}"))?);
                }
                Profile::custom(validated)
            }
            ("custom", _) => {
                return Err("headers: a custom profile needs a table of headers".into());
            }
            (name, None) => Profile::builtin(name).ok_or_else(|| {
                format!(
                    "profile: unknown profile {profile:?} (expected one of {})",
                    BUILTIN.join(", ") + ", custom"
                )
            })?,
            (_, Some(_)) => {
                return Err("headers: only a custom profile has a header table".into());
            }
        };
        if self.limits.is_empty() {
            return Err("limits: at least one limit is required".into());
        }
        let mut limits: Vec<LimitSpec> = Vec::with_capacity(self.limits.len());
        for (i, raw) in self.limits.into_iter().enumerate() {
            let limit = raw.validate().map_err(|e| format!("limits[{i}].{e}"))?;
            let concurrent = |l: &LimitSpec| l.algorithm == Algorithm::Concurrent;
            if concurrent(&limit) && limits.iter().any(concurrent) {
                return Err(format!("limits[{i}]: a second concurrent limit"));
            }
            if limits.iter().any(|l| {
                l.dimension == limit.dimension
                    && l.window == limit.window
                    && !concurrent(l)
                    && !concurrent(&limit)
            }) {
                return Err(format!(
                    "limits[{i}]: a second limit on {} with the same window",
                    limit.name
                ));
            }
            limits.push(limit);
        }
        let default_cooldown = match &self.default_cooldown {
            Some(s) => duration_field("default_cooldown", s)?,
            None => 1_000_000,
        };
        let max_cooldown = match &self.max_cooldown {
            Some(s) => duration_field("max_cooldown", s)?,
            None => 3_600_000_000,
        };
        if max_cooldown > MAX_WINDOW {
            return Err("max_cooldown: longer than 31d".into());
        }
        if default_cooldown > max_cooldown {
            return Err("default_cooldown: longer than max_cooldown".into());
        }
        let quota_cooldown = match &self.quota_cooldown {
            Some(s) => duration_field("quota_cooldown", s)?,
            None => max_cooldown,
        };
        if quota_cooldown > max_cooldown {
            return Err("quota_cooldown: longer than max_cooldown".into());
        }
        let mode = match self.mode.as_deref() {
            None => Mode::Enforce,
            Some(m) => {
                Mode::parse(m).ok_or_else(|| format!("mode: {m:?} (expected enforce or shadow)"))?
            }
        };
        let spec = ServiceSpec {
            index,
            name: self.name,
            profile,
            limits,
            default_cooldown,
            max_cooldown,
            quota_cooldown,
            adopt_provider_limits: self.adopt_provider_limits,
            adaptive: self.adaptive,
            parent: self.parent,
            family: None,
            mode,
        };
        Ok((spec, reader))
    }
}

/// Checks every `parent` (a configured service, no cycle, at most [`MAX_ANCESTORS`] levels) and
/// names each family member's root in `family`.
pub(super) fn resolve_families(services: &mut [ServiceSpec]) -> Result<(), String> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut roots = Vec::with_capacity(services.len());
    for s in services.iter() {
        let chain = crate::core::ancestors(
            &s.name,
            s.parent.clone(),
            |name| index.get(name).copied(),
            |&i| services[i].parent.clone(),
        )
        .map_err(|e| match e {
            BrokenLineage::Unknown(parent) => format!(
                "service {:?}: parent: {parent:?} is not a configured service",
                s.name
            ),
            BrokenLineage::Cycle(_) | BrokenLineage::TooDeep => format!(
                "service {:?}: parent: a cycle or more than {MAX_ANCESTORS} levels of parents",
                s.name
            ),
        })?;
        roots.push(chain.last().map_or(&s.name, |&i| &services[i].name).clone());
    }
    let has_children: HashSet<&str> = services
        .iter()
        .filter_map(|s| s.parent.as_deref())
        .collect();
    let families: Vec<Option<String>> = services
        .iter()
        .zip(roots)
        .map(|(s, root)| {
            (s.parent.is_some() || has_children.contains(s.name.as_str())).then_some(root)
        })
        .collect();
    for (s, family) in services.iter_mut().zip(families) {
        s.family = family;
    }
    Ok(())
}

impl RawLimit {
    pub(super) fn validate(self) -> Result<LimitSpec, String> {
        if self.amount == 0 || self.amount > MAX_AMOUNT {
            return Err(format!("amount: {} is not in 1..=2^50", self.amount));
        }
        if self.dimension == "concurrent" {
            return self.validate_concurrent();
        }
        let dimension = Dimension::parse(&self.dimension).ok_or_else(|| {
            format!(
                "dimension: unknown dimension {:?} (expected requests, tokens, input_tokens, \
                 output_tokens or concurrent)",
                self.dimension
            )
        })?;
        if self.timeout.is_some() {
            return Err("timeout: only a concurrent limit has a lease timeout".into());
        }
        let Some(window) = &self.window else {
            return Err("window: missing (e.g. window = \"1m\")".into());
        };
        let window = duration_field("window", window)?;
        if window == 0 || window > MAX_WINDOW {
            return Err(format!("window: {:?} is not in (0, 31d]", self.window));
        }
        let algorithm = match self.algorithm.as_deref().unwrap_or("sliding_window") {
            "sliding_window" => {
                if self.burst.is_some() {
                    return Err("burst: only a token_bucket limit has a burst".into());
                }
                Algorithm::SlidingWindow
            }
            "token_bucket" => {
                let burst = self.burst.unwrap_or(self.amount);
                if burst == 0 || burst > MAX_AMOUNT {
                    return Err(format!("burst: {burst} is not in 1..=2^50"));
                }
                Algorithm::TokenBucket { burst }
            }
            other => {
                return Err(format!(
                "algorithm: unknown algorithm {other:?} (expected sliding_window or token_bucket)"
            ))
            }
        };
        Ok(LimitSpec::new(dimension, self.amount, window, algorithm))
    }

    /// `{ dimension = "concurrent", amount, timeout }`: calls in flight, each holding its slot
    /// until its report or its lease timeout.
    pub(super) fn validate_concurrent(self) -> Result<LimitSpec, String> {
        if self.window.is_some() {
            return Err(
                "window: a concurrent limit has no window (its leases end at their \
                        report or their timeout)"
                    .into(),
            );
        }
        if self.algorithm.is_some() || self.burst.is_some() {
            return Err("algorithm: a concurrent limit takes no algorithm or burst".into());
        }
        let timeout = self.timeout.as_deref().unwrap_or(DEFAULT_LEASE_TIMEOUT);
        let timeout = duration_field("timeout", timeout)?;
        if timeout == 0 || timeout > MAX_WINDOW {
            return Err(format!("timeout: {:?} is not in (0, 31d]", self.timeout));
        }
        Ok(LimitSpec::concurrent(self.amount, timeout))
    }
}
