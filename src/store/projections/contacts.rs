//! The customer statements: the customers seen by events, their fetched details, and transfer attempts.

use sqlx::{Postgres, Transaction};

use crate::store::projections::ts;
use crate::sync::plan::{ContactDetailWrite, ContactSeen, TransferAttempt};

pub(super) async fn contacts<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a ContactSeen> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contacts AS c (corp_id, external_userid, first_seen_at, last_event_at, last_event_id) \
         SELECT u.corp_id, u.external_userid, to_timestamp(u.first_seen), to_timestamp(u.last_at), u.last_id \
         FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::float8[], $5::bigint[]) \
           AS u(corp_id, external_userid, first_seen, last_at, last_id) \
         ON CONFLICT (corp_id, external_userid) DO UPDATE SET \
           first_seen_at = LEAST(c.first_seen_at, EXCLUDED.first_seen_at), \
           last_event_id = CASE WHEN (EXCLUDED.last_event_at, EXCLUDED.last_event_id) > (c.last_event_at, COALESCE(c.last_event_id, 0)) \
                           THEN EXCLUDED.last_event_id ELSE c.last_event_id END, \
           last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at)",
    )
    .bind(rows.clone().map(|c| c.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.external_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| ts(c.first_seen_at)).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| ts(c.last_event_at)).collect::<Vec<_>>())
    .bind(rows.map(|c| c.last_event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn contact_details<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a ContactDetailWrite> + Clone,
) -> Result<u64, sqlx::Error> {
    // One register: the whole detail group changes when the fetch is newer than the stored one.
    let created: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO external_contacts AS c (corp_id, external_userid, first_seen_at, last_event_at, name, avatar, \
             type, gender, unionid, position, corp_name, corp_full_name, external_profile, detail_synced_at, detail_version) \
         SELECT u.corp_id, u.external_userid, u.synced_at, u.synced_at, u.name, u.avatar, u.type::smallint, \
             u.gender::smallint, u.unionid, u.position, u.corp_name, u.corp_full_name, u.external_profile, u.synced_at, \
             u.version \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::timestamptz[], $13::text[]) \
           AS u(corp_id, external_userid, name, avatar, type, gender, unionid, position, corp_name, corp_full_name, \
             external_profile, synced_at, version) \
         ON CONFLICT (corp_id, external_userid) DO UPDATE SET name = EXCLUDED.name, avatar = EXCLUDED.avatar, \
             type = EXCLUDED.type, gender = EXCLUDED.gender, unionid = EXCLUDED.unionid, position = EXCLUDED.position, \
             corp_name = EXCLUDED.corp_name, corp_full_name = EXCLUDED.corp_full_name, \
             external_profile = EXCLUDED.external_profile, detail_synced_at = EXCLUDED.detail_synced_at, \
             detail_version = EXCLUDED.detail_version \
         WHERE EXCLUDED.detail_version > COALESCE(c.detail_version, '') \
         RETURNING (xmax = 0)",
    )
    .bind(rows.clone().map(|c| c.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.external_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.name.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.avatar.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.kind).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.gender).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.unionid.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.position.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.corp_name.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.corp_full_name.as_deref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.external_profile.as_ref()).collect::<Vec<_>>())
    .bind(rows.clone().map(|c| c.synced_at).collect::<Vec<_>>())
    .bind(rows.map(|c| c.version.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(created.into_iter().filter(|c| *c).count() as u64)
}

pub(super) async fn transfers(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[TransferAttempt],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contact_transfers (corp_id, external_userid, takeover_userid, reason, failed_at, event_id) \
         SELECT u.corp_id, u.external_userid, u.takeover, u.reason, to_timestamp(u.failed_at), u.event_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::bigint[]) \
           AS u(corp_id, external_userid, takeover, reason, failed_at, event_id) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(rows.iter().map(|t| t.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.external_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.takeover_userid.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.reason.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| ts(t.failed_at)).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
