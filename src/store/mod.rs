//! PostgreSQL: connecting, migrating, and writing events. The only module that writes SQL.
//!
//! [`insert_events`] writes a whole batch in one multi-row statement; the group-commit writer that gathers
//! the batches is [`crate::ingest::writer`].

use std::collections::HashSet;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::config::DatabaseSettings;
use crate::wecom::verify::VerifiedCallback;

pub mod corps;
pub mod directory;
pub mod enrichment;
pub mod feed;
pub mod identity;
pub mod jobs;
pub mod limits;
pub mod observations;
pub mod projections;
pub mod read;
pub mod rebuild;
pub mod resync;
pub mod status;
pub mod suites;
pub mod sweeps;
pub mod tokens;

/// Embedded migrations (migrations/).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A database failure, worded for operators.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the event writer has stopped (the service is shutting down)")]
    WriterStopped,
    #[error("the write queue is full: the database is not keeping up")]
    QueueFull,
}

/// One row of `wecom_events`, ready to insert.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub app: String,
    pub dedupe_key: String,
    pub receive_id: String,
    pub corp_id: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub msg_type: Option<String>,
    pub event: Option<String>,
    pub info_type: Option<String>,
    pub change_type: Option<String>,
    pub message: String,
    pub fields: serde_json::Value,
    pub req_timestamp: String,
    pub req_nonce: String,
    pub msg_signature: String,
    /// When the callback arrived, if not now (events drained from the spool keep their arrival time).
    pub received_at: Option<DateTime<Utc>>,
}

impl From<&VerifiedCallback> for NewEvent {
    fn from(cb: &VerifiedCallback) -> Self {
        let m = cb.message();
        let owned = |v: Option<&str>| v.map(str::to_owned);
        NewEvent {
            app: cb.app().to_owned(),
            dedupe_key: cb.dedupe_key().to_owned(),
            receive_id: cb.receive_id().to_owned(),
            corp_id: owned(m.corp_id()),
            event_time: m
                .event_time()
                .and_then(|t| Utc.timestamp_opt(t, 0).single()),
            msg_type: owned(m.msg_type()),
            event: owned(m.event()),
            info_type: owned(m.info_type()),
            change_type: owned(m.change_type()),
            message: cb.raw_message().to_owned(),
            fields: serde_json::Value::Object(m.fields().clone()),
            req_timestamp: cb.query().timestamp.clone(),
            req_nonce: cb.query().nonce.clone(),
            msg_signature: cb.query().msg_signature.clone(),
            received_at: None,
        }
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// A new row was committed.
    Stored,
    /// An identical message was already stored: nothing was added.
    Duplicate,
}

/// Connects a pool to the configured database. Connections are opened lazily, so this succeeds while the
/// database is down; requests then fail fast (acquire timeout) instead of hanging.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options = settings
        .connect_options()?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, settings.slow_statement);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        // No ping before every use: it costs a round trip per batch. A connection broken by a database
        // restart fails one batch, whose requests retry within their deadline on a fresh connection.
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Creates the configured database if it does not exist yet (connecting to the `postgres` database to do so).
pub async fn ensure_database_exists(settings: &DatabaseSettings) -> Result<(), StoreError> {
    let options = settings.connect_options()?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    match PgConnectOptions::connect(&options).await {
        Ok(conn) => {
            conn.close().await?;
            return Ok(());
        }
        // 3D000 invalid_catalog_name: the database does not exist.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => return Err(e.into()),
    }
    let mut admin = options.clone().database("postgres").connect().await?;
    // An identifier cannot be a bind parameter; quote it (doubling any '"') instead.
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match admin.execute(sqlx::AssertSqlSafe(create)).await {
        Ok(_) => tracing::info!(database = %name, "created the database"),
        // 42P04 duplicate_database: another replica created it first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        Err(e) => return Err(e.into()),
    }
    admin.close().await?;
    Ok(())
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Ready means: the database answers and every embedded migration is applied.
pub async fn readiness(pool: &PgPool) -> Result<(), String> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| format!("database: {e}"))?;
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "migrations not applied: {missing:?}; run `wecom-callback migrate`"
        ))
    }
}

/// Inserts events in one statement (and so one commit). Returns, per input row, whether it was new.
pub async fn insert_events(pool: &PgPool, events: &[&NewEvent]) -> Result<Vec<bool>, sqlx::Error> {
    let n = events.len();
    let mut app = Vec::with_capacity(n);
    let mut dedupe_key = Vec::with_capacity(n);
    let mut receive_id = Vec::with_capacity(n);
    let mut corp_id = Vec::with_capacity(n);
    let mut event_time = Vec::with_capacity(n);
    let mut msg_type = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    let mut info_type = Vec::with_capacity(n);
    let mut change_type = Vec::with_capacity(n);
    let mut message = Vec::with_capacity(n);
    let mut fields = Vec::with_capacity(n);
    let mut req_timestamp = Vec::with_capacity(n);
    let mut req_nonce = Vec::with_capacity(n);
    let mut msg_signature = Vec::with_capacity(n);
    let mut received_at = Vec::with_capacity(n);
    for e in events {
        app.push(e.app.as_str());
        dedupe_key.push(e.dedupe_key.as_str());
        receive_id.push(e.receive_id.as_str());
        corp_id.push(e.corp_id.as_deref());
        event_time.push(e.event_time);
        msg_type.push(e.msg_type.as_deref());
        event.push(e.event.as_deref());
        info_type.push(e.info_type.as_deref());
        change_type.push(e.change_type.as_deref());
        message.push(e.message.as_str());
        fields.push(e.fields.to_string());
        req_timestamp.push(e.req_timestamp.as_str());
        req_nonce.push(e.req_nonce.as_str());
        msg_signature.push(e.msg_signature.as_str());
        received_at.push(e.received_at);
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO wecom_events (app, dedupe_key, receive_id, corp_id, event_time, msg_type, event, \
             info_type, change_type, message, fields, req_timestamp, req_nonce, msg_signature, received_at) \
         SELECT app, dedupe_key, receive_id, corp_id, event_time, msg_type, event, info_type, change_type, \
             message, fields::jsonb, req_timestamp, req_nonce, msg_signature, COALESCE(received_at, now()) \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
             $14::text[], $15::timestamptz[]) \
           AS t(app, dedupe_key, receive_id, corp_id, event_time, msg_type, event, info_type, change_type, \
             message, fields, req_timestamp, req_nonce, msg_signature, received_at) \
         ON CONFLICT (app, dedupe_key) DO NOTHING \
         RETURNING app, dedupe_key",
    )
    .bind(&app)
    .bind(&dedupe_key)
    .bind(&receive_id)
    .bind(&corp_id)
    .bind(&event_time)
    .bind(&msg_type)
    .bind(&event)
    .bind(&info_type)
    .bind(&change_type)
    .bind(&message)
    .bind(&fields)
    .bind(&req_timestamp)
    .bind(&req_nonce)
    .bind(&msg_signature)
    .bind(&received_at)
    .fetch_all(pool)
    .await?;

    // A batch may hold the same message twice (two concurrent retries): only the first one counts as new.
    let mut new: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(events
        .iter()
        .map(|e| new.remove(&(e.app.clone(), e.dedupe_key.clone())))
        .collect())
}

/// Waits up to `timeout` for the database to answer, for start-up.
pub async fn wait_until_reachable(pool: &PgPool, timeout: Duration) -> Result<(), sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The URL with any password hidden, for log lines.
pub fn describe(settings: &DatabaseSettings) -> String {
    crate::config::redact_url(settings.url.expose_secret())
}
