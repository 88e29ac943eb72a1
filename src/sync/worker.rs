//! The job worker: takes queued WeCom API jobs, runs them, and retries or buries them. Runs inside `serve`
//! (configurable concurrency) or alone as `wecom-callback worker`.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::JobKind;
use crate::metrics::Metrics;
use crate::store::{enrichment, identity, jobs, sweeps};
use crate::sync::client::{ApiError, Credentials, Fetched, WecomApi};
use crate::tasks::{Faults, Tasks};

/// How long a worker owns a job before another may take it over (a crashed worker's job is not lost).
const LEASE: Duration = Duration::from_secs(120);
/// Pause between retries: 5 s, doubling per attempt, at most an hour.
fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(5u64.saturating_mul(2u64.saturating_pow(exp)))
        .min(Duration::from_secs(3600))
}

/// What a worker needs.
#[derive(Clone)]
pub struct Worker {
    pub pool: PgPool,
    pub api: WecomApi,
    /// Credentials by app name (apps with a secret).
    pub credentials: HashMap<String, Credentials>,
    pub max_attempts: i32,
    pub metrics: Option<Metrics>,
    /// Pause when there is nothing to do.
    pub idle: Duration,
    /// Service providers: the suites, whose apps' jobs run with each authorising corp's own token.
    pub provider: crate::sync::provider::Provider,
    /// Woken by [`listen`] when a job is queued (NOTIFY), so an idle worker starts it at once.
    pub wake: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// Runs one job against WeCom's API and stores the answer.
pub async fn execute(w: &Worker, job: &jobs::Job) -> Result<(), ApiError> {
    use crate::sync::provider::auth;
    let creds = match w.provider.suite_by_app(&job.app) {
        Some(suite) => {
            match job.kind {
                JobKind::ProviderAuth => return auth::exchange(w, suite, job).await,
                JobKind::ProviderRefresh => return auth::refresh(w, suite, job).await,
                JobKind::ProviderPurge => return auth::purge(w, job).await,
                _ => {}
            }
            match auth::corp_credentials(&w.pool, &w.provider, suite, &job.corp_id).await? {
                Some(c) => {
                    let outcome = run_job(w, &c, job).await;
                    // The corp may have cancelled while the job ran: what it wrote after the purge goes too.
                    crate::store::corps::clear_after_cancel(&w.pool, &job.corp_id).await?;
                    return outcome;
                }
                None => {
                    // The corp cancelled: its work stops, nothing more is called for it.
                    tracing::info!(job = job.id, corp_id = %job.corp_id, "job for a corp that cancelled its authorisation; dropped");
                    return Ok(());
                }
            }
        }
        None => w
            .credentials
            .get(&job.app)
            .ok_or_else(|| ApiError::NoSecret {
                app: job.app.clone(),
            })?,
    };
    run_job(w, creds, job).await
}

/// Runs one job with `creds`.
async fn run_job(w: &Worker, creds: &Credentials, job: &jobs::Job) -> Result<(), ApiError> {
    // Every answer is stored as of its request (`Fetched::at`): of two fetches the later request wins.
    match job.kind {
        JobKind::ContactDetail => {
            let detail = match w.api.external_contact(creds, &job.subject).await {
                Ok(d) => d,
                // 84061: no relation (deleted, or half-added and not confirmed): nothing to fetch.
                Err(ApiError::Wecom(e)) if e.errcode == 84061 => return Ok(()),
                Err(e) => return Err(e),
            };
            enrichment::contact_detail(&w.pool, &job.corp_id, &detail.value, detail.at).await?;
        }
        JobKind::GroupChat => match w.api.group_chat(creds, &job.subject).await {
            Ok(Fetched {
                value: Some(chat),
                at,
            }) => enrichment::group_chat(&w.pool, &job.corp_id, &chat, at).await?,
            Ok(Fetched { value: None, .. }) => {}
            // 40050: WeCom has no such chat any more (dismissed after the event was sent): nothing to
            // fetch. Its dismissal comes as its own event, or the resync finds it gone.
            Err(ApiError::Wecom(e)) if e.errcode == 40050 => {
                tracing::info!(job = job.id, chat_id = %job.subject, "groupchat/get: the chat no longer exists (40050); nothing to fetch");
            }
            Err(e) => return Err(e),
        },
        JobKind::CorpTags => {
            let tags = w.api.corp_tag_list(creds).await?;
            enrichment::corp_tags(&w.pool, &job.corp_id, &tags.value, tags.at).await?;
            // Rule-group (规则组) tags are listed only here. A refusal that asking again will not fix (e.g.
            // the secret may not read them) must not kill the corp-tag job: the resync records it too.
            match w.api.strategy_tag_list(creds).await {
                Ok(rules) => {
                    enrichment::corp_tags(&w.pool, &job.corp_id, &rules.value, rules.at).await?;
                    // Both lists read: what neither names is gone, e.g. the tags of a group deleted before
                    // any list placed them in it (WeCom calls back about the group only).
                    let mut listed = tags.value.ids();
                    listed.extend(rules.value.ids());
                    let at = tags.at.min(rules.at);
                    let deleted =
                        sweeps::sweep_unlisted_tags(&w.pool, &job.corp_id, &listed, at).await?;
                    if deleted > 0 {
                        tracing::info!(job = job.id, corp_id = %job.corp_id, deleted,
                            "tags neither tag list names any more were deleted");
                    }
                }
                Err(e) if retryable(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "get_strategy_tag_list failed; rule-group tags not refreshed")
                }
            }
        }
        JobKind::ResolvePendingIds => resolve_pending_ids(w, creds, job).await?,
        JobKind::StaffDetail => staff_detail(w, creds, job).await?,
        JobKind::CorpResync => {
            crate::sync::provider::auth::corp_resync(&w.pool, &w.api, &job.app, creds).await?
        }
        // Provider jobs of an app that is no suite (any more): nothing to run them with.
        JobKind::ProviderAuth | JobKind::ProviderRefresh | JobKind::ProviderPurge => {
            return Err(ApiError::NotAuthorised(format!(
                "app {:?} is not a configured [[suites]] entry any more; configure it and `jobs retry`",
                job.app
            )));
        }
    }
    Ok(())
}

/// Customer identity (issue 13): asks WeCom for the pending ids of the customers added while the corp had
/// open ones, [`crate::sync::client::MAX_PENDING_ID_LOOKUP`] a call, until none is left to check (see
/// [`crate::store::identity`]). A failure leaves the unchecked customers queued for the retry.
async fn resolve_pending_ids(
    w: &Worker,
    creds: &Credentials,
    job: &jobs::Job,
) -> Result<(), ApiError> {
    let batch = crate::sync::client::MAX_PENDING_ID_LOOKUP as i64;
    loop {
        let checks = identity::next_checks(&w.pool, &job.corp_id, &job.app, batch).await?;
        if checks.is_empty() {
            return Ok(());
        }
        let pairs = w.api.external_userid_to_pending_id(creds, &checks).await?;
        let resolved = identity::resolve_checked(
            &w.pool,
            &job.corp_id,
            &job.app,
            &checks,
            &pairs,
            chrono::Utc::now(),
        )
        .await?;
        if resolved > 0 {
            tracing::info!(corp_id = %job.corp_id, resolved, "pending ids resolved to new customers");
        }
        if checks.len() < batch as usize {
            return Ok(());
        }
    }
}

/// `user/get` for a member a 通讯录 event named. What the secret may not read is recorded, not failed on
/// (WeCom's 2022 restrictions); a member WeCom no longer has (60111) is left to the `delete_user` event or
/// the directory resync.
async fn staff_detail(w: &Worker, creds: &Credentials, job: &jobs::Job) -> Result<(), ApiError> {
    let Fetched { value: member, at } = match w.api.user_get(creds, &job.subject).await {
        Ok(m) => m,
        Err(ApiError::Wecom(e)) if e.errcode == 60111 => return Ok(()),
        Err(e) => return Err(e),
    };
    // Some answers omit the userid asked for; the job's subject is the member.
    let member = crate::sync::client::types::StaffMember {
        userid: job.subject.clone(),
        ..member
    };
    // In the observation log too, so a rebuild reproduces the staff row.
    crate::store::directory::observe_member(&w.pool, &job.corp_id, &member, at).await?;
    Ok(())
}

fn retryable(e: &ApiError) -> bool {
    match e {
        ApiError::Wecom(w) => w.retryable(),
        // WeCom re-pushes a ticket within 10 minutes.
        ApiError::Unreachable { .. }
        | ApiError::Database(_)
        | ApiError::Throttled { .. }
        | ApiError::NoSuiteTicket(_) => true,
        ApiError::HttpStatus(s) => *s >= 500 || *s == 429,
        // A bad answer is not fixed by asking again, and a missing secret needs an operator (then `jobs retry`).
        ApiError::BadResponse(_) | ApiError::NoSecret { .. } | ApiError::NotAuthorised(_) => false,
    }
}

/// Takes and runs one job. Returns false when none was due.
pub async fn run_once(w: &Worker) -> Result<bool, sqlx::Error> {
    let Some(job) = jobs::claim(&w.pool, LEASE).await? else {
        return Ok(false);
    };
    match execute(w, &job).await {
        Ok(()) => jobs::complete(&w.pool, job.id).await?,
        Err(e) => {
            let errcode = e.errcode();
            if let Some(m) = &w.metrics {
                m.job_failures.with_label_values(&[job.kind.as_str()]).inc();
            }
            let retry =
                (retryable(&e) && job.attempts < w.max_attempts).then(|| backoff(job.attempts));
            match retry {
                Some(wait) => {
                    tracing::warn!(job = job.id, kind = %job.kind, attempts = job.attempts, retry_in_s = wait.as_secs(), error = %e, "job failed; will retry")
                }
                None => {
                    tracing::error!(job = job.id, kind = %job.kind, attempts = job.attempts, error = %e, "job failed for good (dead); fix the cause, then `wecom-callback jobs retry --id {}`", job.id)
                }
            }
            jobs::fail(&w.pool, job.id, &e.to_string(), errcode, retry).await?;
        }
    }
    Ok(true)
}

/// One worker loop: takes and runs jobs until `token` is cancelled. A job under way is finished first (it is
/// leased, so even a job cut short by a crash is taken over by another worker once its lease ends).
pub async fn work(w: Worker, token: CancellationToken) {
    while !token.is_cancelled() {
        let pause = match run_once(&w).await {
            Ok(true) => continue,
            Ok(false) => w.idle,
            Err(e) => {
                tracing::warn!(error = %e, "job queue unavailable; retrying");
                Duration::from_secs(1)
            }
        };
        let woken = async {
            match &w.wake {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            () = woken => {}
        }
    }
}

/// LISTENs on [`jobs::QUEUED_CHANNEL`] and wakes the idle workers on each notification, until `token` is
/// cancelled. Ends (to be restarted by its supervisor) when the listening connection fails; the workers
/// keep polling meanwhile.
pub async fn listen(
    pool: PgPool,
    wake: std::sync::Arc<tokio::sync::Notify>,
    token: CancellationToken,
) {
    let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot LISTEN for queued jobs; workers poll meanwhile");
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            return;
        }
    };
    if let Err(e) = listener.listen(jobs::QUEUED_CHANNEL).await {
        tracing::warn!(error = %e, "cannot LISTEN for queued jobs; workers poll meanwhile");
        return;
    }
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            n = listener.recv() => match n {
                Ok(_) => wake.notify_waiters(),
                Err(e) => {
                    tracing::warn!(error = %e, "the LISTEN connection for queued jobs failed; reconnecting");
                    return;
                }
            },
        }
    }
}

/// Runs `concurrency` supervised worker loops (restarted after a panic, see [`crate::tasks`]) until the
/// process stops: the standalone `wecom-callback worker`. `serve` supervises [`work`] loops itself.
pub async fn run(w: Worker, concurrency: usize) {
    run_until(w, concurrency, CancellationToken::new()).await
}

/// Like [`run`], until `token` is cancelled; then waits (at most 10 s) for the jobs under way.
pub async fn run_until(w: Worker, concurrency: usize, token: CancellationToken) {
    let restarts = w.metrics.as_ref().map(|m| m.task_restarts.clone());
    let tasks = Tasks::new(token.clone(), restarts, Faults::default());
    for _ in 0..concurrency.max(1) {
        let w = w.clone();
        tasks.spawn_restarting("worker", move |token| work(w.clone(), token));
    }
    token.cancelled().await;
    tasks.shutdown(Duration::from_secs(10)).await;
}

/// Done jobs deleted per statement when pruning.
const PRUNE_BATCH: i64 = 500;

/// Deletes done jobs older than `retention`, in batches of [`PRUNE_BATCH`] with a short pause between them
/// (so a backlog of millions does not compete with the queue's own work), now and then every
/// `every`, until `token` is cancelled. Dead jobs are kept for operators. A zero `retention` keeps
/// every job.
pub async fn prune(
    pool: PgPool,
    retention: Duration,
    every: Duration,
    provider: crate::sync::provider::Provider,
    token: CancellationToken,
) {
    loop {
        // Cancelled corps' data past its grace period (see `[provider]`), whatever the job retention.
        if provider.is_enabled()
            && let Err(e) = crate::sync::provider::auth::purge_due(&pool, &provider, None).await
        {
            tracing::warn!(error = %e, "deleting cancelled corps' data failed; retrying later");
        }
        if retention.is_zero() {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            continue;
        }
        let mut removed: u64 = 0;
        loop {
            match jobs::prune_done(&pool, retention, PRUNE_BATCH).await {
                Ok(n) => {
                    removed += n;
                    if n < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning done jobs failed; retrying later");
                    break;
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        if removed > 0 {
            tracing::info!(removed, "done jobs past their retention deleted");
        }
        // Enrichment alone (no scheduled resync) also fills the API observation log: compact it here too.
        match crate::store::observations::compact(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "superseded API observations compacted"),
            Err(e) => {
                tracing::warn!(error = %e, "compacting the API observation log failed; retrying later")
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Credentials for every app with a secret.
pub fn credentials(apps: &[crate::app::AppConfig]) -> HashMap<String, Credentials> {
    apps.iter()
        .filter_map(|a| {
            Some((
                a.name.clone(),
                Credentials::gettoken(a.api_corp_id()?, a.secret.clone()?),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_secret_and_a_bad_answer_are_not_retried() {
        let no_secret = ApiError::NoSecret { app: "main".into() };
        assert!(!retryable(&no_secret));
        assert_eq!(
            no_secret.to_string(),
            r#"no secret is configured for app "main" any more; configure it and retry the job"#
        );
        assert!(!retryable(&ApiError::BadResponse("x".into())));
        assert!(retryable(&ApiError::HttpStatus(502)));
        assert!(retryable(&ApiError::HttpStatus(429)));
        assert!(!retryable(&ApiError::HttpStatus(404)));
    }
}
