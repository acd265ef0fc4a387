//! `[[priorities]]`: the classes callers name in `priority`, checked into [`Priorities`].

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPriority {
    pub(super) name: String,
    pub(super) min_share: Option<f64>,
}

/// Most priority classes.
pub(super) const MAX_CLASSES: usize = 16;

/// Checks `[[priorities]]`: 1 to 16 classes, highest first, with distinct names of
/// `[a-z0-9_-]`, a `min_share` in (0, 1] for every class but the highest (default 0.1).
pub(super) fn validate_priorities(raw: Option<Vec<RawPriority>>) -> Result<Priorities, String> {
    let Some(raw) = raw else {
        return Ok(Priorities::builtin());
    };
    if raw.is_empty() || raw.len() > MAX_CLASSES {
        return Err(format!("priorities: 1 to {MAX_CLASSES} classes"));
    }
    let mut classes = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let good = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !good {
            return Err(format!("priorities[{i}].name: 1 to 64 of [a-z0-9_-]"));
        }
        if classes.iter().any(|(n, _)| n == &p.name) {
            return Err(format!("priorities[{i}].name: {:?} twice", p.name));
        }
        let share = match (i, p.min_share) {
            (0, Some(_)) => {
                return Err("priorities[0].min_share: the highest class is never overtaken".into())
            }
            (0, None) => 1.0,
            (_, None) => 0.1,
            (_, Some(s)) if (MIN_SHARE..=1.0).contains(&s) => s,
            (_, Some(_)) => {
                return Err(format!(
                    "priorities[{i}].min_share: not in [1/64, 1] (0.015625 to 1)"
                ))
            }
        };
        classes.push((p.name, share));
    }
    Ok(Priorities::new(&classes))
}
