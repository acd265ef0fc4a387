//! Live configuration on a real server, on every backend: SIGHUP and `Admin/ReloadConfig` re-read
//! the config file; a surviving service keeps its usage, a removed one answers NOT_FOUND, a new
//! one serves at once; a bad file is refused with the reason logged (and returned by the RPC)
//! while the running config keeps serving; settings bound at start are reported, not applied.

use sluice::v1::{admin_client::AdminClient, ListServicesRequest, ReloadConfigRequest};
use sluice_e2e::{Store, TestServer};
use tonic::Code;

const BEFORE: &str = r#"
[[services]]
name = "kept"
limits = [{ dimension = "requests", amount = 2, window = "1h" }]

[[services]]
name = "dropped"
limits = [{ dimension = "requests", amount = 5, window = "1h" }]
"#;

const AFTER: &str = r#"
[[services]]
name = "kept"
limits = [{ dimension = "requests", amount = 2, window = "1h" }]

[[services]]
name = "added"
limits = [{ dimension = "requests", amount = 1, window = "1h" }]
"#;

/// AFTER with a lower budget for "kept", a different listen address (overridden by the command
/// line, so not a change) and a different shutdown grace (bound at start).
const LATER: &str = r#"
listen = "127.0.0.1:1"
shutdown_grace = "3s"

[[services]]
name = "kept"
limits = [{ dimension = "requests", amount = 1, window = "1h" }]

[[services]]
name = "added"
limits = [{ dimension = "requests", amount = 1, window = "1h" }]
"#;

const BROKEN: &str = r#"
[[services]]
name = "kept"
limits = [{ dimension = "requests", amount = 0, window = "1h" }]
"#;

async fn service_names(server: &TestServer) -> anyhow::Result<Vec<String>> {
    let listed = server
        .raw_client()
        .await?
        .list_services(ListServicesRequest {})
        .await?
        .into_inner();
    Ok(listed.services.into_iter().map(|s| s.service).collect())
}

sluice_e2e::on_every_backend!(sighup_reloads_services_and_keeps_surviving_state);

async fn sighup_reloads_services_and_keeps_surviving_state(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(BEFORE).await?;
    let client = server.client().await?;
    client.acquire("kept").without_sleep().await?;
    client.acquire("dropped").without_sleep().await?;

    server.write_config(&store.config(AFTER))?;
    server.signal("HUP")?;
    server.wait_for_log("config reloaded", 1).await?;
    assert_eq!(service_names(&server).await?, ["kept", "added"]);
    // "kept" still counts its first grant: one more, then denied.
    client.acquire("kept").without_sleep().await?;
    let denied = client.acquire("kept").without_sleep().await;
    assert!(
        matches!(&denied, Err(sluice_client::Error::Denied { .. })),
        "{denied:?}"
    );
    let gone = client.acquire("dropped").without_sleep().await;
    assert!(
        matches!(&gone, Err(sluice_client::Error::UnknownService(_))),
        "{gone:?}"
    );
    client.acquire("added").without_sleep().await?;

    // A bad file is refused, with the reason in the log; the running config keeps serving.
    server.write_config(&store.config(BROKEN))?;
    server.signal("HUP")?;
    server.wait_for_log("config reload refused", 1).await?;
    let log = server.log();
    let refused = log
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap_or_default();
    assert!(refused.contains("amount"), "{refused}");
    assert_eq!(service_names(&server).await?, ["kept", "added"]);
    assert_eq!(log.matches("config reloaded").count(), 1);
    Ok(())
}

sluice_e2e::on_every_backend!(the_admin_rpc_reloads_and_reports_what_changed);

async fn the_admin_rpc_reloads_and_reports_what_changed(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server_with(BEFORE, &["--admin"]).await?;
    let mut admin = AdminClient::connect(server.url.clone()).await?;
    let client = server.client().await?;
    client.acquire("kept").without_sleep().await?;

    server.write_config(&store.config(AFTER))?;
    let done = admin
        .reload_config(ReloadConfigRequest {})
        .await?
        .into_inner();
    assert_eq!(done.added, ["added"]);
    assert_eq!(done.removed, ["dropped"]);
    assert!(done.changed.is_empty(), "{done:?}");
    assert_eq!(done.unchanged, ["kept"]);
    assert!(done.needs_restart.is_empty(), "{done:?}");

    server.write_config(&store.config(BROKEN))?;
    let refused = admin.reload_config(ReloadConfigRequest {}).await;
    let status = refused
        .err()
        .ok_or_else(|| anyhow::anyhow!("a bad file was accepted"))?;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("amount"), "{}", status.message());

    // A lower budget applies to the usage already booked: "kept" has used 1 of 1.
    server.write_config(&store.config(LATER))?;
    let done = admin
        .reload_config(ReloadConfigRequest {})
        .await?
        .into_inner();
    assert_eq!(done.changed, ["kept"]);
    assert_eq!(done.unchanged, ["added"]);
    assert_eq!(done.needs_restart, ["shutdown_grace"]);
    let denied = client.acquire("kept").without_sleep().await;
    assert!(
        matches!(&denied, Err(sluice_client::Error::Denied { .. })),
        "{denied:?}"
    );
    Ok(())
}
