//! Maintenance at scale: `rebuild` and `replay` on a log the service's `statement_timeout` would cancel.

use std::time::Duration;

use sqlx::PgPool;
use wecom_callback::store::read::EventFilter;
use wecom_callback::store::rebuild::{self, Progress};

use crate::helpers::{MAIN, build_app_with, database_url_for, test_settings};

const CORP: &str = "wx5823bf96d3bd56c7";
/// Enough events that rewriting all of them in one statement takes far longer than [`TIMEOUT`] (the old
/// rebuild and replay reset every event's applied mark in one statement).
const EVENTS: i64 = 30_000;
const TIMEOUT: Duration = Duration::from_millis(50);

/// Stores `EVENTS` synthetic, already applied events: adds of distinct customers by 50 staff, a tenth of them
/// followed (later in the log) by the customer deleting the staff member.
async fn load(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO wecom_events (app, dedupe_key, receive_id, corp_id, event_time, msg_type, event, change_type, \
             message, fields, req_timestamp, req_nonce, msg_signature) \
         SELECT 'main', md5(i::text), $1, $1, to_timestamp(1700000000 + i), 'event', 'change_external_contact', \
             CASE WHEN i > $2 THEN 'del_follow_user' ELSE 'add_external_contact' END, \
             format('<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
<CreateTime>%s</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event>\
<ChangeType><![CDATA[%s]]></ChangeType><UserID><![CDATA[u%s]]></UserID><ExternalUserID><![CDATA[wm%s]]></ExternalUserID></xml>', \
                 $1, 1700000000 + i, CASE WHEN i > $2 THEN 'del_follow_user' ELSE 'add_external_contact' END, \
                 (CASE WHEN i > $2 THEN (i - $2) * 9 ELSE i END) % 50, \
                 CASE WHEN i > $2 THEN (i - $2) * 9 ELSE i END), \
             '{}'::jsonb, '0', 'n', 's' \
         FROM generate_series(1, $3) AS i",
    )
    .bind(CORP)
    .bind(EVENTS - EVENTS / 10)
    .bind(EVENTS)
    .execute(pool)
    .await
    .expect("load events");
    // Already applied, as in a log the projector has caught up with.
    sqlx::query("DELETE FROM wecom_events_pending")
        .execute(pool)
        .await
        .expect("mark applied");
}

async fn follow_counts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'deleted_by_customer') FROM external_contact_follows",
    )
    .fetch_one(pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn rebuild_and_replay_outlast_the_statement_timeout() {
    let (app, _service) = build_app_with(&[MAIN], |_| {}).await;
    load(&app.pool).await;
    let adds = EVENTS - EVENTS / 10;

    // The service's own pool, with a deliberately low statement timeout.
    let db_name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("db");
    let mut settings = test_settings(&[MAIN], &database_url_for(&db_name));
    settings.database.statement_timeout = TIMEOUT;
    let pool = wecom_callback::store::pool(&settings.database).expect("pool");

    // What the old rebuild and replay ran first is cancelled on this pool: the test is meaningful.
    let old = sqlx::query("UPDATE wecom_events SET fields = fields")
        .execute(&pool)
        .await;
    assert!(
        matches!(&old, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014")),
        "the one-statement reset is cancelled by the timeout: {old:?}"
    );

    let mut seen = Vec::new();
    let applied = rebuild::rebuild_with(&pool, 5000, |p| seen.push(p))
        .await
        .expect("rebuild outlasts the timeout");
    assert_eq!(applied, EVENTS as u64);
    assert_eq!(
        seen.len(),
        (EVENTS as usize).div_ceil(5000),
        "one report per batch"
    );
    assert_eq!(
        seen.last(),
        Some(&Progress {
            done: EVENTS as u64,
            total: EVENTS as u64
        })
    );
    assert_eq!(follow_counts(&app.pool).await, (adds, EVENTS / 10));

    // A projection damaged by hand is repaired by a replay, batch by batch, on the same pool.
    sqlx::query("DELETE FROM external_contact_follows")
        .execute(&app.pool)
        .await
        .expect("damage");
    let applied = rebuild::replay(&pool, &EventFilter::default(), 5000, |_| {})
        .await
        .expect("replay outlasts the timeout");
    assert_eq!(applied, EVENTS as u64);
    assert_eq!(follow_counts(&app.pool).await, (adds, EVENTS / 10));

    // A filtered replay applies only what matches.
    let only_deletes = EventFilter {
        change_type: Some("del_follow_user".into()),
        ..EventFilter::default()
    };
    let applied = rebuild::replay(&pool, &only_deletes, 1000, |_| {})
        .await
        .expect("filtered replay");
    assert_eq!(applied, (EVENTS / 10) as u64);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events_pending")
        .fetch_one(&app.pool)
        .await
        .expect("pending");
    assert_eq!(pending, 0);
}

/// Stores jobs of every status, half of them updated `days` ago.
async fn jobs(pool: &PgPool, status: &str, n: i64, days: i64) {
    sqlx::query(
        "INSERT INTO wecom_jobs (kind, app, corp_id, subject, status, updated_at) \
         SELECT 'contact_detail', 'main', $1, $2 || '-' || $4 || '-' || i, $2, now() - make_interval(days => $4::int) \
         FROM generate_series(1, $3) AS i",
    )
    .bind(CORP)
    .bind(status)
    .bind(n)
    .bind(days)
    .execute(pool)
    .await
    .expect("jobs");
}

async fn job_counts(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM wecom_jobs GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
        .expect("counts")
}

#[tokio::test]
async fn done_jobs_past_their_retention_are_pruned_in_batches_and_dead_ones_kept() {
    let (app, _service) = build_app_with(&[MAIN], |_| {}).await;
    jobs(&app.pool, "done", 1200, 10).await;
    jobs(&app.pool, "done", 5, 1).await;
    jobs(&app.pool, "dead", 3, 30).await;
    let seven_days = Duration::from_secs(7 * 86_400);
    let n = wecom_callback::store::jobs::prune_done(&app.pool, seven_days, 500)
        .await
        .expect("prune");
    assert_eq!(n, 500, "one small batch at a time");

    // serve's supervised pruner takes the rest on its next round.
    let (app, service) = build_app_with(&[MAIN], |s| {
        s.api.jobs_retention = seven_days;
        s.api.jobs_prune_interval = Duration::from_millis(200);
    })
    .await;
    jobs(&app.pool, "done", 1200, 10).await;
    jobs(&app.pool, "done", 5, 1).await;
    jobs(&app.pool, "dead", 3, 30).await;
    tokio::spawn(service.run_until_stopped());
    let want = vec![("dead".to_owned(), 3), ("done".to_owned(), 5)];
    for _ in 0..100 {
        if job_counts(&app.pool).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not pruned: {:?}", job_counts(&app.pool).await);
}
