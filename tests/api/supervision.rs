//! Background task supervision: a panicking loop is counted and restarted and works again; a panicking
//! critical task fails readiness and stops the service with an error; a requested stop ends every task.
//! The panics come from the test-only fault `Settings::fault_panic_once`.

use std::future::Future;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;
use wecom_callback::http::server::RunError;
use wecom_callback::ingest::spool::{Spool, SpooledRequest};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer};

use crate::helpers::{
    API_TOKEN, MAIN, TestApp, build_app_with, sign_callback, spawn_app_with, unix_now,
};
use crate::helpers::{ok, wait_applied};
use crate::sync::contact_event;

/// Polls `check` every 25 ms until it returns true; fails the test after `secs` seconds.
async fn wait_until<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.expect("metrics")
}

/// Waits until `/metrics` shows exactly one restart of `task`.
async fn wait_restarted_once(app: &TestApp, task: &str) {
    let line = format!(r#"wecom_background_task_restarts_total{{task="{task}"}} 1"#);
    wait_until(&format!("a restart of {task} is counted"), 10, || async {
        metrics(app).await.lines().any(|l| l == line)
    })
    .await;
}

async fn readyz(app: &TestApp) -> u16 {
    app.get("/readyz").await.status().as_u16()
}

async fn mount_token(server: &MockServer) {
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(ok(json!({"access_token": "T", "expires_in": 7200})))
        .mount(server)
        .await;
}

fn add_event(ext: &str) -> String {
    contact_event(unix_now(), "add_external_contact", "alice", ext, "")
}

#[tokio::test]
async fn a_panicking_projector_is_restarted_and_applies_events_stored_after_the_panic() {
    let app = spawn_app_with(&[MAIN], |s| {
        s.fault_panic_once = vec!["projector".into()];
    })
    .await;
    wait_restarted_once(&app, "projector").await;
    // A restartable task does not take the replica out of service.
    assert_eq!(readyz(&app).await, 200);
    let r = app
        .post(
            "main",
            &sign_callback(&MAIN, &add_event("wmP1"), unix_now()),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    wait_applied(&app.pool).await;
    let follows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM external_contact_follows WHERE external_userid = 'wmP1'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(follows, 1, "the restarted projector applied the event");
    assert!(
        !metrics(&app)
            .await
            .contains(r#"wecom_background_task_restarts_total{task="writer"}"#),
        "only the projector restarted"
    );
}

/// An event the tables refuse (here a trigger stands in for a value PostgreSQL rejects) stalls neither its
/// shard nor the others: it is held back, stays stored and pending, and every later event is applied.
/// A trigger of the operator's that refuses every follow of wmPOISON ("refused for the test").
async fn refuse_poison(app: &TestApp) {
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.external_userid = 'wmPOISON' THEN RAISE EXCEPTION 'refused for the test'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON external_contact_follows \
           FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&app.pool)
    .await
    .expect("trigger");
}

#[tokio::test]
async fn an_event_the_tables_refuse_is_held_back_and_the_events_after_it_are_applied() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    refuse_poison(&app).await;
    app.deliver(&add_event("wmPOISON")).await;
    // Forty customers after it: about half hash to the poisoned event's shard.
    for i in 0..40 {
        app.deliver(&add_event(&format!("wmOK{i:02}"))).await;
    }
    wait_until("every event but the refused one applied", 60, || async {
        let (pending, follows): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM wecom_events_pending), \
                    (SELECT count(*) FROM external_contact_follows WHERE external_userid LIKE 'wmOK%')",
        )
        .fetch_one(&app.pool)
        .await
        .expect("counts");
        pending == 1 && follows == 40
    })
    .await;
    let (held_id, held, why): (i64, String, Option<String>) = sqlx::query_as(
        "SELECT e.id, e.message, q.held_error FROM wecom_events e JOIN wecom_events_pending q USING (id)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the held event");
    assert!(
        held.contains("wmPOISON"),
        "the refused event is the one left pending"
    );
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("refused for the test")),
        "why it is held is kept: {why:?}"
    );
    // The operator sees it: in /status.json and on the page, with the event's id and the command to see it.
    let report: serde_json::Value = app
        .client
        .get(format!("{}/status.json", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("status.json")
        .json()
        .await
        .expect("json");
    let main = report["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["name"] == "main")
        .expect("main")
        .clone();
    assert_eq!(main["projector"]["unapplied"], 1);
    assert_eq!(main["projector"]["held"], 1);
    assert_eq!(main["projector"]["held_event_id"], held_id);
    assert!(
        main["projector"]["held_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused for the test")),
        "{main}"
    );
    let page = app
        .client
        .get(format!("{}/status", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("status")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("data-held")
            && page.contains(&format!("wecom-callback events --ids {held_id}")),
        "the page names the held event"
    );
    // And a scraper sees it, apart from the backlog.
    let metrics = metrics(&app).await;
    assert!(
        metrics.lines().any(|l| l == "wecom_apply_held_events 1")
            && metrics.lines().any(|l| l == "wecom_apply_pending_events 1"),
        "{metrics}"
    );
    let poisoned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM external_contact_follows WHERE external_userid = 'wmPOISON'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(poisoned, 0);
    assert_eq!(
        readyz(&app).await,
        200,
        "a held event does not take the replica out of service"
    );
}

/// A failed batch names the events it took, so the projector holds back the one that failed alone, not
/// whichever is oldest by the time it looks (a smaller id may have committed meanwhile).
#[tokio::test]
async fn a_failed_batch_names_its_events_and_only_the_named_one_is_held() {
    use wecom_callback::store::projections::{self, Shard};
    let app = spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    refuse_poison(&app).await;
    app.deliver(&add_event("wmFIRST")).await;
    app.deliver(&add_event("wmPOISON")).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM wecom_events ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .expect("ids");
    let [first, poison] = ids[..] else {
        panic!("two events stored: {ids:?}")
    };
    let none = std::collections::HashSet::new();
    let failed = projections::apply_pending_shard(&app.pool, 10, &none, Shard::ALL)
        .await
        .expect_err("the batch with the refused event fails");
    assert_eq!(failed.taken, vec![first, poison]);
    assert!(
        failed.to_string().contains("refused for the test"),
        "{failed}"
    );
    // The first event is applied alone; then, as if it had committed only now, it is pending again below
    // the refused one while the refused one fails alone.
    assert_eq!(
        projections::apply_pending_shard(&app.pool, 1, &none, Shard::ALL)
            .await
            .expect("the first event applies alone"),
        1
    );
    let failed = projections::apply_pending_shard(&app.pool, 1, &none, Shard::ALL)
        .await
        .expect_err("the refused event fails alone");
    assert_eq!(failed.taken, vec![poison]);
    sqlx::query("INSERT INTO wecom_events_pending (id) VALUES ($1)")
        .bind(first)
        .execute(&app.pool)
        .await
        .expect("re-queue the first");
    assert!(
        projections::hold(&app.pool, poison, "refused", Duration::from_secs(300))
            .await
            .expect("hold")
    );
    assert!(
        !projections::hold(&app.pool, poison, "refused", Duration::from_secs(300))
            .await
            .expect("hold again"),
        "an event held already is not held again"
    );
    let held: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM wecom_events_pending WHERE held_until IS NOT NULL")
            .fetch_all(&app.pool)
            .await
            .expect("held");
    assert_eq!(held, vec![poison], "only the event that failed is held");
    assert_eq!(
        projections::apply_pending_shard(&app.pool, 10, &none, Shard::ALL)
            .await
            .expect("the rest applies"),
        1,
        "the event below the held one is applied past it"
    );
}

#[tokio::test]
async fn a_panicking_worker_loop_is_restarted_and_runs_jobs_again() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmW1", "name": "韩梅梅", "type": 1},
            "follow_user": [{"userid": "alice", "remark": "r", "createtime": 1700000000}],
            "next_cursor": ""
        })))
        .mount(&server)
        .await;
    let uri = server.uri();
    let app = spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("app-secret"));
        s.api.base_url = uri;
        s.api.worker_concurrency = 1;
        s.fault_panic_once = vec!["worker".into()];
    })
    .await;
    wait_restarted_once(&app, "worker").await;
    let r = app
        .post(
            "main",
            &sign_callback(&MAIN, &add_event("wmW1"), unix_now()),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    wait_until("the restarted worker ran the job", 15, || async {
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM external_contacts WHERE external_userid = 'wmW1'")
                .fetch_optional(&app.pool)
                .await
                .expect("query")
                .flatten();
        name.as_deref() == Some("韩梅梅")
    })
    .await;
}

#[tokio::test]
async fn a_panicking_resync_schedule_is_restarted_and_resyncs() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(ok(json!({"follow_user": ["alice"]})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(ok(json!({"external_contact_list": [
            {"external_contact": {"external_userid": "wmR1", "name": "n", "type": 1},
             "follow_info": {"userid": "alice", "remark": "r", "createtime": 1700000000, "tag_id": [], "state": "s"}}
        ], "next_cursor": ""})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/list"))
        .respond_with(ok(json!({"group_chat_list": [], "next_cursor": ""})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_corp_tag_list"))
        .respond_with(ok(json!({"tag_group": []})))
        .mount(&server)
        .await;
    let uri = server.uri();
    let app = spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("s"));
        s.api.base_url = uri;
        s.api.worker_concurrency = 0;
        s.api.resync_interval = Duration::from_secs(3600);
        s.fault_panic_once = vec!["resync".into()];
    })
    .await;
    wait_restarted_once(&app, "resync").await;
    wait_until("the restarted schedule ran a resync", 15, || async {
        metrics(&app)
            .await
            .contains(r#"wecom_resync_drift_total{change="created",table="follows"} 1"#)
    })
    .await;
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wecom_resync_runs WHERE status = 'done'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(runs, 1);
}

#[tokio::test]
async fn a_panicking_drain_is_restarted_and_drains_the_spool() {
    let spool_dir = std::env::temp_dir().join(format!("spool-sup-{}", uuid::Uuid::new_v4()));
    // What an earlier process spooled while the database was down.
    {
        let spool = Spool::open(&spool_dir, 1 << 20).expect("open");
        let cb = sign_callback(&MAIN, &add_event("wmD1"), unix_now());
        spool
            .append(&SpooledRequest {
                app: "main".into(),
                query: cb.query,
                body: cb.body,
                received_at_us: unix_now() * 1_000_000,
            })
            .await
            .expect("spooled");
    }
    let dir = spool_dir.clone();
    let app = spawn_app_with(&[MAIN], move |s| {
        s.spool.dir = Some(dir);
        s.fault_panic_once = vec!["drain".into()];
    })
    .await;
    wait_restarted_once(&app, "drain").await;
    wait_until(
        "the restarted drain stored the spooled callback",
        15,
        || async { app.event_count().await == 1 },
    )
    .await;
    wait_until("the spool is empty", 10, || async {
        metrics(&app)
            .await
            .lines()
            .any(|l| l == "wecom_spool_bytes 0")
    })
    .await;
    let _ = std::fs::remove_dir_all(&spool_dir);
}

#[tokio::test]
async fn a_panicking_writer_fails_readiness_and_stops_the_service_with_an_error() {
    let (app, service) = build_app_with(&[MAIN], |s| {
        s.fault_panic_once = vec!["writer".into()];
    })
    .await;
    let running = tokio::spawn(service.run_until(std::future::pending()));
    assert_eq!(readyz(&app).await, 200, "healthy until the writer fails");
    // The writer panics on its first batch, i.e. on this callback.
    let address = app.address.clone();
    let cb = sign_callback(&MAIN, &add_event("wmX1"), unix_now());
    let post = tokio::spawn(async move {
        wecom_callback::tls::client_builder()
            .build()
            .expect("client")
            .post(format!("{address}/callback/main?{}", cb.query))
            .header("content-type", "text/xml")
            .body(cb.body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    wait_until("/readyz fails", 10, || async { readyz(&app).await == 503 }).await;
    // Never acknowledged: 503, or (rarely) the connection closed by the stop, when actix-server's worker sees
    // its accept thread gone before its graceful-stop message and drops its connections.
    match post.await.expect("join") {
        Ok(status) => assert_eq!(
            status, 503,
            "a callback never committed is not acknowledged"
        ),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let result = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("run_until returns")
        .expect("join");
    match result {
        Err(RunError::Task(f)) => {
            assert_eq!(f.task, "writer");
            assert!(f.reason.contains("panicked"), "{}", f.reason);
        }
        other => panic!("expected the writer's failure, got {other:?}"),
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_panicking_spool_thread_stops_the_service_with_an_error() {
    let spool_dir = std::env::temp_dir().join(format!("spool-sup-{}", uuid::Uuid::new_v4()));
    let dir = spool_dir.clone();
    let (_app, service) = build_app_with(&[MAIN], move |s| {
        s.spool.dir = Some(dir);
        s.fault_panic_once = vec!["spool".into()];
    })
    .await;
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        service.run_until(std::future::pending()),
    )
    .await
    .expect("run_until returns");
    match result {
        Err(RunError::Task(f)) => {
            assert_eq!(f.task, "spool");
            assert!(f.reason.contains("panicked"), "{}", f.reason);
        }
        other => panic!("expected the spool thread's failure, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&spool_dir);
}

#[tokio::test]
async fn a_requested_stop_ends_every_background_task_within_a_bound() {
    let spool_dir = std::env::temp_dir().join(format!("spool-sup-{}", uuid::Uuid::new_v4()));
    let dir = spool_dir.clone();
    // Every task: writer, spool thread, drain, projector, two workers and the resync schedule (against a
    // WeCom that refuses connections, so they all sit in their retry waits).
    let (app, service) = build_app_with(&[MAIN], move |s| {
        s.spool.dir = Some(dir);
        s.apps[0].secret = Some(SecretString::from("s"));
        s.api.worker_concurrency = 2;
        s.api.resync_interval = Duration::from_secs(3600);
    })
    .await;
    let tasks = service.tasks().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    assert_eq!(readyz(&app).await, 200);
    let r = app
        .post(
            "main",
            &sign_callback(&MAIN, &add_event("wmS1"), unix_now()),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    wait_applied(&app.pool).await;
    assert!(tasks.running() >= 7, "{} tasks running", tasks.running());
    assert!(!tasks.token().is_cancelled());

    let started = Instant::now();
    stop.send(()).expect("stop");
    let result = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("run_until returns")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped in {:?}",
        started.elapsed()
    );
    assert!(tasks.token().is_cancelled());
    assert_eq!(tasks.running(), 0, "every background task has ended");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .is_err(),
        "HTTP has stopped"
    );
    let _ = std::fs::remove_dir_all(&spool_dir);
}

#[tokio::test]
async fn database_gauges_are_computed_at_scrape_time() {
    // No projector and no worker here: nothing but the scrape can set the gauges.
    let app = spawn_app_with(&[MAIN], |s| {
        s.run_projector = false;
        s.apps[0].secret = Some(SecretString::from("s"));
        s.api.worker_concurrency = 0;
    })
    .await;
    for ext in ["wmG1", "wmG2"] {
        let r = app
            .post("main", &sign_callback(&MAIN, &add_event(ext), unix_now()))
            .await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let text = metrics(&app).await;
    assert!(
        text.lines().any(|l| l == "wecom_apply_pending_events 2"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "wecom_jobs_queued 0"), "{text}");
    // Applying them (as another replica's projector would) queues enrichment jobs; the next scrape sees both.
    let enrich = ["main".to_owned()].into_iter().collect();
    wecom_callback::store::projections::apply_pending_with(&app.pool, 100, &enrich)
        .await
        .expect("apply");
    let text = metrics(&app).await;
    assert!(
        text.lines().any(|l| l == "wecom_apply_pending_events 0"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "wecom_jobs_queued 2"), "{text}");
    assert!(text.lines().any(|l| l == "wecom_jobs_dead 0"), "{text}");
}
