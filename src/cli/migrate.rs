//! `migrate`: create the database if missing and apply every migration.

use super::Context;

/// Options of `migrate` (none).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prepares the database and exits.
pub async fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (pool, target) = ctx.database_pool().await?;
    drop(pool);
    tracing::info!(database = %target, "migrations applied");
    Ok(())
}
