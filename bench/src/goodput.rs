//! Goodput (placeholder while it is written).

/// Options of `goodput`.
#[derive(Clone, Debug, clap::Args)]
pub struct GoodputArgs {}

/// Runs the goodput benchmark.
pub async fn run(_args: GoodputArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
