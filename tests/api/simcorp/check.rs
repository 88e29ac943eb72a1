//! Compares every synced table with the truth and lists the differences, one readable line each.
//!
//! What the tables must say is what WeCom's truth says, except where no callback and no API answer could
//! have told the service (a lost callback WeCom's API cannot make up for): there the check accepts what
//! the service could know, and says so in the line it would print.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;
use sqlx::PgPool;

use super::model::{CORP, Rel, Truth};

#[derive(Debug, sqlx::FromRow)]
struct FollowRow {
    userid: String,
    external_userid: String,
    status: String,
    state: Option<String>,
    added_at: Option<i64>,
    remark: Option<String>,
    description: Option<String>,
    tags: Option<Value>,
}

/// The shape of a `tags` value: backends read one column, so it must have one shape.
fn tags_shape(v: &Value) -> Option<&'static str> {
    let a = v.as_array()?;
    let first = a.first()?;
    Some(if first.is_string() {
        "array of tag-id strings"
    } else if first.is_object() {
        "array of objects"
    } else {
        "array of something else"
    })
}

/// The tag ids in a `tags` value of either shape.
fn tag_ids(v: &Option<Value>) -> BTreeSet<String> {
    v.as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| match t {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("tag_id").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// Every difference between the tables and the truth. `delivered` holds the callbacks the server got.
/// Before the resync (`resynced` false) what changed without a callback is not checked.
pub async fn diff(
    pool: &PgPool,
    truth: &Truth,
    delivered: &HashSet<u64>,
    resynced: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    follows(pool, truth, delivered, resynced, &mut out).await;
    contacts(pool, truth, resynced, &mut out).await;
    chats(pool, truth, &mut out).await;
    tags(pool, truth, &mut out).await;
    feed(pool, &mut out).await;
    directory(pool, truth, resynced, &mut out).await;
    out
}

/// The change feed agrees with the tables: every follow has an entry, and the latest entry of each follow
/// (by position) carries the status the table has now (issue 15: every status change is staged with the row
/// after it, in the writer's transaction, and sequenced in commit order).
async fn feed(pool: &PgPool, out: &mut Vec<String>) {
    let started = std::time::Instant::now();
    loop {
        let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_change_unsequenced")
            .fetch_one(pool)
            .await
            .expect("count staging");
        if staged == 0 {
            break;
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            out.push(format!("feed: {staged} staged change(s) never sequenced"));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT f.userid, f.external_userid, f.status, \
                (SELECT c.state->>'status' FROM wecom_changes c \
                 WHERE c.kind = 'contact' AND c.corp_id = f.corp_id AND c.subject = f.external_userid \
                   AND c.data->>'userid' = f.userid AND c.state IS NOT NULL \
                 ORDER BY c.position DESC LIMIT 1) \
         FROM external_contact_follows f ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("read the feed");
    for (userid, ext, status, latest) in rows {
        match latest {
            None => out.push(format!(
                "feed: follow {userid}/{ext} ({status}) has no entry"
            )),
            Some(s) if s != status => out.push(format!(
                "feed: follow {userid}/{ext} is {status}, its latest entry says {s}"
            )),
            Some(_) => {}
        }
    }
}

/// A `staff` row as the check reads it: name, department ids, status.
type StaffRow = (Option<String>, StaffDepartments, String);
type StaffDepartments = Option<Vec<i64>>;

/// `staff`, `departments` and `v_staff_active_customers` against the truth's directory. Before a resync the
/// service knows only the members and departments the 通讯录 callbacks named (and what `user/get` said of
/// them), and nothing tells it of a departure; after one, everything.
async fn directory(pool: &PgPool, truth: &Truth, resynced: bool, out: &mut Vec<String>) {
    let departments: Vec<(i64, Option<String>, bool)> =
        sqlx::query_as("SELECT id, name, deleted FROM departments WHERE corp_id = $1 ORDER BY id")
            .bind(CORP)
            .fetch_all(pool)
            .await
            .expect("read departments");
    let known: BTreeMap<i64, (Option<String>, bool)> = departments
        .into_iter()
        .map(|(id, name, deleted)| (id, (name, deleted)))
        .collect();
    for (id, name) in &truth.departments {
        match known.get(id) {
            Some((n, deleted)) if n.as_deref() == Some(name.as_str()) && !deleted => {}
            None if !resynced => {}
            other => out.push(format!("department {id}: truth {name:?}, table {other:?}")),
        }
    }
    for id in known
        .keys()
        .filter(|id| !truth.departments.contains_key(*id))
    {
        out.push(format!("department {id}: in the table, not in the truth"));
    }
    // userid, name, departments, status, renamed_to.
    type Read = (
        String,
        Option<String>,
        StaffDepartments,
        String,
        Option<String>,
    );
    let staff: Vec<Read> = sqlx::query_as(
        "SELECT userid, name, department_ids, status, renamed_to FROM staff WHERE corp_id = $1 \
             ORDER BY userid",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read staff");
    // A userid renamed away keeps its row, saying where the member went.
    let renamed: BTreeMap<String, String> = staff
        .iter()
        .filter_map(|(u, _, _, _, r)| r.clone().map(|r| (u.clone(), r)))
        .collect();
    let rows: BTreeMap<String, StaffRow> = staff
        .into_iter()
        .filter(|(_, _, _, _, r)| r.is_none())
        .map(|(u, n, d, s, _)| (u, (n, d, s)))
        .collect();
    for (old, to) in &renamed {
        if truth.staff.contains_key(old) {
            out.push(format!(
                "staff {old}: a member of the truth, but the table says renamed to {to}"
            ));
        }
    }
    // A member who left before any listing, event or follow named them: nothing could tell the service.
    let with_follows: BTreeSet<String> = sqlx::query_scalar(
        "SELECT DISTINCT userid FROM external_contact_follows WHERE corp_id = $1",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read follow userids")
    .into_iter()
    .collect();
    for (user, s) in &truth.staff {
        let row = rows.get(user);
        let ok = match row {
            None => !resynced || (s.departed && !with_follows.contains(user)),
            Some((_, _, status)) if s.departed => status == "left" || !resynced,
            Some((name, departments, status)) => {
                name.as_deref() == Some(s.name.as_str())
                    && departments.as_deref() == Some(&[s.department][..])
                    && status == "active"
            }
        };
        if !ok {
            out.push(format!(
                "staff {user}: truth {:?} in {} (departed: {}), table {row:?}",
                s.name, s.department, s.departed
            ));
        }
    }
    for (user, (_, _, status)) in rows.iter().filter(|(u, _)| !truth.staff.contains_key(*u)) {
        // A userid renamed away whose callback was lost: gone from the directory, as far as anyone can tell.
        if truth.former_userids.contains(user) && (status == "left" || !resynced) {
            continue;
        }
        out.push(format!("staff {user}: in the table, not in the truth"));
    }
    let active: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT userid, external_userid, staff_name FROM v_staff_active_customers WHERE corp_id = $1 \
         ORDER BY userid, external_userid",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read v_staff_active_customers");
    for (user, ext, name) in active {
        let Some(s) = truth.staff.get(&user) else {
            out.push(format!(
                "v_staff_active_customers {user}/{ext}: no such member"
            ));
            continue;
        };
        if resynced && (s.departed || name.as_deref() != Some(s.name.as_str())) {
            out.push(format!(
                "v_staff_active_customers {user}/{ext}: member {:?} (departed: {}), view says {name:?}",
                s.name, s.departed
            ));
        }
    }
}

async fn follows(
    pool: &PgPool,
    truth: &Truth,
    delivered: &HashSet<u64>,
    resynced: bool,
    out: &mut Vec<String>,
) {
    let rows: Vec<FollowRow> = sqlx::query_as(
        "SELECT userid, external_userid, status, state, extract(epoch FROM added_at)::bigint AS added_at, \
                remark, description, tags \
         FROM external_contact_follows WHERE corp_id = $1 ORDER BY userid, external_userid",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read follows");
    let mut shapes: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut by_pair: BTreeMap<(String, String), &FollowRow> = BTreeMap::new();
    for r in &rows {
        if let Some(shape) = r.tags.as_ref().and_then(tags_shape) {
            shapes
                .entry(shape)
                .or_default()
                .push(format!("{}/{}", r.userid, r.external_userid));
        }
        by_pair.insert((r.userid.clone(), r.external_userid.clone()), r);
    }
    if shapes.len() > 1 {
        let detail: Vec<String> = shapes
            .iter()
            .map(|(s, who)| format!("{s} ({} rows, e.g. {})", who.len(), who[0]))
            .collect();
        out.push(format!(
            "follows.tags has {} JSON shapes: {}",
            shapes.len(),
            detail.join("; ")
        ));
    }

    for ((user, ext), f) in &truth.follows {
        let who = format!("follow {user}/{ext}");
        let row = by_pair.get(&(user.clone(), ext.clone())).copied();
        // Decided by its callback, and (when the member was renamed after it) by every rename since.
        let decided = f.status_cb.is_some_and(|id| {
            delivered.contains(&id)
                && f.rename_cbs
                    .iter()
                    .filter(|r| **r > id)
                    .all(|r| delivered.contains(r))
        });
        let sees = truth.resync_sees(user, f);
        let status = row.map(|r| r.status.as_str());
        // What the service could know about the relation's status.
        let allowed: Vec<Option<&str>> = match (f.rel, decided) {
            (_, true) => vec![Some(f.rel.status())],
            // A departure sends no callback: before a resync the service cannot know.
            (Rel::Unassigned, false) if !resynced => vec![],
            // A listed relation is visible to the resync; a one-way one looks active there.
            (Rel::Active, false) if sees => vec![Some("active")],
            (Rel::DeletedByCustomer, false) if sees => {
                vec![Some("active"), Some("deleted_by_customer")]
            }
            (Rel::Active | Rel::DeletedByCustomer, false) => vec![],
            // The member left: get_unassigned_list names the relations WeCom listed, so the resync ends them.
            // A half-added one WeCom lists nowhere (84061), not there either: the service cannot learn that
            // its member left, and may still say pending.
            (Rel::Unassigned, false) if f.before_departure == Some(Rel::Pending) => vec![
                None,
                Some("removed"),
                Some("deleted_by_staff"),
                Some("deleted_by_customer"),
                Some("pending"),
            ],
            // An unlicensed member's follows are never listed (batch/get_by_user's fail_info), so the resync
            // sweeps none of them: a lost callback about one cannot be learned.
            (_, false) if truth.staff.get(user).is_some_and(|s| !s.licensed) => vec![],
            // Not listed anywhere: anything but a live relation.
            (_, false) => vec![
                None,
                Some("removed"),
                Some("deleted_by_staff"),
                Some("deleted_by_customer"),
                Some("pending"),
            ]
            .into_iter()
            .filter(|s| f.rel == Rel::Pending || *s != Some("pending"))
            .collect(),
        };
        if !allowed.is_empty() && !allowed.contains(&status) {
            let why = if decided {
                "its callback was delivered"
            } else if f.status_cb.is_none() {
                "no callback says so"
            } else {
                "its callback was lost"
            };
            out.push(format!(
                "{who}: status is {}, truth is {:?} ({why}; allowed: {})",
                status.unwrap_or("<no row>"),
                f.rel,
                allowed
                    .iter()
                    .map(|s| s.unwrap_or("<no row>"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        let Some(r) = row else { continue };
        let add_known = f.add_cb.is_some_and(|id| delivered.contains(&id));
        if add_known && r.state != f.state {
            out.push(format!(
                "{who}: state is {:?}, truth {:?}",
                r.state, f.state
            ));
        }
        if add_known && f.createtime.is_some() && r.added_at != f.createtime {
            out.push(format!(
                "{who}: added_at is {:?}, truth createtime {:?}",
                r.added_at, f.createtime
            ));
        }
        if sees && (resynced || !f.silent) {
            if r.remark.as_deref().unwrap_or("") != f.remark.as_deref().unwrap_or("") {
                out.push(format!(
                    "{who}: remark is {:?}, truth {:?}",
                    r.remark, f.remark
                ));
            }
            if r.description.as_deref().unwrap_or("") != f.description.as_deref().unwrap_or("") {
                out.push(format!(
                    "{who}: description is {:?}, truth {:?}",
                    r.description, f.description
                ));
            }
            let want: BTreeSet<String> = f.tags.iter().cloned().collect();
            if tag_ids(&r.tags) != want {
                out.push(format!("{who}: tags are {:?}, truth {want:?}", r.tags));
            }
        }
    }
    for r in &rows {
        let pair = (r.userid.clone(), r.external_userid.clone());
        // A relation under a userid renamed away while the callback was lost: WeCom lists its customers
        // under the new userid only, so the resync can only end it.
        if truth.former_userids.contains(&r.userid)
            && matches!(
                r.status.as_str(),
                "removed" | "deleted_by_staff" | "deleted_by_customer"
            )
            && resynced
        {
            continue;
        }
        // A row claims a relation (live or ended); WeCom never had this one.
        if !truth.follows.contains_key(&pair) {
            let why = if truth.mentioned.contains(&pair) {
                " (only a transfer_fail named this member: the takeover member never got the customer)"
            } else {
                ""
            };
            out.push(format!(
                "follow {}/{}: status is {}, but WeCom never had this relation{why}",
                r.userid, r.external_userid, r.status
            ));
        }
    }
}

async fn contacts(pool: &PgPool, truth: &Truth, resynced: bool, out: &mut Vec<String>) {
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT external_userid, name, corp_name FROM external_contacts WHERE corp_id = $1",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read contacts");
    let rows: BTreeMap<String, (Option<String>, Option<String>)> =
        rows.into_iter().map(|(e, n, c)| (e, (n, c))).collect();
    for e in rows.keys() {
        if !truth.customers.contains_key(e) {
            out.push(format!("contact {e}: not a WeChat user of this corp"));
        }
    }
    let seen: BTreeSet<&String> = truth
        .follows
        .iter()
        .filter(|((u, _), f)| truth.resync_sees(u, f))
        .map(|((_, e), _)| e)
        .collect();
    for e in seen {
        let c = &truth.customers[e];
        match rows.get(e) {
            None => out.push(format!("contact {e}: no row, WeCom lists it")),
            Some((name, corp)) => {
                if name.as_deref() != Some(c.name.as_str()) && (resynced || !c.silent) {
                    out.push(format!("contact {e}: name is {name:?}, truth {:?}", c.name));
                }
                if *corp != c.corp_name {
                    out.push(format!(
                        "contact {e}: corp_name is {corp:?}, truth {:?}",
                        c.corp_name
                    ));
                }
            }
        }
    }
}

async fn chats(pool: &PgPool, truth: &Truth, out: &mut Vec<String>) {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT chat_id, status, name, owner FROM external_group_chats WHERE corp_id = $1",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read chats");
    let rows: BTreeMap<String, (String, Option<String>, Option<String>)> = rows
        .into_iter()
        .map(|(c, s, n, o)| (c, (s, n, o)))
        .collect();
    let members: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT chat_id, member_id, status FROM external_group_chat_members WHERE corp_id = $1",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read members");
    let mut joined: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (chat, member, status) in members {
        if status == "joined" {
            joined.entry(chat).or_default().insert(member);
        }
    }
    for id in rows.keys() {
        if !truth.chats.contains_key(id) {
            out.push(format!("chat {id}: WeCom never had it"));
        }
    }
    for (id, c) in &truth.chats {
        let row = rows.get(id);
        if c.dismissed {
            if let Some((status, _, _)) = row.filter(|(s, _, _)| s != "dismissed") {
                out.push(format!("chat {id}: status is {status}, truth dismissed"));
            }
            continue;
        }
        let Some((status, name, owner)) = row else {
            out.push(format!("chat {id}: no row, WeCom lists it"));
            continue;
        };
        if status != "active" {
            out.push(format!("chat {id}: status is {status}, truth active"));
        }
        if name.as_deref() != Some(c.name.as_str()) {
            out.push(format!("chat {id}: name is {name:?}, truth {:?}", c.name));
        }
        if owner.as_deref() != Some(c.owner.as_str()) {
            out.push(format!(
                "chat {id}: owner is {owner:?}, truth {:?}",
                c.owner
            ));
        }
        let have = joined.get(id).cloned().unwrap_or_default();
        if have != c.members {
            let missing: Vec<&String> = c.members.difference(&have).collect();
            let extra: Vec<&String> = have.difference(&c.members).collect();
            out.push(format!(
                "chat {id}: joined members differ from WeCom's member_list: missing {missing:?}, not members {extra:?}"
            ));
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct TagRow {
    id: String,
    r#type: Option<String>,
    deleted: bool,
    name: Option<String>,
    group_id: Option<String>,
    sort_order: Option<i64>,
}

async fn tags(pool: &PgPool, truth: &Truth, out: &mut Vec<String>) {
    let rows: Vec<TagRow> = sqlx::query_as(
        "SELECT id, type, deleted, name, group_id, sort_order FROM external_corp_tags WHERE corp_id = $1",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("read tags");
    let rows: BTreeMap<String, TagRow> = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    // (id, kind, name, parent group, order, deleted, rule group)
    let mut want = Vec::new();
    for (gid, g) in &truth.groups {
        want.push((
            gid,
            "tag_group",
            &g.name,
            None,
            g.order,
            g.deleted,
            g.strategy,
        ));
        for t in &g.tags {
            want.push((
                &t.id,
                "tag",
                &t.name,
                Some(gid),
                t.order,
                // Deleted with its group, without a callback of its own: the service deletes the tags a list
                // placed in the group (simcorp_found_13), and the group event's tag job deletes those no list
                // named before the group went (created and deleted between two lists).
                t.deleted,
                g.strategy,
            ));
        }
    }
    let known: BTreeSet<&String> = want.iter().map(|w| w.0).collect();
    for id in rows.keys() {
        if !known.contains(id) {
            out.push(format!("tag {id}: WeCom never had it"));
        }
    }
    for (id, kind, name, parent, order, deleted, strategy) in want {
        let what = if strategy.is_some() {
            format!("rule-group {kind} {id}")
        } else {
            format!("{kind} {id}")
        };
        let row = rows.get(id);
        if deleted {
            if row.is_some_and(|r| !r.deleted) {
                out.push(format!("{what}: not deleted, truth deleted"));
            }
            continue;
        }
        let Some(r) = row else {
            out.push(format!("{what}: no row, WeCom lists it"));
            continue;
        };
        let mut bad = Vec::new();
        if r.deleted {
            bad.push("deleted = true, truth exists".to_owned());
        }
        if r.r#type.as_deref() != Some(kind) {
            bad.push(format!("type {:?}", r.r#type));
        }
        if r.name.as_deref() != Some(name.as_str()) {
            bad.push(format!("name {:?}, truth {name:?}", r.name));
        }
        if r.group_id.as_ref() != parent {
            bad.push(format!("group_id {:?}, truth {parent:?}", r.group_id));
        }
        if r.sort_order != Some(order) {
            bad.push(format!("sort_order {:?}, truth {order}", r.sort_order));
        }
        if !bad.is_empty() {
            out.push(format!("{what}: {}", bad.join(", ")));
        }
    }
}

/// After `cancel_auth` and its purge: every table that held the corp's synced data, and its queued work,
/// must hold nothing of it (WeCom: "应当确保删除该企业所有相关的数据").
pub async fn purged(pool: &PgPool, corp: &str) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "external_contacts",
        "external_contact_follows",
        "external_contact_history",
        "external_contact_transfers",
        "external_group_chats",
        "external_group_chat_members",
        "external_corp_tags",
        "customer_identities",
        "staff",
        "departments",
        "wecom_api_observations",
        "wecom_resync_runs",
        "wecom_access_tokens",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE corp_id = $1"
        )))
        .bind(corp)
        .fetch_one(pool)
        .await
        .expect("count the corp's rows");
        if n > 0 {
            out.push(format!(
                "{table} still has {n} row(s) of the cancelled corp {corp}"
            ));
        }
    }
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wecom_jobs WHERE corp_id = $1 AND status IN ('queued', 'running')",
    )
    .bind(corp)
    .fetch_one(pool)
    .await
    .expect("count the corp's jobs");
    if jobs > 0 {
        out.push(format!(
            "{jobs} job(s) of the cancelled corp {corp} are still queued or running"
        ));
    }
    out
}
