//! The directory's API observations: `user/get`, `department/list` and `user/list_id` answers applied and
//! recorded in the observation log (so a rebuild reproduces them), and what a resync compares against.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::directory::execute;
use crate::store::observations::{self, Observation};
use crate::sync::client::types::{Department, StaffMember};
use crate::sync::directory;

/// Applies a `user/get` answer and records it in the observation log in one transaction, so a rebuild
/// reproduces it (the worker's staff detail job and the directory resync).
pub async fn observe_member(
    pool: &PgPool,
    corp_id: &str,
    member: &StaffMember,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = crate::store::projections::observation_tx(pool).await?;
    execute(
        &mut tx,
        &directory::member_plan(corp_id, member, fetched_at),
    )
    .await?;
    let obs = Observation::StaffDetail {
        member: member.clone(),
        fetched_at,
    };
    // Every register is last-writer-wins, so order does not matter (not pinned); a newer answer that read
    // at least the same fields supersedes it.
    observations::record(
        &mut tx,
        corp_id,
        &obs,
        false,
        &directory::fields_read(member),
    )
    .await?;
    tx.commit().await
}

/// Applies a `department/list` answer and records it in the observation log in one transaction.
pub async fn observe_departments(
    pool: &PgPool,
    corp_id: &str,
    list: &[Department],
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = crate::store::projections::observation_tx(pool).await?;
    let known = known_departments(&mut tx, corp_id).await?;
    let plan = directory::departments_plan(corp_id, list, fetched_at, &known);
    execute(&mut tx, &plan).await?;
    let obs = Observation::Departments {
        list: list.to_vec(),
        fetched_at,
    };
    // What it wrote, per department and field (a later list that names the same supersedes it).
    let mut covers: Vec<String> = plan
        .departments
        .iter()
        .flat_map(|d| {
            [
                Some(d.id.to_string()),
                d.name.as_ref().map(|_| format!("{}:name", d.id)),
                d.parent_id.as_ref().map(|_| format!("{}:parent", d.id)),
                d.order.as_ref().map(|_| format!("{}:order", d.id)),
            ]
        })
        .flatten()
        .collect();
    covers.sort();
    covers.dedup();
    observations::record(&mut tx, corp_id, &obs, false, &covers).await?;
    tx.commit().await
}

/// Marks the members of a `user/list_id` page listed by run `run_id` (a member without a row gets one), in
/// the observation log too. Returns the members that had no row (staff the directory did not know).
pub async fn mark_listed(
    pool: &PgPool,
    corp_id: &str,
    run_id: i64,
    run_started_at: DateTime<Utc>,
    userids: &[String],
) -> Result<u64, sqlx::Error> {
    let plan = directory::listed_plan(corp_id, userids, run_id);
    if plan.staff.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = plan.staff.iter().map(|w| w.userid.as_str()).collect();
    let mut tx = crate::store::projections::observation_tx(pool).await?;
    let known: i64 =
        sqlx::query_scalar("SELECT count(*) FROM staff WHERE corp_id = $1 AND userid = ANY($2)")
            .bind(corp_id)
            .bind(&ids)
            .fetch_one(&mut *tx)
            .await?;
    execute(&mut tx, &plan).await?;
    let covers: Vec<String> = ids.iter().map(|u| (*u).to_owned()).collect();
    let obs = Observation::ListedStaff {
        userids: covers.clone(),
        run_id,
        run_started_at,
    };
    // Pinned when it created rows: a later sweep depends on whether the row existed.
    let created = ids.len() as i64 - known;
    observations::record(&mut tx, corp_id, &obs, created > 0, &covers).await?;
    tx.commit().await?;
    Ok(created.max(0) as u64)
}

/// The listed members whose row needs a `user/get`: never fetched, fetched before `older_than`, or recorded
/// as `left` although WeCom lists them (a rehire under the same userid). In userid order.
pub async fn needing_detail(
    pool: &PgPool,
    corp_id: &str,
    userids: &[String],
    older_than: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT k.userid FROM UNNEST($2::text[]) AS k(userid) \
         LEFT JOIN staff s ON s.corp_id = $1 AND s.userid = k.userid \
         WHERE s.userid IS NULL OR s.fetch_version IS NULL OR s.detail_synced_at < $3 OR s.status = 'left' \
         GROUP BY k.userid ORDER BY k.userid",
    )
    .bind(corp_id)
    .bind(userids)
    .bind(older_than)
    .fetch_all(pool)
    .await
}

/// A fingerprint per member of what a backend reads (not bookkeeping such as `resync_run` or the fetch
/// time), to count the members a resync really changed.
pub async fn staff_fingerprints(
    pool: &PgPool,
    corp_id: &str,
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT userid, md5(row(name, department_ids, main_department, position, open_userid, status, left_at, \
             renamed_to, unavailable_fields)::text) FROM staff WHERE corp_id = $1",
    )
    .bind(corp_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// A fingerprint per department of what a backend reads.
pub async fn department_fingerprints(
    pool: &PgPool,
    corp_id: &str,
) -> Result<HashMap<i64, String>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, md5(row(name, parent_id, sort_order, deleted)::text) FROM departments WHERE corp_id = $1",
    )
    .bind(corp_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The departments of `corp_id` not deleted, inside `tx` (what a `department/list` answer is compared with).
pub(crate) async fn known_departments(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM departments WHERE corp_id = $1 AND NOT deleted ORDER BY id")
        .bind(corp_id)
        .fetch_all(&mut **tx)
        .await
}
