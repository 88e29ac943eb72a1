//! A lossless `rebuild`: events + enrichment + resyncs build the tables; a rebuild from `wecom_events` and the
//! API observation log gives them back exactly, API-learned rows and columns included.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use wecom_callback::store::{projections, rebuild};
use wecom_callback::sync::client::WecomApi;
use wecom_callback::sync::worker::{self, Worker};
use wiremock::matchers::{body_partial_json, path, query_param};
use wiremock::{Mock, MockServer};

use crate::helpers::{MAIN, TestApp, creds, ok, spawn_app_with, unix_now};
use crate::sync::{chat_event, contact_event, tag_event};

/// The fake WeCom: what enrichment and the resync are told.
async fn mount_wecom(server: &MockServer) {
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(ok(json!({"access_token": "T", "expires_in": 7200})))
        .mount(server)
        .await;
    // Enrichment of the customer the events added: details, remark, named tags.
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(query_param("external_userid", "wmA"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmA", "name": "李雷", "type": 1, "gender": 1,
                "unionid": "uA", "corp_name": "腾讯", "external_profile": {"external_attr": []}},
            "follow_user": [{"userid": "alice", "remark": "老客户", "description": "VIP", "createtime": 1_600_000_000,
                "tags": [{"group_name": "等级", "tag_name": "A", "type": 1, "tag_id": "et1"}],
                "remark_mobiles": ["13800000000"], "oper_userid": "alice", "add_way": 1, "state": "qr"}],
            "next_cursor": ""
        })))
        .mount(server)
        .await;
    // The follow WeCom no longer has: no relation.
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(query_param("external_userid", "wmGONE"))
        .respond_with(
            ok(json!({}))
                .set_body_json(json!({"errcode": 84061, "errmsg": "not external contact"})),
        )
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(ok(json!({"follow_user": ["alice", "bob"]})))
        .mount(server)
        .await;
    // wmA as WeCom lists it, and a customer only the resync knows (no event ever named wmAPI), with a
    // rule-group tag.
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(ok(json!({"external_contact_list": [
            {"external_contact": {"external_userid": "wmA", "name": "李雷", "type": 1, "gender": 1, "unionid": "uA"},
             "follow_info": {"userid": "alice", "remark": "老客户", "createtime": 1_600_000_000,
                 "tag_id": ["et1"], "state": "qr"}},
            {"external_contact": {"external_userid": "wmAPI", "name": "韩梅梅", "type": 2, "corp_name": "某公司"},
             "follow_info": {"userid": "bob", "remark": "API only", "description": "d", "createtime": 1_600_000_100,
                 "tag_id": ["etR", "et1"], "remark_mobiles": ["139"], "add_way": 3, "oper_userid": "bob"}}
        ], "next_cursor": ""})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/list"))
        .respond_with(ok(
            json!({"group_chat_list": [{"chat_id": "wrEV", "status": 0}, {"chat_id": "wrAPI", "status": 0}],
                   "next_cursor": ""}),
        ))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/get"))
        .and(body_partial_json(json!({"chat_id": "wrGONE"})))
        .respond_with(
            ok(json!({})).set_body_json(json!({"errcode": 40050, "errmsg": "chatid not exist"})),
        )
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/get"))
        .and(body_partial_json(json!({"chat_id": "wrEV"})))
        .respond_with(ok(json!({"group_chat": {"chat_id": "wrEV", "name": "事件群", "owner": "alice",
            "create_time": 1_600_000_000, "notice": "公告", "member_version": "mv2",
            "admin_list": [{"userid": "bob"}],
            "member_list": [
                {"userid": "wmA", "type": 2, "join_time": 1_600_000_010, "join_scene": 3, "group_nickname": "雷",
                 "invitor": {"userid": "alice"}, "name": "李雷", "unionid": "uA", "state": "s1"},
                {"userid": "alice", "type": 1, "join_time": 1_600_000_000, "join_scene": 1}]}})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/get"))
        .and(body_partial_json(json!({"chat_id": "wrAPI"})))
        .respond_with(ok(json!({"group_chat": {"chat_id": "wrAPI", "name": "API群", "owner": "bob",
            "create_time": 1_600_000_200, "member_version": "mv9",
            "member_list": [{"userid": "wmAPI", "type": 2, "join_time": 1_600_000_300, "join_scene": 2}]}})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_corp_tag_list"))
        .respond_with(ok(json!({"tag_group": [{"group_id": "g1", "group_name": "等级", "order": 1, "deleted": false,
            "tag": [{"id": "et1", "name": "A", "order": 2, "deleted": false}]}]})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_strategy_tag_list"))
        .respond_with(ok(
            json!({"tag_group": [{"group_id": "gR", "group_name": "规则组", "group_order": 5,
            "strategy_id": 7, "tag": [{"id": "etR", "name": "R", "order": 1}]}]}),
        ))
        .mount(server)
        .await;
    // An empty directory unless a test mounts one (see `mount_directory`).
    Mock::given(path("/cgi-bin/department/list"))
        .respond_with(ok(json!({"department": []})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/user/list_id"))
        .respond_with(ok(json!({"dept_user": [], "next_cursor": ""})))
        .mount(server)
        .await;
}

/// The directory WeCom has after the events of the directory test: department 2 renamed, 1 and 3 only the
/// resync knows, `oldtimer` gone, `newbie` only the resync knows. Mounted before [`mount_wecom`] (priority).
async fn mount_directory(server: &MockServer) {
    Mock::given(path("/cgi-bin/department/list"))
        .respond_with(ok(json!({"department": [
            {"id": 1, "name": "公司", "parentid": 0, "order": 1},
            {"id": 2, "name": "销售部", "parentid": 1, "order": 2},
            {"id": 3, "name": "研发", "parentid": 1, "order": 3}]})))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/user/list_id"))
        .respond_with(ok(json!({"dept_user": [
            {"userid": "zhangsan", "department": 2}, {"userid": "lisi_new", "department": 3},
            {"userid": "lisi_new", "department": 2}, {"userid": "newbie", "department": 3}],
            "next_cursor": ""})))
        .with_priority(1)
        .mount(server)
        .await;
    for (userid, answer) in [
        // A new self-built app's answer: name and position only.
        (
            "zhangsan",
            json!({"userid": "zhangsan", "name": "张三", "position": "销售"}),
        ),
        (
            "lisi_new",
            json!({"userid": "lisi_new", "name": "李四", "department": [2, 3],
            "main_department": 3, "position": "经理", "status": 1}),
        ),
        (
            "oldtimer",
            json!({"userid": "oldtimer", "name": "老员工", "department": [2], "status": 1}),
        ),
        (
            "newbie",
            json!({"userid": "newbie", "name": "新人", "department": [3], "main_department": 3,
            "status": 1, "open_userid": "woNEW"}),
        ),
    ] {
        let mock = Mock::given(path("/cgi-bin/user/get"))
            .and(query_param("userid", userid))
            .respond_with(ok(answer))
            .with_priority(1);
        // oldtimer leaves after the worker's user/get: the resync's confirmation hears 60111.
        let mock = if userid == "oldtimer" {
            mock.up_to_n_times(1)
        } else {
            mock
        };
        mock.mount(server).await;
    }
    Mock::given(path("/cgi-bin/user/get"))
        .respond_with(
            ok(json!({})).set_body_json(json!({"errcode": 60111, "errmsg": "userid not found"})),
        )
        .with_priority(2)
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_unassigned_list"))
        .respond_with(ok(json!({"info": [], "is_last": true, "next_cursor": ""})))
        .mount(server)
        .await;
}

/// `staff` and `departments`, every column but `updated_at` (the time of the write).
async fn directory_snapshot(pool: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    for (table, order) in [("staff", "corp_id, userid"), ("departments", "corp_id, id")] {
        // Constant table and column names only.
        let sql = format!(
            "SELECT '{table} ' || (to_jsonb(t) - 'updated_at')::text FROM {table} t ORDER BY {order}"
        );
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .expect("snapshot");
        out.extend(rows);
    }
    out
}

fn directory_event(t: i64, change: &str, body: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
         <ChangeType><![CDATA[{change}]]></ChangeType>{body}</xml>",
        corp = MAIN.receive_id
    )
}

#[tokio::test]
async fn rebuild_gives_back_the_staff_directory_of_events_user_get_and_a_directory_resync() {
    let server = MockServer::start().await;
    mount_directory(&server).await;
    mount_wecom(&server).await;
    let (app, api, w) = app_with_worker(&server).await;
    let t = 1_600_000_000;
    for xml in [
        directory_event(
            t,
            "create_party",
            "<Id>2</Id><Name>销售</Name><ParentId>1</ParentId><Order>2</Order>",
        ),
        directory_event(
            t + 1,
            "create_user",
            "<UserID>zhangsan</UserID><Department>2</Department>",
        ),
        directory_event(
            t + 2,
            "create_user",
            "<UserID>lisi</UserID><Department>2</Department>",
        ),
        directory_event(
            t + 3,
            "update_user",
            "<UserID>lisi</UserID><NewUserID>lisi_new</NewUserID><Department>2</Department>",
        ),
        directory_event(
            t + 4,
            "create_user",
            "<UserID>oldtimer</UserID><Department>2</Department>",
        ),
        contact_event(t + 5, "add_external_contact", "oldtimer", "wmA", ""),
    ] {
        app.deliver(&xml).await;
    }
    apply_all(&app.pool).await;
    // user/get for every member an event named.
    run_jobs(&w).await;
    let drift =
        wecom_callback::sync::resync::resync(&app.pool, &api, "main", &creds(), Duration::ZERO)
            .await
            .expect("resync");
    assert_eq!(
        (
            drift.staff_created,
            drift.staff_left,
            drift.departments_created,
            drift.departments_updated
        ),
        (1, 3, 2, 1),
        "newbie is new; oldtimer gone, and alice and bob (whose follows the resync listed) are in no \
         listing: left; departments 1 and 3 new, 2 renamed: {drift:?}"
    );
    let (oldtimer, newbie): (String, Option<String>) = sqlx::query_as(
        "SELECT (SELECT status FROM staff WHERE userid = 'oldtimer'),                 (SELECT name FROM staff WHERE userid = 'newbie')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("staff");
    assert_eq!(
        (oldtimer.as_str(), newbie.as_deref()),
        ("left", Some("新人"))
    );
    let still: i64 = one(
        &app.pool,
        "SELECT count(*) FROM v_staff_active_customers WHERE userid = 'oldtimer'",
    )
    .await;
    assert_eq!(
        still, 0,
        "a member gone from the directory follows nobody actively"
    );

    let before = directory_snapshot(&app.pool).await;
    assert!(before.len() >= 8, "staff and departments: {before:#?}");
    rebuild::rebuild_all(&app.pool, 2, |_| {})
        .await
        .expect("rebuild");
    let after = directory_snapshot(&app.pool).await;
    let first_difference = before
        .iter()
        .zip(&after)
        .find(|(b, a)| b != a)
        .map(|(b, a)| format!("before: {b}\nafter:  {a}"));
    assert_eq!(
        before, after,
        "staff and departments before and after the rebuild; first difference:\n{first_difference:?}"
    );
}

/// An app with a secret whose projector, worker and resync the test drives; a client of the fake WeCom at
/// `server`; and the enrichment worker the test runs by hand ([`run_jobs`]).
async fn app_with_worker(server: &MockServer) -> (TestApp, WecomApi, Worker) {
    let uri = server.uri();
    let app = spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("s"));
        s.api.base_url = uri;
        s.api.worker_concurrency = 0;
        s.api.resync_interval = Duration::ZERO;
        s.run_projector = false;
    })
    .await;
    let api = WecomApi::new(&server.uri(), app.pool.clone())
        .expect("client")
        .with_backoff(Duration::from_millis(1));
    let w = Worker {
        pool: app.pool.clone(),
        api: api.clone(),
        credentials: HashMap::from([("main".to_owned(), creds())]),
        max_attempts: 1,
        metrics: None,
        idle: Duration::from_millis(10),
        provider: Default::default(),
        wake: None,
    };
    (app, api, w)
}

/// Applies every stored event, queueing enrichment jobs as the projector of an app with a secret does.
async fn apply_all(pool: &PgPool) {
    let enrich: HashSet<String> = ["main".to_owned()].into();
    while projections::apply_pending_with(pool, 500, &enrich)
        .await
        .expect("apply")
        > 0
    {}
}

/// Runs the enrichment jobs that are due, one at a time.
async fn run_jobs(w: &Worker) {
    while worker::run_once(w).await.expect("job") {}
}

/// Every column of every synced table, as comparable text, except the bookkeeping that legitimately differs
/// after a rebuild: the identity `id` of history and transfer rows (numbered in the order rows are written).
async fn full_snapshot(pool: &PgPool) -> Vec<String> {
    let tables = [
        ("external_contacts", "corp_id, external_userid", "'{}'"),
        (
            "external_contact_follows",
            "corp_id, userid, external_userid",
            "'{}'",
        ),
        ("external_group_chats", "corp_id, chat_id", "'{}'"),
        (
            "external_group_chat_members",
            "corp_id, chat_id, member_id",
            "'{}'",
        ),
        ("external_corp_tags", "corp_id, id", "'{}'"),
        (
            "external_contact_history",
            "event_id, kind, subject_id",
            "'{id}'",
        ),
        ("external_contact_transfers", "event_id", "'{id}'"),
    ];
    let mut out = Vec::new();
    for (table, order, skip) in tables {
        // Constant table and column names only.
        let sql = format!(
            "SELECT '{table} ' || (to_jsonb(t) - {skip}::text[])::text FROM {table} t ORDER BY {order}"
        );
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .expect("snapshot");
        out.extend(rows);
    }
    out
}

async fn one<T>(pool: &PgPool, sql: &'static str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn rebuild_gives_back_what_events_enrichment_and_resyncs_built() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    let (app, api, w) = app_with_worker(&server).await;

    // Events: two follows of alice (one WeCom will no longer list), a chat with members, a chat WeCom will
    // say is gone, a tag WeCom will no longer list.
    let t = 1_600_000_000;
    for xml in [
        contact_event(
            t + 10,
            "add_external_contact",
            "alice",
            "wmA",
            "<State><![CDATA[qr]]></State>",
        ),
        contact_event(t + 20, "add_external_contact", "alice", "wmGONE", ""),
        chat_event(t, "create", "wrEV", ""),
        chat_event(
            t + 30,
            "update",
            "wrEV",
            "<UpdateDetail>add_member</UpdateDetail><JoinScene>1</JoinScene><MemChangeCnt>2</MemChangeCnt>\
             <MemChangeList><Item>wmA</Item><Item>wmLEFT</Item></MemChangeList><LastMemVer>mv1</LastMemVer>\
             <CurMemVer>mv2</CurMemVer>",
        ),
        chat_event(t, "create", "wrGONE", ""),
        tag_event(t, "create", "etGONE", "<TagType>tag</TagType>"),
    ] {
        app.deliver(&xml).await;
    }
    apply_all(&app.pool).await;
    // Enrichment: externalcontact/get, groupchat/get, the tag lists.
    run_jobs(&w).await;
    // A late member event, older than the member list enrichment read: applied after that list, it adds a
    // joined row (the list could not mark a row that did not exist yet `left`). A rebuild that replayed the
    // events first and the observations after would mark it `left`: order matters here, and is kept.
    app.deliver(
        &chat_event(
            t + 40,
            "update",
            "wrEV",
            "<UpdateDetail>add_member</UpdateDetail><JoinScene>1</JoinScene><MemChangeCnt>1</MemChangeCnt>\
             <MemChangeList><Item>wmLATE</Item></MemChangeList>",
        ),
    )
    .await;
    apply_all(&app.pool).await;
    // Two full resyncs: the second supersedes most of what the first recorded (compaction).
    for _ in 0..2 {
        wecom_callback::sync::resync::resync(&app.pool, &api, "main", &creds(), Duration::ZERO)
            .await
            .expect("resync");
    }
    // An event after the resyncs: the customer deletes alice. Replayed after the observations, as applied.
    app.deliver(&contact_event(
        unix_now() + 60,
        "del_follow_user",
        "alice",
        "wmA",
        "",
    ))
    .await;
    apply_all(&app.pool).await;

    // The tables hold what only the API taught: the test means something.
    let api_only: (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT f.status, f.remark, c.name FROM external_contact_follows f \
         JOIN external_contacts c USING (corp_id, external_userid) WHERE f.external_userid = 'wmAPI'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the contact only the resync knew");
    assert_eq!(
        api_only,
        (
            "active".into(),
            Some("API only".into()),
            Some("韩梅梅".into())
        )
    );
    let tags: serde_json::Value = one(
        &app.pool,
        "SELECT tags FROM external_contact_follows WHERE external_userid = 'wmAPI'",
    )
    .await;
    assert_eq!(tags[0]["tag_id"], "etR");
    assert_eq!(tags[0]["type"], 3, "a rule-group tag, named: {tags}");
    assert_eq!(tags[0]["tag_name"], "R");
    let swept: String = one(
        &app.pool,
        "SELECT status || '/' || delete_source FROM external_contact_follows WHERE external_userid = 'wmGONE'",
    )
    .await;
    assert_eq!(swept, "removed/resync");
    let deleted_by_customer: String = one(
        &app.pool,
        "SELECT status FROM external_contact_follows WHERE external_userid = 'wmA'",
    )
    .await;
    assert_eq!(deleted_by_customer, "deleted_by_customer");
    let chats: String = one(
        &app.pool,
        "SELECT string_agg(chat_id || ':' || status || ':' || coalesce(name, '-'), ' ' ORDER BY chat_id) \
         FROM external_group_chats",
    )
    .await;
    assert_eq!(
        chats,
        "wrAPI:active:API群 wrEV:active:事件群 wrGONE:dismissed:-"
    );
    let members: String = one(
        &app.pool,
        "SELECT string_agg(chat_id || '/' || member_id || ':' || status || ':' || coalesce(group_nickname, '-'), ' ' \
             ORDER BY chat_id, member_id) FROM external_group_chat_members",
    )
    .await;
    assert_eq!(
        members,
        "wrAPI/wmAPI:joined:- wrEV/alice:joined:- wrEV/wmA:joined:雷 wrEV/wmLATE:joined:- wrEV/wmLEFT:left:-"
    );
    let strategy: String = one(
        &app.pool,
        "SELECT string_agg(id || ':' || coalesce(strategy_id, '-') || ':' || deleted, ' ' ORDER BY id) \
         FROM external_corp_tags",
    )
    .await;
    assert_eq!(
        strategy,
        "et1:-:false etGONE:-:true etR:7:false g1:-:false gR:7:false"
    );
    // The log is bounded: the second run's observations superseded the first's where nothing was created.
    let logged: i64 = one(&app.pool, "SELECT count(*) FROM wecom_api_observations").await;
    let entries: i64 = one(
        &app.pool,
        "SELECT count(*) FROM wecom_api_observations WHERE kind = 'follow_entry'",
    )
    .await;
    assert!(logged > 0);
    assert!(
        entries < 4,
        "two runs listed two follows each; superseded entries are compacted ({entries} left)"
    );

    let before = full_snapshot(&app.pool).await;
    let rebuilt = rebuild::rebuild_all(&app.pool, 2, |_| {})
        .await
        .expect("rebuild");
    let after = full_snapshot(&app.pool).await;
    assert_eq!(rebuilt.events, 8);
    for kind in [
        "contact_detail",
        "follow_entry",
        "group_chat",
        "corp_tags",
        "mark_chat",
        "sweep_follows",
        "sweep_chats",
        // etGONE, which neither tag list names, is deleted by its create event's tag job before the resync's
        // tag sweep could (the sweep's replay is the same kind of keyed statement).
        "unlisted_tags",
    ] {
        assert!(
            rebuilt.observations.get(kind).is_some_and(|n| *n > 0),
            "{kind} replayed: {rebuilt:?}"
        );
    }
    let first_difference = before
        .iter()
        .zip(&after)
        .find(|(b, a)| b != a)
        .map(|(b, a)| format!("before: {b}\nafter:  {a}"));
    assert_eq!(
        before.len(),
        after.len(),
        "rows before and after the rebuild; first difference:\n{first_difference:?}"
    );
    assert_eq!(first_difference, None);

    // And again: a rebuild of a rebuild changes nothing.
    rebuild::rebuild(&app.pool).await.expect("rebuild again");
    assert_eq!(full_snapshot(&app.pool).await, before);
}

/// `wecom-callback rebuild` says what it restored besides the events, and restores it.
#[tokio::test]
async fn the_rebuild_command_reports_the_api_observations_it_replayed() {
    const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");
    let (_guard, url) = crate::helpers::fresh_database();
    let run = |cmd: &str| {
        std::process::Command::new(BIN)
            .arg(cmd)
            .env_remove("WECOM_CONFIG")
            .env("DATABASE_URL", &url)
            .output()
            .expect("runs")
    };
    let migrated = run("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let pool = PgPool::connect(&url).await.expect("connect");
    let answer = serde_json::from_value(json!({
        "external_contact": {"external_userid": "wmX", "name": "只有API知道"},
        "follow_user": [{"userid": "alice", "createtime": 1_700_000_000, "remark": "r"}]
    }))
    .expect("answer");
    wecom_callback::store::enrichment::contact_detail(&pool, "wwcorp", &answer, chrono::Utc::now())
        .await
        .expect("enrichment");

    let out = run("rebuild");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rebuild: 1 API observations replayed (contact_detail 1)"),
        "{stderr}"
    );
    let restored: (String, String) = sqlx::query_as(
        "SELECT c.name, f.remark FROM external_contacts c JOIN external_contact_follows f USING (corp_id, external_userid)",
    )
    .fetch_one(&pool)
    .await
    .expect("the API-only customer survives the rebuild");
    assert_eq!(restored, ("只有API知道".into(), "r".into()));
    pool.close().await;
}
