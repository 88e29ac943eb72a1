//! Customer identity (issue 13): which `external_userid` a WeChat `unionid` is in a corp, or the `pending_id`
//! WeCom handed out while the person was not a customer yet, each with its expiry (`customer_identities`).
//!
//! Filled by the conversion endpoint (`POST /api/v1/corps/{corp}/customers/by-unionid`), by the `unionid` that
//! `externalcontact/get` answers, and by resolving pending ids once a customer is added: an add event, while
//! the corp has open pending ids, queues the customer in `customer_identity_checks` and one
//! `resolve_pending_ids` job, which asks WeCom for their pending ids (at most 100 a call).
//!
//! Every resolution is announced on [`crate::store::projections::CHANNEL`] with `{"kind": "identity", "change":
//! "pending_resolved", ...}` when its transaction commits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::JobKind;
use crate::sync::plan::Batch;

/// How long WeCom keeps a pending id (90 days): it is never asked for again before.
pub const PENDING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long a known `external_userid` is trusted before a conversion asks again (a customer who deleted
/// every follow may be pending again by then).
pub const MAPPING_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an answer with neither id (e.g. the mini-program's subject differs from the corp's) is kept, so a
/// retrying client does not spend the quota.
pub const EMPTY_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The job subject of the per-(app, corp) resolve job: the customers to check are in
/// `customer_identity_checks`.
pub const RESOLVE_SUBJECT: &str = "pending_ids";

/// One `customer_identities` row, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Identity {
    pub corp_id: String,
    pub unionid: String,
    pub openid: Option<String>,
    pub external_userid: Option<String>,
    pub pending_id: Option<String>,
    /// `convert`, `contact_detail` or `pending_resolved`.
    pub source: String,
    pub checked_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When a pending id was resolved to `external_userid`.
    pub resolved_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "corp_id, unionid, openid, external_userid, pending_id, source, checked_at, expires_at, resolved_at";

/// The stored identity of `unionid` in `corp_id` while it is valid at `now`; `None` when unknown or expired.
pub async fn cached(
    pool: &PgPool,
    corp_id: &str,
    unionid: &str,
    now: DateTime<Utc>,
) -> Result<Option<Identity>, sqlx::Error> {
    // Only the constant column list is interpolated; every value is a bind.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM customer_identities WHERE corp_id = $1 AND unionid = $2 AND expires_at > $3"
    )))
    .bind(corp_id)
    .bind(unionid)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// Records what a conversion answered at `now`: an `external_userid` (valid [`MAPPING_VALIDITY`]), a
/// `pending_id` (valid [`PENDING_VALIDITY`]), or neither ([`EMPTY_VALIDITY`]). Returns the stored row.
pub async fn record_conversion(
    pool: &PgPool,
    corp_id: &str,
    unionid: &str,
    openid: &str,
    external_userid: Option<&str>,
    pending_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Identity, sqlx::Error> {
    let validity = match (external_userid, pending_id) {
        (Some(_), _) => MAPPING_VALIDITY,
        (None, Some(_)) => PENDING_VALIDITY,
        (None, None) => EMPTY_VALIDITY,
    };
    let mut tx = pool.begin().await?;
    // A pending id WeCom hands out again for another unionid would break the unique index: the older row
    // loses it (WeCom's answer now is the truth).
    if let Some(p) = pending_id {
        sqlx::query(
            "UPDATE customer_identities SET pending_id = NULL \
             WHERE corp_id = $1 AND pending_id = $2 AND unionid <> $3",
        )
        .bind(corp_id)
        .bind(p)
        .bind(unionid)
        .execute(&mut *tx)
        .await?;
    }
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO customer_identities AS c (corp_id, unionid, openid, external_userid, pending_id, source, \
             checked_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, 'convert', $6, $6 + make_interval(secs => $7)) \
         ON CONFLICT (corp_id, unionid) DO UPDATE SET openid = EXCLUDED.openid, \
           external_userid = EXCLUDED.external_userid, \
           pending_id = COALESCE(EXCLUDED.pending_id, c.pending_id), \
           source = 'convert', checked_at = EXCLUDED.checked_at, expires_at = EXCLUDED.expires_at, \
           resolved_at = CASE WHEN EXCLUDED.external_userid IS NULL THEN NULL ELSE c.resolved_at END \
         RETURNING {COLUMNS}"
    )))
    .bind(corp_id)
    .bind(unionid)
    .bind(openid)
    .bind(external_userid)
    .bind(pending_id)
    .bind(now)
    .bind(validity.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// `externalcontact/get` said `external_userid` has `unionid` (fetched at `at`), inside the caller's
/// transaction: the mapping is stored, and an open pending id of that unionid is resolved (and notified).
pub async fn observe_unionid(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    external_userid: &str,
    unionid: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let resolved: Option<String> = sqlx::query_scalar(
        "UPDATE customer_identities SET external_userid = $3, resolved_at = $4, source = 'pending_resolved', \
             checked_at = $4, expires_at = $4 + make_interval(secs => $5) \
         WHERE corp_id = $1 AND unionid = $2 AND pending_id IS NOT NULL AND external_userid IS NULL \
         RETURNING pending_id",
    )
    .bind(corp_id)
    .bind(unionid)
    .bind(external_userid)
    .bind(at)
    .bind(MAPPING_VALIDITY.as_secs_f64())
    .fetch_optional(&mut **tx)
    .await?;
    match resolved {
        Some(pending_id) => {
            notify_resolved(
                tx,
                corp_id,
                unionid,
                &pending_id,
                external_userid,
                "contact_detail",
            )
            .await?
        }
        None => {
            sqlx::query(
                "INSERT INTO customer_identities AS c (corp_id, unionid, external_userid, source, checked_at, \
                     expires_at) \
                 VALUES ($1, $2, $3, 'contact_detail', $4, $4 + make_interval(secs => $5)) \
                 ON CONFLICT (corp_id, unionid) DO UPDATE SET external_userid = EXCLUDED.external_userid, \
                   source = CASE WHEN c.external_userid IS NOT DISTINCT FROM EXCLUDED.external_userid \
                                 THEN c.source ELSE 'contact_detail' END, \
                   checked_at = EXCLUDED.checked_at, expires_at = EXCLUDED.expires_at",
            )
            .bind(corp_id)
            .bind(unionid)
            .bind(external_userid)
            .bind(at)
            .bind(MAPPING_VALIDITY.as_secs_f64())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// The projector's hook, inside its transaction: customers added in `batch` (with enrichment on, i.e. an
/// app with a secret) are queued for a pending-id check, with one `resolve_pending_ids` job per (app, corp),
/// but only while their corp has open pending ids, so a corp that never converted queues nothing.
pub async fn queue_resolutions(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
) -> Result<(), sqlx::Error> {
    let added: std::collections::HashSet<(&str, &str)> = batch
        .history
        .iter()
        .filter(|h| h.change_type == "add_external_contact")
        .map(|h| (h.corp_id.as_str(), h.subject_id.as_str()))
        .collect();
    let jobs: Vec<_> = batch
        .jobs
        .values()
        .filter(|j| {
            j.kind == JobKind::ContactDetail
                && added.contains(&(j.corp_id.as_str(), j.subject.as_str()))
        })
        .collect();
    if jobs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH adds AS ( \
           SELECT u.corp_id, u.app, u.external_userid, u.event_id \
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(corp_id, app, external_userid, event_id) \
           WHERE EXISTS (SELECT 1 FROM customer_identities c WHERE c.corp_id = u.corp_id \
                         AND c.pending_id IS NOT NULL AND c.external_userid IS NULL AND c.expires_at > now())), \
         checks AS ( \
           INSERT INTO customer_identity_checks (corp_id, app, external_userid, event_id) \
           SELECT corp_id, app, external_userid, event_id FROM adds \
           ON CONFLICT (corp_id, app, external_userid) DO UPDATE SET queued_at = now(), event_id = EXCLUDED.event_id \
           RETURNING corp_id, app) \
         INSERT INTO wecom_jobs (kind, app, corp_id, subject) \
         SELECT DISTINCT $5, app, corp_id, $6 FROM checks \
         ON CONFLICT (kind, app, corp_id, subject) WHERE status = 'queued' DO NOTHING",
    )
    .bind(jobs.iter().map(|j| j.corp_id.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.app.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.subject.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.event_id).collect::<Vec<_>>())
    .bind(JobKind::ResolvePendingIds.as_str())
    .bind(RESOLVE_SUBJECT)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Up to `limit` customers of (`corp_id`, `app`) waiting for a pending-id check, oldest first. Empty also when
/// the corp has no open pending id any more (the checks are then dropped: nothing could resolve).
pub async fn next_checks(
    pool: &PgPool,
    corp_id: &str,
    app: &str,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let open: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM customer_identities WHERE corp_id = $1 AND pending_id IS NOT NULL \
                        AND external_userid IS NULL AND expires_at > now())",
    )
    .bind(corp_id)
    .fetch_one(pool)
    .await?;
    if !open {
        sqlx::query("DELETE FROM customer_identity_checks WHERE corp_id = $1 AND app = $2")
            .bind(corp_id)
            .bind(app)
            .execute(pool)
            .await?;
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "SELECT external_userid FROM customer_identity_checks WHERE corp_id = $1 AND app = $2 \
         ORDER BY queued_at, external_userid LIMIT $3",
    )
    .bind(corp_id)
    .bind(app)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// WeCom answered the pending ids of `checked` (pairs of external_userid and pending_id, at `at`): pending
/// rows with those ids are resolved and notified, and the checks are deleted, in one transaction. Returns
/// how many pending ids were resolved.
pub async fn resolve_checked(
    pool: &PgPool,
    corp_id: &str,
    app: &str,
    checked: &[String],
    answered: &[(String, String)],
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "UPDATE customer_identities c SET external_userid = u.external_userid, resolved_at = $4, \
             source = 'pending_resolved', checked_at = $4, expires_at = $4 + make_interval(secs => $5) \
         FROM UNNEST($2::text[], $3::text[]) AS u(external_userid, pending_id) \
         WHERE c.corp_id = $1 AND c.pending_id = u.pending_id AND c.external_userid IS NULL \
         RETURNING c.unionid, c.pending_id, c.external_userid",
    )
    .bind(corp_id)
    .bind(answered.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>())
    .bind(answered.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>())
    .bind(at)
    .bind(MAPPING_VALIDITY.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    for (unionid, pending_id, external_userid) in &rows {
        notify_resolved(
            &mut tx,
            corp_id,
            unionid,
            pending_id,
            external_userid,
            "pending_id_lookup",
        )
        .await?;
    }
    sqlx::query(
        "DELETE FROM customer_identity_checks WHERE corp_id = $1 AND app = $2 AND external_userid = ANY($3)",
    )
    .bind(corp_id)
    .bind(app)
    .bind(checked)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Announces a resolved pending id when the transaction commits.
async fn notify_resolved(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    unionid: &str,
    pending_id: &str,
    external_userid: &str,
    via: &str,
) -> Result<(), sqlx::Error> {
    let payload = json!({
        "kind": "identity",
        "change": "pending_resolved",
        "corp_id": corp_id,
        "unionid": unionid,
        "pending_id": pending_id,
        "external_userid": external_userid,
        "source": via,
    });
    crate::store::feed::record(tx, &[payload]).await
}
