//! Writing what WeCom's API says into the synced tables.
//!
//! Contacts and follows: the rules are the planner's ([`plan::observe_contact`]); this module only executes
//! them. A listed follow is dated by its `createtime` (a deletion event at or after it keeps winning; a re-add
//! wins), and the detail columns by the fetch time.
//!
//! Chats and tags: an API answer fetched at time T counts as an observation at T with the lowest rank,
//! version `T:0:api`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::store::projections;
use crate::sync::client::types::{CorpTagList, ExternalContactDetail, GroupChat};
use crate::sync::plan;

fn api_version(at: DateTime<Utc>) -> String {
    format!("{:012}:0:api", at.timestamp().max(0))
}

/// `externalcontact/get`: the contact's details and every follow relation WeCom lists, planned as register
/// writes by [`plan::observe_contact`] and executed like events (a status it changes is notified).
pub async fn contact_detail(
    pool: &PgPool,
    corp_id: &str,
    answer: &ExternalContactDetail,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let plan = plan::observe_contact(corp_id, answer, fetched_at);
    projections::apply_observation(pool, plan).await?;
    Ok(())
}

/// `groupchat/get`: name, owner, notice and, when the member version changed, the member list.
pub async fn group_chat(
    pool: &PgPool,
    corp_id: &str,
    chat: &GroupChat,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let Some(chat_id) = &chat.chat_id else {
        return Ok(());
    };
    let version = api_version(fetched_at);
    let member_version = &chat.member_version;
    let mut tx = pool.begin().await?;
    let known: Option<Option<String>> = sqlx::query_scalar(
        "SELECT member_version FROM external_group_chats WHERE corp_id = $1 AND chat_id = $2",
    )
    .bind(corp_id)
    .bind(chat_id)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, created_at, \
             member_version, last_event_at, last_version, name, owner, notice, detail_synced_at) \
         VALUES ($1, $2, 'active', $3, $4, $5, $6, $3, $7, $8, $9, $6) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET name = EXCLUDED.name, owner = EXCLUDED.owner, \
             notice = EXCLUDED.notice, member_version = COALESCE(EXCLUDED.member_version, g.member_version), \
             created_at = COALESCE(g.created_at, EXCLUDED.created_at), detail_synced_at = EXCLUDED.detail_synced_at \
         WHERE g.detail_synced_at IS NULL OR g.detail_synced_at <= EXCLUDED.detail_synced_at",
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
    .execute(&mut *tx)
    .await?;
    // Same member version as stored: the list has not changed (docs/protocol.md §7.3), skip it.
    let unchanged = member_version.is_some() && known.flatten() == *member_version;
    if !unchanged {
        let members: Vec<&str> = chat
            .member_list
            .iter()
            .filter_map(|m| m.userid.as_deref())
            .collect();
        sqlx::query(
            "INSERT INTO external_group_chat_members AS m (corp_id, chat_id, member_id, status, version, changed_at) \
             SELECT $1, $2, member, 'joined', $4, $5 FROM UNNEST($3::text[]) AS member \
             ON CONFLICT (corp_id, chat_id, member_id) DO UPDATE SET status = 'joined', version = EXCLUDED.version, \
                 changed_at = EXCLUDED.changed_at WHERE EXCLUDED.version > m.version",
        )
        .bind(corp_id)
        .bind(chat_id)
        .bind(&members)
        .bind(&version)
        .bind(fetched_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE external_group_chat_members SET status = 'left', version = $4, changed_at = $5 \
             WHERE corp_id = $1 AND chat_id = $2 AND NOT (member_id = ANY($3)) AND status = 'joined' AND version < $4",
        )
        .bind(corp_id)
        .bind(chat_id)
        .bind(&members)
        .bind(&version)
        .bind(fetched_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// `get_corp_tag_list`: every tag group and tag.
pub async fn corp_tags(
    pool: &PgPool,
    corp_id: &str,
    answer: &CorpTagList,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let version = api_version(fetched_at);
    let mut tx = pool.begin().await?;
    for group in &answer.tag_group {
        let group_id = &group.group_id;
        // The group's sort order is read from `order`, as it always was (WeCom documents `group_order`).
        let mut rows = vec![(
            group_id,
            "tag_group",
            &group.group_name,
            &None,
            group.order,
            group.deleted,
        )];
        for tag in &group.tag {
            rows.push((&tag.id, "tag", &tag.name, group_id, tag.order, tag.deleted));
        }
        for (id, kind, name, parent, order, deleted) in rows {
            let Some(id) = id else { continue };
            sqlx::query(
                "INSERT INTO external_corp_tags AS t (corp_id, id, type, deleted, status_version, last_change_type, \
                     last_event_at, last_version, name, group_id, sort_order, detail_synced_at) \
                 VALUES ($1, $2, $3, $4, $5, 'api_sync', $6, $5, $7, $8, $9, $6) \
                 ON CONFLICT (corp_id, id) DO UPDATE SET type = COALESCE(t.type, EXCLUDED.type), \
                     deleted = CASE WHEN EXCLUDED.status_version > t.status_version THEN EXCLUDED.deleted ELSE t.deleted END, \
                     status_version = GREATEST(t.status_version, EXCLUDED.status_version), \
                     name = EXCLUDED.name, group_id = EXCLUDED.group_id, sort_order = EXCLUDED.sort_order, \
                     detail_synced_at = EXCLUDED.detail_synced_at \
                 WHERE t.detail_synced_at IS NULL OR t.detail_synced_at <= EXCLUDED.detail_synced_at",
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
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}
