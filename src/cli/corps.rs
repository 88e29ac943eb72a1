//! `corps`: the corps that authorised a configured suite (service providers), with their state and when
//! their token, resync and callbacks last happened.

use super::Context;
use crate::store;

/// Options of `corps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// Lists the authorised corps.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (pool, _) = ctx.database_pool().await?;
    let rows = store::corps::list(&pool).await?;
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<20} {:<24} {:<12} {:<10} {:<11} {:<19} {:<19} {:<19}",
        "corp", "name", "suite app", "agent", "state", "last token", "last resync", "last callback"
    );
    for r in &rows {
        println!(
            "{:<20} {:<24} {:<12} {:<10} {:<11} {:<19} {:<19} {:<19}",
            r.corp_id,
            r.corp_name.as_deref().unwrap_or("-"),
            r.app,
            r.agent_id
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            r.state,
            when(r.last_token_at),
            when(r.last_resync_at),
            when(r.last_callback_at),
        );
    }
    eprintln!(
        "{} corp(s). No corp yet? It appears once its create_auth callback is processed (see `jobs list` for \
         provider_auth jobs, and `doctor` for each suite's ticket)",
        rows.len()
    );
    Ok(())
}
