//! The corp tag statement: each tag's registers (type, strategy, deleted, last change).

use sqlx::{Postgres, Transaction};

use crate::store::projections::ts;
use crate::sync::plan::TagWrite;

pub(super) async fn tags<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a TagWrite> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_corp_tags AS t (corp_id, id, type, type_version, strategy_id, strategy_version, deleted, \
             status_version, last_change_type, last_event_at, last_version, last_event_id) \
         SELECT u.corp_id, u.id, u.type, u.type_version, u.strategy_id, u.strategy_version, u.deleted, u.status_version, \
             u.change_type, to_timestamp(u.last_at), u.last_version, u.last_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::text[], \
             $9::text[], $10::float8[], $11::text[], $12::bigint[]) \
           AS u(corp_id, id, type, type_version, strategy_id, strategy_version, deleted, status_version, change_type, \
             last_at, last_version, last_id) \
         ON CONFLICT (corp_id, id) DO UPDATE SET \
           deleted = CASE WHEN EXCLUDED.status_version > t.status_version THEN EXCLUDED.deleted ELSE t.deleted END, \
           status_version = GREATEST(t.status_version, EXCLUDED.status_version), \
           type = CASE WHEN EXCLUDED.type_version > COALESCE(t.type_version, '') THEN EXCLUDED.type ELSE t.type END, \
           type_version = GREATEST(t.type_version, EXCLUDED.type_version), \
           strategy_id = CASE WHEN EXCLUDED.strategy_version > COALESCE(t.strategy_version, '') \
                         THEN EXCLUDED.strategy_id ELSE t.strategy_id END, \
           strategy_version = GREATEST(t.strategy_version, EXCLUDED.strategy_version), \
           last_change_type = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_change_type ELSE t.last_change_type END, \
           last_event_at = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_event_at ELSE t.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > t.last_version THEN EXCLUDED.last_event_id ELSE t.last_event_id END, \
           last_version = GREATEST(t.last_version, EXCLUDED.last_version)",
    )
    .bind(rows.clone().map(|t| t.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.id.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.tag_type.as_ref().map(|s| s.value.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.tag_type.as_ref().map(|s| s.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.strategy_id.as_ref().map(|s| s.value.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.strategy_id.as_ref().map(|s| s.version.as_str())).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.deleted).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.status_version.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.last.change_type.as_str()).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| ts(t.last.at)).collect::<Vec<_>>())
    .bind(rows.clone().map(|t| t.last.version.as_str()).collect::<Vec<_>>())
    .bind(rows.map(|t| t.last.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
