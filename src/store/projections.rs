//! Applying stored events to the projection tables (external contacts, follows, group chats, corp tags) and
//! reading them back for the HTTP API.
//!
//! Every stored event is applied exactly once: a worker takes unapplied events (`applied_at IS NULL`, `FOR
//! UPDATE SKIP LOCKED`, so replicas share the work), applies them and marks them applied in one transaction.
//! A crash between storing and applying leaves the event unapplied, and the next pass takes it.
//!
//! Order safety: see the migration. Each group of columns is a "last writer wins" register keyed by the
//! event's version `(event_time, rank, dedupe_key)`, so the tables do not depend on the order events arrive
//! in, and duplicates change nothing.

use std::collections::HashSet;

use serde_json::json;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::domain::JobKind;
use crate::wecom::events::{
    ChatChange, ContactChange, EventKind, ExternalChatEvent, ExternalContactEvent,
    ExternalTagEvent, TagChange, TypedEvent, UpdateDetail,
};
use crate::wecom::message;

/// Advisory lock key separating appliers (shared) from a rebuild (exclusive).
const APPLY_LOCK: i64 = 0x5745_434f_4d01;

/// The channel backends LISTEN on.
pub const CHANNEL: &str = "wecom_contact_changed";

/// A stored event as the applier sees it.
struct StoredEvent {
    id: i64,
    dedupe_key: String,
    corp_id: Option<String>,
    time: i64,
    typed: TypedEvent,
}

/// Rank of a change within one second: a later step of a relation's life ranks higher, so two events in
/// the same second resolve to the one that must have come last (a deletion after an add, an add after a
/// half-add).
fn contact_rank(c: &ContactChange) -> Option<u8> {
    Some(match c {
        ContactChange::TransferFail { .. } => 1,
        ContactChange::Edit => 2,
        ContactChange::AddHalf { .. } => 3,
        ContactChange::Add { .. } => 4,
        ContactChange::DeletedByCustomer => 5,
        ContactChange::DeletedByStaff { .. } => 6,
        ContactChange::Other(_) => return None,
    })
}

fn version(time: i64, rank: u8, dedupe_key: &str) -> String {
    format!("{:012}:{rank}:{dedupe_key}", time.max(0))
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
    let rows = sqlx::query(
        "SELECT id, app, dedupe_key, corp_id, extract(epoch FROM event_time)::bigint AS t, message \
         FROM wecom_events WHERE applied_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.get("id");
        ids.push(id);
        let text: String = row.get("message");
        // Stored messages were parsed once already; one that no longer parses is skipped, never retried forever.
        let Ok(parsed) = message::parse_message(text.as_bytes()) else {
            tracing::warn!(event_id = id, "stored message does not parse; not applied");
            continue;
        };
        let typed = crate::wecom::events::interpret(&parsed);
        let ev = StoredEvent {
            id,
            dedupe_key: row.get("dedupe_key"),
            corp_id: row
                .get::<Option<String>, _>("corp_id")
                .or(typed.corp_id.clone()),
            time: row.get::<Option<i64>, _>("t").unwrap_or(0),
            typed,
        };
        apply_one(tx, &ev).await?;
        let app: String = row.get("app");
        if enrich.contains(&app) {
            enqueue_enrichment(tx, &app, &ev).await?;
        }
    }
    if !ids.is_empty() {
        sqlx::query("UPDATE wecom_events SET applied_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
    }
    Ok(ids.len())
}

async fn apply_one(
    tx: &mut Transaction<'_, Postgres>,
    ev: &StoredEvent,
) -> Result<(), sqlx::Error> {
    let Some(corp) = ev.corp_id.as_deref() else {
        return Ok(());
    };
    match &ev.typed.kind {
        EventKind::ExternalContact(c) => apply_contact(tx, ev, corp, c).await,
        EventKind::ExternalChat(c) => apply_chat(tx, ev, corp, c).await,
        EventKind::ExternalTag(t) => apply_tag(tx, ev, corp, t).await,
        _ => Ok(()),
    }
}

/// Queues the API reads an event calls for: callbacks carry ids, not state (docs/protocol.md §6.7).
async fn enqueue_enrichment(
    tx: &mut Transaction<'_, Postgres>,
    app: &str,
    ev: &StoredEvent,
) -> Result<(), sqlx::Error> {
    let Some(corp) = ev.corp_id.as_deref() else {
        return Ok(());
    };
    let job = match &ev.typed.kind {
        EventKind::ExternalContact(c) => match c.change {
            ContactChange::Add { .. } | ContactChange::Edit | ContactChange::AddHalf { .. } => {
                Some((JobKind::ContactDetail, c.external_userid.as_str()))
            }
            _ => None,
        },
        EventKind::ExternalChat(c) => match c.change {
            ChatChange::Create | ChatChange::Update(_) => {
                Some((JobKind::GroupChat, c.chat_id.as_str()))
            }
            _ => None,
        },
        EventKind::ExternalTag(_) => Some((JobKind::CorpTags, "*")),
        _ => None,
    };
    if let Some((kind, subject)) = job {
        crate::store::jobs::enqueue(tx, kind, app, corp, subject, ev.id).await?;
    }
    Ok(())
}

fn change_name(c: &ContactChange) -> &str {
    match c {
        ContactChange::Add { .. } => "add_external_contact",
        ContactChange::Edit => "edit_external_contact",
        ContactChange::AddHalf { .. } => "add_half_external_contact",
        ContactChange::DeletedByStaff { .. } => "del_external_contact",
        ContactChange::DeletedByCustomer => "del_follow_user",
        ContactChange::TransferFail { .. } => "transfer_fail",
        ContactChange::Other(s) => s,
    }
}

async fn apply_contact(
    tx: &mut Transaction<'_, Postgres>,
    ev: &StoredEvent,
    corp: &str,
    c: &ExternalContactEvent,
) -> Result<(), sqlx::Error> {
    let change = change_name(&c.change);
    history(
        tx,
        ev,
        corp,
        "contact",
        &c.external_userid,
        Some(&c.userid),
        change,
        contact_details(&c.change),
    )
    .await?;
    let Some(rank) = contact_rank(&c.change) else {
        return Ok(());
    };
    let v = version(ev.time, rank, &ev.dedupe_key);

    sqlx::query(
        "INSERT INTO external_contacts AS c (corp_id, external_userid, first_seen_at, last_event_at, last_event_id) \
         VALUES ($1, $2, to_timestamp($3), to_timestamp($3), $4) \
         ON CONFLICT (corp_id, external_userid) DO UPDATE SET \
           first_seen_at = LEAST(c.first_seen_at, EXCLUDED.first_seen_at), \
           last_event_id = CASE WHEN EXCLUDED.last_event_at >= c.last_event_at THEN EXCLUDED.last_event_id ELSE c.last_event_id END, \
           last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at)",
    )
    .bind(corp)
    .bind(&c.external_userid)
    .bind(ev.time as f64)
    .bind(ev.id)
    .execute(&mut **tx)
    .await?;

    // Column groups: status (the latest add, half-add or delete decides), add (the latest add or
    // half-add decides the channel and welcome code), last (any change), transfer failure.
    let (status, status_version, deleted, delete_source) = match &c.change {
        ContactChange::Add { .. } => ("active", v.clone(), false, None),
        ContactChange::AddHalf { .. } => ("pending", v.clone(), false, None),
        ContactChange::DeletedByStaff { source } => (
            "deleted_by_staff",
            v.clone(),
            true,
            source.as_ref().map(|s| s.as_str().to_owned()),
        ),
        ContactChange::DeletedByCustomer => ("deleted_by_customer", v.clone(), true, None),
        // Not a status change: a placeholder every real status event outranks.
        _ => ("active", String::new(), false, None),
    };
    let (add_version, state, welcome_code) = match &c.change {
        ContactChange::Add {
            state,
            welcome_code,
        }
        | ContactChange::AddHalf {
            state,
            welcome_code,
        } => (Some(v.clone()), state.clone(), welcome_code.clone()),
        _ => (None, None, None),
    };
    let (fail_version, fail_reason) = match &c.change {
        ContactChange::TransferFail { reason } => (
            Some(v.clone()),
            reason.as_ref().map(|r| r.as_str().to_owned()),
        ),
        _ => (None, None),
    };
    sqlx::query(
        "INSERT INTO external_contact_follows AS f (corp_id, userid, external_userid, status, status_version, \
             deleted_at, delete_source, state, welcome_code, added_at, add_version, last_change_type, \
             last_event_at, last_version, last_event_id, transfer_fail_reason, transfer_fail_at, transfer_fail_version) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN to_timestamp($7) END, $8, $9, $10, \
             CASE WHEN $11::text IS NOT NULL THEN to_timestamp($7) END, $11, $12, to_timestamp($7), $13, $14, \
             $15, CASE WHEN $16::text IS NOT NULL THEN to_timestamp($7) END, $16) \
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
    .bind(corp)
    .bind(&c.userid)
    .bind(&c.external_userid)
    .bind(status)
    .bind(&status_version)
    .bind(deleted)
    .bind(ev.time as f64)
    .bind(&delete_source)
    .bind(&state)
    .bind(&welcome_code)
    .bind(&add_version)
    .bind(change)
    .bind(&v)
    .bind(ev.id)
    .bind(&fail_reason)
    .bind(&fail_version)
    .execute(&mut **tx)
    .await?;

    notify(
        tx,
        json!({
            "corp_id": corp,
            "external_userid": c.external_userid,
            "userid": c.userid,
            "change": change,
            "event_id": ev.id,
        }),
    )
    .await
}

fn contact_details(c: &ContactChange) -> serde_json::Value {
    match c {
        ContactChange::Add {
            state,
            welcome_code,
        }
        | ContactChange::AddHalf {
            state,
            welcome_code,
        } => {
            json!({"state": state, "welcome_code": welcome_code.is_some()})
        }
        ContactChange::DeletedByStaff { source } => {
            json!({"source": source.as_ref().map(|s| s.as_str())})
        }
        ContactChange::TransferFail { reason } => {
            json!({"fail_reason": reason.as_ref().map(|r| r.as_str())})
        }
        _ => json!({}),
    }
}

#[allow(clippy::too_many_arguments)]
async fn history(
    tx: &mut Transaction<'_, Postgres>,
    ev: &StoredEvent,
    corp: &str,
    kind: &str,
    subject: &str,
    userid: Option<&str>,
    change: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contact_history (event_id, corp_id, kind, subject_id, userid, change_type, event_time, details) \
         VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), $8) ON CONFLICT DO NOTHING",
    )
    .bind(ev.id)
    .bind(corp)
    .bind(kind)
    .bind(subject)
    .bind(userid)
    .bind(change)
    .bind(ev.time as f64)
    .bind(details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    payload: serde_json::Value,
) -> Result<(), sqlx::Error> {
    // Delivered by PostgreSQL when (and only if) the transaction commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn apply_chat(
    tx: &mut Transaction<'_, Postgres>,
    ev: &StoredEvent,
    corp: &str,
    c: &ExternalChatEvent,
) -> Result<(), sqlx::Error> {
    let (change, rank) = match &c.change {
        ChatChange::Create => ("create", 1),
        ChatChange::Update(_) => ("update", 2),
        ChatChange::Dismiss => ("dismiss", 3),
        ChatChange::Other(s) => {
            history(tx, ev, corp, "chat", &c.chat_id, None, s, json!({})).await?;
            return Ok(());
        }
    };
    let v = version(ev.time, rank, &ev.dedupe_key);
    let details = match &c.change {
        ChatChange::Update(u) => json!({
            "update_detail": u.detail.as_str(),
            "join_scene": u.join_scene,
            "quit_scene": u.quit_scene,
            "mem_change_cnt": u.mem_change_cnt,
            "mem_change_list": u.mem_change_list,
        }),
        _ => json!({}),
    };
    history(tx, ev, corp, "chat", &c.chat_id, None, change, details).await?;
    let (status, status_version) = match &c.change {
        ChatChange::Create => ("active", v.clone()),
        ChatChange::Dismiss => ("dismissed", v.clone()),
        _ => ("active", String::new()),
    };
    let (update_version, detail, member_version) = match &c.change {
        ChatChange::Update(u) => (
            Some(v.clone()),
            Some(u.detail.as_str().to_owned()),
            u.cur_mem_ver.clone(),
        ),
        _ => (None, None, None),
    };
    sqlx::query(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, created_at, dismissed_at, \
             last_update_detail, member_version, update_version, last_event_at, last_version, last_event_id) \
         VALUES ($1, $2, $3, $4, CASE WHEN $5 = 'create' THEN to_timestamp($6) END, \
             CASE WHEN $5 = 'dismiss' THEN to_timestamp($6) END, $7, $8, $9, to_timestamp($6), $10, $11) \
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
    .bind(corp)
    .bind(&c.chat_id)
    .bind(status)
    .bind(&status_version)
    .bind(change)
    .bind(ev.time as f64)
    .bind(&detail)
    .bind(&member_version)
    .bind(&update_version)
    .bind(&v)
    .bind(ev.id)
    .execute(&mut **tx)
    .await?;

    if let ChatChange::Update(u) = &c.change {
        let member_status = match u.detail {
            UpdateDetail::AddMember => Some("joined"),
            UpdateDetail::DelMember => Some("left"),
            _ => None,
        };
        if let Some(member_status) = member_status {
            for member in &u.mem_change_list {
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
                .bind(corp)
                .bind(&c.chat_id)
                .bind(member)
                .bind(member_status)
                .bind(&v)
                .bind(u.join_scene.filter(|_| member_status == "joined"))
                .bind(u.quit_scene.filter(|_| member_status == "left"))
                .bind(ev.time as f64)
                .bind(ev.id)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(())
}

async fn apply_tag(
    tx: &mut Transaction<'_, Postgres>,
    ev: &StoredEvent,
    corp: &str,
    t: &ExternalTagEvent,
) -> Result<(), sqlx::Error> {
    let (change, rank) = match &t.change {
        TagChange::Shuffle => ("shuffle", 0),
        TagChange::Create => ("create", 1),
        TagChange::Update => ("update", 2),
        TagChange::Delete => ("delete", 3),
        TagChange::Other(s) => (s.as_str(), 0),
    };
    history(
        tx,
        ev,
        corp,
        "tag",
        &t.id,
        None,
        change,
        json!({"tag_type": t.tag_type.as_ref().map(|x| x.as_str()), "strategy_id": t.strategy_id}),
    )
    .await?;
    let v = version(ev.time, rank, &ev.dedupe_key);
    let status_version = if rank == 0 { String::new() } else { v.clone() };
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
    .bind(corp)
    .bind(&t.id)
    .bind(t.tag_type.as_ref().map(|x| x.as_str().to_owned()))
    .bind(&t.strategy_id)
    .bind(matches!(t.change, TagChange::Delete))
    .bind(&status_version)
    .bind(change)
    .bind(ev.time as f64)
    .bind(&v)
    .bind(ev.id)
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
