//! Closing the service to strangers, on a real server: bearer tokens on every service but health
//! (missing or wrong tokens get UNAUTHENTICATED, tokens rotate with a reload and never reach the
//! log), TLS for the gRPC port, and mutual TLS that refuses a client without a certificate and
//! one whose certificate comes from another CA.

use std::time::{Duration, Instant};

use sluice::v1::{
    admin_client::AdminClient, rate_limiter_client::RateLimiterClient, AcquireRequest,
    ListServicesRequest, ReloadConfigRequest,
};
use sluice_e2e::{pki::TestCa, spawn_server_unready, spawn_server_with};
use tonic::{
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code, Request,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

const SERVICES: &str = r#"
[[services]]
name = "svc"
limits = [{ dimension = "requests", amount = 100, window = "1m" }]
"#;

const TOKEN: &str = "inline-token-0123456789";
const FILE_TOKEN: &str = "file-token-0123456789ab";
const ROTATED: &str = "rotated-token-0123456789";

fn acquire(token: Option<&str>) -> Request<AcquireRequest> {
    let mut request = Request::new(AcquireRequest {
        service: "svc".into(),
        ..AcquireRequest::default()
    });
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ASCII token");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test]
async fn bearer_tokens_guard_every_service_but_health_and_rotate_on_reload() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, format!("# workers\n{FILE_TOKEN}\n\n"))?;
    let config = |extra: &str| {
        format!(
            "[auth]\ntokens = [\"{TOKEN}\"]\ntokens_file = \"{}\"\n{extra}\n{SERVICES}",
            tokens_file.display()
        )
    };
    // Health answers without a token: spawn_server_with waits for SERVING through it.
    let server = spawn_server_with(&config(""), &["--admin"]).await?;
    let mut raw = server.raw_client().await?;

    // Granted, or the status code of the refusal.
    let client = raw.clone();
    let call = move |token: Option<&'static str>| {
        let mut raw = client.clone();
        async move {
            raw.acquire(acquire(token))
                .await
                .map(|r| r.into_inner().granted)
                .map_err(|s| s.code())
        }
    };
    let unauthenticated = Err(Code::Unauthenticated);
    assert_eq!(call(None).await, unauthenticated);
    assert_eq!(call(Some("inline-token-0123456780")).await, unauthenticated);
    assert_eq!(call(Some(&TOKEN[..TOKEN.len() - 1])).await, unauthenticated);
    assert_eq!(call(Some(TOKEN)).await, Ok(true));
    assert_eq!(call(Some(FILE_TOKEN)).await, Ok(true));
    let listed = raw.list_services(ListServicesRequest {}).await;
    assert_eq!(
        listed.map(|_| ()).map_err(|s| s.code()),
        Err(Code::Unauthenticated)
    );

    // The Rust client carries a token.
    let client = server.client().await?.with_bearer_token(TOKEN)?;
    client.acquire("svc").without_sleep().await?;
    let anonymous = server.client().await?;
    let refused = anonymous.acquire("svc").without_sleep().await;
    assert!(
        matches!(&refused, Err(sluice_client::Error::Status(s)) if s.code() == Code::Unauthenticated),
        "{refused:?}"
    );

    // The Admin service is guarded too; a reload reads the tokens file again.
    let mut admin = AdminClient::connect(server.url.clone()).await?;
    let reload = admin.reload_config(ReloadConfigRequest {}).await;
    assert_eq!(
        reload.map(|_| ()).map_err(|s| s.code()),
        Err(Code::Unauthenticated)
    );
    std::fs::write(&tokens_file, format!("{ROTATED}\n"))?;
    let mut request = Request::new(ReloadConfigRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    admin.reload_config(request).await?;
    assert_eq!(call(Some(FILE_TOKEN)).await, unauthenticated, "rotated out");
    assert_eq!(call(Some(ROTATED)).await, Ok(true));

    // Removing [auth] takes a restart: the reload reports it and the tokens stay in force.
    server.write_config(SERVICES)?;
    let mut request = Request::new(ReloadConfigRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let done = admin.reload_config(request).await?.into_inner();
    assert_eq!(done.needs_restart, ["auth"]);
    assert_eq!(call(None).await, unauthenticated);
    assert_eq!(call(Some(ROTATED)).await, Ok(true));

    let log = server.log();
    for secret in [TOKEN, FILE_TOKEN, ROTATED] {
        assert!(!log.contains(secret), "a token reached the log:\n{log}");
    }
    Ok(())
}

/// A server with `[tls]` (and `client_ca_file` when `mutual`), its CA, and a second CA.
struct TlsSetup {
    _dir: tempfile::TempDir,
    ca: TestCa,
    other: TestCa,
    server: sluice_e2e::TestServer,
}

async fn tls_server(mutual: bool) -> anyhow::Result<TlsSetup> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "ca")?;
    let other = TestCa::new(dir.path(), "other")?;
    let cert = ca.issue("server", true)?;
    let client_ca = if mutual {
        format!("client_ca_file = \"{}\"\n", ca.cert().display())
    } else {
        String::new()
    };
    let config = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{client_ca}\n{SERVICES}",
        cert.cert.display(),
        cert.key.display()
    );
    let server = spawn_server_unready(&config, &[]).await?;
    Ok(TlsSetup {
        _dir: dir,
        ca,
        other,
        server,
    })
}

impl TlsSetup {
    /// A TLS channel trusting the server's CA, presenting `identity` if given.
    async fn channel(&self, identity: Option<Identity>) -> anyhow::Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(self.ca.cert())?))
            .domain_name("127.0.0.1");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        let url = format!("https://{}", self.server.addr);
        Ok(Endpoint::from_shared(url)?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?)
    }

    fn identity(ca: &TestCa, name: &str) -> anyhow::Result<Identity> {
        let issued = ca.issue(name, false)?;
        Ok(Identity::from_pem(
            std::fs::read(issued.cert)?,
            std::fs::read(issued.key)?,
        ))
    }

    /// Waits until health answers SERVING over `channel`.
    async fn wait_serving(channel: Channel) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut health = HealthClient::new(channel);
        loop {
            let request = HealthCheckRequest {
                service: "sluice.v1.RateLimiter".into(),
            };
            if let Ok(r) = health.check(request).await {
                if r.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "never SERVING over TLS");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether an acquire over `channel` (if one could be made) is refused.
async fn refused(channel: anyhow::Result<Channel>) -> bool {
    match channel {
        Err(_) => true,
        Ok(channel) => RateLimiterClient::new(channel)
            .acquire(acquire(None))
            .await
            .is_err(),
    }
}

#[tokio::test]
async fn tls_serves_only_tls_clients_that_trust_its_ca() -> anyhow::Result<()> {
    let setup = tls_server(false).await?;
    let channel = setup.channel(None).await?;
    TlsSetup::wait_serving(channel.clone()).await?;
    let granted = RateLimiterClient::new(channel)
        .acquire(acquire(None))
        .await?
        .into_inner();
    assert!(granted.granted);

    // Plaintext gets nothing.
    let plain = Endpoint::from_shared(setup.server.url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(anyhow::Error::from);
    assert!(refused(plain).await, "a plaintext client was served");
    // A client that trusts another CA does not accept the server.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(setup.other.cert())?))
        .domain_name("127.0.0.1");
    let distrustful = Endpoint::from_shared(format!("https://{}", setup.server.addr))?
        .tls_config(tls)?
        .connect()
        .await
        .map_err(anyhow::Error::from);
    assert!(
        refused(distrustful).await,
        "a client accepted an untrusted server"
    );
    Ok(())
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_its_ca() -> anyhow::Result<()> {
    let setup = tls_server(true).await?;
    let trusted = TlsSetup::identity(&setup.ca, "worker")?;
    let channel = setup.channel(Some(trusted)).await?;
    TlsSetup::wait_serving(channel.clone()).await?;
    let granted = RateLimiterClient::new(channel)
        .acquire(acquire(None))
        .await?
        .into_inner();
    assert!(granted.granted);

    // No certificate: refused in the handshake.
    assert!(
        refused(setup.channel(None).await).await,
        "a client without a certificate was served"
    );
    // A certificate from another CA: refused.
    let stranger = TlsSetup::identity(&setup.other, "stranger")?;
    assert!(
        refused(setup.channel(Some(stranger)).await).await,
        "a client with another CA's certificate was served"
    );
    let log = setup.server.log();
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}
