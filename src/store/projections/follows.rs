//! The follow statement: one upsert for every register of a follow relation (status, add, last change,
//! detail), each changing only when its version wins.

use sqlx::{Postgres, Transaction};

use crate::store::projections::ts;
use crate::sync::plan::FollowWrite;

/// The status register's condition (see `plan::merge_state`): a greater version, or a later listing of a
/// follow the resync swept as removed.
const STATUS_WINS: &str = "(EXCLUDED.status_version > f.status_version OR (f.status = 'removed' \
     AND EXCLUDED.listed_version IS NOT NULL AND EXCLUDED.listed_version > f.status_version))";
/// A fetched `tags` without the tags an event deleted after the fetch was asked for: the fetch may predate
/// the deletion, which took them off every relation already (`projections::tags::untag_deleted`), so
/// either order ends the same. Evaluated only for rows that carry tags (fetches, not events).
const TAGS_NOT_DELETED: &str = "CASE WHEN u.tags IS NULL OR jsonb_typeof(u.tags) <> 'array' THEN u.tags ELSE \
     (SELECT COALESCE(jsonb_agg(x.e ORDER BY x.n), '[]'::jsonb) FROM jsonb_array_elements(u.tags) WITH ORDINALITY AS x(e, n) \
      WHERE NOT EXISTS (SELECT 1 FROM external_corp_tags d WHERE d.corp_id = u.corp_id \
        AND d.id = x.e->>'tag_id' AND d.deleted AND d.status_version > u.detail_version)) END";
/// The detail register's condition: a newer fetch.
const DETAIL_WINS: &str = "EXCLUDED.detail_version > COALESCE(f.detail_version, '')";

/// Upserts follows. With `returning`, returns each written row's key, status and whether it was created (for
/// the observation path, which notifies status changes); without, returns nothing, as the event path needs
/// nothing back and a batch of thousands of rows would cost a result set for nothing.
pub(super) async fn follows<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a FollowWrite> + Clone,
    returning: bool,
) -> Result<Vec<((String, String, String), String, bool)>, sqlx::Error> {
    let returning = if returning {
        "RETURNING f.corp_id, f.userid, f.external_userid, f.status, (xmax = 0)"
    } else {
        ""
    };
    let merge = merge_clause();
    // Built from the constants above only; every value is a bound parameter.
    let sql = format!(
        "INSERT INTO external_contact_follows AS f ({COLUMNS}) \
         SELECT u.corp_id, u.userid, u.external_userid, u.status, u.status_version, to_timestamp(u.deleted_at), \
             u.delete_source, u.listed_version, u.state, u.welcome_code, to_timestamp(u.added_at), u.add_version, \
             u.last_change_type, to_timestamp(u.last_event_at), u.last_version, u.last_event_id, u.remark, \
             u.description, \
             CASE WHEN u.remark_mobiles IS NULL THEN NULL \
                  ELSE ARRAY(SELECT jsonb_array_elements_text(u.remark_mobiles)) END, \
             u.add_way::integer, u.oper_userid, {TAGS_NOT_DELETED}, u.detail_synced_at, u.detail_version, \
             u.resync_run \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::text[], \
             $9::text[], $10::text[], $11::float8[], $12::text[], $13::text[], $14::float8[], $15::text[], $16::bigint[], \
             $17::text[], $18::text[], $19::jsonb[], $20::bigint[], $21::text[], $22::jsonb[], $23::timestamptz[], \
             $24::text[], $25::bigint[]) \
           AS u(corp_id, userid, external_userid, status, status_version, deleted_at, delete_source, listed_version, \
             state, welcome_code, added_at, add_version, last_change_type, last_event_at, last_version, last_event_id, \
             remark, description, remark_mobiles, add_way, oper_userid, tags, detail_synced_at, detail_version, \
             resync_run) \
         ON CONFLICT (corp_id, userid, external_userid) DO UPDATE SET {merge} \
         {returning}"
    );
    let detail = |f: &'a FollowWrite| f.detail.as_ref();
    // Only constant column lists are interpolated into `sql`; every value is a bind.
    let out: Vec<(String, String, String, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(rows.clone().map(|f| f.corp_id.as_str()).collect::<Vec<_>>())
        .bind(rows.clone().map(|f| f.userid.as_str()).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|f| f.external_userid.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.version.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.deleted_at.map(ts))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.delete_source.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.state.listed.as_ref().map(|v| v.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().and_then(|a| a.state.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().and_then(|a| a.welcome_code.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().map(|a| ts(a.added_at)))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.add.as_ref().map(|a| a.version.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| f.last.change_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.clone().map(|f| ts(f.last.at)).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|f| f.last.version.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.clone().map(|f| f.last.event_id).collect::<Vec<_>>())
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.remark.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.description.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| {
                    detail(f)
                        .and_then(|d| d.remark_mobiles.as_ref())
                        .map(|m| serde_json::json!(m))
                })
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.add_way))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.oper_userid.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).and_then(|d| d.tags.as_ref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).map(|d| d.synced_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.clone()
                .map(|f| detail(f).map(|d| d.version.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(rows.map(|f| f.resync_run).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
    Ok(out
        .into_iter()
        .map(|(c, u, e, s, created)| ((c, u, e), s, created))
        .collect())
}

/// Every column the follow statement writes (the legacy `transfer_fail_*` columns are no longer written).
pub(crate) const COLUMNS: &str = "corp_id, userid, external_userid, status, status_version, deleted_at, \
     delete_source, listed_version, state, welcome_code, added_at, add_version, last_change_type, last_event_at, \
     last_version, last_event_id, remark, description, remark_mobiles, add_way, oper_userid, tags, \
     detail_synced_at, detail_version, resync_run";

/// The `DO UPDATE SET` list of an upsert into `external_contact_follows AS f`: each register takes the
/// `EXCLUDED` row's value where its version wins (the planner's rule, `plan::merge_state`). Shared by the
/// follow statement and the merge of a renamed userid's follows into its successor's.
pub(crate) fn merge_clause() -> String {
    let detail_cols = [
        "remark",
        "description",
        "remark_mobiles",
        "add_way",
        "oper_userid",
        "tags",
        "detail_synced_at",
    ]
    .map(|c| format!("{c} = CASE WHEN {DETAIL_WINS} THEN EXCLUDED.{c} ELSE f.{c} END, "))
    .concat();
    let status_cols = ["status", "deleted_at", "delete_source"]
        .map(|c| format!("{c} = CASE WHEN {STATUS_WINS} THEN EXCLUDED.{c} ELSE f.{c} END, "))
        .concat();
    format!(
        "{status_cols} \
           status_version = CASE WHEN {STATUS_WINS} THEN EXCLUDED.status_version ELSE f.status_version END, \
           listed_version = GREATEST(f.listed_version, EXCLUDED.listed_version), \
           state = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.state ELSE f.state END, \
           welcome_code = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.welcome_code ELSE f.welcome_code END, \
           added_at = CASE WHEN EXCLUDED.add_version > COALESCE(f.add_version, '') THEN EXCLUDED.added_at ELSE f.added_at END, \
           add_version = GREATEST(f.add_version, EXCLUDED.add_version), \
           last_change_type = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_change_type ELSE f.last_change_type END, \
           last_event_at = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_event_at ELSE f.last_event_at END, \
           last_event_id = CASE WHEN EXCLUDED.last_version > f.last_version THEN EXCLUDED.last_event_id ELSE f.last_event_id END, \
           last_version = GREATEST(f.last_version, EXCLUDED.last_version), \
           {detail_cols} \
           detail_version = GREATEST(f.detail_version, EXCLUDED.detail_version), \
           resync_run = COALESCE(EXCLUDED.resync_run, f.resync_run)"
    )
}
