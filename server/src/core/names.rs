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
