//! `events`: list stored events; [`FilterArgs`] is shared with `replay`.

use super::Context;
use crate::store;

/// Filters shared by `events` and `replay`.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only this corpid.
    #[arg(long)]
    pub corp: Option<String>,
    /// Event (or InfoType), e.g. change_external_contact.
    #[arg(long)]
    pub event: Option<String>,
    /// ChangeType, e.g. add_external_contact.
    #[arg(long)]
    pub change_type: Option<String>,
    /// Received at or after (RFC 3339, e.g. 2026-11-24T00:00:00+08:00).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Received before (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Event ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<i64>,
}

impl FilterArgs {
    pub(super) fn filter(&self) -> store::read::EventFilter {
        store::read::EventFilter {
            app: self.app.clone(),
            corp_id: self.corp.clone(),
            event: self.event.clone(),
            change_type: self.change_type.clone(),
            since: self.since.map(|t| t.with_timezone(&chrono::Utc)),
            until: self.until.map(|t| t.with_timezone(&chrono::Utc)),
            ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.app.is_none()
            && self.corp.is_none()
            && self.event.is_none()
            && self.change_type.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.ids.is_empty()
    }
}

/// Options of `events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which events.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Most events to list (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Lists stored events, newest first.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (pool, _) = ctx.database_pool().await?;
    let rows =
        store::read::list_events(&pool, &args.filter.filter(), args.limit.clamp(1, 10_000)).await?;
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!(
            "{:>8}  {:<25}  {:<10}  {:<20}  {:<26}  {:<26}  applied",
            "id", "received_at", "app", "corp", "event", "change_type"
        );
        for r in &rows {
            println!(
                "{:>8}  {:<25}  {:<10}  {:<20}  {:<26}  {:<26}  {}",
                r.id,
                r.received_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                r.app,
                r.corp_id.as_deref().unwrap_or("-"),
                r.event.as_deref().or(r.msg_type.as_deref()).unwrap_or("-"),
                r.change_type.as_deref().unwrap_or("-"),
                if r.applied { "yes" } else { "no" }
            );
        }
        eprintln!("{} event(s)", rows.len());
    }
    Ok(())
}
