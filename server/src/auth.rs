//! Bearer-token authentication. With `[auth]` configured, every call to the API, the Admin
//! service and reflection must carry `authorization: Bearer <token>` with one of the configured
//! tokens; anything else is refused with `UNAUTHENTICATED`. Health stays open, so probes and load
//! balancers need no secret. Tokens are compared in constant time, never logged, and reloaded
//! with the config (see [`crate::reload`]).

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
};

use tonic::{service::Interceptor, Request, Status};

/// Shortest token accepted: guessing one must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret whose `Debug` output hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that must compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[auth]`: the accepted tokens, given inline or in a file (one per line; blank lines and lines
/// starting with `#` are skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Tokens written in the config.
    pub tokens: Vec<Secret>,
    /// A file of tokens, read at start and at every reload.
    pub tokens_file: Option<PathBuf>,
    /// Read-only tokens: they open the status page and its JSON, nothing else.
    pub status_tokens: Vec<Secret>,
}

/// Checks a token's shape: long enough, printable ASCII without spaces (it travels in a header).
pub fn validate_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "a token is shorter than {MIN_TOKEN_LEN} characters"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token contains spaces, control or non-ASCII characters".into());
    }
    Ok(())
}

/// The set of accepted tokens, and the read-only ones of the status page.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Secret>, Vec<Secret>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokens({} configured, {} status only)",
            self.0.len(),
            self.1.len()
        )
    }
}

impl Tokens {
    /// The tokens of `config`, reading its file; an error names the file (never a token).
    pub fn load(config: &AuthConfig) -> Result<Self, String> {
        let mut tokens = config.tokens.clone();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("auth.tokens_file {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                validate_token(line).map_err(|e| {
                    format!("auth.tokens_file {} line {}: {e}", path.display(), n + 1)
                })?;
                tokens.push(Secret::new(line));
            }
        }
        if tokens.is_empty() {
            return Err("auth: no tokens configured (set tokens or tokens_file)".into());
        }
        Ok(Self(tokens, config.status_tokens.clone()))
    }

    /// Whether `presented` is one of the tokens. Every token is compared in full, whatever
    /// matches, so the time taken tells nothing about the tokens.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        any_is(&self.0, presented)
    }

    /// Whether `presented` opens the status page: one of the read-only status tokens when any
    /// are configured (then API tokens never travel to the page's plain-HTTP listener), else one
    /// of the tokens.
    pub fn accepts_for_status(&self, presented: &[u8]) -> bool {
        if self.1.is_empty() {
            any_is(&self.0, presented)
        } else {
            any_is(&self.1, presented)
        }
    }
}

/// Whether `presented` is one of `tokens`, comparing every one in full.
fn any_is(tokens: &[Secret], presented: &[u8]) -> bool {
    tokens.iter().fold(false, |found, t| {
        found | constant_time_eq(t.expose().as_bytes(), presented)
    })
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// The interceptor that checks bearer tokens; clones share the token set, which a reload swaps.
#[derive(Clone, Debug, Default)]
pub struct BearerAuth {
    tokens: Arc<RwLock<Option<Arc<Tokens>>>>,
}

impl BearerAuth {
    /// Checks `tokens`, or lets every call through when `None`.
    pub fn new(tokens: Option<Tokens>) -> Self {
        Self {
            tokens: Arc::new(RwLock::new(tokens.map(Arc::new))),
        }
    }

    /// Replaces the accepted tokens (`None`: authentication off).
    pub fn replace(&self, tokens: Option<Tokens>) {
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = tokens.map(Arc::new);
    }

    /// Whether tokens are checked at all.
    pub fn enabled(&self) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Whether a call carrying `authorization` may proceed.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        self.allows_with(authorization, Tokens::accepts)
    }

    fn allows_with(
        &self,
        authorization: Option<&[u8]>,
        accepts: impl Fn(&Tokens, &[u8]) -> bool,
    ) -> bool {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(tokens) = tokens else {
            return true;
        };
        let Some(value) = authorization else {
            return false;
        };
        // The scheme is case-insensitive (RFC 9110).
        match value.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                accepts(&tokens, token)
            }
            _ => false,
        }
    }
}

impl BearerAuth {
    /// Whether a request for the status page may proceed: a token or a read-only status token,
    /// as a bearer token or as the password of HTTP Basic auth (any user name), which is how a
    /// browser sends it when asked.
    pub fn allows_bearer_or_basic(&self, authorization: Option<&[u8]>) -> bool {
        use base64::Engine as _;
        let basic = authorization
            .and_then(|value| value.split_at_checked(6))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"basic "))
            .and_then(|(_, encoded)| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim_ascii())
                    .ok()
            });
        match basic {
            Some(decoded) => {
                let password = match decoded.iter().position(|&b| b == b':') {
                    Some(colon) => &decoded[colon + 1..],
                    None => &decoded[..],
                };
                let mut bearer = b"Bearer ".to_vec();
                bearer.extend_from_slice(password);
                self.allows_with(Some(&bearer), Tokens::accepts_for_status)
            }
            None => self.allows_with(authorization, Tokens::accepts_for_status),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if self.allows(presented) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or invalid bearer token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &[&str]) -> BearerAuth {
        BearerAuth::new(Some(Tokens(
            tokens.iter().map(|t| Secret::new(*t)).collect(),
            vec![Secret::new("read-only-status-0123456789")],
        )))
    }

    #[test]
    fn only_a_configured_bearer_token_passes() {
        let a = auth(&["first-token-0123456789", "second-token-0123456789"]);
        assert!(a.allows(Some(b"Bearer first-token-0123456789")));
        assert!(a.allows(Some(b"bearer second-token-0123456789")));
        assert!(!a.allows(None));
        assert!(!a.allows(Some(b"Bearer first-token-012345678")));
        assert!(!a.allows(Some(b"Bearer first-token-01234567890")));
        assert!(!a.allows(Some(b"Basic first-token-0123456789")));
        assert!(!a.allows(Some(b"first-token-0123456789")));
        assert!(!a.allows(Some(b"Bearer ")));
        assert!(!a.allows(Some(b"")));
        assert!(BearerAuth::new(None).allows(None));
    }

    #[test]
    fn replacing_the_tokens_takes_effect_for_every_clone() {
        let a = auth(&["old-token-0123456789"]);
        let clone = a.clone();
        a.replace(Some(Tokens(
            vec![Secret::new("new-token-0123456789")],
            Vec::new(),
        )));
        assert!(!clone.allows(Some(b"Bearer old-token-0123456789")));
        assert!(clone.allows(Some(b"Bearer new-token-0123456789")));
    }

    #[test]
    fn weak_or_odd_tokens_are_refused_and_secrets_never_print() {
        assert!(validate_token("short").is_err());
        assert!(validate_token("has a space in it, long enough").is_err());
        assert!(validate_token("exactly-sixteen!").is_ok());
        let config = AuthConfig {
            tokens: vec![Secret::new("do-not-print-this-token")],
            tokens_file: None,
            status_tokens: vec![Secret::new("do-not-print-this-either")],
        };
        assert!(!format!("{config:?}").contains("do-not-print"));
        let tokens = Tokens::load(&config).expect("valid");
        assert!(!format!("{tokens:?}").contains("do-not-print"));
    }

    #[test]
    fn the_status_page_takes_the_token_as_bearer_or_as_a_basic_password() {
        use base64::Engine as _;
        let basic = |userpass: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(userpass)
            )
        };
        let a = BearerAuth::new(Some(Tokens(
            vec![Secret::new("page-token-0123456789")],
            Vec::new(),
        )));
        assert!(a.enabled() && !BearerAuth::new(None).enabled());
        assert!(a.allows_bearer_or_basic(Some(b"Bearer page-token-0123456789")));
        assert!(a.allows_bearer_or_basic(Some(basic("ops:page-token-0123456789").as_bytes())));
        assert!(a.allows_bearer_or_basic(Some(basic(":page-token-0123456789").as_bytes())));
        assert!(!a.allows_bearer_or_basic(Some(basic("ops:wrong-token-0123456789").as_bytes())));
        assert!(!a.allows_bearer_or_basic(Some(basic("page-token-0123456789:").as_bytes())));
        assert!(!a.allows_bearer_or_basic(Some(b"Basic !!not-base64!!")));
        assert!(!a.allows_bearer_or_basic(None));
        assert!(
            BearerAuth::new(None).allows_bearer_or_basic(None),
            "auth off"
        );
        // With read-only status tokens, they open the page (and nothing of the API), and the
        // API tokens no longer do.
        let b = auth(&["api-token-0123456789"]);
        assert!(b.allows_bearer_or_basic(Some(b"Bearer read-only-status-0123456789")));
        assert!(b.allows_bearer_or_basic(Some(basic("x:read-only-status-0123456789").as_bytes())));
        assert!(!b.allows(Some(b"Bearer read-only-status-0123456789")));
        assert!(!b.allows_bearer_or_basic(Some(b"Bearer api-token-0123456789")));
        assert!(b.allows(Some(b"Bearer api-token-0123456789")));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
