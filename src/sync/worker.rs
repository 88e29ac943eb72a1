//! The job worker: takes queued WeCom API jobs, runs them, and retries or buries them. Runs inside `serve`
//! (configurable concurrency) or alone as `wecom-callback worker`.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::JobKind;
use crate::metrics::Metrics;
use crate::store::{enrichment, jobs};
use crate::sync::client::{ApiError, Credentials, WecomApi};
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
}

/// Runs one job against WeCom's API and stores the answer.
pub async fn execute(w: &Worker, job: &jobs::Job) -> Result<(), ApiError> {
    let creds = w.credentials.get(&job.app).ok_or_else(|| {
        ApiError::BadResponse(format!(
            "no secret is configured for app {:?} any more; configure it and retry the job",
            job.app
        ))
    })?;
    let now = chrono::Utc::now();
    match job.kind {
        JobKind::ContactDetail => {
            // More than 500 followers come in pages.
            let mut cursor = String::new();
            let mut merged: Option<serde_json::Value> = None;
            loop {
                let mut query = vec![("external_userid", job.subject.as_str())];
                if !cursor.is_empty() {
                    query.push(("cursor", cursor.as_str()));
                }
                let page = match w
                    .api
                    .call(creds, "/cgi-bin/externalcontact/get", &query, None)
                    .await
                {
                    Ok(p) => p,
                    // 84061: no relation (deleted, or half-added and not confirmed): nothing to fetch.
                    Err(ApiError::Wecom(e)) if e.errcode == 84061 => return Ok(()),
                    Err(e) => return Err(e),
                };
                cursor = page
                    .get("next_cursor")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_owned();
                merged = Some(match merged {
                    None => page,
                    Some(mut all) => {
                        if let (Some(acc), Some(more)) = (
                            all.get_mut("follow_user").and_then(|f| f.as_array_mut()),
                            page.get("follow_user").and_then(|f| f.as_array()),
                        ) {
                            acc.extend(more.iter().cloned());
                        }
                        all
                    }
                });
                if cursor.is_empty() {
                    break;
                }
            }
            if let Some(answer) = merged {
                enrichment::contact_detail(&w.pool, &job.corp_id, &answer, now).await?;
            }
        }
        JobKind::GroupChat => {
            let answer = w.api.group_chat(creds, &job.subject).await?;
            if let Some(chat) = answer.get("group_chat") {
                enrichment::group_chat(&w.pool, &job.corp_id, chat, now).await?;
            }
        }
        JobKind::CorpTags => {
            let answer = w.api.corp_tag_list(creds).await?;
            enrichment::corp_tags(&w.pool, &job.corp_id, &answer, now).await?;
        }
    }
    Ok(())
}

fn retryable(e: &ApiError) -> bool {
    match e {
        ApiError::Wecom(w) => w.retryable(),
        ApiError::Unreachable { .. } | ApiError::Database(_) => true,
        ApiError::HttpStatus(s) => *s >= 500 || *s == 429,
        ApiError::BadResponse(_) => false,
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
                    tracing::error!(job = job.id, kind = %job.kind, attempts = job.attempts, error = %e, "job failed for good (dead); fix the cause, then `wecom-callback jobs retry`")
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
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
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

/// Credentials for every app with a secret.
pub fn credentials(apps: &[crate::app::AppConfig]) -> HashMap<String, Credentials> {
    apps.iter()
        .filter_map(|a| {
            Some((
                a.name.clone(),
                Credentials {
                    corp_id: a.api_corp_id()?.to_owned(),
                    secret: a.secret.clone()?,
                },
            ))
        })
        .collect()
}
