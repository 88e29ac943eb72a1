//! Corp tags: marked when listed, deleted when neither tag list has them.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::commit_sweep;
use crate::store::observations::{self, Observation};
use crate::store::projections;
use crate::store::resync::{Run, run_version, version_at};

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

/// Tags neither tag list of this run named become deleted (call only when both lists were read), are taken
/// off the relations that carry them, and are notified (`source: api`).
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
    let (swept, mut notes) = resweep_tags(&mut tx, corp_id, run.id, run.started_at, &ids).await?;
    notes.extend(delete_notifications(corp_id, &swept));
    projections::notify(&mut tx, &notes).await?;
    let ids: Vec<String> = swept.into_iter().map(|(id, _)| id).collect();
    commit_sweep(tx, corp_id, ids, |ids| Observation::SweepTags {
        ids,
        run_id: run.id,
        run_started_at: run.started_at,
    })
    .await
}

/// A `tag` `delete` notification per swept `(id, type)`.
fn delete_notifications(corp_id: &str, swept: &[(String, String)]) -> Vec<serde_json::Value> {
    swept
        .iter()
        .map(|(id, tag_type)| {
            serde_json::json!({
                "kind": "tag", "source": "api", "corp_id": corp_id, "id": id, "tag_type": tag_type,
                "change": "delete", "event_id": null,
            })
        })
        .collect()
}

/// Takes the swept tags (not groups) off the relations that carry them; their notifications.
async fn untag_swept(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    swept: &[(String, String)],
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let tags: Vec<&str> = swept
        .iter()
        .filter(|(_, t)| t != "tag_group")
        .map(|(id, _)| id.as_str())
        .collect();
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    projections::untag(tx, corp_id, &tags, "api").await
}

/// Deletes the tags `ids` of run `run_id` (as [`sweep_tags`] does), each only if not deleted yet, not seen
/// by a later run and not decided by anything newer, and takes them off the relations. Returns the
/// `(id, type)` it changed and the relations' notifications; also the rebuild's replay.
pub(crate) async fn resweep_tags(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
    ids: &[String],
) -> Result<(Vec<(String, String)>, Vec<serde_json::Value>), sqlx::Error> {
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let swept: Vec<(String, String)> = sqlx::query_as(
        "UPDATE external_corp_tags SET deleted = true, status_version = $3 \
         WHERE corp_id = $1 AND NOT deleted AND (resync_run IS NULL OR resync_run < $2) AND status_version < $3 \
           AND id = ANY($4) \
         RETURNING id, type::text",
    )
    .bind(corp_id)
    .bind(run_id)
    .bind(version_at(started_at))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let notes = untag_swept(tx, corp_id, &swept).await?;
    Ok((swept, notes))
}

/// After a tag job read both complete tag lists (`listed`: every group and tag id they name; `listed_at`: the
/// earlier request), the tags and groups neither names that are older than that request are deleted: WeCom
/// has none of them. So is a tag no list ever placed in its group, created and then deleted with the group
/// between two lists (WeCom calls back about the group only). Each is taken off the relations that carry it,
/// notified (`source: api`), and recorded for a rebuild. Returns how many it deleted.
pub async fn sweep_unlisted_tags(
    pool: &PgPool,
    corp_id: &str,
    listed: &[String],
    listed_at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM external_corp_tags \
         WHERE corp_id = $1 AND NOT deleted AND NOT (id = ANY($2)) AND status_version < $3 \
         ORDER BY id FOR UPDATE",
    )
    .bind(corp_id)
    .bind(listed)
    .bind(version_at(listed_at))
    .fetch_all(&mut *tx)
    .await?;
    let (swept, mut notes) = resweep_unlisted_tags(&mut tx, corp_id, &ids, listed_at).await?;
    if swept.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    notes.extend(delete_notifications(corp_id, &swept));
    projections::notify(&mut tx, &notes).await?;
    let ids: Vec<String> = swept.into_iter().map(|(id, _)| id).collect();
    let n = ids.len() as u64;
    let obs = Observation::UnlistedTags { ids, listed_at };
    observations::record(&mut tx, corp_id, &obs, true, &[]).await?;
    tx.commit().await?;
    Ok(n)
}

/// Deletes the tags `ids` (as [`sweep_unlisted_tags`] does), each only if not deleted yet and not decided by
/// anything newer than `listed_at`, and takes them off the relations. Returns the `(id, type)` it changed and
/// the relations' notifications; also the rebuild's replay.
pub(crate) async fn resweep_unlisted_tags(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    ids: &[String],
    listed_at: DateTime<Utc>,
) -> Result<(Vec<(String, String)>, Vec<serde_json::Value>), sqlx::Error> {
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let swept: Vec<(String, String)> = sqlx::query_as(
        "UPDATE external_corp_tags SET deleted = true, status_version = $3 \
         WHERE corp_id = $1 AND NOT deleted AND status_version < $3 AND id = ANY($2) \
         RETURNING id, type::text",
    )
    .bind(corp_id)
    .bind(ids)
    .bind(version_at(listed_at))
    .fetch_all(&mut **tx)
    .await?;
    let notes = untag_swept(tx, corp_id, &swept).await?;
    Ok((swept, notes))
}
