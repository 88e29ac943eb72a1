//! Corps that authorised a suite (service providers): their sealed permanent codes, state, and the deletion
//! of a cancelled corp's data.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;

use crate::domain::CorpState;

/// An authorised (or cancelled) corp.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Corp {
    pub corp_id: String,
    pub suite_id: String,
    pub app: String,
    pub state: CorpState,
    pub corp_name: Option<String>,
    pub agent_id: Option<i64>,
    /// Sealed ([`crate::sync::provider::seal`]); never printed.
    pub permanent_code: Vec<u8>,
    pub authorised_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "corp_id, suite_id, app, state, corp_name, agent_id, permanent_code, authorised_at, cancelled_at";

/// What an authorisation stores.
pub struct Authorisation<'a> {
    pub corp_id: &'a str,
    pub suite_id: &'a str,
    pub app: &'a str,
    pub corp_name: Option<&'a str>,
    pub agent_id: Option<i64>,
    pub sealed_code: &'a [u8],
    pub auth_info: &'a serde_json::Value,
}

/// Stores an authorisation (`create_auth`, `reset_permanent_code`): a corp that had cancelled is authorised
/// again, with a fresh start for its deletion marks.
pub async fn authorise(pool: &PgPool, a: &Authorisation<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wecom_provider_corps (corp_id, suite_id, app, state, corp_name, agent_id, permanent_code, auth_info) \
         VALUES ($1, $2, $3, 'authorised', $4, $5, $6, $7) \
         ON CONFLICT (corp_id, suite_id) DO UPDATE SET app = EXCLUDED.app, state = 'authorised', \
           corp_name = COALESCE(EXCLUDED.corp_name, wecom_provider_corps.corp_name), \
           agent_id = COALESCE(EXCLUDED.agent_id, wecom_provider_corps.agent_id), \
           permanent_code = EXCLUDED.permanent_code, auth_info = EXCLUDED.auth_info, updated_at = now(), \
           authorised_at = CASE WHEN wecom_provider_corps.state = 'cancelled' THEN now() \
                                ELSE wecom_provider_corps.authorised_at END, \
           cancelled_at = NULL, rows_deleted_at = NULL, events_deleted_at = NULL",
    )
    .bind(a.corp_id)
    .bind(a.suite_id)
    .bind(a.app)
    .bind(a.corp_name)
    .bind(a.agent_id)
    .bind(a.sealed_code)
    .bind(a.auth_info)
    .execute(pool)
    .await?;
    Ok(())
}

/// Refreshes an authorised corp's info (`change_auth`).
pub async fn refresh_info(
    pool: &PgPool,
    suite_id: &str,
    corp_id: &str,
    corp_name: Option<&str>,
    agent_id: Option<i64>,
    auth_info: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wecom_provider_corps SET corp_name = COALESCE($3, corp_name), agent_id = COALESCE($4, agent_id), \
           auth_info = $5, updated_at = now() \
         WHERE suite_id = $1 AND corp_id = $2 AND state = 'authorised'",
    )
    .bind(suite_id)
    .bind(corp_id)
    .bind(corp_name)
    .bind(agent_id)
    .bind(auth_info)
    .execute(pool)
    .await?;
    Ok(())
}

/// The corp's authorisation of the suite with this id.
pub async fn get(
    pool: &PgPool,
    suite_id: &str,
    corp_id: &str,
) -> Result<Option<Corp>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wecom_provider_corps WHERE suite_id = $1 AND corp_id = $2"
    )))
    .bind(suite_id)
    .bind(corp_id)
    .fetch_optional(pool)
    .await
}

/// Marks the corp cancelled and drops its queued jobs and cached tokens, in the applier's transaction.
pub async fn cancel(
    tx: &mut Transaction<'_, Postgres>,
    suite_id: &str,
    corp_id: &str,
) -> Result<(), sqlx::Error> {
    let app: Option<String> = sqlx::query_scalar(
        "UPDATE wecom_provider_corps SET state = 'cancelled', cancelled_at = now(), updated_at = now() \
         WHERE suite_id = $1 AND corp_id = $2 AND state = 'authorised' RETURNING app",
    )
    .bind(suite_id)
    .bind(corp_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(app) = app {
        sqlx::query("DELETE FROM wecom_jobs WHERE app = $1 AND corp_id = $2 AND status = 'queued'")
            .bind(&app)
            .bind(corp_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM wecom_access_tokens WHERE corp_id = $1")
            .bind(corp_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The corps whose authorisation is cancelled on every suite they had authorised: their synced rows are
/// deleted (or due to be), so neither the projector nor a rebuild or replay may plan rows from their events.
pub async fn cancelled_ids<'e>(
    ex: impl sqlx::PgExecutor<'e>,
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT c.corp_id FROM wecom_provider_corps c WHERE c.state = 'cancelled' \
           AND NOT EXISTS (SELECT 1 FROM wecom_provider_corps o WHERE o.corp_id = c.corp_id AND o.state = 'authorised')",
    )
    .fetch_all(ex)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Whether the corp's authorisation is cancelled on every suite it had authorised (a corp no suite knows is
/// not).
pub async fn is_cancelled(pool: &PgPool, corp_id: &str) -> Result<bool, sqlx::Error> {
    let states: Vec<(CorpState, bool)> = sqlx::query_as(
        "SELECT state, rows_deleted_at IS NOT NULL FROM wecom_provider_corps WHERE corp_id = $1",
    )
    .bind(corp_id)
    .fetch_all(pool)
    .await?;
    Ok(!states.is_empty() && states.iter().all(|(s, _)| *s == CorpState::Cancelled))
}

/// [`cancelled_ids`] among `corps`, read under a share lock on their authorisation rows and held until `tx`
/// ends: an applier planning their events in `tx` and a concurrent cancellation (`cancel_auth`, applied by
/// another applier) are serialised. The cancellation waits until this transaction commits, so what it wrote
/// is there for the purge to delete; or this waits until the cancellation commits and sees it, and plans
/// nothing. Without the lock, an applier that read "authorised" could commit its rows after the purge.
/// Corps that no suite knows (a self-built app's) have no row, take no lock and are never cancelled.
pub async fn lock_cancelled(
    tx: &mut Transaction<'_, Postgres>,
    corps: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if corps.is_empty() {
        return Ok(Default::default());
    }
    // Locked in key order, so two appliers locking overlapping corps never wait on each other in a cycle.
    let states: Vec<(String, CorpState)> = sqlx::query_as(
        "SELECT corp_id, state FROM wecom_provider_corps WHERE corp_id = ANY($1) \
         ORDER BY suite_id, corp_id FOR SHARE",
    )
    .bind(corps)
    .fetch_all(&mut **tx)
    .await?;
    let mut cancelled = std::collections::HashSet::new();
    let mut authorised = std::collections::HashSet::new();
    for (corp, state) in states {
        if state == CorpState::Cancelled {
            cancelled.insert(corp);
        } else {
            authorised.insert(corp);
        }
    }
    cancelled.retain(|c| !authorised.contains(c));
    Ok(cancelled)
}

/// After work for `corp_id` that may have overlapped its cancellation (a resync page, an enrichment job):
/// when the corp is cancelled everywhere and its rows were purged already, deletes what that work wrote
/// after the purge. Returns the rows deleted. The corp's rows are locked against a new authorisation
/// meanwhile, so a corp authorising again keeps what its new work writes.
pub async fn clear_after_cancel(pool: &PgPool, corp_id: &str) -> Result<u64, sqlx::Error> {
    let purged = |states: &[(CorpState, bool)]| {
        !states.is_empty()
            && states.iter().all(|(s, _)| *s == CorpState::Cancelled)
            && states.iter().any(|(_, deleted)| *deleted)
    };
    const STATES: &str =
        "SELECT state, rows_deleted_at IS NOT NULL FROM wecom_provider_corps WHERE corp_id = $1";
    // The common case (an authorised corp, or no provider corp at all) costs one read and no transaction.
    let states: Vec<(CorpState, bool)> =
        sqlx::query_as(STATES).bind(corp_id).fetch_all(pool).await?;
    if !purged(&states) {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let states: Vec<(CorpState, bool)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{STATES} FOR SHARE")))
            .bind(corp_id)
            .fetch_all(&mut *tx)
            .await?;
    if !purged(&states) {
        return Ok(0);
    }
    let n = delete_rows(&mut tx, corp_id).await?;
    tx.commit().await?;
    Ok(n)
}

/// Deletes every synced row of the corp ([`CORP_TABLES`]) inside `tx`; returns how many.
async fn delete_rows(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
) -> Result<u64, sqlx::Error> {
    let mut n = 0;
    for table in CORP_TABLES {
        // Table names are constants; the corp is a bind.
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE corp_id = $1"
        )))
        .bind(corp_id)
        .execute(&mut **tx)
        .await?;
        n += r.rows_affected();
    }
    Ok(n)
}

/// The corps currently authorising the suite `suite_id` (every suite when `None`): the receive ids its data
/// callback URLs accept.
pub async fn authorised_ids(
    pool: &PgPool,
    suite_id: Option<&str>,
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT corp_id FROM wecom_provider_corps WHERE state = 'authorised' \
           AND ($1::text IS NULL OR suite_id = $1)",
    )
    .bind(suite_id)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().collect())
}

/// What [`purge_due`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Corps whose synced rows were deleted.
    pub corps_rows: u64,
    /// Synced rows deleted.
    pub rows: u64,
    /// Corps whose stored events were deleted.
    pub corps_events: u64,
    /// Stored events deleted.
    pub events: u64,
    /// Events that arrived after their corp's events had been deleted, deleted in turn.
    pub late_events: u64,
}

/// Every table holding a corp's synced data, children first.
const CORP_TABLES: &[&str] = &[
    "external_contact_history",
    "external_contact_transfers",
    "external_group_chat_members",
    "external_group_chats",
    "external_contact_follows",
    "external_contacts",
    "external_corp_tags",
    "customer_identity_checks",
    "customer_identities",
    "staff",
    "departments",
    "wecom_api_observations",
    "wecom_resync_runs",
    "wecom_access_tokens",
];

/// Deletes the data of corps cancelled long enough ago: their synced rows after `rows_after`, their stored
/// events after `events_after`, and any event of theirs stored after that. A corp still authorised to another
/// suite keeps its data.
pub async fn purge_due(
    pool: &PgPool,
    rows_after: Duration,
    events_after: Duration,
) -> Result<Purged, sqlx::Error> {
    let mut purged = Purged::default();
    let due = |col: &str| {
        format!(
            "SELECT c.suite_id, c.corp_id FROM wecom_provider_corps c WHERE c.state = 'cancelled' \
               AND c.{col} IS NULL AND c.cancelled_at <= now() - make_interval(secs => $1) \
               AND NOT EXISTS (SELECT 1 FROM wecom_provider_corps o WHERE o.corp_id = c.corp_id AND o.state = 'authorised')"
        )
    };
    let rows_due: Vec<(String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(due("rows_deleted_at")))
            .bind(rows_after.as_secs_f64())
            .fetch_all(pool)
            .await?;
    for (suite_id, corp_id) in rows_due {
        let mut tx = pool.begin().await?;
        purged.rows += delete_rows(&mut tx, &corp_id).await?;
        sqlx::query(
            "UPDATE wecom_provider_corps SET rows_deleted_at = now() WHERE suite_id = $1 AND corp_id = $2",
        )
        .bind(&suite_id)
        .bind(&corp_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        purged.corps_rows += 1;
    }
    let events_due: Vec<(String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(due("events_deleted_at")))
            .bind(events_after.as_secs_f64())
            .fetch_all(pool)
            .await?;
    for (suite_id, corp_id) in events_due {
        let mut tx = pool.begin().await?;
        let r = sqlx::query("DELETE FROM wecom_events WHERE corp_id = $1")
            .bind(&corp_id)
            .execute(&mut *tx)
            .await?;
        purged.events += r.rows_affected();
        sqlx::query(
            "UPDATE wecom_provider_corps SET events_deleted_at = now() WHERE suite_id = $1 AND corp_id = $2",
        )
        .bind(&suite_id)
        .bind(&corp_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        purged.corps_events += 1;
    }
    // WeCom may still deliver a corp's events after they were deleted (a retry, a suite event in flight).
    // They plan nothing (see `cancelled_ids`) and go with the next sweep, as the corp's other events did.
    let late = sqlx::query(
        "DELETE FROM wecom_events e USING wecom_provider_corps c \
         WHERE e.corp_id = c.corp_id AND c.state = 'cancelled' AND c.events_deleted_at IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM wecom_provider_corps o WHERE o.corp_id = c.corp_id AND o.state = 'authorised')",
    )
    .execute(pool)
    .await?;
    purged.late_events = late.rows_affected();
    Ok(purged)
}

/// One row of `wecom-callback corps`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct CorpStatus {
    pub corp_id: String,
    pub suite_id: String,
    pub app: String,
    pub state: CorpState,
    pub corp_name: Option<String>,
    pub agent_id: Option<i64>,
    pub authorised_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub last_token_at: Option<DateTime<Utc>>,
    pub last_resync_at: Option<DateTime<Utc>>,
    pub last_callback_at: Option<DateTime<Utc>>,
}

/// Every corp with its last token refresh, finished resync and callback.
pub async fn list(pool: &PgPool) -> Result<Vec<CorpStatus>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.corp_id, c.suite_id, c.app, c.state, c.corp_name, c.agent_id, c.authorised_at, c.cancelled_at, \
           (SELECT max(refreshed_at) FROM wecom_access_tokens t WHERE t.corp_id = c.corp_id) AS last_token_at, \
           (SELECT max(finished_at) FROM wecom_resync_runs r WHERE r.corp_id = c.corp_id AND r.status = 'done') AS last_resync_at, \
           (SELECT max(received_at) FROM wecom_events e WHERE e.corp_id = c.corp_id) AS last_callback_at \
         FROM wecom_provider_corps c ORDER BY c.suite_id, c.corp_id",
    )
    .fetch_all(pool)
    .await
}

/// How many corps of one suite are in each state (the status page).
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct CorpCounts {
    pub suite_id: String,
    /// Authorised now.
    pub authorised: i64,
    /// Authorised now, with a valid cached access token.
    pub authorised_with_token: i64,
    /// Cancelled (`cancel_auth`).
    pub cancelled: i64,
    /// Cancelled, synced rows not deleted yet (within `delete_rows_after_secs`).
    pub rows_pending_deletion: i64,
    /// Cancelled, stored events kept for audit (within `delete_events_after_days`).
    pub events_kept: i64,
}

/// [`CorpCounts`] of every suite some corp authorised.
pub async fn counts(pool: &PgPool) -> Result<Vec<CorpCounts>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.suite_id, \
           count(*) FILTER (WHERE c.state = 'authorised') AS authorised, \
           count(*) FILTER (WHERE c.state = 'authorised' AND EXISTS ( \
             SELECT 1 FROM wecom_access_tokens t WHERE t.corp_id = c.corp_id AND t.expires_at > now())) \
             AS authorised_with_token, \
           count(*) FILTER (WHERE c.state = 'cancelled') AS cancelled, \
           count(*) FILTER (WHERE c.state = 'cancelled' AND c.rows_deleted_at IS NULL) AS rows_pending_deletion, \
           count(*) FILTER (WHERE c.state = 'cancelled' AND c.events_deleted_at IS NULL) AS events_kept \
         FROM wecom_provider_corps c GROUP BY c.suite_id ORDER BY c.suite_id",
    )
    .fetch_all(pool)
    .await
}

/// Queues a `corp_resync` job for every authorised corp with no resync finished within `interval` (and none
/// queued already). Returns how many were queued.
pub async fn queue_due_resyncs(pool: &PgPool, interval: Duration) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO wecom_jobs (kind, app, corp_id, subject) \
         SELECT 'corp_resync', c.app, c.corp_id, c.corp_id FROM wecom_provider_corps c \
         WHERE c.state = 'authorised' AND NOT EXISTS ( \
           SELECT 1 FROM wecom_resync_runs r WHERE r.corp_id = c.corp_id AND r.app = c.app \
             AND (r.status = 'running' OR r.finished_at > now() - make_interval(secs => $1))) \
         ON CONFLICT (kind, app, corp_id, subject) WHERE status = 'queued' DO NOTHING",
    )
    .bind(interval.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
