//! Applying stored events to the projection tables (external contacts, follows, group chats, corp tags). The
//! rules are in [`crate::sync::plan`]; this module reads the events, executes their plans and marks them
//! applied.
//!
//! Every stored event is applied exactly once: a worker takes unapplied events (`applied_at IS NULL`, `FOR
//! UPDATE SKIP LOCKED`, so replicas share the work), applies them and marks them applied in one transaction.
//! A crash between storing and applying leaves the event unapplied, and the next pass takes it.
//!
//! Order safety: see the migration. Each group of columns is a "last writer wins" register keyed by the
//! event's version `(event_time, rank, dedupe_key)`, so the tables do not depend on the order events arrive
//! in, and duplicates change nothing.

use std::collections::HashSet;

use sqlx::{PgPool, Postgres, Transaction};

use crate::sync::plan::{
    self, ChatWrite, ContactSeen, EventMeta, FollowWrite, HistoryRow, MemberWrite, Plan, TagWrite,
};
use crate::wecom::message;

/// Advisory lock key separating appliers (shared) from a rebuild (exclusive).
const APPLY_LOCK: i64 = 0x5745_434f_4d01;

/// The channel backends LISTEN on.
pub const CHANNEL: &str = "wecom_contact_changed";

/// An unapplied event as the applier reads it.
#[derive(sqlx::FromRow)]
struct Unapplied {
    id: i64,
    app: String,
    dedupe_key: String,
    corp_id: Option<String>,
    /// Event time, unix seconds.
    t: Option<i64>,
    message: String,
}

/// Applies up to `limit` unapplied events in one transaction. Returns how many were taken.
pub async fn apply_pending(pool: &PgPool, limit: i64) -> Result<usize, sqlx::Error> {
    apply_pending_with(pool, limit, &HashSet::new()).await
}

/// Like [`apply_pending`], and queues WeCom API enrichment jobs (in the same transaction) for events of the
/// apps in `enrich` (those configured with a secret).
pub async fn apply_pending_with(
    pool: &PgPool,
    limit: i64,
    enrich: &HashSet<String>,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Shared with other appliers, exclusive against a rebuild (which would otherwise deadlock with us).
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(APPLY_LOCK)
        .execute(&mut *tx)
        .await?;
    let n = apply_batch(&mut tx, limit, enrich).await?;
    tx.commit().await?;
    Ok(n)
}

/// Applies up to `limit` unapplied events inside `tx` and marks them applied.
async fn apply_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
    enrich: &HashSet<String>,
) -> Result<usize, sqlx::Error> {
    let rows: Vec<Unapplied> = sqlx::query_as(
        "SELECT id, app, dedupe_key, corp_id, extract(epoch FROM event_time)::bigint AS t, message \
         FROM wecom_events WHERE applied_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.id);
        // Stored messages were parsed once already; one that no longer parses is skipped, never retried forever.
        let Ok(parsed) = message::parse_message(row.message.as_bytes()) else {
            tracing::warn!(
                event_id = row.id,
                "stored message does not parse; not applied"
            );
            continue;
        };
        let typed = crate::wecom::events::interpret(&parsed);
        let Some(corp) = row.corp_id.or(typed.corp_id.clone()) else {
            continue;
        };
        let meta = EventMeta {
            id: row.id,
            app: &row.app,
            corp_id: &corp,
            time: row.t.unwrap_or(0),
            dedupe_key: &row.dedupe_key,
            enrich: enrich.contains(&row.app),
        };
        execute(tx, &plan::plan_event(&meta, &typed)).await?;
    }
    if !ids.is_empty() {
        sqlx::query("UPDATE wecom_events SET applied_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
    }
    Ok(ids.len())
}

/// Executes one event's plan inside `tx`: the SQL is the only thing here, the rules are in [`plan`].
async fn execute(tx: &mut Transaction<'_, Postgres>, p: &Plan) -> Result<(), sqlx::Error> {
    for h in &p.history {
        history(tx, h).await?;
    }
    for c in &p.contacts {
        contact_seen(tx, c).await?;
    }
    for f in &p.follows {
        follow(tx, f).await?;
    }
    for c in &p.chats {
        chat(tx, c).await?;
    }
    for m in &p.members {
        member(tx, m).await?;
    }
    for t in &p.tags {
        tag(tx, t).await?;
    }
    for j in &p.jobs {
        crate::store::jobs::enqueue(tx, j.kind, &j.app, &j.corp_id, &j.subject, j.event_id).await?;
    }
    for n in &p.notifications {
        notify(tx, n).await?;
    }
    Ok(())
}

async fn history(tx: &mut Transaction<'_, Postgres>, h: &HistoryRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contact_history (event_id, corp_id, kind, subject_id, userid, change_type, event_time, details) \
         VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), $8) ON CONFLICT DO NOTHING",
    )
    .bind(h.event_id)
    .bind(&h.corp_id)
    .bind(h.kind.as_str())
    .bind(&h.subject_id)
    .bind(&h.userid)
    .bind(&h.change_type)
    .bind(h.event_time as f64)
    .bind(&h.details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn contact_seen(
    tx: &mut Transaction<'_, Postgres>,
    c: &ContactSeen,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contacts AS c (corp_id, external_userid, first_seen_at, last_event_at, last_event_id) \
         VALUES ($1, $2, to_timestamp($3), to_timestamp($3), $4) \
         ON CONFLICT (corp_id, external_userid) DO UPDATE SET \
           first_seen_at = LEAST(c.first_seen_at, EXCLUDED.first_seen_at), \
           last_event_id = CASE WHEN EXCLUDED.last_event_at >= c.last_event_at THEN EXCLUDED.last_event_id ELSE c.last_event_id END, \
           last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at)",
    )
    .bind(&c.corp_id)
    .bind(&c.external_userid)
    .bind(c.at as f64)
    .bind(c.event_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn follow(tx: &mut Transaction<'_, Postgres>, f: &FollowWrite) -> Result<(), sqlx::Error> {
    let at = f.last.at as f64;
    sqlx::query(
        "INSERT INTO external_contact_follows AS f (corp_id, userid, external_userid, status, status_version, \
             deleted_at, delete_source, state, welcome_code, added_at, add_version, last_change_type, \
             last_event_at, last_version, last_event_id, transfer_fail_reason, transfer_fail_at, transfer_fail_version) \
         VALUES ($1, $2, $3, $4, $5, to_timestamp($6), $7, $8, $9, to_timestamp($10), $11, $12, to_timestamp($13), $14, $15, \
             $16, to_timestamp($17), $18) \
         ON CONFLICT (corp_id, userid, external_userid) DO UPDATE SET \
           status = CASE WHEN EXCLUDED.status_version > f.status_version THEN EXCLUDED.status ELSE f.status END, \
           deleted_at = CASE WHEN EXCLUDED.status_version > f.status_version THEN EXCLUDED.deleted_at ELSE f.deleted_at END, \
           delete_source = CASE WHEN EXCLUDED.status_version > f.status_version THEN EXCLUDED.delete_source ELSE f.delete_source END, \
           status_version = GREATEST(f.status_version, EXCLUDED.status_version), \
           state = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.state ELSE f.state END, \
           welcome_code = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.welcome_code ELSE f.welcome_code END, \
           added_at = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.added_at ELSE f.added_at END, \
           add_version = GREATEST(f.add_version, EXCLUDED.add_version), \
           last_change_type = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_change_type ELSE f.last_change_type END, \
           last_event_at = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_event_at ELSE f.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_event_id ELSE f.last_event_id END, \
           last_version = GREATEST(f.last_version, EXCLUDED.last_version), \
           transfer_fail_reason = CASE WHEN EXCLUDED.transfer_fail_version > COALESCE(f.transfer_fail_version, '') THEN EXCLUDED.transfer_fail_reason ELSE f.transfer_fail_reason END, \
           transfer_fail_at = CASE WHEN EXCLUDED.transfer_fail_version > COALESCE(f.transfer_fail_version, '') THEN EXCLUDED.transfer_fail_at ELSE f.transfer_fail_at END, \
           transfer_fail_version = GREATEST(f.transfer_fail_version, EXCLUDED.transfer_fail_version)",
    )
    .bind(&f.corp_id)
    .bind(&f.userid)
    .bind(&f.external_userid)
    .bind(f.state.status)
    .bind(f.state.version.as_str())
    .bind(f.state.deleted_at.map(|t| t as f64))
    .bind(&f.state.delete_source)
    .bind(f.add.as_ref().and_then(|a| a.state.as_deref()))
    .bind(f.add.as_ref().and_then(|a| a.welcome_code.as_deref()))
    .bind(f.add.as_ref().map(|a| a.added_at as f64))
    .bind(f.add.as_ref().map(|a| a.version.as_str()))
    .bind(&f.last.change_type)
    .bind(at)
    .bind(f.last.version.as_str())
    .bind(f.last.event_id)
    .bind(f.transfer_fail.as_ref().and_then(|t| t.reason.as_deref()))
    .bind(f.transfer_fail.as_ref().map(|t| t.at as f64))
    .bind(f.transfer_fail.as_ref().map(|t| t.version.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    payload: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    // Delivered by PostgreSQL when (and only if) the transaction commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn chat(tx: &mut Transaction<'_, Postgres>, c: &ChatWrite) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, created_at, dismissed_at, \
             last_update_detail, member_version, update_version, last_event_at, last_version, last_event_id) \
         VALUES ($1, $2, $3, $4, to_timestamp($5), to_timestamp($6), $7, $8, $9, to_timestamp($10), $11, $12) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET \
           status = CASE WHEN EXCLUDED.status_version > g.status_version THEN EXCLUDED.status ELSE g.status END, \
           dismissed_at = CASE WHEN EXCLUDED.status_version > g.status_version THEN EXCLUDED.dismissed_at ELSE g.dismissed_at END, \
           status_version = GREATEST(g.status_version, EXCLUDED.status_version), \
           created_at = LEAST(g.created_at, EXCLUDED.created_at), \
           last_update_detail = CASE WHEN EXCLUDED.update_version > COALESCE(g.update_version, '') THEN EXCLUDED.last_update_detail ELSE g.last_update_detail END, \
           member_version = CASE WHEN EXCLUDED.update_version > COALESCE(g.update_version, '') THEN COALESCE(EXCLUDED.member_version, g.member_version) ELSE g.member_version END, \
           update_version = GREATEST(g.update_version, EXCLUDED.update_version), \
           last_event_at = CASE WHEN EXCLUDED.last_version > g.last_version THEN EXCLUDED.last_event_at ELSE g.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > g.last_version THEN EXCLUDED.last_event_id ELSE g.last_event_id END, \
           last_version = GREATEST(g.last_version, EXCLUDED.last_version)",
    )
    .bind(&c.corp_id)
    .bind(&c.chat_id)
    .bind(c.status.as_str())
    .bind(c.status_version.as_str())
    .bind(c.created_at.map(|t| t as f64))
    .bind(c.dismissed_at.map(|t| t as f64))
    .bind(c.update.as_ref().map(|u| u.detail.as_str()))
    .bind(c.update.as_ref().and_then(|u| u.member_version.as_deref()))
    .bind(c.update.as_ref().map(|u| u.version.as_str()))
    .bind(c.last.at as f64)
    .bind(c.last.version.as_str())
    .bind(c.last.event_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn member(tx: &mut Transaction<'_, Postgres>, m: &MemberWrite) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_group_chat_members AS m (corp_id, chat_id, member_id, status, version, \
             join_scene, quit_scene, changed_at, last_event_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8), $9) \
         ON CONFLICT (corp_id, chat_id, member_id) DO UPDATE SET \
           status = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.status ELSE m.status END, \
           join_scene = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.join_scene ELSE m.join_scene END, \
           quit_scene = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.quit_scene ELSE m.quit_scene END, \
           changed_at = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.changed_at ELSE m.changed_at END, \
           last_event_id = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.last_event_id ELSE m.last_event_id END, \
           version = GREATEST(m.version, EXCLUDED.version)",
    )
    .bind(&m.corp_id)
    .bind(&m.chat_id)
    .bind(&m.member_id)
    .bind(m.status.as_str())
    .bind(m.version.as_str())
    .bind(m.join_scene)
    .bind(m.quit_scene)
    .bind(m.changed_at as f64)
    .bind(m.event_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn tag(tx: &mut Transaction<'_, Postgres>, t: &TagWrite) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_corp_tags AS t (corp_id, id, type, strategy_id, deleted, status_version, \
             last_change_type, last_event_at, last_version, last_event_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8), $9, $10) \
         ON CONFLICT (corp_id, id) DO UPDATE SET \
           deleted = CASE WHEN EXCLUDED.status_version > t.status_version THEN EXCLUDED.deleted ELSE t.deleted END, \
           type = COALESCE(CASE WHEN EXCLUDED.status_version > t.status_version THEN EXCLUDED.type END, t.type, EXCLUDED.type), \
           strategy_id = COALESCE(t.strategy_id, EXCLUDED.strategy_id), \
           status_version = GREATEST(t.status_version, EXCLUDED.status_version), \
           last_change_type = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_change_type ELSE t.last_change_type END, \
           last_event_at = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_event_at ELSE t.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_event_id ELSE t.last_event_id END, \
           last_version = GREATEST(t.last_version, EXCLUDED.last_version)",
    )
    .bind(&t.corp_id)
    .bind(&t.id)
    .bind(&t.tag_type)
    .bind(&t.strategy_id)
    .bind(t.deleted)
    .bind(t.status_version.as_str())
    .bind(&t.last.change_type)
    .bind(t.last.at as f64)
    .bind(t.last.version.as_str())
    .bind(t.last.event_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Recomputes every projection from `wecom_events` in one transaction, so readers see either the old tables or
/// the new ones. Returns how many events were applied.
pub async fn rebuild(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Appliers (of every replica) wait until the rebuild commits.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPLY_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "TRUNCATE external_contact_history, external_group_chat_members, external_group_chats, \
         external_corp_tags, external_contact_follows, external_contacts",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE wecom_events SET applied_at = NULL WHERE applied_at IS NOT NULL")
        .execute(&mut *tx)
        .await?;
    let mut total = 0;
    loop {
        // History is not re-fetched from WeCom on a rebuild: no enrichment jobs.
        let n = apply_batch(&mut tx, 1000, &HashSet::new()).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    tx.commit().await?;
    Ok(total)
}

/// How many stored events wait to be applied.
pub async fn pending_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM wecom_events WHERE applied_at IS NULL")
        .fetch_one(pool)
        .await
}
