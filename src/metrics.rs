//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! Gauges that describe the database or the spool (`wecom_apply_pending_events`, `wecom_apply_held_events`,
//! `wecom_jobs_queued`,
//! `wecom_jobs_dead`, `wecom_spool_bytes`) are computed at scrape time by [`Metrics::gather`], never set by the
//! tasks doing the work: a task that died would otherwise leave its last, reassuring value behind.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use sqlx::PgPool;

use crate::ingest::spool::Spool;
use crate::store::{jobs, projections};

/// How long a scrape waits for the database-derived gauges before answering with their last values.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric the service exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Callbacks by app and outcome (`stored`, `duplicate`, `spooled`, `bad_signature`, `decrypt_error`,
    /// `receive_id_mismatch`, `stale_timestamp`, `too_large`, `db_unavailable`, `spool_full`, ...).
    pub callbacks: IntCounterVec,
    /// Seconds from request start to answer, by app and method.
    pub latency: HistogramVec,
    /// Bytes waiting in the spool (set at scrape time by [`Metrics::gather`]).
    pub spool_bytes: IntGauge,
    /// Stored events not yet applied to the synced tables (set at scrape time by [`Metrics::gather`]).
    pub apply_pending: IntGauge,
    /// Of those, events held back because the tables refused them (set at scrape time).
    pub apply_held: IntGauge,
    /// Jobs waiting, and dead jobs waiting for an operator (set at scrape time by [`Metrics::gather`]).
    pub jobs_queued: IntGauge,
    pub jobs_dead: IntGauge,
    /// Restarts of background tasks after a panic, by task (see [`crate::tasks`]).
    pub task_restarts: IntCounterVec,
    /// Failed job runs by kind.
    pub job_failures: IntCounterVec,
    /// WeCom API error answers by errcode.
    pub api_errors: IntCounterVec,
    /// Access tokens fetched from WeCom.
    pub token_refreshes: IntCounter,
    /// What full resyncs changed, by table and change (created, updated, removed).
    pub resync_drift: IntCounterVec,
    /// Webhook delivery attempts by subscriber and outcome (`delivered`, `failed`).
    pub webhook_deliveries: IntCounterVec,
    /// 1 while a webhook subscriber is marked failing (retries failed for its whole give-up window).
    pub webhook_failing: prometheus::IntGaugeVec,
    /// Change feed entries sequenced (moved from staging into the feed) by this process.
    pub feed_sequenced: IntCounter,
    /// Service providers: corp authorisation changes, by event (`authorised`, `refreshed`, `cancelled`,
    /// `rows_deleted`, `events_deleted`).
    pub provider_corps: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric. Names and labels are constants, so construction cannot fail on
    /// any input.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("wecom".into()), None).unwrap_or_else(|_| Registry::new());
        let callbacks = IntCounterVec::new(
            Opts::new("callbacks_total", "Callbacks received, by app and outcome"),
            &["app", "outcome"],
        )
        .expect("a valid metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "callback_duration_seconds",
                "Time from request start to answer",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 4.0, 4.5,
            ]),
            &["app", "method"],
        )
        .expect("a valid metric definition");
        let spool_bytes = IntGauge::new("spool_bytes", "Bytes waiting in the spool")
            .expect("a valid metric definition");
        let apply_pending = IntGauge::new(
            "apply_pending_events",
            "Stored events not yet applied to the synced tables",
        )
        .expect("a valid metric definition");
        let apply_held = IntGauge::new(
            "apply_held_events",
            "Unapplied events held back because the synced tables refused them (see the status page)",
        )
        .expect("a valid metric definition");
        let jobs_queued = IntGauge::new("jobs_queued", "WeCom API jobs waiting")
            .expect("a valid metric definition");
        let jobs_dead = IntGauge::new("jobs_dead", "WeCom API jobs that failed for good")
            .expect("a valid metric definition");
        let job_failures = IntCounterVec::new(
            Opts::new("job_failures_total", "Failed WeCom API job runs"),
            &["kind"],
        )
        .expect("a valid metric definition");
        let api_errors = IntCounterVec::new(
            Opts::new("api_errors_total", "WeCom API error answers by errcode"),
            &["errcode"],
        )
        .expect("a valid metric definition");
        let token_refreshes =
            IntCounter::new("token_refreshes_total", "Access tokens fetched from WeCom")
                .expect("a valid metric definition");
        let resync_drift = IntCounterVec::new(
            Opts::new(
                "resync_drift_total",
                "Rows a full resync created, updated or removed",
            ),
            &["table", "change"],
        )
        .expect("a valid metric definition");
        let provider_corps = IntCounterVec::new(
            Opts::new(
                "provider_corps_total",
                "Authorising corps authorised, refreshed, cancelled and purged, by event",
            ),
            &["event"],
        )
        .expect("a valid metric definition");
        let task_restarts = IntCounterVec::new(
            Opts::new(
                "background_task_restarts_total",
                "Restarts of background tasks after a panic or an unexpected end, by task",
            ),
            &["task"],
        )
        .expect("a valid metric definition");
        let webhook_deliveries = IntCounterVec::new(
            Opts::new(
                "webhook_deliveries_total",
                "Webhook delivery attempts, by subscriber and outcome (delivered, failed)",
            ),
            &["subscriber", "outcome"],
        )
        .expect("a valid metric definition");
        let webhook_failing = prometheus::IntGaugeVec::new(
            Opts::new(
                "webhook_failing",
                "1 while a webhook subscriber's deliveries have failed for its whole give-up window",
            ),
            &["subscriber"],
        )
        .expect("a valid metric definition");
        let feed_sequenced = IntCounter::new(
            "feed_sequenced_total",
            "Change feed entries moved from staging into the feed by this process",
        )
        .expect("a valid metric definition");
        for m in [
            Box::new(webhook_deliveries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(webhook_failing.clone()),
            Box::new(feed_sequenced.clone()),
        ] {
            let _ = registry.register(m);
        }
        for m in [
            Box::new(jobs_queued.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(jobs_dead.clone()),
            Box::new(job_failures.clone()),
            Box::new(api_errors.clone()),
            Box::new(token_refreshes.clone()),
            Box::new(resync_drift.clone()),
            Box::new(provider_corps.clone()),
            Box::new(task_restarts.clone()),
        ] {
            let _ = registry.register(m);
        }
        for m in [
            Box::new(callbacks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(spool_bytes.clone()),
            Box::new(apply_pending.clone()),
            Box::new(apply_held.clone()),
        ] {
            // Names are constants and distinct, so registration cannot collide.
            let _ = registry.register(m);
        }
        Metrics {
            registry,
            callbacks,
            latency,
            spool_bytes,
            apply_pending,
            apply_held,
            jobs_queued,
            jobs_dead,
            task_restarts,
            job_failures,
            api_errors,
            token_refreshes,
            resync_drift,
            webhook_deliveries,
            webhook_failing,
            feed_sequenced,
            provider_corps,
        }
    }

    /// Counts one callback outcome.
    pub fn outcome(&self, app: &str, outcome: crate::ingest::Outcome) {
        self.callbacks
            .with_label_values(&[app, outcome.as_str()])
            .inc();
    }

    /// Sets the gauges derived from the database and the spool, for a scrape. A query that fails or takes
    /// longer than 2 s leaves its gauge at its last value: a scrape never fails because of it.
    pub async fn gather(&self, pool: &PgPool, spool: Option<&Spool>) {
        if let Some(spool) = spool {
            self.spool_bytes
                .set(i64::try_from(spool.bytes()).unwrap_or(i64::MAX));
        }
        let queries =
            futures_util::future::join(projections::pending_and_held(pool), jobs::depth(pool));
        match tokio::time::timeout(GATHER_TIMEOUT, queries).await {
            Ok((pending, depth)) => {
                match pending {
                    Ok((n, held)) => {
                        self.apply_pending.set(n);
                        self.apply_held.set(held);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot count pending events for /metrics; keeping the last value")
                    }
                }
                match depth {
                    Ok((queued, dead)) => {
                        self.jobs_queued.set(queued);
                        self.jobs_dead.set(dead);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot count jobs for /metrics; keeping the last values")
                    }
                }
            }
            Err(_) => tracing::debug!(
                "the database did not answer the /metrics queries within 2 s; keeping the last values"
            ),
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
