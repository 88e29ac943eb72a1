//! Full resync: callbacks are hints and can be missed, and changes made through the API make none, so the
//! synced tables are periodically reconciled with what WeCom's API says (docs/protocol.md §7.2–7.4):
//! `get_follow_user_list` → `batch/get_by_user` (≤ 100 userids per call, limit 100, following `next_cursor`)
//! → upsert; then mark-and-sweep of follows WeCom no longer lists; likewise chats and tags.
//!
//! Rate-limited, resumable (progress is saved after every page; an interrupted run is resumed by the next),
//! and it returns and stores a drift report.

use std::time::Duration;

use serde_json::{Value, json};
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

/// Runs a resync for every app with a secret now and then every `interval`, inside `serve`.
pub async fn schedule(
    pool: PgPool,
    api: WecomApi,
    credentials: std::collections::HashMap<String, Credentials>,
    interval: Duration,
    pause: Duration,
    metrics: Option<crate::metrics::Metrics>,
) {
    loop {
        for (app, creds) in &credentials {
            if let (Ok(d), Some(m)) = (resync(&pool, &api, app, creds, pause).await, &metrics) {
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
        tokio::time::sleep(interval).await;
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
    while run.progress.chunk < chunks.len() {
        let chunk = chunks[run.progress.chunk];
        loop {
            tokio::time::sleep(pause).await;
            let body = json!({"userid_list": chunk, "cursor": run.progress.cursor, "limit": 100});
            let page = api
                .call(
                    creds,
                    "/cgi-bin/externalcontact/batch/get_by_user",
                    &[],
                    Some(&body),
                )
                .await?;
            for entry in page
                .get("external_contact_list")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(contact), Some(follow)) =
                    (entry.get("external_contact"), entry.get("follow_info"))
                {
                    let mut drift = std::mem::take(&mut run.progress.drift);
                    runs::upsert_entry(pool, &corp, run, contact, follow, &mut drift).await?;
                    run.progress.drift = drift;
                }
            }
            run.progress.cursor = page
                .get("next_cursor")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if run.progress.cursor.is_empty() {
                run.progress.chunk += 1;
            }
            runs::save_progress(pool, run).await?;
            if run.progress.cursor.is_empty() {
                break;
            }
        }
    }
    let mut drift = run.progress.drift.clone();
    drift.follows_removed = runs::sweep_follows(pool, &corp, run).await?;

    // Chats: list (paged), then read each.
    let before = runs::count(pool, "chats", &corp).await?;
    let mut cursor = String::new();
    let mut seen = 0u64;
    loop {
        tokio::time::sleep(pause).await;
        let body = json!({"status_filter": 0, "cursor": cursor, "limit": 1000});
        let page = api
            .call(
                creds,
                "/cgi-bin/externalcontact/groupchat/list",
                &[],
                Some(&body),
            )
            .await?;
        for chat in page
            .get("group_chat_list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(chat_id) = chat.get("chat_id").and_then(Value::as_str) else {
                continue;
            };
            runs::mark_chat(pool, &corp, chat_id, run).await?;
            seen += 1;
            tokio::time::sleep(pause).await;
            let detail = api.group_chat(creds, chat_id).await?;
            if let Some(g) = detail.get("group_chat") {
                enrichment::group_chat(pool, &corp, g, chrono::Utc::now()).await?;
            }
        }
        cursor = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if cursor.is_empty() {
            break;
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
    for group in tags
        .get("tag_group")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        ids.extend(
            group
                .get("group_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        );
        for tag in group
            .get("tag")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            ids.extend(tag.get("id").and_then(Value::as_str).map(str::to_owned));
        }
    }
    let marked = runs::mark_tags(pool, &corp, &ids, run).await?;
    let after = runs::count(pool, "tags", &corp).await?;
    drift.tags_created = (after - before).max(0) as u64;
    drift.tags_updated = marked.saturating_sub(drift.tags_created);
    drift.tags_deleted = runs::sweep_tags(pool, &corp, run).await?;
    Ok(drift)
}
