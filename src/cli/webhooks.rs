//! `webhooks`: each webhook subscriber's cursor, lag and last error (`webhooks list`, the default), a replay
//! from a cursor (`webhooks replay`), and a fresh secret (`webhooks gen-secret`).

use super::Context;
use crate::store::feed;

/// Options of `webhooks`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `list` (the default), `replay` or `gen-secret`.
    #[command(subcommand)]
    pub command: Option<WebhooksCommand>,
}

/// `webhooks` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Each subscriber: cursor, lag (feed entries after its cursor), failing or not, last error.
    List,
    /// Send again every entry after a cursor (a running `serve` switches to it at its next delivery).
    Replay(ReplayArgs),
    /// Print a fresh `whsec_` secret for a `[[webhooks]]` table and its receiver.
    GenSecret,
}

/// Options of `webhooks replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The subscriber (its `name` in `[[webhooks]]`).
    #[arg(long)]
    pub name: String,
    /// Entries after this cursor (a feed position, as the receiver's last `data.position`) are sent again.
    #[arg(long, value_name = "CURSOR")]
    pub from: i64,
}

/// Runs `webhooks`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    match args.command.unwrap_or(WebhooksCommand::List) {
        WebhooksCommand::GenSecret => {
            println!("{}", crate::deliver::sign::Secret::generate());
            Ok(())
        }
        WebhooksCommand::Replay(r) => {
            let (pool, _) = ctx.database_pool().await?;
            let kept = feed::replay_from(&pool, &r.name, r.from).await?;
            println!(
                "subscriber {:?} will receive every entry after cursor {} again",
                r.name, r.from
            );
            if !kept {
                eprintln!(
                    "note: entries just after cursor {} were pruned (retention); it starts at the oldest kept entry",
                    r.from
                );
            }
            Ok(())
        }
        WebhooksCommand::List => {
            let (pool, _) = ctx.database_pool().await?;
            let configured: Vec<String> = ctx
                .settings()
                .map(|s| s.webhooks.iter().map(|w| w.name.clone()).collect())
                .unwrap_or_default();
            let stored = feed::subscribers(&pool).await?;
            let (head, _) = feed::bounds(&pool).await?;
            println!(
                "{:<20} {:>10} {:>8}  {:<8} {:<25} last error",
                "subscriber", "cursor", "lag", "state", "last delivered"
            );
            for name in &configured {
                if !stored.iter().any(|s| &s.name == name) {
                    println!(
                        "{name:<20} {:>10} {:>8}  {:<8} {:<25} -",
                        "-", "-", "new", "never (starts at the head)"
                    );
                }
            }
            for s in &stored {
                let lag = feed::lag(&pool, s.position).await?;
                let state = if s.failing_since.is_some() {
                    "FAILING"
                } else if s.failures_since.is_some() {
                    "retrying"
                } else {
                    "ok"
                };
                let note = if configured.contains(&s.name) {
                    ""
                } else {
                    " (not configured)"
                };
                println!(
                    "{:<20} {:>10} {:>8}  {:<8} {:<25} {}{note}",
                    s.name,
                    s.position,
                    lag,
                    state,
                    s.last_delivered_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into()),
                    s.last_error.as_deref().unwrap_or("-"),
                );
            }
            eprintln!("feed head: {head}");
            Ok(())
        }
    }
}
