//! TLS for the gRPC port (rustls, through tonic). With `[tls]` configured the port speaks only
//! TLS; with `client_ca_file` as well, every client must present a certificate signed by that CA
//! (mutual TLS), and a client without one, or with one from another CA, is refused during the
//! handshake. Files are read at start; a change needs a restart.

use std::path::PathBuf;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// `[tls]`: the server's certificate and key, and the CA clients must be signed by (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of them.
    pub client_ca_file: Option<PathBuf>,
}

fn read(field: &str, path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls.{field} {}: {e}", path.display()))
}

impl TlsConfig {
    /// The server's TLS settings, reading the files; an error names the file.
    pub fn server_config(&self) -> Result<ServerTlsConfig, String> {
        let identity = Identity::from_pem(
            read("cert_file", &self.cert_file)?,
            read("key_file", &self.key_file)?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_file {
            config = config.client_ca_root(Certificate::from_pem(read("client_ca_file", ca)?));
        }
        Ok(config)
    }
}
