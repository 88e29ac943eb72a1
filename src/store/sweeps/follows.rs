//! Follows: the follow sweep, the follows of members who left (`get_unassigned_list`) and those WeCom
//! lists nowhere.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use super::commit_sweep;
use crate::store::observations::{self, Observation};
use crate::store::projections;
use crate::store::resync::{Run, run_version, version_at};

/// The follows the sweep would tombstone: the `active` follows of `users` (the staff this run listed
/// completely) that this run did not list, in key order. Only `active` follows: WeCom lists no half-added
/// (`pending`) relation, so not seeing one says nothing. A row seen by a later run (another app of the corp)
/// is not this run's to sweep, nor one an event newer than the run decided.
pub async fn follow_sweep_candidates(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    users: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT userid, external_userid FROM external_contact_follows \
         WHERE corp_id = $1 AND status = 'active' AND (resync_run IS NULL OR resync_run < $2) \
           AND status_version < $3 AND userid = ANY($4) ORDER BY userid, external_userid",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run_version(run))
    .bind(users)
    .fetch_all(pool)
    .await
}

/// Tombstones the follows `keys` (candidates of [`follow_sweep_candidates`] whose removal was confirmed):
/// status `removed`, source `resync`, each only if still a candidate (an event since may have decided it).
/// Notified, and recorded in the observation log for a rebuild. Returns how many it changed.
pub async fn sweep_follows(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    keys: &[(String, String)],
) -> Result<u64, sqlx::Error> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut sorted: Vec<&(String, String)> = keys.iter().collect();
    sorted.sort();
    sorted.dedup();
    let (users, exts): (Vec<&str>, Vec<&str>) =
        sorted.iter().map(|(u, e)| (u.as_str(), e.as_str())).unzip();
    let mut tx = projections::observation_tx(pool).await?;
    // The rows locked in key order (as the projector writes them); the sweep itself is the keyed statement a
    // rebuild replays.
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT f.userid, f.external_userid FROM external_contact_follows f \
         JOIN UNNEST($4::text[], $5::text[]) AS k(userid, external_userid) \
           ON f.userid = k.userid AND f.external_userid = k.external_userid \
         WHERE f.corp_id = $1 AND f.status = 'active' AND (f.resync_run IS NULL OR f.resync_run < $2) \
           AND f.status_version < $3 ORDER BY f.userid, f.external_userid FOR UPDATE OF f",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run_version(run))
    .bind(&users)
    .bind(&exts)
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
