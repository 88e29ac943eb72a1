//! Full resync: callbacks are hints and can be missed, and changes made through the API make none, so the
//! synced tables are periodically reconciled with what WeCom's API says (docs/protocol.md §7.2–7.4):
//! `get_follow_user_list` → `batch/get_by_user` (≤ 100 userids per call, limit 100, following `next_cursor`)
//! → upsert; then mark-and-sweep of follows WeCom no longer lists; likewise chats and tags.
//!
//! Rate-limited, resumable (progress is saved after every page; an interrupted run is resumed by the next),
//! and it returns and stores a drift report.

use std::time::Duration;

use sqlx::PgPool;

use crate::store::enrichment;
use crate::store::resync::{self as runs, Drift};
use crate::sync::client::{ApiError, Credentials, WecomApi};

/// Userids per `batch/get_by_user` call (WeCom's maximum).
const CHUNK: usize = 100;

/// Why a resync stopped (it resumes where it stopped next time).
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Runs a resync for every app with a secret now and then every `interval`, inside `serve`, until `token` is
/// cancelled. A resync under way is dropped at cancellation as a crash would drop it: its progress is saved
/// after every page and the next start resumes it.
pub async fn schedule(
    pool: PgPool,
    api: WecomApi,
    credentials: std::collections::HashMap<String, Credentials>,
    interval: Duration,
    pause: Duration,
    metrics: Option<crate::metrics::Metrics>,
    token: tokio_util::sync::CancellationToken,
) {
    loop {
        for (app, creds) in &credentials {
            let result = tokio::select! {
                () = token.cancelled() => return,
                r = resync(&pool, &api, app, creds, pause) => r,
            };
            if let (Ok(d), Some(m)) = (result, &metrics) {
                for (table, change, n) in [
                    ("contacts", "created", d.contacts_created),
                    ("follows", "created", d.follows_created),
                    ("follows", "updated", d.follows_updated),
                    ("follows", "removed", d.follows_removed),
                    ("chats", "created", d.chats_created),
                    ("chats", "updated", d.chats_updated),
                    ("chats", "removed", d.chats_dismissed),
                    ("tags", "created", d.tags_created),
                    ("tags", "updated", d.tags_updated),
                    ("tags", "removed", d.tags_deleted),
                ] {
                    m.resync_drift.with_label_values(&[table, change]).inc_by(n);
                }
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Resyncs one app's corp. `pause` is the minimum gap between API calls (rate limit).
pub async fn resync(
    pool: &PgPool,
    api: &WecomApi,
    app: &str,
    creds: &Credentials,
    pause: Duration,
) -> Result<Drift, ResyncError> {
    let mut run = runs::start_or_resume(pool, app, &creds.corp_id).await?;
    if run.resumed {
        tracing::info!(
            app,
            run = run.id,
            chunk = run.progress.chunk,
            "resuming an interrupted resync"
        );
    }
    match steps(pool, api, creds, &mut run, pause).await {
        Ok(drift) => {
            runs::finish(pool, &run, &drift).await?;
            tracing::info!(app, run = run.id, drift = %serde_json::to_string(&drift).unwrap_or_default(), "resync done");
            Ok(drift)
        }
        Err(e) => {
            let _ = runs::fail(pool, &run, &e.to_string()).await;
            tracing::warn!(app, run = run.id, error = %e, "resync interrupted; the next run resumes it");
            Err(e)
        }
    }
}

async fn steps(
    pool: &PgPool,
    api: &WecomApi,
    creds: &Credentials,
    run: &mut runs::Run,
    pause: Duration,
) -> Result<Drift, ResyncError> {
    let corp = creds.corp_id.clone();
    let mut users = api.follow_user_list(creds).await?;
    users.sort();
    let chunks: Vec<&[String]> = users.chunks(CHUNK).collect();
    while let Some(chunk) = chunks.get(run.progress.chunk).copied() {
        // Resumes at the saved cursor within the chunk ("" at a chunk's start).
        let mut pages = api
            .batch_get_by_user(creds, chunk, &run.progress.cursor)
            .with_pause(pause);
        while let Some(page) = pages.next().await? {
            for entry in &page.external_contact_list {
                if let (Some(contact), Some(follow)) = (&entry.external_contact, &entry.follow_info)
                {
                    let mut drift = std::mem::take(&mut run.progress.drift);
                    runs::upsert_entry(pool, &corp, run, contact, follow, &mut drift).await?;
                    run.progress.drift = drift;
                }
            }
            run.progress.cursor = page.next_cursor;
            if run.progress.cursor.is_empty() {
                run.progress.chunk += 1;
            }
            runs::save_progress(pool, run).await?;
        }
    }
    let mut drift = run.progress.drift.clone();
    drift.follows_removed = runs::sweep_follows(pool, &corp, run).await?;

    // Chats: list (paged), then read each.
    let before = runs::count(pool, "chats", &corp).await?;
    let mut seen = 0u64;
    let mut pages = api.group_chat_list(creds).with_pause(pause);
    while let Some(page) = pages.next().await? {
        for chat in &page.group_chat_list {
            let Some(chat_id) = &chat.chat_id else {
                continue;
            };
            runs::mark_chat(pool, &corp, chat_id, run).await?;
            seen += 1;
            tokio::time::sleep(pause).await;
            if let Some(g) = api.group_chat(creds, chat_id).await? {
                enrichment::group_chat(pool, &corp, &g, chrono::Utc::now()).await?;
            }
        }
    }
    let after = runs::count(pool, "chats", &corp).await?;
    drift.chats_created = (after - before).max(0) as u64;
    drift.chats_updated = seen.saturating_sub(drift.chats_created);
    drift.chats_dismissed = runs::sweep_chats(pool, &corp, run).await?;

    // Tags.
    tokio::time::sleep(pause).await;
    let before = runs::count(pool, "tags", &corp).await?;
    let tags = api.corp_tag_list(creds).await?;
    enrichment::corp_tags(pool, &corp, &tags, chrono::Utc::now()).await?;
    let mut ids = Vec::new();
    for group in &tags.tag_group {
        ids.extend(group.group_id.clone());
        ids.extend(group.tag.iter().filter_map(|t| t.id.clone()));
    }
    let marked = runs::mark_tags(pool, &corp, &ids, run).await?;
    let after = runs::count(pool, "tags", &corp).await?;
    drift.tags_created = (after - before).max(0) as u64;
    drift.tags_updated = marked.saturating_sub(drift.tags_created);
    drift.tags_deleted = runs::sweep_tags(pool, &corp, run).await?;
    Ok(drift)
}
