//! Service names and families as the domain defines them: what a name may be, and how many
//! ancestors a service may have. The config layer checks both at load; the limiter checks names
//! that come over the wire.

/// Longest service name, in bytes.
const MAX_NAME_LEN: usize = 128;

/// Most ancestors a service may have (`a` → `b` → `c` → `d` → `e`).
pub const MAX_ANCESTORS: usize = 4;

/// Checks a service name: 1–128 bytes of `[A-Za-z0-9._:/-]`.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("service name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "service name is {} bytes long (at most {MAX_NAME_LEN})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:/-".contains(*c)))
    {
        return Err(format!(
            "service name contains {c:?} (allowed: letters, digits and . _ : / -)"
        ));
    }
    Ok(())
}

/// Why a walk up a family stopped short.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokenLineage {
    /// A parent that is not a service (of this configuration, or of this family).
    #[error("parent {0:?} is not a configured service")]
    Unknown(String),
    /// The walk came back to a service already on it.
    #[error("a cycle of parents through {0:?}")]
    Cycle(String),
    /// More than [`MAX_ANCESTORS`] ancestors.
    #[error("more than {MAX_ANCESTORS} levels of parents")]
    TooDeep,
}

/// The ancestors of service `name` (whose parent is `parent`), parent first: `lookup` finds a
/// service by name, `parent_of` names its parent. The one walk up a family every layer uses (the
/// config checks the graph with it, the limiter and both backends follow it).
pub fn ancestors<T>(
    name: &str,
    parent: Option<String>,
    mut lookup: impl FnMut(&str) -> Option<T>,
    mut parent_of: impl FnMut(&T) -> Option<String>,
) -> Result<Vec<T>, BrokenLineage> {
    let mut seen = vec![name.to_string()];
    let mut chain = Vec::new();
    let mut next = parent;
    while let Some(p) = next {
        if seen.contains(&p) {
            return Err(BrokenLineage::Cycle(p));
        }
        if chain.len() >= MAX_ANCESTORS {
            return Err(BrokenLineage::TooDeep);
        }
        let node = lookup(&p).ok_or_else(|| BrokenLineage::Unknown(p.clone()))?;
        next = parent_of(&node);
        seen.push(p);
        chain.push(node);
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn walk(graph: &[(&str, Option<&str>)], from: &str) -> Result<Vec<String>, BrokenLineage> {
        let parents: HashMap<&str, Option<&str>> = graph.iter().copied().collect();
        let parent = |n: &str| parents.get(n).copied().flatten().map(str::to_string);
        ancestors(
            from,
            parent(from),
            |n| parents.contains_key(n).then(|| n.to_string()),
            |n| parent(n),
        )
    }

    #[test]
    fn walks_up_to_the_root_and_refuses_broken_families() {
        let family = [
            ("a", Some("b")),
            ("b", Some("c")),
            ("c", None),
            ("x", Some("y")),
            ("loop1", Some("loop2")),
            ("loop2", Some("loop1")),
        ];
        assert_eq!(walk(&family, "a"), Ok(vec!["b".into(), "c".into()]));
        assert_eq!(walk(&family, "c"), Ok(vec![]));
        assert_eq!(walk(&family, "x"), Err(BrokenLineage::Unknown("y".into())));
        assert_eq!(
            walk(&family, "loop1"),
            Err(BrokenLineage::Cycle("loop1".into()))
        );
        let deep: Vec<(String, Option<String>)> = (0..=MAX_ANCESTORS + 1)
            .map(|i| {
                (
                    format!("s{i}"),
                    (i <= MAX_ANCESTORS).then(|| format!("s{}", i + 1)),
                )
            })
            .collect();
        let deep: Vec<(&str, Option<&str>)> = deep
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_deref()))
            .collect();
        assert_eq!(walk(&deep, "s1").map(|c| c.len()), Ok(MAX_ANCESTORS));
        assert_eq!(walk(&deep, "s0"), Err(BrokenLineage::TooDeep));
    }
}
