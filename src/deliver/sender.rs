//! The webhook sender: one supervised task per `[[webhooks]]` subscriber. It reads the feed after the
//! subscriber's stored cursor (with its filters), sends each entry as a signed Standard Webhooks request
//! ([`crate::deliver::sign`]) in the order [`crate::deliver::plan`] allows, retries failures with backoff and
//! jitter, and stores the cursor as deliveries complete. One replica at a time sends for a subscriber
//! (an advisory lock on a connection of its own); the others wait.
//!
//! Failing: when a subscriber's deliveries have failed for its whole give-up window (default 3 days), it is
//! marked failing (`wecom_webhook_failing{subscriber}` is 1, an error is logged, `doctor` and
//! `wecom-callback webhooks` show it). It keeps its cursor and keeps retrying at the longest backoff, so it
//! gets everything once it recovers.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::webhooks::WebhookSettings;
use crate::deliver::plan::{Window, backoff};
use crate::deliver::{guard, sign};
use crate::metrics::Metrics;
use crate::store::feed::{self, Entry, Filter, ReadError};

/// Entries read per window.
const WINDOW: i64 = 500;
/// How often an idle sender looks for new entries.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often a sender whose subscriber another replica serves tries to take over.
const STANDBY_POLL: Duration = Duration::from_secs(5);

/// Builds the subscriber's HTTP client: its timeout, no redirects (a redirect could lead to a private
/// address), and the private-address guard unless `allow_private`.
pub fn client(s: &WebhookSettings) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = crate::tls::client_builder()
        .timeout(s.timeout)
        .connect_timeout(s.timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(r) = guard::resolver(s.allow_private) {
        b = b.dns_resolver(r);
    }
    b.build()
}

/// The JSON body of one delivery: `type` (`kind.change`), `timestamp` and the entry as `data`.
pub fn body(entry: &Entry) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": format!("{}.{}", entry.kind, entry.change),
        "timestamp": entry.sequenced_at,
        "data": entry,
    }))
    .unwrap_or_default()
}

/// An error in words, with its causes but never the URL (it may carry a token).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_owned();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Sends one entry; `Err` says why it is not delivered.
async fn send(
    client: reqwest::Client,
    settings: &WebhookSettings,
    id: i64,
    body: Vec<u8>,
) -> Result<(), String> {
    guard::check_url(&settings.url, settings.allow_private)?;
    let msg_id = format!("chg_{id}");
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign::signature(&settings.secrets, &msg_id, timestamp, &body);
    let response = client
        .post(settings.url.clone())
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered HTTP {status}"))
    }
}

type Sending<'a> = Pin<Box<dyn Future<Output = (usize, Result<(), String>)> + Send + 'a>>;

/// Runs the sender of one subscriber until `token` is cancelled.
pub async fn run(
    pool: PgPool,
    settings: WebhookSettings,
    metrics: Option<Metrics>,
    token: CancellationToken,
) {
    let client = match client(&settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(subscriber = %settings.name, error = %e, "cannot build the webhook HTTP client; not delivering");
            return token.cancelled().await;
        }
    };
    // Held (not used) while this replica sends for the subscriber.
    let _lock = loop {
        match feed::lock_subscriber(&pool, &settings.name).await {
            Ok(Some(conn)) => break conn,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(subscriber = %settings.name, error = %e, "cannot take the webhook subscriber's lock; retrying")
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(STANDBY_POLL) => {}
        }
    };
    let filter = Filter {
        corps: settings.corps.clone(),
        kinds: settings.kinds.clone(),
    };
    let name = settings.name.as_str();
    loop {
        if token.is_cancelled() {
            return;
        }
        let pause = match deliver_window(&pool, &settings, &client, &filter, &metrics, &token).await
        {
            Ok(true) => Duration::ZERO,
            Ok(false) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(subscriber = name, error = %e, "webhook delivery cannot read the feed; retrying in 1 s");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Delivers one window of entries after the stored cursor; `Ok(false)` when there was nothing to send.
async fn deliver_window(
    pool: &PgPool,
    settings: &WebhookSettings,
    client: &reqwest::Client,
    filter: &Filter,
    metrics: &Option<Metrics>,
    token: &CancellationToken,
) -> Result<bool, sqlx::Error> {
    let name = settings.name.as_str();
    let sub = feed::subscriber(pool, name).await?;
    let page = match feed::read(pool, sub.position, WINDOW, filter).await {
        Ok(p) => p,
        Err(ReadError::Database(e)) => return Err(e),
        Err(ReadError::Expired { pruned_through, .. }) => {
            let error = format!(
                "entries {}..={pruned_through} were pruned (retention) before they were delivered: the receiver \
                 missed them and should resync from the tables",
                sub.position + 1
            );
            tracing::error!(subscriber = name, %error, "webhook subscriber fell behind the feed's retention");
            feed::failed(pool, name, &error, settings.give_up_after).await?;
            feed::skipped(pool, name, sub.position, pruned_through).await?;
            return Ok(true);
        }
    };
    if page.entries.is_empty() {
        if page.next > sub.position {
            feed::skipped(pool, name, sub.position, page.next).await?;
        }
        return Ok(false);
    }
    let mut window = Window::new(
        page.entries
            .iter()
            .map(|e| (e.position, e.subject_key()))
            .collect(),
        page.next,
    );
    let bodies: Vec<Vec<u8>> = page.entries.iter().map(body).collect();
    let mut sending: FuturesUnordered<Sending<'_>> = FuturesUnordered::new();
    let mut saved = sub.position;
    let mut failing = sub.failing_since.is_some();
    let mut failures = sub.failures_since.is_some();
    let gauge = metrics
        .as_ref()
        .map(|m| m.webhook_failing.with_label_values(&[name]));
    if let Some(g) = &gauge {
        g.set(i64::from(failing));
    }
    while !window.complete() {
        for i in window.ready(Instant::now(), settings.max_in_flight) {
            window.start(i);
            let (client, body, id) = (client.clone(), bodies[i].clone(), page.entries[i].id);
            sending.push(Box::pin(async move {
                (i, send(client, settings, id, body).await)
            }));
        }
        let retry = window.next_retry();
        let (i, result) = tokio::select! {
            () = token.cancelled() => return Ok(true),
            Some(done) = sending.next(), if !sending.is_empty() => done,
            () = sleep_until(retry), if sending.is_empty() => continue,
        };
        match result {
            Ok(()) => {
                window.delivered(i);
                if let Some(m) = metrics {
                    m.webhook_deliveries
                        .with_label_values(&[name, "delivered"])
                        .inc();
                }
                let cursor = window.cursor().unwrap_or(saved);
                if cursor > saved || failures {
                    if !feed::delivered(pool, name, saved, cursor).await? {
                        // A replay moved the cursor: start again from there.
                        return Ok(true);
                    }
                    saved = saved.max(cursor);
                    if failing {
                        tracing::info!(
                            subscriber = name,
                            "webhook subscriber recovered: deliveries succeed again"
                        );
                    }
                    (failing, failures) = (false, false);
                    if let Some(g) = &gauge {
                        g.set(0);
                    }
                }
            }
            Err(error) => {
                let attempts = window.attempts(i);
                let pause = backoff(
                    attempts,
                    settings.first_backoff,
                    settings.max_backoff,
                    rand::random::<f64>(),
                );
                window.failed(i, Instant::now() + pause);
                if let Some(m) = metrics {
                    m.webhook_deliveries
                        .with_label_values(&[name, "failed"])
                        .inc();
                }
                tracing::warn!(subscriber = name, change_id = page.entries[i].id, attempts, %error,
                    retry_in_ms = pause.as_millis() as u64, "webhook delivery failed; retrying");
                let now_failing = feed::failed(pool, name, &error, settings.give_up_after).await?;
                failures = true;
                if now_failing && !failing {
                    tracing::error!(subscriber = name, %error, give_up_after_s = settings.give_up_after.as_secs(),
                        "webhook subscriber marked failing: deliveries have failed for its whole give-up window; \
                         it keeps its cursor and keeps retrying (see `wecom-callback webhooks`)");
                    if let Some(g) = &gauge {
                        g.set(1);
                    }
                }
                failing = now_failing;
            }
        }
    }
    if page.next > saved {
        feed::delivered(pool, name, saved, page.next).await?;
    }
    Ok(true)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
