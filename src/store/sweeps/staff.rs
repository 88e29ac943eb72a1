//! The staff directory: members a complete `user/list_id` no longer lists become `left`.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::commit_sweep;
use crate::store::observations::Observation;
use crate::store::projections;
use crate::store::resync::Run;
use crate::sync::plan::Version;

/// $1 corp, $2 run, $3 the run's version. Members of the directory this run did not list, and userids with
/// follows that the directory never knew: a member who left before any listing or 通讯录 event named them
/// (their follows must not look like a present member's). A renamed userid's old row is not a member and is
/// left alone.
const STAFF_SCOPE: &str = "SELECT userid FROM staff WHERE corp_id = $1 AND status <> 'left' AND renamed_to IS NULL \
       AND (resync_run IS NULL OR resync_run < $2) AND status_version < $3 \
     UNION SELECT f.userid FROM external_contact_follows f WHERE f.corp_id = $1 \
       AND NOT EXISTS (SELECT 1 FROM staff s WHERE s.corp_id = $1 AND s.userid = f.userid)";

/// The members the staff sweep would mark `left` after this run's complete `user/list_id`, in userid order.
pub async fn staff_sweep_candidates(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
) -> Result<Vec<String>, sqlx::Error> {
    // Only the constant STAFF_SCOPE is interpolated; every value is a bind.
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT userid FROM ({STAFF_SCOPE}) AS k ORDER BY userid"
    )))
    .bind(corp_id)
    .bind(run.id)
    .bind(staff_version(run.started_at))
    .fetch_all(pool)
    .await
}

/// The staff sweep: the members `userids` (candidates of [`staff_sweep_candidates`] whose departure was
/// confirmed) become `left` (a member who left is gone from the directory; WeCom sends no event when a
/// resigned member's account is removed by a sync tool), each only if still a candidate (an event newer than
/// the run may have said otherwise). Their follows then show as the follows of a member who left
/// (`v_customer_followers.staff_left`, not in `v_staff_active_customers`), as after a `delete_user`.
pub async fn sweep_staff(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    userids: &[String],
) -> Result<u64, sqlx::Error> {
    if userids.is_empty() {
        return Ok(0);
    }
    let mut tx = projections::observation_tx(pool).await?;
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT userid FROM ({STAFF_SCOPE}) AS k WHERE userid = ANY($4) ORDER BY userid"
    )))
    .bind(corp_id)
    .bind(run.id)
    .bind(staff_version(run.started_at))
    .bind(userids)
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
