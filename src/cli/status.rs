//! `status`: the status page in the terminal, read from the database (so it works while `serve` is down).

use super::Context;
use crate::http::status::{Lang, report};

/// Options of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON (the same as GET /status.json).
    #[arg(long)]
    pub json: bool,
}

/// Prints every app's state; fails when something needs attention (as `doctor` would).
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = ctx.settings()?;
    crate::telemetry::init(crate::config::LogFormat::Text);
    let pool = ctx.pool(&settings.database).await?;
    let credentials = crate::sync::worker::credentials(&settings.apps);
    let apps: Vec<_> = {
        let mut a: Vec<_> = settings.apps.iter().collect();
        a.sort_by(|x, y| x.name.cmp(&y.name));
        a
    };
    let report = report::gather(
        &pool,
        &apps,
        &credentials,
        &settings.provider.suites,
        None,
        Lang::En,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    let problems = report.problems();
    if !problems.is_empty() {
        anyhow::bail!(
            "{} problem(s) need attention (listed above)",
            problems.len()
        );
    }
    Ok(())
}

fn at(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "never".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The report as plain text, one block per app.
pub fn text(r: &report::Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for a in &r.apps {
        let _ = writeln!(
            s,
            "app {} ({}, {})",
            a.name,
            a.kind,
            a.receive_ids.join(", ")
        );
        match &a.verification {
            None => {
                let _ = writeln!(
                    s,
                    "  URL verification   none yet: enter the URL in the console and press 保存"
                );
            }
            Some(v) => {
                let _ = writeln!(
                    s,
                    "  URL verification   {} at {}{}",
                    if v.outcome == "url_verified" {
                        "passed".to_owned()
                    } else {
                        format!("REFUSED ({})", v.outcome)
                    },
                    at(Some(v.attempted_at)),
                    v.reason
                        .as_deref()
                        .filter(|_| v.outcome != "url_verified")
                        .map(|r| format!("\n                     {r}"))
                        .unwrap_or_default()
                );
                if let Some(fix) = a.verification_fix {
                    let _ = writeln!(s, "                     fix: {fix}");
                }
            }
        }
        let _ = writeln!(
            s,
            "  last callback      {}{} ({} stored)",
            at(a.last_callback_at),
            a.last_callback_kind
                .as_deref()
                .map(|k| format!(" {k}"))
                .unwrap_or_default(),
            a.events_total
        );
        let _ = writeln!(
            s,
            "  outcomes           {:<22} {:>9} {:>9}",
            "", "last hour", "last day"
        );
        for o in &a.outcomes {
            let _ = writeln!(
                s,
                "                     {:<22} {:>9} {:>9}",
                o.outcome, o.last_hour, o.last_day
            );
        }
        let _ = writeln!(
            s,
            "  projector          {} unapplied, lag {} s",
            a.projector.unapplied, a.projector.lag_secs
        );
        if let (Some(id), Some(error)) = (a.projector.held_event_id, &a.projector.held_error) {
            let _ = writeln!(
                s,
                "                     {} held back (the tables refuse them), oldest event {id}: {error}; \
                 see it with `wecom-callback events --ids {id}`",
                a.projector.held
            );
        }
        let _ = writeln!(
            s,
            "  jobs               {} queued, {} running, {} dead{}",
            a.jobs.queued,
            a.jobs.running,
            a.jobs.dead,
            a.jobs
                .last_dead_error
                .as_deref()
                .map(|e| format!("; last: {e}"))
                .unwrap_or_default()
        );
        match &a.resync {
            None => {
                let _ = writeln!(s, "  last resync        none");
            }
            Some(rs) => {
                let _ = writeln!(
                    s,
                    "  last resync        {} at {}",
                    rs.status,
                    at(Some(rs.started_at))
                );
            }
        }
        if let Some(t) = &a.token {
            let _ = writeln!(
                s,
                "  access token       {} (fetched {}){}",
                if t.valid { "valid" } else { "none cached" },
                at(t.refreshed_at),
                t.refused_ip
                    .as_deref()
                    .map(|ip| format!("; WeCom refused IP {ip} (60020): add it to 企业可信IP"))
                    .unwrap_or_default()
            );
        }
    }
    for su in &r.suites {
        let _ = writeln!(s, "suite {} ({}, {})", su.name, su.kind, su.suite_id);
        let _ = writeln!(
            s,
            "  suite_ticket       {}{}",
            su.ticket,
            su.ticket_age_secs
                .map(|a| format!(", received {a} s ago"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  suite token        {} (fetched {})",
            if su.token.valid {
                "valid"
            } else {
                "none cached"
            },
            at(su.token.refreshed_at)
        );
        let c = &su.corps;
        let _ = writeln!(
            s,
            "  corps              {} authorised ({} with a valid token), {} cancelled ({} with rows awaiting \
             deletion, {} with events kept)",
            c.authorised,
            c.authorised_with_token,
            c.cancelled,
            c.rows_pending_deletion,
            c.events_kept
        );
    }
    for p in r.problems() {
        let _ = writeln!(s, "! {p}");
    }
    s
}
