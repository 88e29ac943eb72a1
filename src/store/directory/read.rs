//! The directory as the read API and `doctor` see it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

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
