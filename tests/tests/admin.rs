//! The operator's `sluice.v1.Admin` service, on every backend: off unless `--admin` is given
//! (UNIMPLEMENTED); when on, a cooldown set by hand stops acquires with its reason shown in
//! GetStatus, clearing it lets them through, and a reset forgets the service's usage.

use sluice::v1::{admin_client::AdminClient, ServiceRequest, SetCooldownRequest};
use sluice_e2e::Store;
use tonic::Code;

const CONFIG: &str = r#"
[[services]]
name = "llm"
max_cooldown = "10m"
limits = [{ dimension = "requests", amount = 5, window = "1m" }]
"#;

fn service() -> ServiceRequest {
    ServiceRequest {
        service: "llm".into(),
    }
}

sluice_e2e::on_every_backend!(operators_set_and_clear_cooldowns_and_reset_services);

async fn operators_set_and_clear_cooldowns_and_reset_services(store: &Store) -> anyhow::Result<()> {
    let off = store.spawn_server(CONFIG).await?;
    let mut admin = AdminClient::connect(off.url.clone()).await?;
    let refused = admin.clear_cooldown(service()).await;
    assert_eq!(
        refused.map_err(|s| s.code()).err(),
        Some(Code::Unimplemented)
    );

    let server = store.spawn_server_with(CONFIG, &["--admin"]).await?;
    let mut admin = AdminClient::connect(server.url.clone()).await?;
    let client = server.client().await?;
    for _ in 0..3 {
        client.acquire("llm").without_sleep().await?;
    }

    let set = admin
        .set_cooldown(SetCooldownRequest {
            service: "llm".into(),
            duration: Some(prost_types::Duration {
                seconds: 300,
                nanos: 0,
            }),
            reason: "provider incident".into(),
        })
        .await?
        .into_inner();
    let cooldown = set
        .status
        .and_then(|s| s.cooldown)
        .ok_or_else(|| anyhow::anyhow!("no cooldown after SetCooldown"))?;
    assert_eq!(cooldown.cause, "admin: provider incident");
    assert!(cooldown.remaining.is_some_and(|r| r.seconds > 290));
    let denied = client.acquire("llm").without_sleep().await;
    assert!(
        matches!(&denied, Err(sluice_client::Error::Denied { limit, .. }) if limit == "cooldown"),
        "{denied:?}"
    );
    // Longer than max_cooldown, or zero: refused.
    let too_long = admin
        .set_cooldown(SetCooldownRequest {
            service: "llm".into(),
            duration: Some(prost_types::Duration {
                seconds: 3_600,
                nanos: 0,
            }),
            reason: String::new(),
        })
        .await;
    assert_eq!(
        too_long.map_err(|s| s.code()).err(),
        Some(Code::InvalidArgument)
    );

    let cleared = admin.clear_cooldown(service()).await?.into_inner();
    assert!(cleared.status.is_some_and(|s| s.cooldown.is_none()));
    client.acquire("llm").without_sleep().await?;
    assert_eq!(client.status("llm").await?.limits[0].used, 4);

    let reset = admin.reset_service(service()).await?.into_inner();
    assert_eq!(
        reset.status.map(|s| s.limits[0].used),
        Some(0),
        "usage forgotten"
    );
    for _ in 0..5 {
        client.acquire("llm").without_sleep().await?;
    }
    let unknown = admin
        .reset_service(ServiceRequest {
            service: "nope".into(),
        })
        .await;
    assert_eq!(unknown.map_err(|s| s.code()).err(), Some(Code::NotFound));
    Ok(())
}
