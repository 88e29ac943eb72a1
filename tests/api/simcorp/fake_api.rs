//! A fake WeCom API that answers from the truth at the moment of each call: WeCom's paths, JSON shapes,
//! paging, limits and errors (81017, 84061, 60020 until a trusted IP is set, seeded transient 45033 / -1).
//! Cursors: `batch/get_by_user` and `groupchat/list` page by keyset (`after:KEY`) or, where the truth says
//! so ([`Truth::offset_cursors`]), by offset (`cur:N`), which skips an entry when the corp changes between two
//! pages; `externalcontact/get` by keyset (its pages hold 500 followers: a customer with more is rare);
//! offsets for the directory, which no step changes during a resync. Answers may be delayed per path
//! ([`FakeWecom::latency`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::model::{
    AUTH_CODE, Auth, CORP, Follow, PERMANENT_CODE, SUITE_ID, SUITE_SECRET, SUITE_TICKET,
    SUITE_TOKEN, Truth,
};

/// The running fake and the truth it answers from.
pub struct FakeWecom {
    pub server: MockServer,
    pub calls: Arc<Mutex<HashMap<String, u64>>>,
    /// Per path: how long the answer travels. The truth is read when the request arrives, so a delayed
    /// answer says what was true then, however the corp changed while it travelled.
    pub latency: Arc<Mutex<HashMap<String, Duration>>>,
}

struct Responder {
    truth: Arc<Mutex<Truth>>,
    calls: Arc<Mutex<HashMap<String, u64>>>,
    latency: Arc<Mutex<HashMap<String, Duration>>>,
}

pub async fn start(truth: Arc<Mutex<Truth>>) -> FakeWecom {
    let server = MockServer::start().await;
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let latency = Arc::new(Mutex::new(HashMap::new()));
    Mock::given(any())
        .respond_with(Responder {
            truth,
            calls: calls.clone(),
            latency: latency.clone(),
        })
        .mount(&server)
        .await;
    FakeWecom {
        server,
        calls,
        latency,
    }
}

fn ok(mut body: Value) -> ResponseTemplate {
    body["errcode"] = json!(0);
    body["errmsg"] = json!("ok");
    ResponseTemplate::new(200).set_body_json(body)
}

fn err(code: i64, msg: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"errcode": code, "errmsg": msg}))
}

/// A stable 64-bit hash (FNV-1a): transient errors depend on the seed and the request, not on timing.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn offset(cursor: Option<&str>) -> usize {
    cursor
        .and_then(|c| c.strip_prefix("cur:"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A keyset page of `items` (sorted by key): those after the cursor's key (`after:KEY`), and the cursor
/// after the last one returned. The corp changes during a resync's walk, and with an offset a relation
/// ending between two pages would shift the rest, so that one listed all along would be skipped.
fn keyset<T: Clone>(items: &[(String, T)], cursor: Option<&str>, limit: usize) -> (Vec<T>, String) {
    let after = cursor.and_then(|c| c.strip_prefix("after:")).unwrap_or("");
    let rest: Vec<&(String, T)> = items.iter().filter(|(k, _)| k.as_str() > after).collect();
    let page: Vec<T> = rest.iter().take(limit).map(|(_, v)| v.clone()).collect();
    let next = match rest.get(limit.saturating_sub(1)) {
        Some((k, _)) if rest.len() > limit => format!("after:{k}"),
        _ => String::new(),
    };
    (page, next)
}

/// A page of a list the corp may change during a walk, at most [`Truth::list_page`] long, by the truth's kind
/// of cursor.
fn list_page<T: Clone>(
    truth: &Truth,
    items: &[(String, T)],
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<T>, String) {
    let limit = limit.min(truth.list_page).max(1);
    if truth.offset_cursors {
        let values: Vec<T> = items.iter().map(|(_, v)| v.clone()).collect();
        page(&values, offset(cursor), limit)
    } else {
        keyset(items, cursor, limit)
    }
}

fn page<T: Clone>(items: &[T], from: usize, limit: usize) -> (Vec<T>, String) {
    let end = (from + limit).min(items.len());
    let slice = items.get(from..end).map(<[T]>::to_vec).unwrap_or_default();
    let next = if end < items.len() {
        format!("cur:{end}")
    } else {
        String::new()
    };
    (slice, next)
}

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let path = req.url.path().to_owned();
        let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let n = {
            let mut calls = self.calls.lock().expect("calls");
            let key = format!(
                "{path} {} {body}",
                query.get("external_userid").map_or("", |s| s)
            );
            *calls.entry(path.clone()).or_insert(0) += 1;
            let n = calls.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let answer = self.answer(&path, &query, &body, &req.body, n);
        if let Some(code) = answer.1 {
            *self
                .calls
                .lock()
                .expect("calls")
                .entry(format!("errcode:{code}"))
                .or_insert(0) += 1;
        }
        match self.latency.lock().expect("latency").get(&path) {
            Some(d) => answer.0.set_delay(*d),
            None => answer.0,
        }
    }
}

impl Responder {
    /// The answer, and the errcode when it is one of the simulated failures.
    fn answer(
        &self,
        path: &str,
        query: &HashMap<String, String>,
        body: &Value,
        raw: &[u8],
        n: u64,
    ) -> (ResponseTemplate, Option<i64>) {
        let truth = self.truth.lock().expect("truth");
        if let Some(answer) = provider(&truth, path, query, body) {
            return (answer, None);
        }
        if path == "/cgi-bin/gettoken" {
            if truth.auth != Auth::SelfBuilt {
                // A corp authorised through a suite has no self-built secret: its token is get_corp_token's.
                return (err(40001, "invalid credential"), Some(40001));
            }
            return (
                ok(json!({"access_token": "SIMTOKEN", "expires_in": 7200})),
                None,
            );
        }
        if query.get("access_token").map(String::as_str) != Some("SIMTOKEN") {
            return (err(41001, "access_token missing"), Some(41001));
        }
        if truth.auth == Auth::Cancelled {
            // The cancelled corp's tokens are void.
            return (err(40014, "invalid access_token"), Some(40014));
        }
        if !truth.trusted_ip {
            return (
                err(
                    60020,
                    "not allow to access from your ip, hint: [1700000000_1_sim], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e=60020",
                ),
                Some(60020),
            );
        }
        let h = fnv(&[
            &truth.seed.to_le_bytes(),
            path.as_bytes(),
            query
                .get("external_userid")
                .map_or(&b""[..], |s| s.as_bytes()),
            raw,
            &n.to_le_bytes(),
        ]);
        if h % 100 < truth.transient_pct {
            return if h.is_multiple_of(2) {
                (err(45033, "api concurrent out of limit"), Some(45033))
            } else {
                (err(-1, "system busy"), Some(-1))
            };
        }
        let answer = match path {
            "/cgi-bin/externalcontact/get_follow_user_list" => {
                ok(json!({"follow_user": truth.follow_users()}))
            }
            "/cgi-bin/externalcontact/batch/get_by_user" => batch_get_by_user(&truth, body),
            "/cgi-bin/externalcontact/get" => contact_get(&truth, query),
            "/cgi-bin/externalcontact/groupchat/list" => groupchat_list(&truth, body),
            "/cgi-bin/externalcontact/groupchat/get" => groupchat_get(&truth, body),
            "/cgi-bin/externalcontact/get_unassigned_list" => unassigned_list(&truth, body),
            "/cgi-bin/externalcontact/get_corp_tag_list" => tag_list(&truth, body, false),
            "/cgi-bin/externalcontact/get_strategy_tag_list" => tag_list(&truth, body, true),
            "/cgi-bin/department/list" => ok(json!({"department": truth
                .departments
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name, "parentid": if *id == 1 { 0 } else { 1 }}))
                .collect::<Vec<_>>()})),
            "/cgi-bin/user/list_id" => user_list_id(&truth, body),
            "/cgi-bin/user/get" => user_get(&truth, query),
            _ => err(40058, "the simulated WeCom has no such API"),
        };
        (answer, None)
    }
}

/// WeCom's provider API (`/cgi-bin/service/…`) for the simulated suite: the suite token from its ticket, the
/// AuthCode exchange and the corp token while the corp is authorised. `None` for every other path.
fn provider(
    truth: &Truth,
    path: &str,
    query: &HashMap<String, String>,
    body: &Value,
) -> Option<ResponseTemplate> {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let path = path.strip_prefix("/cgi-bin/service/")?;
    if path == "get_suite_token" {
        return Some(
            if field("suite_id") == SUITE_ID
                && field("suite_secret") == SUITE_SECRET
                && field("suite_ticket") == SUITE_TICKET
            {
                ok(json!({"suite_access_token": SUITE_TOKEN, "expires_in": 7200}))
            } else {
                err(40085, "invalid suite ticket")
            },
        );
    }
    if query.get("suite_access_token").map(String::as_str) != Some(SUITE_TOKEN) {
        return Some(err(40082, "invalid suite_token"));
    }
    let authorised = truth.auth == Auth::Authorised;
    let corp = || json!({"corpid": CORP, "corp_name": "模拟客户企业"});
    Some(match path {
        "get_permanent_code" if authorised && field("auth_code") == AUTH_CODE => ok(json!({
            "permanent_code": PERMANENT_CODE, "auth_corp_info": corp(),
            "auth_info": {"agent": [{"agentid": 1000001, "name": "模拟应用"}]}
        })),
        "get_permanent_code" => err(40078, "invalid auth code"),
        "get_corp_token" | "get_auth_info"
            if authorised
                && field("auth_corpid") == CORP
                && field("permanent_code") == PERMANENT_CODE =>
        {
            if path == "get_corp_token" {
                ok(json!({"access_token": "SIMTOKEN", "expires_in": 7200}))
            } else {
                ok(
                    json!({"auth_corp_info": corp(), "auth_info": {"agent": [{"agentid": 1000001}]}}),
                )
            }
        }
        "get_corp_token" | "get_auth_info" => err(40084, "invalid permanent code"),
        _ => err(40058, "the simulated WeCom has no such provider API"),
    })
}

fn contact_json(truth: &Truth, ext: &str) -> Value {
    let c = truth.customers.get(ext);
    let mut v = json!({
        "external_userid": ext,
        "name": c.map(|c| c.name.clone()),
        "avatar": format!("https://wework.qpic.cn/sim/{ext}"),
        "type": 1,
        "gender": 1,
        "unionid": format!("un-{ext}"),
    });
    if let Some(corp) = c.and_then(|c| c.corp_name.clone()) {
        v["corp_name"] = json!(corp);
    }
    v
}

fn follow_common(user: &str, f: &Follow) -> Value {
    json!({
        "userid": user,
        "remark": f.remark.clone().unwrap_or_default(),
        "description": f.description.clone().unwrap_or_default(),
        "createtime": f.createtime.unwrap_or(0),
        "remark_corp_name": "",
        "remark_mobiles": [],
        "oper_userid": user,
        "add_way": 1,
        "state": f.state.clone(),
    })
}

fn batch_get_by_user(truth: &Truth, body: &Value) -> ResponseTemplate {
    let users: Vec<String> = body["userid_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    if users.is_empty() || users.len() > 100 {
        return err(40058, "userid_list size must be 1..=100");
    }
    let limit = body["limit"].as_u64().unwrap_or(50) as usize;
    if !(1..=100).contains(&limit) {
        return err(40058, "limit must be 1..=100");
    }
    let mut unlicensed = Vec::new();
    let mut entries = Vec::new();
    for u in &users {
        match truth.staff.get(u) {
            Some(s) if s.departed => {}
            Some(s) if !s.licensed => unlicensed.push(u.clone()),
            Some(_) => {
                for ((fu, ext), f) in truth.follows.range((u.clone(), String::new())..) {
                    if fu != u {
                        break;
                    }
                    if f.rel.listed() {
                        let mut info = follow_common(u, f);
                        info["tag_id"] = json!(f.tags);
                        entries.push((
                            format!("{u}\u{1}{ext}"),
                            json!({"external_contact": contact_json(truth, ext), "follow_info": info}),
                        ));
                    }
                }
            }
            None => {}
        }
    }
    // `users` in the request's order, each one's follows in key order: sorted as a whole.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let (list, next) = list_page(truth, &entries, body["cursor"].as_str(), limit);
    let mut answer = json!({"external_contact_list": list, "next_cursor": next});
    if !unlicensed.is_empty() {
        answer["fail_info"] = json!({"unlicensed_userid_list": unlicensed});
    }
    ok(answer)
}

fn contact_get(truth: &Truth, query: &HashMap<String, String>) -> ResponseTemplate {
    let Some(ext) = query.get("external_userid") else {
        return err(41035, "missing external_userid");
    };
    if !truth.customers.contains_key(ext) {
        return err(40096, "invalid external userid");
    }
    let follows: Vec<Value> = truth
        .follows
        .iter()
        .filter(|((_, e), f)| e == ext && f.rel.listed())
        .map(|((u, _), f)| {
            let mut v = follow_common(u, f);
            v["tags"] = json!(
                f.tags
                    .iter()
                    .filter_map(|id| truth.tag(id).map(|(_, g, t)| json!({
                        "group_name": g.name, "tag_name": t.name, "type": 1, "tag_id": id
                    })))
                    .collect::<Vec<_>>()
            );
            v
        })
        .collect();
    if follows.is_empty() {
        return err(84061, "not external contact");
    }
    // A keyset cursor (the next page starts after the last member returned), as WeCom's opaque cursor most
    // likely is: with an offset, a relation ending between two pages of a walk would shift the rest and the
    // walk would skip a relation that was listed all along, which nothing tells the service until the resync.
    let after = query
        .get("cursor")
        .and_then(|c| c.strip_prefix("after:"))
        .unwrap_or("");
    let rest: Vec<Value> = follows
        .into_iter()
        .filter(|f| f["userid"].as_str().unwrap_or("") > after)
        .collect();
    let (list, more) = page(&rest, 0, truth.get_page);
    let next = match list.last() {
        Some(last) if !more.is_empty() => {
            format!("after:{}", last["userid"].as_str().unwrap_or(""))
        }
        _ => String::new(),
    };
    ok(
        json!({"external_contact": contact_json(truth, ext), "follow_user": list, "next_cursor": next}),
    )
}

/// 离职待分配: the customers of members who left, cursor-paged (`page_size` up to 1000).
fn unassigned_list(truth: &Truth, body: &Value) -> ResponseTemplate {
    let limit = body["page_size"].as_u64().unwrap_or(1000) as usize;
    if !(1..=1000).contains(&limit) {
        return err(40058, "page_size must be 1..=1000");
    }
    let info: Vec<Value> = truth
        .unassigned()
        .into_iter()
        .map(|(u, e)| json!({"handover_userid": u, "external_userid": e, "dimission_time": 1_700_000_000}))
        .collect();
    let (list, next) = page(&info, offset(body["cursor"].as_str()), limit);
    ok(json!({"info": list, "is_last": next.is_empty(), "next_cursor": next}))
}

fn groupchat_list(truth: &Truth, body: &Value) -> ResponseTemplate {
    let owners: Option<Vec<String>> = body["owner_filter"]["userid_list"].as_array().map(|a| {
        a.iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect()
    });
    let owners = owners.filter(|o| !o.is_empty());
    if owners.is_none() && truth.visible_staff() > 1000 {
        return err(81017, "too many chats, owner_filter required");
    }
    let limit = body["limit"].as_u64().unwrap_or(100) as usize;
    if !(1..=1000).contains(&limit) {
        return err(40058, "limit must be 1..=1000");
    }
    let chats: Vec<(String, Value)> = truth
        .chats
        .iter()
        .filter(|(_, c)| !c.dismissed)
        .filter(|(_, c)| owners.as_ref().is_none_or(|o| o.contains(&c.owner)))
        .map(|(id, _)| (id.clone(), json!({"chat_id": id, "status": 0})))
        .collect();
    let (list, next) = list_page(truth, &chats, body["cursor"].as_str(), limit);
    ok(json!({"group_chat_list": list, "next_cursor": next}))
}

fn groupchat_get(truth: &Truth, body: &Value) -> ResponseTemplate {
    let id = body["chat_id"].as_str().unwrap_or("");
    let Some(c) = truth.chats.get(id).filter(|c| !c.dismissed) else {
        return err(40050, "chatid not exist");
    };
    let members: Vec<Value> = c
        .members
        .iter()
        .map(|m| {
            let staff = truth.staff.contains_key(m);
            json!({"userid": m, "type": if staff { 1 } else { 2 }, "join_time": c.create_time,
                   "join_scene": 1, "invitor": {"userid": c.owner}, "group_nickname": "", "name": m})
        })
        .collect();
    ok(json!({"group_chat": {
        "chat_id": id, "name": c.name, "owner": c.owner, "create_time": c.create_time, "notice": "",
        "member_list": members, "admin_list": [], "member_version": c.member_version(id)
    }}))
}

fn tag_list(truth: &Truth, body: &Value, strategy: bool) -> ResponseTemplate {
    let wanted = |key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let (tag_ids, group_ids) = (wanted("tag_id"), wanted("group_id"));
    let strategy_id = body["strategy_id"].as_u64();
    let groups: Vec<Value> = truth
        .groups
        .iter()
        .filter(|(_, g)| !g.deleted && g.strategy.is_some() == strategy)
        .filter(|(_, g)| strategy_id.is_none_or(|s| g.strategy == Some(s as u32)))
        .filter(|(gid, _)| group_ids.is_empty() || group_ids.contains(gid))
        .filter_map(|(gid, g)| {
            let tags: Vec<Value> = g
                .tags
                .iter()
                .filter(|t| !t.deleted && (tag_ids.is_empty() || tag_ids.contains(&t.id)))
                .map(|t| json!({"id": t.id, "name": t.name, "create_time": t.create_time, "order": t.order, "deleted": false}))
                .collect();
            if tags.is_empty() && !tag_ids.is_empty() {
                return None;
            }
            let mut v = json!({"group_id": gid, "group_name": g.name, "create_time": g.create_time,
                               "order": g.order, "deleted": false, "tag": tags});
            if let Some(s) = g.strategy {
                v["strategy_id"] = json!(s);
            }
            Some(v)
        })
        .collect();
    ok(json!({"tag_group": groups}))
}

/// `user/list_id`: the members still in the corp, paged by the truth's `get_page` (one entry per member and
/// department).
fn user_list_id(truth: &Truth, body: &Value) -> ResponseTemplate {
    let members: Vec<(String, i64)> = truth
        .staff
        .iter()
        .filter(|(_, s)| !s.departed)
        .map(|(u, s)| (u.clone(), s.department))
        .collect();
    let (items, next) = page(&members, offset(body["cursor"].as_str()), truth.get_page);
    let dept_user: Vec<Value> = items
        .iter()
        .map(|(u, d)| json!({"userid": u, "department": d}))
        .collect();
    ok(json!({"dept_user": dept_user, "next_cursor": next}))
}

/// `user/get`: a member still in the corp (60111 for anyone else).
fn user_get(truth: &Truth, query: &HashMap<String, String>) -> ResponseTemplate {
    let userid = query.get("userid").map_or("", String::as_str);
    match truth.staff.get(userid).filter(|s| !s.departed) {
        Some(s) => ok(
            json!({"userid": userid, "name": s.name, "department": [s.department],
                             "main_department": s.department, "status": 1, "position": ""}),
        ),
        None => err(60111, "userid not found"),
    }
}
