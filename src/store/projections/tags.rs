//! The corp tag statements: each tag's registers (type, strategy, deleted, last change), the tags of a
//! deleted group, and deleted tags taken off the relations.

use serde_json::{Value, json};
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

/// Deletes the tags of every group `rows` delete, and returns their change notifications. WeCom deletes a
/// group's tags with it and calls back about the group only (`change_external_tag` `delete`, `TagType`
/// `tag_group`), so nothing else would until the next resync. Only the tags a list has placed in the group
/// are known to be in it; a list older than the deletion that places one there later writes it deleted
/// (`store::enrichment::corp_tags_in`), so either order ends the same. The tag's status takes the group's
/// version: a list answered after the deletion never names it again.
pub(super) async fn tags_of_deleted_groups<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a TagWrite>,
) -> Result<Vec<GroupTag>, sqlx::Error> {
    let groups: Vec<&TagWrite> = rows
        .filter(|t| t.deleted && t.tag_type.as_ref().is_some_and(|x| x.value == "tag_group"))
        .collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "UPDATE external_corp_tags AS t SET deleted = true, status_version = u.version \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(corp_id, group_id, version, event_id) \
         WHERE t.corp_id = u.corp_id AND t.group_id = u.group_id AND t.id <> u.group_id \
           AND t.status_version < u.version AND NOT t.deleted \
         RETURNING t.corp_id, t.id, u.group_id, u.event_id",
    )
    .bind(groups.iter().map(|t| t.corp_id.as_str()).collect::<Vec<_>>())
    .bind(groups.iter().map(|t| t.id.as_str()).collect::<Vec<_>>())
    .bind(groups.iter().map(|t| t.status_version.as_str()).collect::<Vec<_>>())
    .bind(groups.iter().map(|t| t.last.event_id).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
}

/// A tag deleted with its group (see [`tags_of_deleted_groups`]).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct GroupTag {
    corp_id: String,
    id: String,
    group_id: String,
    event_id: Option<i64>,
}

impl GroupTag {
    /// Its change notification: a tag `delete`, naming the group.
    pub(super) fn notification(&self) -> Value {
        json!({
            "kind": "tag",
            "source": "event",
            "corp_id": self.corp_id,
            "id": self.id,
            "tag_type": "tag",
            "change": "delete",
            "group_id": self.group_id,
            "event_id": self.event_id,
        })
    }
}

/// Takes the tags `rows` delete (and `cascaded`, a deleted group's) off every relation of their corp, and
/// returns the relations' change notifications. WeCom does the same without calling back about any
/// relation, so their `tags` would keep a deleted tag until each is fetched again. A fetch asked for before
/// the deletion and written after it leaves them off too (`projections::follows`). Scans the corp's
/// relations that carry tags: tag deletions are rare.
pub(super) async fn untag_deleted<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a TagWrite>,
    cascaded: &[GroupTag],
) -> Result<Vec<Value>, sqlx::Error> {
    let mut by_corp: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for t in
        rows.filter(|t| t.deleted && t.tag_type.as_ref().is_none_or(|x| x.value != "tag_group"))
    {
        by_corp
            .entry(t.corp_id.as_str())
            .or_default()
            .push(t.id.as_str());
    }
    for t in cascaded {
        by_corp.entry(&t.corp_id).or_default().push(&t.id);
    }
    let mut out = Vec::new();
    for (corp, ids) in by_corp {
        out.extend(untag(tx, corp, &ids, "event").await?);
    }
    Ok(out)
}

/// Takes the tags `ids` off every relation of `corp` that carries one, and returns the relations' change
/// notifications (`change: tags_deleted`, `source` as given). Also the tag sweeps' (`store::sweeps::tags`).
pub(crate) async fn untag(
    tx: &mut Transaction<'_, Postgres>,
    corp: &str,
    ids: &[&str],
    source: &str,
) -> Result<Vec<Value>, sqlx::Error> {
    let untagged: Vec<(String, String)> = sqlx::query_as(
        "UPDATE external_contact_follows AS f SET tags = \
           (SELECT COALESCE(jsonb_agg(x.e ORDER BY x.n), '[]'::jsonb) \
            FROM jsonb_array_elements(f.tags) WITH ORDINALITY AS x(e, n) WHERE NOT (x.e->>'tag_id' = ANY($2))) \
         WHERE f.corp_id = $1 AND jsonb_typeof(f.tags) = 'array' \
           AND EXISTS (SELECT 1 FROM jsonb_array_elements(f.tags) AS e WHERE e->>'tag_id' = ANY($2)) \
         RETURNING f.userid, f.external_userid",
    )
    .bind(corp)
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(untagged
        .into_iter()
        .map(|(userid, external_userid)| {
            json!({
                "kind": "contact",
                "source": source,
                "corp_id": corp,
                "external_userid": external_userid,
                "userid": userid,
                "change": "tags_deleted",
                "tag_ids": ids,
                "event_id": null,
            })
        })
        .collect())
}
