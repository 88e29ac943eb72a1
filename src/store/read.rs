//! Read queries behind the JSON API. They read the same tables and views as the documented SQL contract.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::FollowStatus;

/// One follow relation as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Follow {
    pub corp_id: String,
    pub userid: String,
    pub external_userid: String,
    pub status: FollowStatus,
    pub state: Option<String>,
    pub added_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub delete_source: Option<String>,
    pub transfer_fail_reason: Option<String>,
    pub transfer_fail_at: Option<DateTime<Utc>>,
    pub remark: Option<String>,
    pub description: Option<String>,
    pub tags: Option<serde_json::Value>,
    pub last_change_type: String,
    pub last_event_at: DateTime<Utc>,
}

/// A customer (external contact) as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Contact {
    pub corp_id: String,
    pub external_userid: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub name: Option<String>,
    pub avatar: Option<String>,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: Option<i16>,
    pub gender: Option<i16>,
    pub unionid: Option<String>,
    pub position: Option<String>,
    pub corp_name: Option<String>,
    pub corp_full_name: Option<String>,
    pub external_profile: Option<serde_json::Value>,
    pub detail_synced_at: Option<DateTime<Utc>>,
}

/// One entry of a customer's timeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TimelineEntry {
    /// The history row's id: the paging cursor's tie-breaker, not part of the answer.
    #[serde(skip)]
    pub id: i64,
    pub event_id: i64,
    pub userid: Option<String>,
    pub change_type: String,
    pub event_time: DateTime<Utc>,
    pub details: serde_json::Value,
}

const FOLLOW_COLUMNS: &str = "corp_id, userid, external_userid, status, state, added_at, deleted_at, \
    delete_source, transfer_fail_reason, transfer_fail_at, remark, description, tags, last_change_type, last_event_at";

/// A staff member's customers with the given status, ordered by external_userid, after the cursor.
pub async fn staff_customers(
    pool: &PgPool,
    corp_id: &str,
    userid: &str,
    status: FollowStatus,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Follow>, sqlx::Error> {
    // Only constant SQL fragments are interpolated; every value is a bind.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FOLLOW_COLUMNS} FROM external_contact_follows \
         WHERE corp_id = $1 AND userid = $2 AND status = $3 AND ($4::text IS NULL OR external_userid > $4) \
         ORDER BY external_userid LIMIT $5"
    )))
    .bind(corp_id)
    .bind(userid)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A customer and all of their follow relations, or `None` when unknown.
pub async fn customer(
    pool: &PgPool,
    corp_id: &str,
    external_userid: &str,
) -> Result<Option<(Contact, Vec<Follow>)>, sqlx::Error> {
    let contact: Option<Contact> = sqlx::query_as(
        "SELECT corp_id, external_userid, first_seen_at, last_event_at, name, avatar, type, gender, unionid, \
                position, corp_name, corp_full_name, external_profile, detail_synced_at \
         FROM external_contacts WHERE corp_id = $1 AND external_userid = $2",
    )
    .bind(corp_id)
    .bind(external_userid)
    .fetch_optional(pool)
    .await?;
    let Some(contact) = contact else {
        return Ok(None);
    };
    // Only constant SQL fragments are interpolated; every value is a bind.
    let follows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FOLLOW_COLUMNS} FROM external_contact_follows \
         WHERE corp_id = $1 AND external_userid = $2 ORDER BY userid"
    )))
    .bind(corp_id)
    .bind(external_userid)
    .fetch_all(pool)
    .await?;
    Ok(Some((contact, follows)))
}

/// A customer's timeline in event-time order, after the cursor `(event_time, history id)`.
pub async fn timeline(
    pool: &PgPool,
    corp_id: &str,
    external_userid: &str,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, userid, change_type, event_time, details FROM external_contact_history \
         WHERE corp_id = $1 AND kind = 'contact' AND subject_id = $2 \
           AND ($3::timestamptz IS NULL OR (event_time, id) > ($3, $4)) \
         ORDER BY event_time, id LIMIT $5",
    )
    .bind(corp_id)
    .bind(external_userid)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1).unwrap_or(0))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One stored event, summarised for listing.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventSummary {
    pub id: i64,
    pub app: String,
    pub corp_id: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub msg_type: Option<String>,
    pub event: Option<String>,
    pub change_type: Option<String>,
    /// Whether the projector has applied it (it is no longer in `wecom_events_pending`).
    pub applied: bool,
    pub dedupe_key: String,
}

/// Which events to list or replay. `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub app: Option<String>,
    pub corp_id: Option<String>,
    pub event: Option<String>,
    pub change_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub ids: Option<Vec<i64>>,
}

const FILTER: &str = "($1::text IS NULL OR app = $1) AND ($2::text IS NULL OR corp_id = $2) \
    AND ($3::text IS NULL OR event = $3) AND ($4::text IS NULL OR change_type = $4) \
    AND ($5::timestamptz IS NULL OR received_at >= $5) AND ($6::timestamptz IS NULL OR received_at < $6) \
    AND ($7::bigint[] IS NULL OR id = ANY($7))";

/// Binds `f` to the parameters $1 to $7 of [`FILTER`], in order, on the query `$q`.
macro_rules! bind_filter {
    ($q:expr, $f:expr) => {
        $q.bind(&$f.app)
            .bind(&$f.corp_id)
            .bind(&$f.event)
            .bind(&$f.change_type)
            .bind($f.since)
            .bind($f.until)
            .bind(&$f.ids)
    };
}

/// Stored events matching the filter, newest first.
pub async fn list_events(
    pool: &PgPool,
    f: &EventFilter,
    limit: i64,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    // Only constant SQL fragments are interpolated; every value is a bind.
    bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, app, corp_id, event_time, received_at, msg_type, event, change_type, \
                 NOT EXISTS (SELECT 1 FROM wecom_events_pending q WHERE q.id = wecom_events.id) AS applied, dedupe_key \
             FROM wecom_events WHERE {FILTER} ORDER BY id DESC LIMIT $8"
        ))),
        f
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many stored events match the filter (for a replay's progress), inside `tx`.
pub(crate) async fn count_events(
    tx: &mut Transaction<'_, Postgres>,
    f: &EventFilter,
) -> Result<i64, sqlx::Error> {
    bind_filter!(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM wecom_events WHERE {FILTER}"
        ))),
        f
    )
    .fetch_one(&mut **tx)
    .await
}

/// The next `limit` matching events with an id above `after`, in id order (keyset paging, so a replay of
/// millions of events reads each once with an index range scan), locked for applying; rows a concurrent
/// applier holds are skipped (it is applying them).
pub(crate) async fn events_after(
    tx: &mut Transaction<'_, Postgres>,
    f: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<crate::store::projections::Unapplied>, sqlx::Error> {
    // Only constant SQL fragments are interpolated; every value is a bind.
    bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, app, dedupe_key, corp_id, extract(epoch FROM event_time)::bigint AS t, message \
             FROM wecom_events WHERE {FILTER} AND id > $8 ORDER BY id LIMIT $9 FOR UPDATE SKIP LOCKED"
        ))),
        f
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}
