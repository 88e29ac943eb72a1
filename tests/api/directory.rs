//! The staff directory (通讯录): a day of change_contact events, including a renamed userid and a member who
//! left with customers, plus `user/get` answers restricted the 2022 way → the staff and department rows, and
//! staff-aware follow answers.

use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{API_TOKEN, MAIN, TestApp, spawn_app_with, wait_applied, wait_for_count};
use crate::sync::contact_event;

const CORP: &str = MAIN.receive_id;

fn directory_event(t: i64, change: &str, body: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
         <ChangeType><![CDATA[{change}]]></ChangeType>{body}</xml>"
    )
}

fn answer(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

async fn get(app: &TestApp, path_and_query: &str) -> (u16, Value) {
    let r = app
        .client
        .get(format!(
            "{}/api/v1/corps/{CORP}/{path_and_query}",
            app.address
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("reply");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn mock_wecom(server: &MockServer) {
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(answer(
            json!({"errcode": 0, "access_token": "T", "expires_in": 7200}),
        ))
        .mount(server)
        .await;
    // A new self-built app: user/get gives userid, name and position only.
    Mock::given(path("/cgi-bin/user/get"))
        .and(query_param("userid", "zhangsan"))
        .respond_with(answer(json!({"errcode": 0, "errmsg": "ok", "userid": "zhangsan", "name": "张三", "position": "销售"})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/user/get"))
        .and(query_param("userid", "lisi_new"))
        .respond_with(answer(
            json!({"errcode": 0, "errmsg": "ok", "userid": "lisi_new", "position": "经理"}),
        ))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/miniprogram/jscode2session"))
        .and(query_param("js_code", "good"))
        .respond_with(answer(
            json!({"errcode": 0, "corpid": CORP, "userid": "zhangsan", "session_key": "k"}),
        ))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/user/get"))
        .and(query_param("userid", "wangwu"))
        .respond_with(answer(
            json!({"errcode": 60111, "errmsg": "userid not found"}),
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_day_of_directory_events_gives_staff_departments_and_staff_aware_follows() {
    let server = MockServer::start().await;
    mock_wecom(&server).await;
    let uri = server.uri();
    let app = spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("app-secret"));
        s.api.base_url = uri;
        s.api.worker_concurrency = 1;
    })
    .await;
    let t = 1_764_547_200; // 2025-12-01 00:00 UTC
    let day = [
        directory_event(
            t,
            "create_party",
            "<Id>2</Id><Name><![CDATA[销售部]]></Name><ParentId>1</ParentId><Order>10</Order>",
        ),
        directory_event(
            t + 1,
            "create_party",
            "<Id>3</Id><Name><![CDATA[临时]]></Name><ParentId>1</ParentId>",
        ),
        // The post-2022 form: only UserID and Department.
        directory_event(
            t + 60,
            "create_user",
            "<UserID>zhangsan</UserID><Department>2</Department>",
        ),
        // The old form, with every field.
        directory_event(
            t + 120,
            "create_user",
            "<UserID>lisi</UserID><Name><![CDATA[李四]]></Name><Department>2,3</Department>\
             <MainDepartment>2</MainDepartment><Position><![CDATA[主管]]></Position><Status>1</Status>",
        ),
        contact_event(t + 200, "add_external_contact", "lisi", "wmB", ""),
        contact_event(t + 210, "add_external_contact", "zhangsan", "wmC", ""),
        contact_event(t + 220, "add_external_contact", "wangwu", "wmA", ""),
        // lisi's userid is changed once (a system-generated userid may be).
        directory_event(
            t + 300,
            "update_user",
            "<UserID>lisi</UserID><NewUserID>lisi_new</NewUserID><Department>2</Department>",
        ),
        // wangwu leaves; the deletion arrives before the creation it follows (order safety).
        directory_event(t + 500, "delete_user", "<UserID>wangwu</UserID>"),
        directory_event(
            t + 400,
            "create_user",
            "<UserID>wangwu</UserID><Department>3</Department><Status>1</Status>",
        ),
        directory_event(
            t + 600,
            "update_party",
            "<Id>3</Id><Name><![CDATA[临时组]]></Name>",
        ),
        directory_event(t + 700, "delete_party", "<Id>3</Id>"),
    ];
    for xml in &day {
        app.deliver(xml).await;
    }
    wait_applied(&app.pool).await;
    // One user/get per member named by a user event (zhangsan, lisi_new, wangwu).
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE kind = 'staff_detail' AND status = 'done'",
        3,
    )
    .await;

    // Departments.
    type DepartmentRow = (i64, Option<String>, Option<i64>, Option<i64>, bool);
    let departments: Vec<DepartmentRow> = sqlx::query_as(
        "SELECT id, name, parent_id, sort_order, deleted FROM departments WHERE corp_id = $1 ORDER BY id",
    )
    .bind(CORP)
    .fetch_all(&app.pool)
    .await
    .expect("departments");
    assert_eq!(
        departments,
        vec![
            (2, Some("销售部".into()), Some(1), Some(10), false),
            (3, Some("临时组".into()), Some(1), None, true),
        ]
    );

    // Staff rows.
    type Row = (
        String,
        Option<String>,
        Option<Vec<i64>>,
        Option<i64>,
        Option<String>,
        String,
        bool,
        Option<String>,
        Vec<String>,
    );
    let staff: Vec<Row> = sqlx::query_as(
        "SELECT userid, name, department_ids, main_department, position, status, left_at IS NOT NULL, renamed_to, \
                unavailable_fields FROM staff WHERE corp_id = $1 ORDER BY userid",
    )
    .bind(CORP)
    .fetch_all(&app.pool)
    .await
    .expect("staff");
    let restricted: Vec<String> = ["department", "main_department", "status", "open_userid"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Even the name is refused for lisi_new here: it carries over from the old userid.
    let no_name: Vec<String> = std::iter::once("name".to_owned())
        .chain(restricted.iter().cloned())
        .collect();
    assert_eq!(
        staff,
        vec![
            (
                "lisi".into(),
                Some("李四".into()),
                Some(vec![2, 3]),
                Some(2),
                Some("主管".into()),
                "active".into(),
                false,
                Some("lisi_new".into()),
                vec![]
            ),
            // The renaming event carried only ids: the name carries over from lisi, the position is the
            // newer API answer's, the departments the event's.
            (
                "lisi_new".into(),
                Some("李四".into()),
                Some(vec![2]),
                None,
                Some("经理".into()),
                "active".into(),
                false,
                None,
                no_name
            ),
            (
                "wangwu".into(),
                None,
                Some(vec![3]),
                None,
                None,
                "left".into(),
                true,
                None,
                vec![]
            ),
            // Name and position from user/get; departments from the event, as user/get could not say.
            (
                "zhangsan".into(),
                Some("张三".into()),
                Some(vec![2]),
                None,
                Some("销售".into()),
                "active".into(),
                false,
                None,
                restricted.clone()
            ),
        ]
    );

    // Follows: lisi's customer moved with the userid; wangwu's stays but is flagged, not "still followed".
    let followers: Vec<(String, String, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT external_userid, userid, status, staff_name, staff_left FROM v_customer_followers \
         WHERE corp_id = $1 ORDER BY external_userid",
    )
    .bind(CORP)
    .fetch_all(&app.pool)
    .await
    .expect("followers");
    assert_eq!(
        followers,
        vec![
            ("wmA".into(), "wangwu".into(), "active".into(), None, true),
            (
                "wmB".into(),
                "lisi_new".into(),
                "active".into(),
                Some("李四".into()),
                false
            ),
            (
                "wmC".into(),
                "zhangsan".into(),
                "active".into(),
                Some("张三".into()),
                false
            ),
        ]
    );
    let active: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT userid, external_userid, staff_name, staff_main_department_name FROM v_staff_active_customers \
         WHERE corp_id = $1 ORDER BY userid",
    )
    .bind(CORP)
    .fetch_all(&app.pool)
    .await
    .expect("active customers");
    assert_eq!(
        active,
        vec![
            ("lisi_new".into(), "wmB".into(), Some("李四".into()), None),
            ("zhangsan".into(), "wmC".into(), Some("张三".into()), None),
        ],
        "wangwu left: none of his customers is listed as his"
    );

    // The JSON API.
    let (status, body) = get(&app, "staff/zhangsan").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "张三");
    assert_eq!(body["departments"], json!([{"id": 2, "name": "销售部"}]));
    assert_eq!(body["unavailable_fields"], json!(restricted));
    let (status, body) = get(&app, "staff/lisi").await;
    assert_eq!(
        (status, body["renamed_to"].clone()),
        (200, json!("lisi_new"))
    );
    let (status, body) = get(&app, "staff/nobody").await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));

    let (status, body) = get(&app, "staff/wangwu/customers").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]), "a member who left follows nobody");
    assert_eq!(body["staff"]["status"], "left");
    let (status, body) = get(&app, "staff/lisi_new/customers").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["external_userid"], "wmB");
    assert_eq!(body["staff"]["name"], "李四");
    assert_eq!(
        body["staff"]["departments"],
        json!([{"id": 2, "name": "销售部"}])
    );

    let (status, body) = get(&app, "departments/2/staff").await;
    assert_eq!(status, 200);
    assert_eq!(body["department"]["name"], "销售部");
    let members: Vec<&str> = body["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["userid"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(members, vec!["lisi_new", "zhangsan"], "not the old userid");
    // The mini-program session names the member.
    let r = app
        .client
        .post(format!("{}/api/v1/miniprogram/session", app.address))
        .bearer_auth(API_TOKEN)
        .json(&json!({"app": "main", "code": "good"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({"corpid": CORP, "userid": "zhangsan", "name": "张三", "status": "active",
               "departments": [{"id": 2, "name": "销售部"}]})
    );
    let (status, _) = get(&app, "departments/99/staff").await;
    assert_eq!(status, 404);
    let (status, _) = get(&app, "departments/abc/staff").await;
    assert_eq!(status, 404);
}

/// The `update_user` at `t` that renames lisi to lisi_new (and moves them to department 2).
fn lisi_renamed(t: i64) -> String {
    directory_event(
        t,
        "update_user",
        "<UserID>lisi</UserID><NewUserID>lisi_new</NewUserID><Department>2</Department>",
    )
}

/// The carry-over of a renamed userid does not depend on the order events are applied in: a write to the old
/// userid applied after the rename (a late delivery, or a concurrent batch) still reaches the new row.
#[tokio::test]
async fn what_reaches_the_old_userid_after_its_rename_carries_over_to_the_new_one() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let t = 1_764_547_200;
    // The rename first, then the (older) creation that carries the name and position.
    app.deliver(&lisi_renamed(t + 300)).await;
    wait_applied(&app.pool).await;
    app.deliver(&directory_event(
        t + 120,
        "create_user",
        "<UserID>lisi</UserID><Name><![CDATA[李四]]></Name><Department>2,3</Department>\
             <Position><![CDATA[主管]]></Position>",
    ))
    .await;
    wait_applied(&app.pool).await;
    type Row = (String, Option<String>, Option<Vec<i64>>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT userid, name, department_ids, position FROM staff WHERE corp_id = $1 ORDER BY userid",
    )
    .bind(CORP)
    .fetch_all(&app.pool)
    .await
    .expect("staff");
    assert_eq!(
        rows,
        vec![
            (
                "lisi".into(),
                Some("李四".into()),
                Some(vec![2, 3]),
                Some("主管".into())
            ),
            // The rename's departments are newer than the creation's; name and position carry over.
            (
                "lisi_new".into(),
                Some("李四".into()),
                Some(vec![2]),
                Some("主管".into())
            ),
        ]
    );
}

/// A follow event of the old userid applied after the rename (a late delivery) lands on the new userid, as
/// the follows the rename found did.
#[tokio::test]
async fn a_follow_of_the_old_userid_applied_after_its_rename_moves_to_the_new_one() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let t = 1_764_547_200;
    app.deliver(&contact_event(
        t + 100,
        "add_external_contact",
        "lisi",
        "wmA",
        "",
    ))
    .await;
    app.deliver(&lisi_renamed(t + 300)).await;
    wait_applied(&app.pool).await;
    // Added before the rename, delivered after it.
    app.deliver(&contact_event(
        t + 200,
        "add_external_contact",
        "lisi",
        "wmB",
        "",
    ))
    .await;
    wait_applied(&app.pool).await;
    let follows: Vec<(String, String)> = sqlx::query_as(
        "SELECT external_userid, userid FROM external_contact_follows WHERE corp_id = $1 ORDER BY 1",
    )
    .bind(CORP)
    .fetch_all(&app.pool)
    .await
    .expect("follows");
    assert_eq!(
        follows,
        vec![
            ("wmA".into(), "lisi_new".into()),
            ("wmB".into(), "lisi_new".into())
        ]
    );
    // The feed says each follow moved, with the row as it is now.
    let moved: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT subject, data->>'previous_userid', state->>'userid' FROM wecom_change_entries \
         WHERE data->>'change' = 'userid_renamed' AND data->>'userid' = 'lisi_new' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("feed");
    assert_eq!(
        moved,
        vec![
            ("wmA".into(), "lisi".into(), Some("lisi_new".into())),
            ("wmB".into(), "lisi".into(), Some("lisi_new".into()))
        ]
    );
}

/// An `update_user` at `t` renaming `from` to `to`.
fn renamed(t: i64, from: &str, to: &str) -> String {
    directory_event(
        t,
        "update_user",
        &format!("<UserID>{from}</UserID><NewUserID>{to}</NewUserID><Department>2</Department>"),
    )
}

/// The corp's follows as (external_userid, userid), by customer.
async fn follows_of(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT external_userid, userid FROM external_contact_follows WHERE corp_id = $1 ORDER BY 1",
    )
    .bind(CORP)
    .fetch_all(&app.pool)
    .await
    .expect("follows")
}

/// The follows after: lisi adds wmA (at `t` + 100), the `renames` are delivered in that order, then lisi adds
/// wmB at `late_add` (each applied before the next is delivered).
async fn follows_after_renames(renames: [&String; 2], late_add: i64) -> Vec<(String, String)> {
    let t = 1_764_547_200;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let add = |at: i64, ext: &str| contact_event(at, "add_external_contact", "lisi", ext, "");
    app.deliver(&add(t + 100, "wmA")).await;
    wait_applied(&app.pool).await;
    for e in renames {
        app.deliver(e).await;
        wait_applied(&app.pool).await;
    }
    app.deliver(&add(late_add, "wmB")).await;
    wait_applied(&app.pool).await;
    follows_of(&app).await
}

/// Renamed twice (lisi → lisi_new → lisi_3), the renames applied in either order: the follows, the one
/// delivered late under the first userid included, end with the last userid.
#[tokio::test]
async fn a_userid_renamed_twice_takes_every_follow_to_the_last_one_whatever_the_order() {
    let t = 1_764_547_200;
    let one = renamed(t + 300, "lisi", "lisi_new");
    let two = renamed(t + 400, "lisi_new", "lisi_3");
    for (order, first_rename_late) in [([&one, &two], false), ([&two, &one], true)] {
        // wmB: added before the renames, delivered after both.
        assert_eq!(
            follows_after_renames(order, t + 200).await,
            vec![
                ("wmA".into(), "lisi_3".into()),
                ("wmB".into(), "lisi_3".into())
            ],
            "first rename delivered late: {first_rename_late}"
        );
    }
}

/// Renamed and renamed back (lisi → lisi_new → lisi), in either order: the member lives as lisi again, so
/// the follows stay with (or come back to) lisi, and a follow written under lisi afterwards stays there.
#[tokio::test]
async fn a_userid_renamed_back_keeps_its_follows() {
    let t = 1_764_547_200;
    let away = renamed(t + 300, "lisi", "lisi_new");
    let back = renamed(t + 400, "lisi_new", "lisi");
    for (order, back_first) in [([&away, &back], false), ([&back, &away], true)] {
        assert_eq!(
            follows_after_renames(order, t + 500).await,
            vec![("wmA".into(), "lisi".into()), ("wmB".into(), "lisi".into())],
            "renamed back first: {back_first}"
        );
    }
}

/// A userid reused (A → C, C → D, then B → C): late follows of A and B for one customer, applied in one batch,
/// both go to C. The move takes one rename at a time there: PostgreSQL refuses one statement merging two
/// rows into one, and a refused batch would stop its shard.
#[tokio::test]
async fn late_follows_of_two_userids_renamed_to_one_apply_in_one_batch() {
    let app = spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    let t = 1_764_547_200;
    for e in [
        contact_event(t + 100, "add_external_contact", "lisi", "wmX", ""),
        contact_event(t + 110, "add_external_contact", "wangwu", "wmX", ""),
        renamed(t + 300, "lisi", "c_user"),
        renamed(t + 400, "c_user", "d_user"),
        renamed(t + 500, "wangwu", "c_user"),
    ] {
        app.deliver(&e).await;
        crate::helpers::apply_all_pending(&app.pool).await;
    }
    // Late, and in one batch.
    app.deliver(&contact_event(
        t + 150,
        "edit_external_contact",
        "lisi",
        "wmX",
        "",
    ))
    .await;
    app.deliver(&contact_event(
        t + 160,
        "edit_external_contact",
        "wangwu",
        "wmX",
        "",
    ))
    .await;
    assert_eq!(crate::helpers::apply_all_pending(&app.pool).await, 2);
    let follows = follows_of(&app).await;
    assert!(
        follows.iter().all(|(_, u)| u != "lisi" && u != "wangwu"),
        "no follow is left under a userid renamed away: {follows:?}"
    );
}
