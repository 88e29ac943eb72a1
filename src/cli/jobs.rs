//! `jobs list` and `jobs retry`: the WeCom API jobs in `wecom_jobs`.

use super::Context;
use crate::domain::JobStatus;
use crate::store;

/// Options of `jobs`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `list` (the default) or `retry`.
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    // The flags of `jobs` before it had subcommands, hidden but kept so existing scripts keep working.
    /// Old form of `jobs list --status`.
    #[arg(long, value_enum, hide = true)]
    pub status: Option<JobStatus>,
    /// Old form of `jobs list --limit`.
    #[arg(long, hide = true)]
    pub limit: Option<i64>,
    /// Old form of `jobs retry --id`.
    #[arg(long, value_delimiter = ',', hide = true, conflicts_with_all = ["status", "limit"])]
    pub retry: Vec<i64>,
    /// Old form of `jobs retry --all-dead`.
    #[arg(long, hide = true, conflicts_with_all = ["status", "limit", "retry"])]
    pub retry_all_dead: bool,
}

/// `jobs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// List jobs with the given status, newest first, with a shortened last error.
    List(ListArgs),
    /// Queue dead jobs again once their cause is fixed.
    Retry(RetryArgs),
}

/// Options of `jobs list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Which jobs to list.
    #[arg(long, value_enum, default_value_t = JobStatus::Dead)]
    pub status: JobStatus,
    /// Most jobs to list.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

/// Options of `jobs retry`: which dead jobs.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct RetryArgs {
    /// These dead jobs (comma-separated ids, as `jobs list` shows them).
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub id: Vec<i64>,
    /// Every dead job.
    #[arg(long)]
    pub all_dead: bool,
}

/// Lists or retries jobs.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let command = match args.command {
        Some(c) => c,
        None if args.retry_all_dead || !args.retry.is_empty() => JobsCommand::Retry(RetryArgs {
            id: args.retry,
            all_dead: args.retry_all_dead,
        }),
        None => JobsCommand::List(ListArgs {
            status: args.status.unwrap_or(JobStatus::Dead),
            limit: args.limit.unwrap_or(50),
        }),
    };
    let (pool, _) = ctx.database_pool().await?;
    match command {
        JobsCommand::Retry(r) => {
            let ids = (!r.all_dead).then_some(r.id.as_slice());
            let n = store::jobs::retry_dead(&pool, ids).await?;
            println!("{n} dead job(s) queued again");
        }
        JobsCommand::List(l) => {
            let rows = store::jobs::list(&pool, l.status, l.limit.clamp(1, 10_000)).await?;
            println!(
                "{:>8}  {:<15} {:<10} {:<20} {:<34} {:>8}  last error",
                "id", "kind", "app", "corp", "subject", "attempts"
            );
            for j in &rows {
                println!(
                    "{:>8}  {:<15} {:<10} {:<20} {:<34} {:>8}  {}",
                    j.id,
                    j.kind,
                    j.app,
                    j.corp_id,
                    j.subject,
                    j.attempts,
                    short(j.last_error.as_deref().unwrap_or("-"), 80)
                );
            }
            eprintln!(
                "{} {} job(s); full errors: SELECT id, last_error FROM wecom_jobs WHERE id = …",
                rows.len(),
                l.status
            );
        }
    }
    Ok(())
}

/// The first line of `text`, at most `max` characters (an explanation is a paragraph; a table row is not).
fn short(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() <= max && line.len() == text.trim().len() {
        return line.to_owned();
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn errors_are_shortened_to_one_line() {
        assert_eq!(short("48002: api forbidden", 80), "48002: api forbidden");
        assert_eq!(short("first line\nsecond", 80), "first line…");
        assert_eq!(short("一二三四五", 3), "一二…");
    }
}
