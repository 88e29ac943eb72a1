//! What the operator's view reads and records: callback outcomes per minute, the last URL verification per
//! app, and read-only summaries of the other tables (events, projector lag, jobs, resync runs, tokens).
//!
//! Nothing here returns a secret, a token or decrypted content: the status page shows these rows as they are.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Outcome counts of one app in one minute, as accumulated by a replica before a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCount {
    pub app: String,
    pub minute: DateTime<Utc>,
    pub outcome: String,
    pub count: i64,
}

/// One URL verification attempt (GET `/callback/{app}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Verification {
    pub app: String,
    pub attempted_at: DateTime<Utc>,
    /// `url_verified`, or the rejection class (`bad_signature`, `decrypt_error`, ...).
    pub outcome: String,
    /// WeCom's callback error code (-40001 ...) of a rejection, when it has one.
    pub wecom_code: Option<i32>,
    /// What failed, in words.
    pub reason: Option<String>,
    /// The last attempt that passed (the newest known; [`record_verification`] keeps the later of the
    /// recorded and the given one).
    pub last_ok_at: Option<DateTime<Utc>>,
}

/// Adds per-minute counts (one statement; replicas add to the same rows) and prunes rows older than two
/// days, which nothing shows.
pub async fn add_outcomes(pool: &PgPool, counts: &[OutcomeCount]) -> Result<(), sqlx::Error> {
    if counts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO wecom_callback_outcomes (app, minute, outcome, count) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::bigint[]) \
         ON CONFLICT (app, minute, outcome) \
         DO UPDATE SET count = wecom_callback_outcomes.count + EXCLUDED.count",
    )
    .bind(counts.iter().map(|c| c.app.as_str()).collect::<Vec<_>>())
    .bind(counts.iter().map(|c| c.minute).collect::<Vec<_>>())
    .bind(
        counts
            .iter()
            .map(|c| c.outcome.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(counts.iter().map(|c| c.count).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM wecom_callback_outcomes WHERE minute < now() - interval '2 days'")
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a verification attempt unless a newer one is already recorded (another replica's).
pub async fn record_verification(pool: &PgPool, v: &Verification) -> Result<(), sqlx::Error> {
    let ok = v.outcome == "url_verified";
    sqlx::query(
        "INSERT INTO wecom_url_verifications (app, attempted_at, outcome, wecom_code, reason, last_ok_at) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN $2 ELSE $7 END) \
         ON CONFLICT (app) DO UPDATE SET attempted_at = EXCLUDED.attempted_at, outcome = EXCLUDED.outcome, \
             wecom_code = EXCLUDED.wecom_code, reason = EXCLUDED.reason, \
             last_ok_at = GREATEST(EXCLUDED.last_ok_at, wecom_url_verifications.last_ok_at) \
         WHERE wecom_url_verifications.attempted_at <= EXCLUDED.attempted_at",
    )
    .bind(&v.app)
    .bind(v.attempted_at)
    .bind(&v.outcome)
    .bind(v.wecom_code)
    .bind(&v.reason)
    .bind(ok)
    .bind(v.last_ok_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The last verification attempt of every app that had one.
pub async fn verifications(pool: &PgPool) -> Result<Vec<Verification>, sqlx::Error> {
    sqlx::query_as(
        "SELECT app, attempted_at, outcome, wecom_code, reason, last_ok_at FROM wecom_url_verifications \
         ORDER BY app",
    )
    .fetch_all(pool)
    .await
}

/// Callbacks of one app by outcome over the last hour and the last day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OutcomeTotals {
    pub app: String,
    pub outcome: String,
    pub last_hour: i64,
    pub last_day: i64,
}

/// Outcome totals over the last hour and day, per app and outcome.
pub async fn outcome_totals(pool: &PgPool) -> Result<Vec<OutcomeTotals>, sqlx::Error> {
    sqlx::query_as(
        "SELECT app, outcome, \
             COALESCE(sum(count) FILTER (WHERE minute >= date_trunc('minute', now()) - interval '59 minutes'), 0)::bigint AS last_hour, \
             sum(count)::bigint AS last_day \
         FROM wecom_callback_outcomes WHERE minute >= date_trunc('minute', now()) - interval '1439 minutes' \
         GROUP BY app, outcome ORDER BY app, outcome",
    )
    .fetch_all(pool)
    .await
}

/// One hour of one app's chart: callbacks acknowledged (stored, duplicate, spooled, unknown type), refused
/// (every rejection and 503), and URL verifications (passed or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HourBucket {
    pub app: String,
    /// The start of the hour.
    pub hour: DateTime<Utc>,
    pub acknowledged: i64,
    pub refused: i64,
}

/// Per-hour acknowledged and refused counts over the last 24 hours (hours without callbacks are absent).
pub async fn hourly(pool: &PgPool) -> Result<Vec<HourBucket>, sqlx::Error> {
    sqlx::query_as(
        "SELECT app, date_trunc('hour', minute) AS hour, \
             COALESCE(sum(count) FILTER (WHERE outcome IN ('stored', 'duplicate', 'spooled', 'unknown_type')), 0)::bigint AS acknowledged, \
             COALESCE(sum(count) FILTER (WHERE outcome NOT IN ('stored', 'duplicate', 'spooled', 'unknown_type', 'url_verified')), 0)::bigint AS refused \
         FROM wecom_callback_outcomes WHERE minute >= date_trunc('hour', now()) - interval '23 hours' \
         GROUP BY app, hour ORDER BY app, hour",
    )
    .fetch_all(pool)
    .await
}

/// Stored events of one app: the last received, the total, and what the projector has not applied yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EventSummary {
    pub app: String,
    pub total: i64,
    pub last_received_at: Option<DateTime<Utc>>,
    /// The `event` (or `msg_type`) of the last stored callback.
    pub last_kind: Option<String>,
    /// Stored events not yet applied to the synced tables.
    pub unapplied: i64,
    /// When the oldest of those arrived: the projector's lag is now minus this.
    pub oldest_unapplied_at: Option<DateTime<Utc>>,
    /// Of the unapplied, those held back because the tables refused them (see
    /// [`crate::store::projections::hold`]).
    pub held: i64,
    /// The oldest held event, and why it was refused.
    pub held_event_id: Option<i64>,
    pub held_error: Option<String>,
}

/// Event summaries per app.
pub async fn events(pool: &PgPool) -> Result<Vec<EventSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.app, count(*) AS total, max(e.received_at) AS last_received_at, \
             (SELECT COALESCE(l.event, l.msg_type) FROM wecom_events l WHERE l.app = e.app \
              ORDER BY l.id DESC LIMIT 1) AS last_kind, \
             count(q.id) AS unapplied, \
             min(e.received_at) FILTER (WHERE q.id IS NOT NULL) AS oldest_unapplied_at, \
             count(q.id) FILTER (WHERE q.held_error IS NOT NULL) AS held, \
             min(q.id) FILTER (WHERE q.held_error IS NOT NULL) AS held_event_id, \
             (SELECT h.held_error FROM wecom_events_pending h JOIN wecom_events he USING (id) \
              WHERE he.app = e.app AND h.held_error IS NOT NULL ORDER BY h.id LIMIT 1) AS held_error \
         FROM wecom_events e LEFT JOIN wecom_events_pending q ON q.id = e.id GROUP BY e.app ORDER BY e.app",
    )
    .fetch_all(pool)
    .await
}

/// Jobs of one app by status, with the most recent dead job's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JobSummary {
    pub app: String,
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
    pub last_dead_error: Option<String>,
    pub last_dead_errcode: Option<i64>,
}

/// Job summaries per app.
pub async fn jobs(pool: &PgPool) -> Result<Vec<JobSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT j.app, count(*) FILTER (WHERE j.status = 'queued') AS queued, \
             count(*) FILTER (WHERE j.status = 'running') AS running, \
             count(*) FILTER (WHERE j.status = 'dead') AS dead, \
             (SELECT d.last_error FROM wecom_jobs d WHERE d.app = j.app AND d.status = 'dead' \
              ORDER BY d.updated_at DESC LIMIT 1) AS last_dead_error, \
             (SELECT d.last_errcode FROM wecom_jobs d WHERE d.app = j.app AND d.status = 'dead' \
              ORDER BY d.updated_at DESC LIMIT 1) AS last_dead_errcode \
         FROM wecom_jobs j WHERE j.status <> 'done' GROUP BY j.app ORDER BY j.app",
    )
    .fetch_all(pool)
    .await
}

/// The last resync run of one app.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ResyncSummary {
    pub app: String,
    pub corp_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// running | done | failed
    pub status: String,
    /// What changed, per table (see [`crate::store::resync::Drift`]).
    pub drift: serde_json::Value,
    pub last_error: Option<String>,
}

/// The last resync run per app.
pub async fn last_resyncs(pool: &PgPool) -> Result<Vec<ResyncSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (app) app, corp_id, started_at, finished_at, status, drift, last_error \
         FROM wecom_resync_runs ORDER BY app, started_at DESC, id DESC",
    )
    .fetch_all(pool)
    .await
}

/// The cached access token of one (corp, secret): when it was fetched and until when it is valid. The token
/// itself is not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TokenState {
    pub corp_id: String,
    pub secret_hash: String,
    pub refreshed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Every cached token's state.
pub async fn tokens(pool: &PgPool) -> Result<Vec<TokenState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT corp_id, secret_hash, refreshed_at, expires_at FROM wecom_access_tokens ORDER BY corp_id",
    )
    .fetch_all(pool)
    .await
}

/// The most recent 60020 ("not allow to access from your ip") WeCom answered for this app, from a job or a
/// resync run: its errmsg names the egress IP WeCom saw.
pub async fn last_ip_refusal(
    pool: &PgPool,
    app: &str,
) -> Result<Option<(DateTime<Utc>, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, error FROM ( \
             SELECT updated_at AS at, last_error AS error FROM wecom_jobs \
             WHERE app = $1 AND last_errcode = 60020 AND last_error IS NOT NULL \
             UNION ALL \
             SELECT COALESCE(finished_at, started_at), last_error FROM wecom_resync_runs \
             WHERE app = $1 AND last_error LIKE '%from ip: %' \
         ) r ORDER BY at DESC LIMIT 1",
    )
    .bind(app)
    .fetch_optional(pool)
    .await
}
