//! `sluice-server`: parse arguments and config, start tracing, bind, and serve until SIGTERM or
//! SIGINT, reloading the config on SIGHUP. Everything else lives in the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice_server::{cli::Cli, run_with};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log_format.init();
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("sluice-server failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let config = cli.load_config()?;
    if cli.check_config {
        tracing::info!(services = config.services.len(), "config is valid");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, services = config.services.len(), "listening");
    // SIGHUP (or the Admin service's ReloadConfig) re-reads the file with the same overrides.
    run_with(
        listener,
        config,
        Some(std::sync::Arc::new(cli)),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}
