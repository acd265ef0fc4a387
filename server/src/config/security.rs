//! `[auth]` and `[tls]`: bearer tokens and the server's certificate, checked into
//! [`AuthConfig`] and [`TlsConfig`].

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    // Secrets: never logged.
    #[serde(default)]
    pub(super) tokens: Vec<String>,
    pub(super) tokens_file: Option<String>,
    #[serde(default)]
    pub(super) status_tokens: Vec<String>,
}

impl RawAuth {
    pub(super) fn validate(self) -> Result<AuthConfig, String> {
        for token in &self.tokens {
            validate_token(token).map_err(|e| format!("auth.tokens: {e}"))?;
        }
        for token in &self.status_tokens {
            validate_token(token).map_err(|e| format!("auth.status_tokens: {e}"))?;
        }
        if self.tokens.is_empty() && self.tokens_file.is_none() {
            return Err("auth: set tokens or tokens_file".into());
        }
        Ok(AuthConfig {
            tokens: self.tokens.into_iter().map(Secret::new).collect(),
            tokens_file: self.tokens_file.map(Into::into),
            status_tokens: self.status_tokens.into_iter().map(Secret::new).collect(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: String,
    pub(super) key_file: String,
    pub(super) client_ca_file: Option<String>,
}
