//! Applying stored events to the projection tables (external contacts, follows, group chats, corp tags). The
//! rules are in [`crate::sync::plan`]; this module reads the events, executes their plans and marks them
//! applied.
//!
//! Every stored event is applied exactly once: a worker takes unapplied events (their ids in
//! `wecom_events_pending`, `FOR UPDATE SKIP LOCKED`, so replicas share the work), applies them and deletes
//! their pending rows in one transaction.
//! A crash between storing and applying leaves the event unapplied, and the next pass takes it.
//!
//! Order safety: see the migration. Each group of columns is a "last writer wins" register keyed by the
//! event's version `(event_time, rank, dedupe_key)`, so the tables do not depend on the order events arrive
//! in, and duplicates change nothing.

use std::collections::HashSet;

use sqlx::{PgPool, Postgres, Transaction};

use std::collections::HashMap;

use crate::sync::plan::{
    self, Batch, ChatWrite, ContactDetailWrite, ContactSeen, EventMeta, FollowWrite, HistoryRow,
    MemberWrite, Plan, TagWrite, TransferAttempt,
};
use crate::wecom::message;

/// Advisory lock key separating appliers (shared) from a rebuild (exclusive).
pub(crate) const APPLY_LOCK: i64 = 0x5745_434f_4d01;

/// The channel backends LISTEN on.
pub const CHANNEL: &str = "wecom_contact_changed";

/// A stored event as the applier reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct Unapplied {
    pub(crate) id: i64,
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
    // The synced tables are derived from committed events: if this commit is lost in a crash, the events are
    // still unapplied and are applied again. So it need not wait for its WAL flush, which would otherwise
    // compete with the receiver's commits (the ones behind `success`) for the disk.
    // The advisory lock is shared with other appliers, exclusive against a rebuild (which would otherwise
    // deadlock with us). Both in one statement: one round trip less per batch.
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock_shared($1)",
    )
    .bind(APPLY_LOCK)
    .execute(&mut *tx)
    .await?;
    let n = apply_batch(&mut tx, limit, enrich).await?;
    tx.commit().await?;
    Ok(n)
}

/// Takes up to `limit` unapplied events inside `tx`, marks them applied and applies them.
async fn apply_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
    enrich: &HashSet<String>,
) -> Result<usize, sqlx::Error> {
    // Taking and marking in one statement: the pending rows are deleted (narrow rows, no index to insert
    // into) and the events read in the same round trip. The delete is part of this transaction, so it counts
    // only if the writes below commit too; until then other appliers skip the locked rows.
    let mut rows: Vec<Unapplied> = sqlx::query_as(
        "WITH taken AS ( \
             DELETE FROM wecom_events_pending q \
             WHERE q.id IN (SELECT id FROM wecom_events_pending ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING q.id) \
         SELECT e.id, e.app, e.dedupe_key, e.corp_id, extract(epoch FROM e.event_time)::bigint AS t, e.message \
         FROM wecom_events e JOIN taken USING (id)",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    // RETURNING has no order; plans are merged in id order (history, jobs and notifications keep it).
    rows.sort_unstable_by_key(|r| r.id);
    // A late event of a corp that cancelled its authorisation must not re-create its deleted rows.
    let cancelled = crate::store::corps::cancelled_ids(&mut **tx).await?;
    let (ids, batch, directory, provider) = plan_rows(rows, enrich, &cancelled);
    execute(tx, &batch).await?;
    if !directory.is_empty() {
        crate::store::directory::execute(tx, &directory).await?;
    }
    // Suite events act on their first application only: a rebuild or replay must not exchange an old
    // AuthCode or cancel a corp that authorised again since.
    if !provider.is_empty() {
        crate::store::suites::execute(tx, &provider).await?;
    }
    Ok(ids.len())
}

/// Plans `rows` (in id order) into one merged [`Batch`] and the staff directory's plan; returns the ids taken
/// with them. Events of the `cancelled` corps ([`crate::store::corps::cancelled_ids`]) plan no rows: their
/// data is deleted, and only their suite events (a new authorisation) still count.
fn plan_rows(
    rows: Vec<Unapplied>,
    enrich: &HashSet<String>,
    cancelled: &HashSet<String>,
) -> (
    Vec<i64>,
    Batch,
    crate::sync::directory::DirectoryPlan,
    crate::sync::provider::plan::ProviderPlan,
) {
    let mut ids = Vec::with_capacity(rows.len());
    let mut batch = Batch::default();
    // Suite events (tickets, authorisations) of the apps that call the API: see `sync::provider::plan`.
    let mut provider = crate::sync::provider::plan::ProviderPlan::default();
    // The staff directory (通讯录) has its own planner and executor: see `sync::directory`.
    let mut directory = crate::sync::directory::DirectoryPlan::default();
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
        if enrich.contains(&row.app) {
            provider.add(row.id, &row.app, &typed);
        }
        let Some(corp) = row.corp_id.or(typed.corp_id.clone()) else {
            continue;
        };
        if cancelled.contains(&corp) {
            continue;
        }
        let meta = EventMeta {
            id: row.id,
            app: &row.app,
            corp_id: &corp,
            time: row.t.unwrap_or(0),
            dedupe_key: &row.dedupe_key,
            enrich: enrich.contains(&row.app),
        };
        batch.add(plan::plan_event(&meta, &typed));
        directory.extend(crate::sync::directory::plan_event(&meta, &typed));
    }
    (ids, batch, directory, provider)
}

/// Plans and executes `rows` as one merged [`Batch`] inside `tx` (skipping the `cancelled` corps' events, see
/// [`plan_rows`]): the apply path of `rebuild` and `replay`,
/// sharing [`plan_rows`] and [`execute`] with the projector's [`apply_batch`]. Events still pending stay
/// pending: the projector applies them again afterwards (harmless: applying is idempotent) and only then do
/// their first-application effects happen (enrichment jobs, suite authorisations), which a rebuild, having no
/// secrets' app list, would otherwise lose. Returns how many rows were taken.
pub(crate) async fn apply_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: Vec<Unapplied>,
    enrich: &HashSet<String>,
    cancelled: &HashSet<String>,
) -> Result<usize, sqlx::Error> {
    apply_rows_with(tx, rows, enrich, cancelled, Vec::new()).await
}

/// [`apply_rows`], with `extra` plans (a rebuild's replayed API observations that commute with events: see
/// [`crate::store::observations::Replay::Plan`]) merged into the same batch.
pub(crate) async fn apply_rows_with(
    tx: &mut Transaction<'_, Postgres>,
    rows: Vec<Unapplied>,
    enrich: &HashSet<String>,
    cancelled: &HashSet<String>,
    extra: Vec<Plan>,
) -> Result<usize, sqlx::Error> {
    let (ids, mut batch, directory, _first_application_only) = plan_rows(rows, enrich, cancelled);
    for plan in extra {
        batch.add(plan);
    }
    execute(tx, &batch).await?;
    if !directory.is_empty() {
        crate::store::directory::execute(tx, &directory).await?;
    }
    Ok(ids.len())
}

/// Executes a merged batch inside `tx`: one multi-row statement per table, rows in key order (see
/// [`Batch`]). The SQL repeats the planner's last-writer-wins rule against the stored rows.
async fn execute(tx: &mut Transaction<'_, Postgres>, b: &Batch) -> Result<(), sqlx::Error> {
    if !b.history.is_empty() {
        history(tx, &b.history).await?;
    }
    if !b.contacts.is_empty() {
        contacts(tx, b.contacts.values()).await?;
    }
    if !b.contact_details.is_empty() {
        contact_details(tx, b.contact_details.values()).await?;
    }
    if !b.transfers.is_empty() {
        transfers(tx, &b.transfers).await?;
    }
    if !b.follows.is_empty() {
        follows(tx, b.follows.values(), false).await?;
    }
    if !b.chats.is_empty() {
        chats(tx, b.chats.values()).await?;
    }
    if !b.members.is_empty() {
        members(tx, b.members.values()).await?;
    }
    if !b.tags.is_empty() {
        tags(tx, b.tags.values()).await?;
    }
    if !b.jobs.is_empty() {
        crate::store::jobs::enqueue_many(tx, b.jobs.values()).await?;
    }
    // Customer identity (issue 13): an add may resolve a pending id. Queues nothing without open pending ids.
    if !b.jobs.is_empty() {
        crate::store::identity::queue_resolutions(tx, b).await?;
    }
    if !b.notifications.is_empty() {
        notify(tx, &b.notifications).await?;
    }
    Ok(())
}

/// What applying an API observation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub contacts_created: u64,
    pub follows_created: u64,
    pub follows_updated: u64,
    /// Follows whose status it changed (created rows included).
    pub statuses_changed: u64,
}

impl Observed {
    /// Whether it created a row or changed a status: the observation log keeps such an observation (see
    /// [`crate::store::observations`]).
    pub fn pinned(&self) -> bool {
        self.contacts_created > 0 || self.follows_created > 0 || self.statuses_changed > 0
    }
}

/// A transaction for applying an API observation: shared with appliers and waiting for a rebuild (whose
/// result would otherwise miss it), like an applier's.
pub(crate) async fn observation_tx(
    pool: &PgPool,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(APPLY_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Executes the plan of an API observation ([`plan::observe_contact`], [`plan::observe_follow_entry`]) in
/// one transaction, with the same executor and rules as events, and notifies (`"source": "api"`) each
/// follow whose status it changed. Nothing is recorded in the observation log: callers that must survive a
/// rebuild use [`observe_in`] and [`crate::store::observations::record`] in one transaction.
pub async fn apply_observation(pool: &PgPool, plan: Plan) -> Result<Observed, sqlx::Error> {
    let mut tx = observation_tx(pool).await?;
    let observed = observe_in(&mut tx, plan, true).await?;
    tx.commit().await?;
    Ok(observed)
}

/// Executes an observation's plan inside `tx` (taken with [`observation_tx`], or the rebuild's). `notify`:
/// send the `"source": "api"` notifications (not when a rebuild replays it).
pub(crate) async fn observe_in(
    tx: &mut Transaction<'_, Postgres>,
    plan: Plan,
    notify_changes: bool,
) -> Result<Observed, sqlx::Error> {
    let mut batch = Batch::default();
    batch.add(plan);
    // Same lock order as an applier (customers, then follows in key order), so the two cannot deadlock. An
    // observation plans customers' details and follows only.
    let mut observed = Observed::default();
    if !batch.contact_details.is_empty() {
        observed.contacts_created = contact_details(tx, batch.contact_details.values()).await?;
    }
    if batch.follows.is_empty() {
        return Ok(observed);
    }
    // The statuses before, rows locked in key order (the batch's order), to tell what the write changed.
    let keys = batch.follows.keys();
    let before: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT f.corp_id, f.userid, f.external_userid, f.status FROM external_contact_follows f \
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS u(corp_id, userid, external_userid) \
           USING (corp_id, userid, external_userid) \
         ORDER BY f.corp_id, f.userid, f.external_userid FOR UPDATE OF f",
    )
    .bind(keys.clone().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.clone().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .bind(keys.map(|k| k.2.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let before: HashMap<(String, String, String), String> = before
        .into_iter()
        .map(|(c, u, e, s)| ((c, u, e), s))
        .collect();
    let written = follows(tx, batch.follows.values(), true).await?;
    let mut notifications = Vec::new();
    for (key, status, created) in &written {
        if *created {
            observed.follows_created += 1;
        } else {
            observed.follows_updated += 1;
        }
        let previous = before.get(key).map(String::as_str);
        if previous != Some(status.as_str())
            && let Some(f) = batch.follows.get(key)
        {
            observed.statuses_changed += 1;
            notifications.push(plan::api_status_notification(f, previous, status));
        }
    }
    if notify_changes && !notifications.is_empty() {
        notify(tx, &notifications).await?;
    }
    Ok(observed)
}

fn ts(t: i64) -> f64 {
    t as f64
}

async fn history(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[HistoryRow],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contact_history (event_id, corp_id, kind, subject_id, userid, change_type, event_time, details) \
         SELECT u.event_id, u.corp_id, u.kind, u.subject_id, u.userid, u.change_type, to_timestamp(u.event_time), u.details \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::jsonb[]) \
           AS u(event_id, corp_id, kind, subject_id, userid, change_type, event_time, details) \
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|h| h.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.subject_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.userid.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.change_type.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| ts(h.event_time)).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| &h.details).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn contacts<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a ContactSeen> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contacts AS c (corp_id, external_userid, first_seen_at, last_event_at, last_event_id) \
         SELECT u.corp_id, u.external_userid, to_timestamp(u.first_seen), to_timestamp(u.last_at), u.last_id \
         FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::float8[], $5::bigint[]) \
           AS u(corp_id, external_userid, first_seen, last_at, last_id) \
         ON CONFLICT (corp_id, external_userid) DO UPDATE SET \
           first_seen_at = LEAST(c.first_seen_at, EXCLUDED.first_seen_at), \
           last_event_id = CASE WHEN (EXCLUDED.last_event_at, EXCLUDED.last_event_id) > (c.last_event_at, COALESCE(c.last_event_id, 0)) \
                           THEN EXCLUDED.last_event_id ELSE c.last_event_id END, \
           last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at)",
    )
    .bind(rows.clone().map(|c| c.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.external_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| ts(c.first_seen_at)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| ts(c.last_event_at)).collect::<Vec<_>>())
    .bind(rows.map(|c| c.last_event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn contact_details<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a ContactDetailWrite> + Clone,
) -> Result<u64, sqlx::Error> {
    // One register: the whole detail group changes when the fetch is newer than the stored one.
    let created: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO external_contacts AS c (corp_id, external_userid, first_seen_at, last_event_at, name, avatar, \
             type, gender, unionid, position, corp_name, corp_full_name, external_profile, detail_synced_at, detail_version) \
         SELECT u.corp_id, u.external_userid, u.synced_at, u.synced_at, u.name, u.avatar, u.type::smallint, \
             u.gender::smallint, u.unionid, u.position, u.corp_name, u.corp_full_name, u.external_profile, u.synced_at, \
             u.version \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::timestamptz[], $13::text[]) \
           AS u(corp_id, external_userid, name, avatar, type, gender, unionid, position, corp_name, corp_full_name, \
             external_profile, synced_at, version) \
         ON CONFLICT (corp_id, external_userid) DO UPDATE SET name = EXCLUDED.name, avatar = EXCLUDED.avatar, \
             type = EXCLUDED.type, gender = EXCLUDED.gender, unionid = EXCLUDED.unionid, position = EXCLUDED.position, \
             corp_name = EXCLUDED.corp_name, corp_full_name = EXCLUDED.corp_full_name, \
             external_profile = EXCLUDED.external_profile, detail_synced_at = EXCLUDED.detail_synced_at, \
             detail_version = EXCLUDED.detail_version \
         WHERE EXCLUDED.detail_version > COALESCE(c.detail_version, '') \
         RETURNING (xmax = 0)",
    )
    .bind(rows.clone().map(|c| c.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.external_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.name.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.avatar.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.kind).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.gender).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.unionid.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.position.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.corp_name.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.corp_full_name.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.external_profile.as_ref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.synced_at).collect::<Vec<_>>())
    .bind(rows.map(|c| c.version.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(created.into_iter().filter(|c| *c).count() as u64)
}

async fn transfers(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[TransferAttempt],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contact_transfers (corp_id, external_userid, takeover_userid, reason, failed_at, event_id) \
         SELECT u.corp_id, u.external_userid, u.takeover, u.reason, to_timestamp(u.failed_at), u.event_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::bigint[]) \
           AS u(corp_id, external_userid, takeover, reason, failed_at, event_id) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(rows.iter().map(|t| t.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.external_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.takeover_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.reason.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| ts(t.failed_at)).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The status register's condition (see `plan::merge_state`): a greater version, or a later listing of a
/// follow the resync swept as removed.
const STATUS_WINS: &str = "(EXCLUDED.status_version > f.status_version OR (f.status = 'removed' \
     AND EXCLUDED.listed_version IS NOT NULL AND EXCLUDED.listed_version > f.status_version))";
/// The detail register's condition: a newer fetch.
const DETAIL_WINS: &str = "EXCLUDED.detail_version > COALESCE(f.detail_version, '')";

/// Upserts follows. With `returning`, returns each written row's key, status and whether it was created (for
/// the observation path, which notifies status changes); without, returns nothing, as the event path needs
/// nothing back and a batch of thousands of rows would cost a result set for nothing.
async fn follows<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a FollowWrite> + Clone,
    returning: bool,
) -> Result<Vec<((String, String, String), String, bool)>, sqlx::Error> {
    let detail_cols = [
        "remark",
        "description",
        "remark_mobiles",
        "add_way",
        "oper_userid",
        "tags",
        "detail_synced_at",
    ]
    .map(|c| format!("{c} = CASE WHEN {DETAIL_WINS} THEN EXCLUDED.{c} ELSE f.{c} END, "))
    .concat();
    let status_cols = ["status", "deleted_at", "delete_source"]
        .map(|c| format!("{c} = CASE WHEN {STATUS_WINS} THEN EXCLUDED.{c} ELSE f.{c} END, "))
        .concat();
    let returning = if returning {
        "RETURNING f.corp_id, f.userid, f.external_userid, f.status, (xmax = 0)"
    } else {
        ""
    };
    // Built from the constants above only; every value is a bound parameter.
    let sql = format!(
        "INSERT INTO external_contact_follows AS f (corp_id, userid, external_userid, status, status_version, \
             deleted_at, delete_source, listed_version, state, welcome_code, added_at, add_version, last_change_type, \
             last_event_at, last_version, last_event_id, remark, description, remark_mobiles, add_way, oper_userid, \
             tags, detail_synced_at, detail_version, resync_run) \
         SELECT u.corp_id, u.userid, u.external_userid, u.status, u.status_version, to_timestamp(u.deleted_at), \
             u.delete_source, u.listed_version, u.state, u.welcome_code, to_timestamp(u.added_at), u.add_version, \
             u.last_change_type, to_timestamp(u.last_event_at), u.last_version, u.last_event_id, u.remark, \
             u.description, \
             CASE WHEN u.remark_mobiles IS NULL THEN NULL \
                  ELSE ARRAY(SELECT jsonb_array_elements_text(u.remark_mobiles)) END, \
             u.add_way::integer, u.oper_userid, u.tags, u.detail_synced_at, u.detail_version, u.resync_run \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::text[], \
             $9::text[], $10::text[], $11::float8[], $12::text[], $13::text[], $14::float8[], $15::text[], $16::bigint[], \
             $17::text[], $18::text[], $19::jsonb[], $20::bigint[], $21::text[], $22::jsonb[], $23::timestamptz[], \
             $24::text[], $25::bigint[]) \
           AS u(corp_id, userid, external_userid, status, status_version, deleted_at, delete_source, listed_version, \
             state, welcome_code, added_at, add_version, last_change_type, last_event_at, last_version, last_event_id, \
             remark, description, remark_mobiles, add_way, oper_userid, tags, detail_synced_at, detail_version, \
             resync_run) \
         ON CONFLICT (corp_id, userid, external_userid) DO UPDATE SET \
           {status_cols} \
           status_version = CASE WHEN {STATUS_WINS} THEN EXCLUDED.status_version ELSE f.status_version END, \
           listed_version = GREATEST(f.listed_version, EXCLUDED.listed_version), \
           state = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.state ELSE f.state END, \
           welcome_code = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.welcome_code ELSE f.welcome_code END, \
           added_at = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.added_at ELSE f.added_at END, \
           add_version = GREATEST(f.add_version, EXCLUDED.add_version), \
           last_change_type = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_change_type ELSE f.last_change_type END, \
           last_event_at = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_event_at ELSE f.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_event_id ELSE f.last_event_id END, \
           last_version = GREATEST(f.last_version, EXCLUDED.last_version), \
           {detail_cols} \
           detail_version = GREATEST(f.detail_version, EXCLUDED.detail_version), \
           resync_run = COALESCE(EXCLUDED.resync_run, f.resync_run) \
         {returning}"
    );
    let detail = |f: &'a FollowWrite| f.detail.as_ref();
    // Only constant column lists are interpolated into `sql`; every value is a bind.
    let out: Vec<(String, String, String, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(rows.clone().map(|f| f.corp_id.as_str()).collect::<Vec<_>>())
        .bind(rows.clone().map(|f| f.userid.as_str()).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|f| f.external_userid.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.version.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.deleted_at.map(ts))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.delete_source.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.listed.as_ref().map(|v| v.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().and_then(|a| a.state.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().and_then(|a| a.welcome_code.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().map(|a| ts(a.added_at)))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().map(|a| a.version.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.last.change_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.clone().map(|f| ts(f.last.at)).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|f| f.last.version.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.clone().map(|f| f.last.event_id).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.remark.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.description.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| {
                    detail(f)
                        .and_then(|d| d.remark_mobiles.as_ref())
                        .map(|m| serde_json::json!(m))
                })
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.add_way))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.oper_userid.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.tags.as_ref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).map(|d| d.synced_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).map(|d| d.version.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(rows.map(|f| f.resync_run).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
    Ok(out
        .into_iter()
        .map(|(c, u, e, s, created)| ((c, u, e), s, created))
        .collect())
}

/// Sends `payloads` on the change channel when (and only if) `tx` commits, in order.
pub(crate) async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    payloads: &[serde_json::Value],
) -> Result<(), sqlx::Error> {
    // Delivered by PostgreSQL when (and only if) the transaction commits, in this order; each change is also
    // staged for the change feed in the same transaction (see `store::feed`).
    crate::store::feed::record(tx, payloads).await
}

async fn chats<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a ChatWrite> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, created_at, dismissed_at, \
             last_update_detail, member_version, member_version_version, update_version, last_event_at, last_version, \
             last_event_id) \
         SELECT u.corp_id, u.chat_id, u.status, u.status_version, to_timestamp(u.created_at), to_timestamp(u.dismissed_at), \
             u.detail, u.member_version, u.mv_version, u.update_version, to_timestamp(u.last_at), u.last_version, u.last_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[], $8::text[], \
             $9::text[], $10::text[], $11::float8[], $12::text[], $13::bigint[]) \
           AS u(corp_id, chat_id, status, status_version, created_at, dismissed_at, detail, member_version, mv_version, \
             update_version, last_at, last_version, last_id) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET \
           status = CASE WHEN EXCLUDED.status_version > g.status_version THEN EXCLUDED.status ELSE g.status END, \
           dismissed_at = CASE WHEN EXCLUDED.status_version > g.status_version THEN EXCLUDED.dismissed_at ELSE g.dismissed_at END, \
           status_version = GREATEST(g.status_version, EXCLUDED.status_version), \
           created_at = LEAST(g.created_at, EXCLUDED.created_at), \
           last_update_detail = CASE WHEN EXCLUDED.update_version > COALESCE(g.update_version, '') THEN EXCLUDED.last_update_detail ELSE g.last_update_detail END, \
           member_version = CASE WHEN EXCLUDED.member_version_version > COALESCE(g.member_version_version, '') THEN EXCLUDED.member_version ELSE g.member_version END, \
           member_version_version = GREATEST(g.member_version_version, EXCLUDED.member_version_version), \
           update_version = GREATEST(g.update_version, EXCLUDED.update_version), \
           last_event_at = CASE WHEN EXCLUDED.last_version > g.last_version THEN EXCLUDED.last_event_at ELSE g.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > g.last_version THEN EXCLUDED.last_event_id ELSE g.last_event_id END, \
           last_version = GREATEST(g.last_version, EXCLUDED.last_version)",
    )
    .bind(rows.clone().map(|c| c.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.chat_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.status.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.status_version.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.created_at.map(ts)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.dismissed_at.map(ts)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.update.as_ref().map(|u| u.detail.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.member_version.as_ref().map(|m| m.member_version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.member_version.as_ref().map(|m| m.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.update.as_ref().map(|u| u.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| ts(c.last.at)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.last.version.as_str()).collect::<Vec<_>>())
    .bind(rows.map(|c| c.last.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn members<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a MemberWrite> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_group_chat_members AS m (corp_id, chat_id, member_id, status, version, \
             join_scene, quit_scene, changed_at, last_event_id) \
         SELECT u.corp_id, u.chat_id, u.member_id, u.status, u.version, u.join_scene, u.quit_scene, \
             to_timestamp(u.changed_at), u.event_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], \
             $8::float8[], $9::bigint[]) \
           AS u(corp_id, chat_id, member_id, status, version, join_scene, quit_scene, changed_at, event_id) \
         ON CONFLICT (corp_id, chat_id, member_id) DO UPDATE SET \
           status = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.status ELSE m.status END, \
           join_scene = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.join_scene ELSE m.join_scene END, \
           quit_scene = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.quit_scene ELSE m.quit_scene END, \
           changed_at = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.changed_at ELSE m.changed_at END, \
           last_event_id = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.last_event_id ELSE m.last_event_id END, \
           version = GREATEST(m.version, EXCLUDED.version)",
    )
    .bind(rows.clone().map(|m| m.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.chat_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.member_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.status.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.version.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.join_scene).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.quit_scene).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| ts(m.changed_at)).collect::<Vec<_>>())
    .bind(rows.map(|m| m.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn tags<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a TagWrite> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_corp_tags AS t (corp_id, id, type, type_version, strategy_id, strategy_version, deleted, \
             status_version, last_change_type, last_event_at, last_version, last_event_id) \
         SELECT u.corp_id, u.id, u.type, u.type_version, u.strategy_id, u.strategy_version, u.deleted, u.status_version, \
             u.change_type, to_timestamp(u.last_at), u.last_version, u.last_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::text[], \
             $9::text[], $10::float8[], $11::text[], $12::bigint[]) \
           AS u(corp_id, id, type, type_version, strategy_id, strategy_version, deleted, status_version, change_type, \
             last_at, last_version, last_id) \
         ON CONFLICT (corp_id, id) DO UPDATE SET \
           deleted = CASE WHEN EXCLUDED.status_version > t.status_version THEN EXCLUDED.deleted ELSE t.deleted END, \
           status_version = GREATEST(t.status_version, EXCLUDED.status_version), \
           type = CASE WHEN EXCLUDED.type_version > COALESCE(t.type_version, '') THEN EXCLUDED.type ELSE t.type END, \
           type_version = GREATEST(t.type_version, EXCLUDED.type_version), \
           strategy_id = CASE WHEN EXCLUDED.strategy_version > COALESCE(t.strategy_version, '') \
                         THEN EXCLUDED.strategy_id ELSE t.strategy_id END, \
           strategy_version = GREATEST(t.strategy_version, EXCLUDED.strategy_version), \
           last_change_type = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_change_type ELSE t.last_change_type END, \
           last_event_at = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_event_at ELSE t.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_event_id ELSE t.last_event_id END, \
           last_version = GREATEST(t.last_version, EXCLUDED.last_version)",
    )
    .bind(rows.clone().map(|t| t.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.tag_type.as_ref().map(|s| s.value.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.tag_type.as_ref().map(|s| s.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.strategy_id.as_ref().map(|s| s.value.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.strategy_id.as_ref().map(|s| s.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.deleted).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.status_version.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.last.change_type.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| ts(t.last.at)).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.last.version.as_str()).collect::<Vec<_>>())
    .bind(rows.map(|t| t.last.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many stored events wait to be applied.
pub async fn pending_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM wecom_events_pending")
        .fetch_one(pool)
        .await
}
