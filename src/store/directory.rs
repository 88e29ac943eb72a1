//! The staff directory tables (`staff`, `departments`): executing [`crate::sync::directory`] plans, and the
//! reads the API and `doctor` make of them.
//!
//! Directory changes are rare next to customer events, so each write is one statement; the SQL repeats the
//! planner's last-writer-wins rule per register against the stored row (a NULL version means "this write
//! does not know", and `NULL > x` is never true). Rows are written in key order so concurrent appliers lock
//! them in the same order.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use crate::store::observations::{self, Observation};
use crate::sync::client::types::{Department, StaffMember};
use crate::sync::directory::{self, DepartmentWrite, DirectoryPlan, StaffWrite};

/// Executes a directory plan inside `tx` (the projector's batch transaction, or an API observation's).
pub async fn execute(
    tx: &mut Transaction<'_, Postgres>,
    plan: &DirectoryPlan,
) -> Result<(), sqlx::Error> {
    let mut staff: Vec<&StaffWrite> = plan.staff.iter().collect();
    staff.sort_by(|a, b| (&a.corp_id, &a.userid).cmp(&(&b.corp_id, &b.userid)));
    for w in staff {
        staff_write(tx, w).await?;
    }
    let mut departments: Vec<&DepartmentWrite> = plan.departments.iter().collect();
    departments.sort_by(|a, b| (&a.corp_id, a.id).cmp(&(&b.corp_id, b.id)));
    for d in departments {
        department_write(tx, d).await?;
    }
    // What the directory knows under an old userid carries over to the new one where it is newer than what
    // the new row has (a renaming update_user carries little more than the ids). Done for every row this plan
    // wrote that names a successor, not only at the rename: a write to the old userid that arrives (or is
    // applied by a concurrent batch) after the rename still reaches the new row, so the result does not
    // depend on the order events are applied in. Whoever writes the old row second waits for the first's
    // commit on its row lock, so this statement then sees both.
    let mut written: Vec<(&str, &str)> = plan
        .staff
        .iter()
        .map(|w| (w.corp_id.as_str(), w.userid.as_str()))
        .collect();
    written.sort_unstable();
    written.dedup();
    if !written.is_empty() {
        sqlx::query(
            "UPDATE staff n SET \
               name = CASE WHEN o.name_version > COALESCE(n.name_version, '') THEN o.name ELSE n.name END, \
               name_version = GREATEST(n.name_version, o.name_version), \
               department_ids = CASE WHEN o.department_version > COALESCE(n.department_version, '') \
                                THEN o.department_ids ELSE n.department_ids END, \
               main_department = CASE WHEN o.department_version > COALESCE(n.department_version, '') \
                                 THEN o.main_department ELSE n.main_department END, \
               department_version = GREATEST(n.department_version, o.department_version), \
               position = CASE WHEN o.position_version > COALESCE(n.position_version, '') \
                          THEN o.position ELSE n.position END, \
               position_version = GREATEST(n.position_version, o.position_version), \
               open_userid = CASE WHEN o.open_userid_version > COALESCE(n.open_userid_version, '') \
                             THEN o.open_userid ELSE n.open_userid END, \
               open_userid_version = GREATEST(n.open_userid_version, o.open_userid_version), \
               updated_at = now() \
             FROM UNNEST($1::text[], $2::text[]) AS k(corp_id, userid) \
             JOIN staff o ON o.corp_id = k.corp_id AND o.userid = k.userid \
             WHERE o.renamed_to IS NOT NULL AND o.renamed_to <> o.userid \
               AND n.corp_id = o.corp_id AND n.userid = o.renamed_to \
               AND (o.name_version > COALESCE(n.name_version, '') \
                 OR o.department_version > COALESCE(n.department_version, '') \
                 OR o.position_version > COALESCE(n.position_version, '') \
                 OR o.open_userid_version > COALESCE(n.open_userid_version, ''))",
        )
        .bind(written.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(written.iter().map(|k| k.1).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    for r in &plan.renames {
        // Exclusive against appliers writing follows of the old userid (see `follows_of_renamed`): one of
        // the two sees the other's commit.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))")
            .bind(RENAME_LOCK)
            .bind(&r.corp_id)
            .bind(&r.from)
            .execute(&mut **tx)
            .await?;
        // The follows of the old userid move to the new one, except where the new userid already has a
        // row for that customer (events under the new userid came first: they are the newer truth).
        sqlx::query(
            "UPDATE external_contact_follows f SET userid = $3 \
             WHERE f.corp_id = $1 AND f.userid = $2 AND NOT EXISTS ( \
               SELECT 1 FROM external_contact_follows g \
               WHERE g.corp_id = $1 AND g.userid = $3 AND g.external_userid = f.external_userid)",
        )
        .bind(&r.corp_id)
        .bind(&r.from)
        .bind(&r.to)
        .execute(&mut **tx)
        .await?;
    }
    if !plan.jobs.is_empty() {
        crate::store::jobs::enqueue_many(tx, plan.jobs.iter()).await?;
    }
    // NOTIFY and the change feed (see `store::feed`).
    crate::store::projections::notify(tx, &plan.notifications()).await
}

/// First key of the per-member rename locks (the second: a hash of corp id and userid).
const RENAME_LOCK: i32 = 0x5745_5245;

/// Moves the follows just written under a userid that has been renamed to its successor, as the rename
/// itself moves those it finds: a follow event of the old userid applied after the rename (a late
/// delivery, or a concurrent batch) must not leave the customer with a userid that no longer exists.
/// `written`: the (corp id, userid) of every follow the batch wrote.
///
/// A concurrent rename and follow write must not both miss each other: the rename takes the member's lock
/// exclusively before moving, this takes it shared (in a statement of its own, so the move below reads
/// after any rename that held it) — whichever comes second sees the first's commit.
pub(crate) async fn follows_of_renamed(
    tx: &mut Transaction<'_, Postgres>,
    written: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    if written.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<(&str, &str)> = written.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let corps: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let userids: Vec<&str> = keys.iter().map(|k| k.1).collect();
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock_shared($1, hashtext(k.c || '/' || k.u))) \
         FROM UNNEST($2::text[], $3::text[]) AS k(c, u)",
    )
    .bind(RENAME_LOCK)
    .bind(&corps)
    .bind(&userids)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE external_contact_follows f SET userid = s.renamed_to \
         FROM UNNEST($1::text[], $2::text[]) AS k(c, u) \
         JOIN staff s ON s.corp_id = k.c AND s.userid = k.u \
         WHERE s.renamed_to IS NOT NULL AND s.renamed_to <> s.userid \
           AND f.corp_id = s.corp_id AND f.userid = s.userid AND NOT EXISTS ( \
             SELECT 1 FROM external_contact_follows g \
             WHERE g.corp_id = f.corp_id AND g.userid = s.renamed_to AND g.external_userid = f.external_userid)",
    )
    .bind(&corps)
    .bind(&userids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn ts(t: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t, 0)
}

async fn staff_write(
    tx: &mut Transaction<'_, Postgres>,
    w: &StaffWrite,
) -> Result<(), sqlx::Error> {
    let status = w.status.as_ref();
    let fetch = w.fetch.as_ref();
    sqlx::query(
        "INSERT INTO staff AS s (corp_id, userid, name, name_version, department_ids, main_department, \
             department_version, position, position_version, open_userid, open_userid_version, status, \
             status_version, left_at, renamed_to, renamed_version, unavailable_fields, fetch_version, \
             detail_synced_at, resync_run) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, COALESCE($12, 'active'), COALESCE($13, ''), $14, \
             $15, $16, COALESCE($17, '{}'::text[]), $18, $19, $20) \
         ON CONFLICT (corp_id, userid) DO UPDATE SET \
           name = CASE WHEN EXCLUDED.name_version > COALESCE(s.name_version, '') THEN EXCLUDED.name ELSE s.name END, \
           name_version = GREATEST(s.name_version, EXCLUDED.name_version), \
           department_ids = CASE WHEN EXCLUDED.department_version > COALESCE(s.department_version, '') \
                            THEN EXCLUDED.department_ids ELSE s.department_ids END, \
           main_department = CASE WHEN EXCLUDED.department_version > COALESCE(s.department_version, '') \
                             THEN EXCLUDED.main_department ELSE s.main_department END, \
           department_version = GREATEST(s.department_version, EXCLUDED.department_version), \
           position = CASE WHEN EXCLUDED.position_version > COALESCE(s.position_version, '') \
                      THEN EXCLUDED.position ELSE s.position END, \
           position_version = GREATEST(s.position_version, EXCLUDED.position_version), \
           open_userid = CASE WHEN EXCLUDED.open_userid_version > COALESCE(s.open_userid_version, '') \
                         THEN EXCLUDED.open_userid ELSE s.open_userid END, \
           open_userid_version = GREATEST(s.open_userid_version, EXCLUDED.open_userid_version), \
           status = CASE WHEN EXCLUDED.status_version > s.status_version THEN EXCLUDED.status ELSE s.status END, \
           left_at = CASE WHEN EXCLUDED.status_version > s.status_version THEN EXCLUDED.left_at ELSE s.left_at END, \
           status_version = GREATEST(s.status_version, EXCLUDED.status_version), \
           renamed_to = CASE WHEN EXCLUDED.renamed_version > COALESCE(s.renamed_version, '') \
                        THEN EXCLUDED.renamed_to ELSE s.renamed_to END, \
           renamed_version = GREATEST(s.renamed_version, EXCLUDED.renamed_version), \
           unavailable_fields = CASE WHEN EXCLUDED.fetch_version > COALESCE(s.fetch_version, '') \
                                THEN EXCLUDED.unavailable_fields ELSE s.unavailable_fields END, \
           detail_synced_at = CASE WHEN EXCLUDED.fetch_version > COALESCE(s.fetch_version, '') \
                              THEN EXCLUDED.detail_synced_at ELSE s.detail_synced_at END, \
           fetch_version = GREATEST(s.fetch_version, EXCLUDED.fetch_version), \
           resync_run = GREATEST(s.resync_run, EXCLUDED.resync_run), \
           updated_at = now()",
    )
    .bind(&w.corp_id)
    .bind(&w.userid)
    .bind(w.name.as_ref().map(|n| n.value.as_str()))
    .bind(w.name.as_ref().map(|n| n.version.as_str()))
    .bind(w.departments.as_ref().map(|d| d.value.ids.clone()))
    .bind(w.departments.as_ref().and_then(|d| d.value.main))
    .bind(w.departments.as_ref().map(|d| d.version.as_str()))
    .bind(w.position.as_ref().map(|p| p.value.as_str()))
    .bind(w.position.as_ref().map(|p| p.version.as_str()))
    .bind(w.open_userid.as_ref().map(|o| o.value.as_str()))
    .bind(w.open_userid.as_ref().map(|o| o.version.as_str()))
    .bind(status.map(|s| s.value.status))
    .bind(status.map(|s| s.version.as_str()))
    .bind(status.and_then(|s| s.value.left_at).and_then(ts))
    .bind(w.renamed_to.as_ref().map(|r| r.value.as_str()))
    .bind(w.renamed_to.as_ref().map(|r| r.version.as_str()))
    .bind(fetch.map(|f| f.unavailable.clone()))
    .bind(fetch.map(|f| f.version.as_str()))
    .bind(fetch.map(|f| f.synced_at))
    .bind(w.resync_run)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn department_write(
    tx: &mut Transaction<'_, Postgres>,
    d: &DepartmentWrite,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO departments AS d (corp_id, id, name, name_version, parent_id, parent_version, sort_order, \
             order_version, deleted, status_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (corp_id, id) DO UPDATE SET \
           name = CASE WHEN EXCLUDED.name_version > COALESCE(d.name_version, '') THEN EXCLUDED.name ELSE d.name END, \
           name_version = GREATEST(d.name_version, EXCLUDED.name_version), \
           parent_id = CASE WHEN EXCLUDED.parent_version > COALESCE(d.parent_version, '') \
                       THEN EXCLUDED.parent_id ELSE d.parent_id END, \
           parent_version = GREATEST(d.parent_version, EXCLUDED.parent_version), \
           sort_order = CASE WHEN EXCLUDED.order_version > COALESCE(d.order_version, '') \
                        THEN EXCLUDED.sort_order ELSE d.sort_order END, \
           order_version = GREATEST(d.order_version, EXCLUDED.order_version), \
           deleted = CASE WHEN EXCLUDED.status_version > d.status_version THEN EXCLUDED.deleted ELSE d.deleted END, \
           status_version = GREATEST(d.status_version, EXCLUDED.status_version), \
           updated_at = now()",
    )
    .bind(&d.corp_id)
    .bind(d.id)
    .bind(d.name.as_ref().map(|n| n.value.as_str()))
    .bind(d.name.as_ref().map(|n| n.version.as_str()))
    .bind(d.parent_id.as_ref().map(|p| p.value))
    .bind(d.parent_id.as_ref().map(|p| p.version.as_str()))
    .bind(d.order.as_ref().map(|o| o.value))
    .bind(d.order.as_ref().map(|o| o.version.as_str()))
    .bind(d.deleted.value)
    .bind(d.deleted.version.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A staff member as the read API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Staff {
    pub corp_id: String,
    pub userid: String,
    pub name: Option<String>,
    pub department_ids: Option<Vec<i64>>,
    pub main_department: Option<i64>,
    pub position: Option<String>,
    pub open_userid: Option<String>,
    /// `active`, `disabled`, `not_activated` or `left`.
    pub status: String,
    pub left_at: Option<DateTime<Utc>>,
    /// The userid WeCom changed this member's to.
    pub renamed_to: Option<String>,
    /// What the configured secret could not read in the latest `user/get`.
    pub unavailable_fields: Vec<String>,
    pub detail_synced_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A department.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DepartmentRow {
    pub id: i64,
    pub name: Option<String>,
    pub parent_id: Option<i64>,
    pub sort_order: Option<i64>,
    pub deleted: bool,
}

const STAFF_COLUMNS: &str = "corp_id, userid, name, department_ids, main_department, position, open_userid, \
    status, left_at, renamed_to, unavailable_fields, detail_synced_at, updated_at";

/// One staff member, or `None` when the directory does not know them.
pub async fn staff(
    pool: &PgPool,
    corp_id: &str,
    userid: &str,
) -> Result<Option<Staff>, sqlx::Error> {
    // Only constant SQL fragments are interpolated; every value is a bind.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {STAFF_COLUMNS} FROM staff WHERE corp_id = $1 AND userid = $2"
    )))
    .bind(corp_id)
    .bind(userid)
    .fetch_optional(pool)
    .await
}

/// The departments with these ids (unknown ids are left out), by id.
pub async fn departments(
    pool: &PgPool,
    corp_id: &str,
    ids: &[i64],
) -> Result<Vec<DepartmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, parent_id, sort_order, deleted FROM departments \
         WHERE corp_id = $1 AND id = ANY($2) ORDER BY id",
    )
    .bind(corp_id)
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// The members of a department (who have not left), by userid, after the cursor.
pub async fn department_staff(
    pool: &PgPool,
    corp_id: &str,
    department: i64,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Staff>, sqlx::Error> {
    // Only constant SQL fragments are interpolated; every value is a bind.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {STAFF_COLUMNS} FROM staff \
         WHERE corp_id = $1 AND department_ids @> ARRAY[$2::bigint] AND status <> 'left' \
           AND renamed_to IS NULL AND ($3::text IS NULL OR userid > $3) \
         ORDER BY userid LIMIT $4"
    )))
    .bind(corp_id)
    .bind(department)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether a staff member is known to have left (the active-customer list then is empty).
pub async fn has_left(pool: &PgPool, corp_id: &str, userid: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM staff WHERE corp_id = $1 AND userid = $2 AND status = 'left')",
    )
    .bind(corp_id)
    .bind(userid)
    .fetch_one(pool)
    .await
}

/// What the directory learnt from WeCom's API, for `doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readability {
    /// Members known.
    pub staff: i64,
    /// Members with at least one `user/get` answer.
    pub fetched: i64,
    /// Per field, how many fetched members' latest answer lacked it.
    pub unavailable: Vec<(String, i64)>,
    /// The latest refusal of a `user/get` job (errcode, message), if the last one failed for good.
    pub last_refusal: Option<(Option<i64>, String)>,
}

/// Sums up what `user/get` could read in a corp, and the app's latest refusal (see [`Readability`]).
pub async fn readability(
    pool: &PgPool,
    app: &str,
    corp_id: &str,
) -> Result<Readability, sqlx::Error> {
    let (staff, fetched): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE fetch_version IS NOT NULL) FROM staff WHERE corp_id = $1",
    )
    .bind(corp_id)
    .fetch_one(pool)
    .await?;
    let unavailable: Vec<(String, i64)> = sqlx::query_as(
        "SELECT f, count(*) FROM staff, unnest(unavailable_fields) AS f WHERE corp_id = $1 \
         GROUP BY f ORDER BY f",
    )
    .bind(corp_id)
    .fetch_all(pool)
    .await?;
    let last_refusal: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT last_errcode::bigint, last_error FROM wecom_jobs \
         WHERE kind = 'staff_detail' AND app = $1 AND status = 'dead' ORDER BY updated_at DESC LIMIT 1",
    )
    .bind(app)
    .fetch_optional(pool)
    .await?;
    Ok(Readability {
        staff,
        fetched,
        unavailable,
        last_refusal: last_refusal.map(|(c, m)| (c, m.unwrap_or_default())),
    })
}

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
