//! Writing what WeCom's API says into the synced tables.
//!
//! Contacts and follows: the rules are the planner's ([`plan::observe_contact`]); this module only executes
//! them. A listed follow is dated by its `createtime` (a deletion event at or after it keeps winning; a re-add
//! wins), and the detail columns by the fetch time.
//!
//! Chats and tags: an API answer fetched at time T counts as an observation at T with the lowest rank,
//! version `T:0:api`.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::store::observations::{self, Observation};
use crate::store::projections;
use crate::sync::client::types::{CorpTagList, ExternalContactDetail, GroupChat};
use crate::sync::plan;

fn api_version(at: DateTime<Utc>) -> String {
    format!("{:012}:0:api", at.timestamp().max(0))
}

/// `externalcontact/get`: the contact's details and every follow relation WeCom lists, planned as register
/// writes by [`plan::observe_contact`] and executed like events (a status it changes is notified). The answer
/// is recorded in the observation log in the same transaction ([`observations`]).
pub async fn contact_detail(
    pool: &PgPool,
    corp_id: &str,
    answer: &ExternalContactDetail,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let plan = plan::observe_contact(corp_id, answer, fetched_at);
    if plan.contact_details.is_empty() {
        // No customer in the answer: nothing is written, nothing to remember.
        return Ok(());
    }
    let mut tx = projections::observation_tx(pool).await?;
    let observed = projections::observe_in(&mut tx, plan, true).await?;
    observations::record(
        &mut tx,
        corp_id,
        &Observation::ContactDetail {
            answer: answer.clone(),
            fetched_at,
        },
        observed.pinned(),
        &observations::follow_covers(&answer.follow_user),
    )
    .await?;
    // Customer identity (issue 13): the unionid WeCom tells a self-built app fills the unionid mapping.
    if let Some(contact) = &answer.external_contact
        && let Some(external_userid) = contact.external_userid.as_deref()
        && let Some(unionid) = contact.unionid.as_deref().filter(|u| !u.is_empty())
    {
        crate::store::identity::observe_unionid(
            &mut tx,
            corp_id,
            external_userid,
            unionid,
            fetched_at,
        )
        .await?;
    }
    tx.commit().await
}

/// `groupchat/get`: name, owner, notice, admins and, unless the stored member list was itself read from the
/// API at this member version, the member list with what the API says of each member. Members the API no
/// longer lists become `left` (unless an event newer than this answer said otherwise).
///
/// The event-carried `member_version` (CurMemVer) is not enough to skip the list: the callbacks that built
/// the stored list may have been lost, so only `members_synced_version` (the version of a list read here)
/// counts. A chat update whose LastMemVer is not what we hold enqueues this read too (every chat event does).
pub async fn group_chat(
    pool: &PgPool,
    corp_id: &str,
    chat: &GroupChat,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    // An answer older than what we hold writes nothing: there is nothing to remember either.
    if let Some(outcome) = group_chat_in(&mut tx, corp_id, chat, fetched_at).await? {
        let mut covers = Vec::new();
        if chat.member_version.is_some() {
            covers.push("member_version".to_owned());
        }
        if let Some(ids) = &outcome.members {
            covers.push("members".to_owned());
            covers.extend(ids.iter().cloned());
        }
        // A member list depends on which member rows existed (those not listed become `left`): kept.
        let pinned = outcome.created || outcome.members.is_some();
        let obs = Observation::GroupChat {
            chat: chat.clone(),
            fetched_at,
        };
        observations::record(&mut tx, corp_id, &obs, pinned, &covers).await?;
    }
    tx.commit().await
}

/// What [`group_chat_in`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatOutcome {
    /// The chat row was created, or a member row.
    pub created: bool,
    /// The member ids of the list written; `None` when the list was not written (same member version).
    pub members: Option<Vec<String>>,
}

/// [`group_chat`] inside `tx` (also the rebuild's replay). `None`: no chat id, or an answer older than the
/// stored one (nothing written).
pub(crate) async fn group_chat_in(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    chat: &GroupChat,
    fetched_at: DateTime<Utc>,
) -> Result<Option<ChatOutcome>, sqlx::Error> {
    let Some(chat_id) = &chat.chat_id else {
        return Ok(None);
    };
    let version = api_version(fetched_at);
    let member_version = &chat.member_version;
    let admins = serde_json::Value::Array(
        chat.admin_list
            .iter()
            .filter_map(|a| a.userid.as_ref())
            .map(|u| serde_json::json!({ "userid": u }))
            .collect(),
    );
    let synced: Option<Option<String>> = sqlx::query_scalar(
        "SELECT members_synced_version FROM external_group_chats WHERE corp_id = $1 AND chat_id = $2 FOR UPDATE",
    )
    .bind(corp_id)
    .bind(chat_id)
    .fetch_optional(&mut **tx)
    .await?;
    let created: Option<bool> = sqlx::query_scalar(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, created_at, \
             member_version, last_event_at, last_version, name, owner, notice, admin_list, detail_synced_at) \
         VALUES ($1, $2, 'active', $3, $4, $5, $6, $3, $7, $8, $9, $10, $6) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET name = EXCLUDED.name, owner = EXCLUDED.owner, \
             notice = EXCLUDED.notice, member_version = COALESCE(EXCLUDED.member_version, g.member_version), \
             admin_list = EXCLUDED.admin_list, \
             created_at = COALESCE(g.created_at, EXCLUDED.created_at), detail_synced_at = EXCLUDED.detail_synced_at \
         WHERE g.detail_synced_at IS NULL OR g.detail_synced_at <= EXCLUDED.detail_synced_at \
         RETURNING (xmax = 0)",
    )
    .bind(corp_id)
    .bind(chat_id)
    .bind(&version)
    .bind(chat.create_time.and_then(|t| DateTime::from_timestamp(t, 0)))
    .bind(member_version)
    .bind(fetched_at)
    .bind(&chat.name)
    .bind(&chat.owner)
    .bind(&chat.notice)
    .bind(&admins)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(mut created) = created else {
        return Ok(None);
    };
    // Same member version as the list we read last time: the list has not changed (docs/protocol.md §7.3). An
    // answer older than what we hold is not applied at all.
    let unchanged = member_version.is_some() && synced.flatten() == *member_version;
    let mut members = None;
    if !unchanged {
        let m = &chat.member_list;
        let ids: Vec<&str> = m.iter().filter_map(|m| m.userid.as_deref()).collect();
        let listed: Vec<_> = m.iter().filter(|m| m.userid.is_some()).collect();
        let inserted: Vec<bool> = sqlx::query_scalar(
            "INSERT INTO external_group_chat_members AS m (corp_id, chat_id, member_id, status, version, changed_at, \
                 member_type, join_time, api_join_scene, invitor, group_nickname, name, unionid, state, detail_synced_at) \
             SELECT $1, $2, u.member, 'joined', $3, $4, u.kind, to_timestamp(u.join_time), u.scene, u.invitor, \
                 u.nickname, u.name, u.unionid, u.state, $4 \
             FROM UNNEST($5::text[], $6::smallint[], $7::float8[], $8::int[], $9::text[], $10::text[], $11::text[], \
                 $12::text[], $13::text[]) AS u(member, kind, join_time, scene, invitor, nickname, name, unionid, state) \
             ON CONFLICT (corp_id, chat_id, member_id) DO UPDATE SET \
                 status = CASE WHEN EXCLUDED.version > m.version THEN 'joined' ELSE m.status END, \
                 changed_at = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.changed_at ELSE m.changed_at END, \
                 version = GREATEST(m.version, EXCLUDED.version), \
                 member_type = EXCLUDED.member_type, join_time = EXCLUDED.join_time, \
                 api_join_scene = EXCLUDED.api_join_scene, invitor = EXCLUDED.invitor, \
                 group_nickname = EXCLUDED.group_nickname, name = EXCLUDED.name, unionid = EXCLUDED.unionid, \
                 state = EXCLUDED.state, detail_synced_at = EXCLUDED.detail_synced_at \
             RETURNING (xmax = 0)",
        )
        .bind(corp_id)
        .bind(chat_id)
        .bind(&version)
        .bind(fetched_at)
        .bind(&ids)
        .bind(listed.iter().map(|m| m.kind.and_then(|k| i16::try_from(k).ok())).collect::<Vec<_>>())
        .bind(listed.iter().map(|m| m.join_time.map(|t| t as f64)).collect::<Vec<_>>())
        .bind(listed.iter().map(|m| m.join_scene.and_then(|s| i32::try_from(s).ok())).collect::<Vec<_>>())
        .bind(listed.iter().map(|m| m.invitor.as_ref().and_then(|i| i.userid.clone())).collect::<Vec<_>>())
        .bind(listed.iter().map(|m| m.group_nickname.clone()).collect::<Vec<_>>())
        .bind(listed.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
        .bind(listed.iter().map(|m| m.unionid.clone()).collect::<Vec<_>>())
        .bind(listed.iter().map(|m| m.state.clone()).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE external_group_chat_members SET status = 'left', version = $4, changed_at = $5 \
             WHERE corp_id = $1 AND chat_id = $2 AND NOT (member_id = ANY($3)) AND status = 'joined' AND version < $4",
        )
        .bind(corp_id)
        .bind(chat_id)
        .bind(&ids)
        .bind(&version)
        .bind(fetched_at)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE external_group_chats SET members_synced_version = $3 WHERE corp_id = $1 AND chat_id = $2",
        )
        .bind(corp_id)
        .bind(chat_id)
        .bind(member_version)
        .execute(&mut **tx)
        .await?;
        created |= inserted.into_iter().any(|c| c);
        members = Some(ids.iter().map(|s| (*s).to_owned()).collect());
    }
    Ok(Some(ChatOutcome { created, members }))
}

/// `get_corp_tag_list` or `get_strategy_tag_list`: every tag group and tag, with names, the group's name and
/// the sort orders. A rule-group answer (groups with `strategy_id`) also sets the rule group.
pub async fn corp_tags(
    pool: &PgPool,
    corp_id: &str,
    answer: &CorpTagList,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    let outcome = corp_tags_in(&mut tx, corp_id, answer, fetched_at).await?;
    let obs = Observation::CorpTags {
        answer: answer.clone(),
        fetched_at,
    };
    // A deletion it changed matters to a later tag sweep (which only deletes tags not yet deleted): kept.
    let pinned = outcome.created || outcome.deleted_changed;
    observations::record(&mut tx, corp_id, &obs, pinned, &outcome.covers).await?;
    tx.commit().await
}

/// What [`corp_tags_in`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagsOutcome {
    /// A tag or group row was created.
    pub created: bool,
    /// A row's `deleted` changed.
    pub deleted_changed: bool,
    /// The ids written, a rule group's marked `#rule` (a newer answer covering them rewrites them all).
    pub covers: Vec<String>,
}

/// [`corp_tags`] inside `tx` (also the rebuild's replay).
pub(crate) async fn corp_tags_in(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    answer: &CorpTagList,
    fetched_at: DateTime<Utc>,
) -> Result<TagsOutcome, sqlx::Error> {
    let version = api_version(fetched_at);
    let mut outcome = TagsOutcome::default();
    let ids: Vec<&str> = answer
        .tag_group
        .iter()
        .flat_map(|g| {
            std::iter::once(g.group_id.as_deref()).chain(g.tag.iter().map(|t| t.id.as_deref()))
        })
        .flatten()
        .collect();
    // The rows before, locked in key order (as tag events lock them), to tell a deletion it changed.
    let before: std::collections::HashMap<String, bool> = sqlx::query_as::<_, (String, bool)>(
        "SELECT id, deleted FROM external_corp_tags WHERE corp_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(corp_id)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    // Groups an event deleted after this answer was asked for: the tags it places in them were deleted with
    // them (see `projections::tags::tags_of_deleted_groups`, which covers the other order).
    let groups: Vec<&str> = answer
        .tag_group
        .iter()
        .filter_map(|g| g.group_id.as_deref())
        .collect();
    let deleted_groups: std::collections::HashMap<String, String> = sqlx::query_as(
        "SELECT id, status_version FROM external_corp_tags \
         WHERE corp_id = $1 AND id = ANY($2) AND deleted AND status_version > $3",
    )
    .bind(corp_id)
    .bind(&groups)
    .bind(&version)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    for group in &answer.tag_group {
        let group_id = &group.group_id;
        let group_deleted = group_id.as_ref().and_then(|g| deleted_groups.get(g));
        // WeCom documents `group_order` (docs/protocol.md §7.4); some answers say `order`.
        let group_order = group.group_order.or(group.order);
        let strategy = group.strategy_id.map(|s| s.to_string());
        let mut rows = vec![(
            group_id,
            "tag_group",
            &group.group_name,
            &None,
            group_order,
            group.deleted,
            &version,
        )];
        for tag in &group.tag {
            let (deleted, status) = match group_deleted {
                Some(v) => (true, v),
                None => (tag.deleted, &version),
            };
            rows.push((
                &tag.id, "tag", &tag.name, group_id, tag.order, deleted, status,
            ));
        }
        for (id, kind, name, parent, order, deleted, status) in rows {
            let Some(id) = id else { continue };
            outcome.covers.push(match &strategy {
                Some(_) => format!("{id}#rule"),
                None => id.clone(),
            });
            let written: Option<(bool, bool)> = sqlx::query_as(
                "INSERT INTO external_corp_tags AS t (corp_id, id, type, deleted, status_version, last_change_type, \
                     last_event_at, last_version, name, group_id, sort_order, detail_synced_at, group_name, \
                     group_order, strategy_id, strategy_version) \
                 VALUES ($1, $2, $3, $4, $13, 'api_sync', $6, $5, $7, $8, $9, $6, $10, $11, $12, \
                     CASE WHEN $12::text IS NULL THEN NULL ELSE $5 END) \
                 ON CONFLICT (corp_id, id) DO UPDATE SET type = COALESCE(t.type, EXCLUDED.type), \
                     deleted = CASE WHEN EXCLUDED.status_version > t.status_version THEN EXCLUDED.deleted ELSE t.deleted END, \
                     status_version = GREATEST(t.status_version, EXCLUDED.status_version), \
                     name = EXCLUDED.name, group_id = EXCLUDED.group_id, sort_order = EXCLUDED.sort_order, \
                     group_name = EXCLUDED.group_name, group_order = EXCLUDED.group_order, \
                     strategy_id = CASE WHEN EXCLUDED.strategy_version > COALESCE(t.strategy_version, '') \
                         THEN EXCLUDED.strategy_id ELSE t.strategy_id END, \
                     strategy_version = GREATEST(t.strategy_version, EXCLUDED.strategy_version), \
                     detail_synced_at = EXCLUDED.detail_synced_at \
                 WHERE t.detail_synced_at IS NULL OR t.detail_synced_at <= EXCLUDED.detail_synced_at \
                 RETURNING (xmax = 0), deleted",
            )
            .bind(corp_id)
            .bind(id)
            .bind(kind)
            .bind(deleted)
            .bind(&version)
            .bind(fetched_at)
            .bind(name)
            .bind(parent)
            .bind(order)
            .bind(&group.group_name)
            .bind(group_order)
            .bind(&strategy)
            .bind(status)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((created, deleted)) = written {
                outcome.created |= created;
                outcome.deleted_changed |= before.get(id.as_str()).is_some_and(|d| *d != deleted);
            }
        }
    }
    outcome.covers.sort();
    outcome.covers.dedup();
    Ok(outcome)
}
