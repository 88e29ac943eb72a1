//! The staff directory tables (`staff`, `departments`): executing [`crate::sync::directory`] plans, and the
//! reads the API and `doctor` make of them.
//!
//! Directory changes are rare next to customer events, so each write is one statement; the SQL repeats the
//! planner's last-writer-wins rule per register against the stored row (a NULL version means "this write
//! does not know", and `NULL > x` is never true). Rows are written in key order so concurrent appliers lock
//! them in the same order.
//!
//! By concept: writes here, renames (`rename`: carrying a renamed member's rows over), reads for the API
//! (`read`), and the API observations of the directory resync and staff detail jobs (`observe`).

mod observe;
mod read;
mod rename;

pub(crate) use observe::known_departments;
pub use observe::{
    department_fingerprints, mark_listed, needing_detail, observe_departments, observe_member,
    staff_fingerprints,
};
pub use read::{
    DepartmentRow, Readability, Staff, department_staff, departments, has_left, readability, staff,
};
pub(crate) use rename::follows_of_renamed;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use crate::sync::directory::{DepartmentWrite, DirectoryPlan, StaffWrite};

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
    rename::carry_over(tx, plan).await?;
    for r in &plan.renames {
        rename::rename(tx, r).await?;
    }
    if !plan.jobs.is_empty() {
        crate::store::jobs::enqueue_many(tx, plan.jobs.iter()).await?;
    }
    // NOTIFY and the change feed (see `store::feed`).
    crate::store::projections::notify(tx, &plan.notifications()).await
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
    .bind(w.renamed_to.as_ref().and_then(|r| r.value.as_deref()))
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
