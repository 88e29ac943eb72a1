//! Change feed and webhook benchmark: stages synthetic changes at a fixed rate into a scratch database (as
//! the appliers do, in small transactions), runs the feed's sequencer and one webhook sender against a local
//! receiver, and reports changes per second delivered and the latency from commit to delivery (p50/p99).
//!
//! ```text
//! cargo run --release --example feed_bench -- --database-url postgres://postgres@127.0.0.1:5432/wecom_feed_bench \
//!     --rate 1000 --seconds 20
//! ```
//! `--rate 0` stages as fast as it can (throughput). The database must exist (scripts/feed-bench makes one).

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wecom_callback::config::webhooks::{FeedSettings, WebhookSettings};
use wecom_callback::deliver::sign::Secret;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Changes staged per second (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Distinct subjects (one subject's changes are delivered in order, one at a time).
    #[arg(long, default_value_t = 10_000)]
    subjects: u64,
    #[arg(long, default_value_t = 16)]
    max_in_flight: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    wecom_callback::tls::install_provider();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&args.database_url)
        .await?;
    wecom_callback::store::migrate(&pool).await?;
    // The receiver records when each delivery arrived and its entry's commit (staged_at) time.
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let recorded = latencies.clone();
    let server = HttpServer::new(move || {
        let recorded = recorded.clone();
        App::new().route(
            "/hook",
            web::post().to(move |body: web::Bytes| {
                let recorded = recorded.clone();
                async move {
                    let now = chrono::Utc::now();
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                        && let Some(staged) = v["data"]["staged_at"].as_str()
                        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(staged)
                    {
                        let ms = (now - t.with_timezone(&chrono::Utc))
                            .num_microseconds()
                            .unwrap_or(0) as f64
                            / 1000.0;
                        recorded.lock().unwrap_or_else(|p| p.into_inner()).push(ms);
                    }
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(2)
    .disable_signals()
    .listen(listener)?
    .run();
    tokio::spawn(server);

    let token = CancellationToken::new();
    let secret = Secret::parse(&Secret::generate())?;
    let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/hook"))?;
    let hook = WebhookSettings {
        allow_private: true,
        max_in_flight: args.max_in_flight,
        ..WebhookSettings::new("bench", url, vec![secret])
    };
    // The subscriber starts at the head: create it before staging.
    wecom_callback::store::feed::subscriber(&pool, "bench").await?;
    tokio::spawn(wecom_callback::deliver::sequencer::run(
        pool.clone(),
        FeedSettings::default(),
        None,
        token.clone(),
    ));
    tokio::spawn(wecom_callback::deliver::sender::run(
        pool.clone(),
        hook,
        None,
        token.clone(),
    ));

    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = if args.rate == 0 {
        200
    } else {
        (args.rate / 100).max(1)
    };
    let mut staged: u64 = 0;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let t0 = Instant::now();
        sqlx::query(
            "INSERT INTO wecom_change_staging (corp_id, kind, subject, change, source, data) \
             SELECT 'wwBENCH', 'contact', 'wm' || ((i + $1) % $3), 'edit_external_contact', 'event', '{}'::jsonb \
             FROM generate_series(1, $2) AS i",
        )
        .bind(staged as i64)
        .bind(per_tick as i64)
        .bind(args.subjects.max(1) as i64)
        .execute(&pool)
        .await?;
        staged += per_tick;
        if args.rate > 0 {
            tokio::time::sleep(tick.saturating_sub(t0.elapsed())).await;
        }
    }
    let staging_took = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (latencies.lock().unwrap_or_else(|p| p.into_inner()).len() as u64) < staged
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    token.cancel();
    let mut l = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "staged {staged} changes in {:.1} s ({:.0}/s); delivered {} in {:.1} s ({:.0}/s)",
        staging_took.as_secs_f64(),
        staged as f64 / staging_took.as_secs_f64(),
        l.len(),
        total.as_secs_f64(),
        l.len() as f64 / total.as_secs_f64()
    );
    println!(
        "commit → delivery latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
