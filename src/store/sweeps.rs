//! Mark-and-sweep of what WeCom no longer lists: the resync's marks (a run saw this row) and sweeps (a row in
//! a listing's scope that the run did not see is removed, dismissed or deleted), each recorded in the
//! observation log in the transaction that applies it, and each with the keyed statement a rebuild replays.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use crate::store::observations::{self, Observation};
use crate::store::projections;
use crate::store::resync::{Run, run_version, version_at};
use crate::sync::plan::Version;

/// Tombstones the follows of `users` (the staff this run listed completely) that WeCom no longer lists
/// (status `removed`, source `resync`), unless an event newer than the run's start said otherwise. Only
/// `active` follows: WeCom lists no half-added (`pending`) relation, so not seeing one says nothing. A row seen
/// by a later run (another app of the corp) is not this run's to sweep. `dry_run` only counts.
pub async fn sweep_follows(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    users: &[String],
    dry_run: bool,
) -> Result<u64, sqlx::Error> {
    // $1 corp, $2 run, $3 the run's version, $4 users.
    const SCOPE: &str = "corp_id = $1 AND status = 'active' AND (resync_run IS NULL OR resync_run < $2) \
         AND status_version < $3 AND userid = ANY($4)";
    if dry_run {
        // Only the constant SCOPE is interpolated; every value is a bind.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM external_contact_follows WHERE {SCOPE}"
        )))
        .bind(corp_id)
        .bind(run.id)
        .bind(run_version(run))
        .bind(users)
        .fetch_one(pool)
        .await?;
        return Ok(n.max(0) as u64);
    }
    let mut tx = projections::observation_tx(pool).await?;
    // The rows in scope, locked in key order; the sweep itself is the keyed statement a rebuild replays.
    let keys: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT userid, external_userid FROM external_contact_follows WHERE {SCOPE} \
         ORDER BY userid, external_userid FOR UPDATE"
    )))
    .bind(corp_id)
    .bind(run.id)
    .bind(run_version(run))
    .bind(users)
    .fetch_all(&mut *tx)
    .await?;
    let swept = resweep_follows(&mut tx, corp_id, run.id, run.started_at, &keys).await?;
    // Only `active` rows are swept, so that is every one's previous status.
    let changed: Vec<(String, String, String)> = swept
        .iter()
        .map(|(u, e)| (u.clone(), e.clone(), "active".to_owned()))
        .collect();
    notify_removed(&mut tx, corp_id, &changed).await?;
    commit_sweep(tx, corp_id, swept, |keys| Observation::SweepFollows {
        keys,
        run_id: run.id,
        run_started_at: run.started_at,
    })
    .await
}

/// Tombstones the follows `keys` of run `run_id` (as [`sweep_follows`] does), each only if still `active`,
/// not seen by a later run and not decided by anything newer than the run. Returns the keys it changed.
/// Also the rebuild's replay of a recorded sweep.
pub(crate) async fn resweep_follows(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
    keys: &[(String, String)],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (users, exts): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(u, e)| (u.as_str(), e.as_str())).unzip();
    sqlx::query_as(
        "UPDATE external_contact_follows f SET status = 'removed', delete_source = 'resync', deleted_at = $4, \
             status_version = $3, last_change_type = 'resync_removed', last_event_at = $4, last_version = $3 \
         FROM UNNEST($5::text[], $6::text[]) AS k(userid, external_userid) \
         WHERE f.corp_id = $1 AND f.userid = k.userid AND f.external_userid = k.external_userid \
           AND f.status = 'active' AND (f.resync_run IS NULL OR f.resync_run < $2) AND f.status_version < $3 \
         RETURNING f.userid, f.external_userid",
    )
    .bind(corp_id)
    .bind(run_id)
    .bind(version_at(started_at))
    .bind(started_at)
    .bind(&users)
    .bind(&exts)
    .fetch_all(&mut **tx)
    .await
}

/// Marks `removed` (source `resync`) the follows `pairs` names — (member, customer) relations that
/// `get_unassigned_list` says wait for 离职继承 because the member left the corp — when they are still `active`
/// or `pending`, and no event newer than the run said otherwise. A relation already ended (e.g. the customer
/// deleted the member) keeps its status. Recorded in the observation log (so a rebuild keeps it) and notified
/// like every API status change.
pub async fn remove_unassigned(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    pairs: &[(String, String)],
) -> Result<u64, sqlx::Error> {
    if pairs.is_empty() {
        return Ok(0);
    }
    let mut tx = projections::observation_tx(pool).await?;
    let changed = reremove_unassigned(&mut tx, corp_id, run.id, run.started_at, pairs).await?;
    if !changed.is_empty() {
        let keys: Vec<(String, String)> = changed
            .iter()
            .map(|(u, e, _)| (u.clone(), e.clone()))
            .collect();
        let obs = Observation::RemoveUnassigned {
            keys,
            run_id: run.id,
            run_started_at: run.started_at,
        };
        observations::record(&mut tx, corp_id, &obs, true, &[]).await?;
        notify_removed(&mut tx, corp_id, &changed).await?;
    }
    tx.commit().await?;
    Ok(changed.len() as u64)
}

/// The still `active` or `pending` follows of members who are `left` (gone from the directory) and not in
/// `users` (this run's follow-user list), in key order: with a complete `get_unassigned_list` behind it,
/// relations WeCom lists nowhere (see the resync's directory step). Removed through [`remove_unassigned`],
/// whose version checks keep a follow an event newer than the run decided.
pub async fn follows_listed_nowhere(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    users: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.userid, f.external_userid FROM external_contact_follows f \
         JOIN staff s ON s.corp_id = f.corp_id AND s.userid = f.userid \
         WHERE f.corp_id = $1 AND f.status IN ('active', 'pending') AND s.status = 'left' \
           AND NOT (f.userid = ANY($2)) AND (f.resync_run IS NULL OR f.resync_run < $3) \
         ORDER BY f.userid, f.external_userid",
    )
    .bind(corp_id)
    .bind(users)
    .bind(run.id)
    .fetch_all(pool)
    .await
}

/// The statement of [`remove_unassigned`], also the rebuild's replay of a recorded one. Returns the changed
/// `(userid, external_userid, previous status)`, in key order.
pub(crate) async fn reremove_unassigned(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
    pairs: &[(String, String)],
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort();
    sorted.dedup();
    let (users, exts): (Vec<&str>, Vec<&str>) =
        sorted.iter().map(|(u, e)| (u.as_str(), e.as_str())).unzip();
    // `o` reads the rows before the update (locked in key order), so `o.status` is the previous status.
    let mut out: Vec<(String, String, String)> = sqlx::query_as(
        "UPDATE external_contact_follows f SET status = 'removed', delete_source = 'resync', deleted_at = $4, \
             status_version = $3, last_change_type = 'resync_removed', last_event_at = $4, last_version = $3 \
         FROM (SELECT g.userid, g.external_userid, g.status FROM external_contact_follows g \
               JOIN UNNEST($5::text[], $6::text[]) AS k(userid, external_userid) \
                 ON g.userid = k.userid AND g.external_userid = k.external_userid \
               WHERE g.corp_id = $1 AND g.status IN ('active', 'pending') \
                 AND (g.resync_run IS NULL OR g.resync_run < $2) AND g.status_version < $3 \
               ORDER BY g.userid, g.external_userid FOR UPDATE OF g) AS o \
         WHERE f.corp_id = $1 AND f.userid = o.userid AND f.external_userid = o.external_userid \
         RETURNING f.userid, f.external_userid, o.status::text",
    )
    .bind(corp_id)
    .bind(run_id)
    .bind(version_at(started_at))
    .bind(started_at)
    .bind(&users)
    .bind(&exts)
    .fetch_all(&mut **tx)
    .await?;
    out.sort();
    Ok(out)
}

/// One notification per follow a resync removed (the README's `source: "api"`, `change: "resync"` shape).
async fn notify_removed(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    changed: &[(String, String, String)],
) -> Result<(), sqlx::Error> {
    if changed.is_empty() {
        return Ok(());
    }
    let payloads: Vec<Value> = changed
        .iter()
        .map(|(userid, external_userid, previous)| {
            serde_json::json!({
                "kind": "contact", "source": "api", "corp_id": corp_id,
                "external_userid": external_userid, "userid": userid, "change": "resync",
                "event_id": null, "status": "removed", "previous_status": previous,
            })
        })
        .collect();
    projections::notify(tx, &payloads).await
}

/// The corp's active follows (the base of the mass-removal guard's share).
pub async fn active_follows(pool: &PgPool, corp_id: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM external_contact_follows WHERE corp_id = $1 AND status = 'active'",
    )
    .bind(corp_id)
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// Marks a chat seen by this run. A chat listed again after a dismissal older than the run is active again
/// (WeCom's list is the newer observation) and its `dismissed_at` is cleared; a dismissal newer than the run
/// keeps it dismissed. Returns whether the chat was new.
pub async fn mark_chat(
    pool: &PgPool,
    corp_id: &str,
    chat_id: &str,
    run: &Run,
) -> Result<bool, sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    let (created, changed) =
        mark_chat_in(&mut tx, corp_id, chat_id, run.id, run.started_at).await?;
    let obs = Observation::MarkChat {
        chat_id: chat_id.to_owned(),
        run_id: run.id,
        run_started_at: run.started_at,
    };
    // A status it changed matters to a later sweep (which dismisses only active chats): kept.
    observations::record(&mut tx, corp_id, &obs, created || changed, &[]).await?;
    tx.commit().await?;
    Ok(created)
}

/// [`mark_chat`] inside `tx` (also the rebuild's replay): whether the chat was created, and whether its
/// status changed.
pub(crate) async fn mark_chat_in(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    chat_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
) -> Result<(bool, bool), sqlx::Error> {
    let version = version_at(started_at);
    let before: Option<String> = sqlx::query_scalar(
        "SELECT status FROM external_group_chats WHERE corp_id = $1 AND chat_id = $2 FOR UPDATE",
    )
    .bind(corp_id)
    .bind(chat_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (created, status): (bool, String) = sqlx::query_as(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, last_event_at, last_version, resync_run) \
         VALUES ($1, $2, 'active', $3, $4, $3, $5) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET resync_run = GREATEST(g.resync_run, EXCLUDED.resync_run), \
           status = CASE WHEN EXCLUDED.status_version > g.status_version THEN 'active' ELSE g.status END, \
           dismissed_at = CASE WHEN EXCLUDED.status_version > g.status_version THEN NULL ELSE g.dismissed_at END, \
           status_version = GREATEST(g.status_version, EXCLUDED.status_version) \
         RETURNING (xmax = 0), status",
    )
    .bind(corp_id)
    .bind(chat_id)
    .bind(&version)
    .bind(started_at)
    .bind(run_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok((created, before.is_some_and(|b| b != status)))
}

/// Chats of `owners` (the owners this run listed completely) that WeCom no longer lists become dismissed, and
/// so do `gone` (chats without a known owner that `groupchat/get` says do not exist). A chat without a known
/// owner is otherwise never swept: no listing of this run covered it for sure.
pub async fn sweep_chats(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    owners: &[String],
    gone: &[String],
) -> Result<u64, sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT chat_id FROM external_group_chats \
         WHERE corp_id = $1 AND status = 'active' AND (resync_run IS NULL OR resync_run < $2) \
           AND status_version < $3 AND (owner = ANY($4) OR chat_id = ANY($5)) ORDER BY chat_id FOR UPDATE",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run_version(run))
    .bind(owners)
    .bind(gone)
    .fetch_all(&mut *tx)
    .await?;
    let swept = resweep_chats(&mut tx, corp_id, run.id, run.started_at, &ids).await?;
    commit_sweep(tx, corp_id, swept, |chat_ids| Observation::SweepChats {
        chat_ids,
        run_id: run.id,
        run_started_at: run.started_at,
    })
    .await
}

/// Dismisses the chats `ids` of run `run_id` (as [`sweep_chats`] does), each only if still active, not seen
/// by a later run and not decided by anything newer. Returns the ids it changed; also the rebuild's replay.
pub(crate) async fn resweep_chats(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE external_group_chats SET status = 'dismissed', dismissed_at = $3, status_version = $4 \
         WHERE corp_id = $1 AND status = 'active' AND (resync_run IS NULL OR resync_run < $2) \
           AND status_version < $4 AND chat_id = ANY($5) \
         RETURNING chat_id",
    )
    .bind(corp_id)
    .bind(run_id)
    .bind(started_at)
    .bind(version_at(started_at))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
}

/// Active chats without a known owner that this run has not listed (a listing by owner cannot cover them).
pub async fn unowned_unseen_chats(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT chat_id FROM external_group_chats WHERE corp_id = $1 AND status = 'active' AND owner IS NULL \
           AND (resync_run IS NULL OR resync_run < $2) ORDER BY chat_id",
    )
    .bind(corp_id)
    .bind(run.id)
    .fetch_all(pool)
    .await
}

/// Marks the tags listed in `ids` seen by this run.
pub async fn mark_tags(
    pool: &PgPool,
    corp_id: &str,
    ids: &[String],
    run: &Run,
) -> Result<u64, sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    let n = mark_tags_in(&mut tx, corp_id, ids, run.id).await?;
    let obs = Observation::MarkTags {
        ids: ids.to_vec(),
        run_id: run.id,
        run_started_at: run.started_at,
    };
    let mut covers = ids.to_vec();
    covers.sort();
    covers.dedup();
    observations::record(&mut tx, corp_id, &obs, false, &covers).await?;
    tx.commit().await?;
    Ok(n)
}

/// [`mark_tags`] inside `tx` (also the rebuild's replay).
pub(crate) async fn mark_tags_in(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    ids: &[String],
    run_id: i64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE external_corp_tags SET resync_run = GREATEST(resync_run, $3) WHERE corp_id = $1 AND id = ANY($2)",
    )
    .bind(corp_id)
    .bind(ids)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

/// Tags neither tag list of this run named become deleted (call only when both lists were read).
pub async fn sweep_tags(pool: &PgPool, corp_id: &str, run: &Run) -> Result<u64, sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM external_corp_tags \
         WHERE corp_id = $1 AND NOT deleted AND (resync_run IS NULL OR resync_run < $2) AND status_version < $3 \
         ORDER BY id FOR UPDATE",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run_version(run))
    .fetch_all(&mut *tx)
    .await?;
    let swept = resweep_tags(&mut tx, corp_id, run.id, run.started_at, &ids).await?;
    commit_sweep(tx, corp_id, swept, |ids| Observation::SweepTags {
        ids,
        run_id: run.id,
        run_started_at: run.started_at,
    })
    .await
}

/// Deletes the tags `ids` of run `run_id` (as [`sweep_tags`] does), each only if not deleted yet, not seen
/// by a later run and not decided by anything newer. Returns the ids it changed; also the rebuild's replay.
pub(crate) async fn resweep_tags(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE external_corp_tags SET deleted = true, status_version = $3 \
         WHERE corp_id = $1 AND NOT deleted AND (resync_run IS NULL OR resync_run < $2) AND status_version < $3 \
           AND id = ANY($4) \
         RETURNING id",
    )
    .bind(corp_id)
    .bind(run_id)
    .bind(version_at(started_at))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
}

/// The end of every sweep: the keys it changed, if any, go into the observation log as `observation` (a
/// sweep is never compacted away: it depends on when it happened), and the transaction commits. Returns how
/// many rows changed.
async fn commit_sweep<K>(
    mut tx: Transaction<'_, Postgres>,
    corp_id: &str,
    swept: Vec<K>,
    observation: impl FnOnce(Vec<K>) -> Observation,
) -> Result<u64, sqlx::Error> {
    let n = swept.len() as u64;
    if n > 0 {
        observations::record(&mut tx, corp_id, &observation(swept), true, &[]).await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// The staff sweep: members this run's complete `user/list_id` did not list become `left` (a member who left
/// is gone from the directory; WeCom sends no event when a resigned member's account is removed by a sync
/// tool), unless an event newer than the run said otherwise. A renamed userid's old row is not a member and
/// is left alone. Their follows then show as the follows of a member who left (`v_customer_followers.staff_left`,
/// not in `v_staff_active_customers`), as after a `delete_user`. `dry_run` only counts.
pub async fn sweep_staff(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    dry_run: bool,
) -> Result<u64, sqlx::Error> {
    // $1 corp, $2 run, $3 the run's version. Members of the directory this run did not list, and userids
    // with follows that the directory never knew: a member who left before any listing or 通讯录 event
    // named them (their follows must not look like a present member's).
    const SCOPE: &str = "SELECT userid FROM staff WHERE corp_id = $1 AND status <> 'left' AND renamed_to IS NULL \
           AND (resync_run IS NULL OR resync_run < $2) AND status_version < $3 \
         UNION SELECT f.userid FROM external_contact_follows f WHERE f.corp_id = $1 \
           AND NOT EXISTS (SELECT 1 FROM staff s WHERE s.corp_id = $1 AND s.userid = f.userid)";
    if dry_run {
        // Only the constant SCOPE is interpolated; every value is a bind.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM ({SCOPE}) AS k"
        )))
        .bind(corp_id)
        .bind(run.id)
        .bind(staff_version(run.started_at))
        .fetch_one(pool)
        .await?;
        return Ok(n.max(0) as u64);
    }
    let mut tx = projections::observation_tx(pool).await?;
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT userid FROM ({SCOPE}) AS k ORDER BY userid"
    )))
    .bind(corp_id)
    .bind(run.id)
    .bind(staff_version(run.started_at))
    .fetch_all(&mut *tx)
    .await?;
    let swept = resweep_staff(&mut tx, corp_id, run.id, run.started_at, &ids).await?;
    commit_sweep(tx, corp_id, swept, |userids| Observation::SweepStaff {
        userids,
        run_id: run.id,
        run_started_at: run.started_at,
    })
    .await
}

/// Marks the members `userids` of run `run_id` `left` (as [`sweep_staff`] does; a userid without a row gets
/// one), each only if not left yet, not renamed, not listed by a later run and not decided by anything newer.
/// Rows are written in userid order (so concurrent writers lock them in the same order). Returns the userids
/// it changed, in that order; also the rebuild's replay.
pub(crate) async fn resweep_staff(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
    userids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if userids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sorted: Vec<&str> = userids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = sqlx::query_scalar(
        "INSERT INTO staff AS s (corp_id, userid, status, status_version, left_at) \
         SELECT $1, k.userid, 'left', $4, $3 FROM UNNEST($5::text[]) WITH ORDINALITY AS k(userid, n) ORDER BY k.n \
         ON CONFLICT (corp_id, userid) DO UPDATE SET status = 'left', left_at = $3, status_version = $4, \
             updated_at = now() \
         WHERE s.status <> 'left' AND s.renamed_to IS NULL AND (s.resync_run IS NULL OR s.resync_run < $2) \
           AND s.status_version < $4 \
         RETURNING s.userid",
    )
    .bind(corp_id)
    .bind(run_id)
    .bind(started_at)
    .bind(staff_version(started_at))
    .bind(&sorted)
    .fetch_all(&mut **tx)
    .await?;
    out.sort();
    Ok(out)
}

/// The version of the staff sweep of the run started at `started_at`: to the microsecond, like a `user/get`
/// answer's ([`Version::fetched`]), so an answer fetched just before the run started (in the same second)
/// does not outrank the run's listing, and one fetched during the run does.
fn staff_version(started_at: DateTime<Utc>) -> String {
    Version::fetched(started_at).as_str().to_owned()
}

/// The corp's members who have not left (the base of the staff sweep's mass-removal guard).
pub async fn present_staff(pool: &PgPool, corp_id: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM staff WHERE corp_id = $1 AND status <> 'left' AND renamed_to IS NULL",
    )
    .bind(corp_id)
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}
