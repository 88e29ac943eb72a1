//! The group chat statements: the chats' registers and their members'.

use sqlx::{Postgres, Transaction};

use crate::store::projections::ts;
use crate::sync::plan::{ChatWrite, MemberWrite};

pub(super) async fn chats<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a ChatWrite> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, created_at, dismissed_at, \
             last_update_detail, member_version, member_version_version, update_version, last_event_at, last_version, \
             last_event_id) \
         SELECT u.corp_id, u.chat_id, u.status, u.status_version, to_timestamp(u.created_at), to_timestamp(u.dismissed_at), \
             u.detail, u.member_version, u.mv_version, u.update_version, to_timestamp(u.last_at), u.last_version, u.last_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[], $8::text[], \
             $9::text[], $10::text[], $11::float8[], $12::text[], $13::bigint[]) \
           AS u(corp_id, chat_id, status, status_version, created_at, dismissed_at, detail, member_version, mv_version, \
             update_version, last_at, last_version, last_id) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET \
           status = CASE WHEN EXCLUDED.status_version > g.status_version THEN EXCLUDED.status ELSE g.status END, \
           dismissed_at = CASE WHEN EXCLUDED.status_version > g.status_version THEN EXCLUDED.dismissed_at ELSE g.dismissed_at END, \
           status_version = GREATEST(g.status_version, EXCLUDED.status_version), \
           created_at = LEAST(g.created_at, EXCLUDED.created_at), \
           last_update_detail = CASE WHEN EXCLUDED.update_version > COALESCE(g.update_version, '') THEN EXCLUDED.last_update_detail ELSE g.last_update_detail END, \
           member_version = CASE WHEN EXCLUDED.member_version_version > COALESCE(g.member_version_version, '') THEN EXCLUDED.member_version ELSE g.member_version END, \
           member_version_version = GREATEST(g.member_version_version, EXCLUDED.member_version_version), \
           update_version = GREATEST(g.update_version, EXCLUDED.update_version), \
           last_event_at = CASE WHEN EXCLUDED.last_version > g.last_version THEN EXCLUDED.last_event_at ELSE g.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > g.last_version THEN EXCLUDED.last_event_id ELSE g.last_event_id END, \
           last_version = GREATEST(g.last_version, EXCLUDED.last_version)",
    )
    .bind(rows.clone().map(|c| c.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.chat_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.status.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.status_version.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.created_at.map(ts)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.dismissed_at.map(ts)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.update.as_ref().map(|u| u.detail.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.member_version.as_ref().map(|m| m.member_version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.member_version.as_ref().map(|m| m.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.update.as_ref().map(|u| u.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| ts(c.last.at)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.last.version.as_str()).collect::<Vec<_>>())
    .bind(rows.map(|c| c.last.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn members<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a MemberWrite> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_group_chat_members AS m (corp_id, chat_id, member_id, status, version, \
             join_scene, quit_scene, changed_at, last_event_id) \
         SELECT u.corp_id, u.chat_id, u.member_id, u.status, u.version, u.join_scene, u.quit_scene, \
             to_timestamp(u.changed_at), u.event_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], \
             $8::float8[], $9::bigint[]) \
           AS u(corp_id, chat_id, member_id, status, version, join_scene, quit_scene, changed_at, event_id) \
         ON CONFLICT (corp_id, chat_id, member_id) DO UPDATE SET \
           status = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.status ELSE m.status END, \
           join_scene = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.join_scene ELSE m.join_scene END, \
           quit_scene = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.quit_scene ELSE m.quit_scene END, \
           changed_at = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.changed_at ELSE m.changed_at END, \
           last_event_id = CASE WHEN EXCLUDED.version > m.version THEN EXCLUDED.last_event_id ELSE m.last_event_id END, \
           version = GREATEST(m.version, EXCLUDED.version)",
    )
    .bind(rows.clone().map(|m| m.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.chat_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.member_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.status.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.version.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.join_scene).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| m.quit_scene).collect::<Vec<_>>())
    .bind(rows.clone().map(|m| ts(m.changed_at)).collect::<Vec<_>>())
    .bind(rows.map(|m| m.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
