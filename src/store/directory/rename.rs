//! Renamed userids: what the directory knows under an old userid, and the follows written under it, reach its
//! successor whatever order the events are applied in.

use sqlx::{Postgres, Transaction};

use crate::domain::JobKind;
use crate::sync::directory::{DirectoryPlan, Rename};
use crate::sync::plan::JobRequest;

/// Carries each renamed member's fields over to its successor where they are newer.
///
/// What the directory knows under an old userid carries over to the new one where it is newer than what
/// the new row has (a renaming update_user carries little more than the ids). Done for every row this plan
/// wrote that names a successor, not only at the rename: a write to the old userid that arrives (or is
/// applied by a concurrent batch) after the rename still reaches the new row, so the result does not
/// depend on the order events are applied in. Whoever writes the old row second waits for the first's
/// commit on its row lock, so this statement then sees both.
pub(super) async fn carry_over(
    tx: &mut Transaction<'_, Postgres>,
    plan: &DirectoryPlan,
) -> Result<(), sqlx::Error> {
    let mut written: Vec<(String, String)> = plan
        .staff
        .iter()
        .map(|w| (w.corp_id.clone(), w.userid.clone()))
        .collect();
    // A member renamed more than once (a → b → c): what reaches a carries over to b, then from b to c.
    for _ in 0..MAX_HOPS {
        written.sort_unstable();
        written.dedup();
        if written.is_empty() {
            break;
        }
        written = sqlx::query_as(
            "UPDATE staff n SET \
               name = CASE WHEN o.name_version > COALESCE(n.name_version, '') THEN o.name ELSE n.name END, \
               name_version = GREATEST(n.name_version, o.name_version), \
               department_ids = CASE WHEN o.department_version > COALESCE(n.department_version, '') \
                                THEN o.department_ids ELSE n.department_ids END, \
               main_department = CASE WHEN o.department_version > COALESCE(n.department_version, '') \
                                 THEN o.main_department ELSE n.main_department END, \
               department_version = GREATEST(n.department_version, o.department_version), \
               position = CASE WHEN o.position_version > COALESCE(n.position_version, '') \
                          THEN o.position ELSE n.position END, \
               position_version = GREATEST(n.position_version, o.position_version), \
               open_userid = CASE WHEN o.open_userid_version > COALESCE(n.open_userid_version, '') \
                             THEN o.open_userid ELSE n.open_userid END, \
               open_userid_version = GREATEST(n.open_userid_version, o.open_userid_version), \
               updated_at = now() \
             FROM UNNEST($1::text[], $2::text[]) AS k(corp_id, userid) \
             JOIN staff o ON o.corp_id = k.corp_id AND o.userid = k.userid \
             WHERE o.renamed_to IS NOT NULL AND o.renamed_to <> o.userid \
               AND n.corp_id = o.corp_id AND n.userid = o.renamed_to \
               AND (o.name_version > COALESCE(n.name_version, '') \
                 OR o.department_version > COALESCE(n.department_version, '') \
                 OR o.position_version > COALESCE(n.position_version, '') \
                 OR o.open_userid_version > COALESCE(n.open_userid_version, '')) \
             RETURNING n.corp_id, n.userid",
        )
        .bind(written.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
        .bind(written.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Moves the old userid's follows to the new one, under the member's rename lock.
pub(super) async fn rename(
    tx: &mut Transaction<'_, Postgres>,
    r: &Rename,
) -> Result<(), sqlx::Error> {
    // Exclusive against appliers writing follows of the old userid (see `follows_of_renamed`): one of
    // the two sees the other's commit.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))")
        .bind(RENAME_LOCK)
        .bind(&r.corp_id)
        .bind(&r.from)
        .execute(&mut **tx)
        .await?;
    // The follows of the old userid move to the new one. Only if this rename is still where the member
    // went: a newer event (a rename back, applied first) outdates it.
    let current: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM staff WHERE corp_id = $1 AND userid = $2 AND renamed_to = $3)",
    )
    .bind(&r.corp_id)
    .bind(&r.from)
    .bind(&r.to)
    .fetch_one(&mut **tx)
    .await?;
    if !current {
        return Ok(());
    }
    chats_of_renamed(tx, r).await?;
    let moved = move_follows(tx, &[(r.corp_id.clone(), r.from.clone(), r.to.clone())]).await?;
    // Renamed again since (applied first): they go on to where the member is now.
    if !moved.is_empty() {
        follows_of_renamed(tx, &[(r.corp_id.as_str(), r.to.as_str())]).await?;
    }
    Ok(())
}

/// The live group chats the old userid owns or is a joined member of. WeCom names the member by the new
/// userid in them from now on, without a chat callback and without a new member version, so a later
/// `groupchat/get` at the same member version would skip the list ([`crate::store::enrichment`]): their
/// `members_synced_version` is cleared, so the next read (the resync's, or one queued here) rewrites the
/// members and the owner. With an API, that read is queued now. Rows are locked in chat id order, as the
/// appliers lock them.
async fn chats_of_renamed(
    tx: &mut Transaction<'_, Postgres>,
    r: &Rename,
) -> Result<(), sqlx::Error> {
    let chats: Vec<String> = sqlx::query_scalar(
        "WITH c AS ( \
           SELECT g.chat_id FROM external_group_chats g \
           WHERE g.corp_id = $1 AND g.status = 'active' AND (g.owner = $2 OR EXISTS ( \
             SELECT 1 FROM external_group_chat_members m \
             WHERE m.corp_id = g.corp_id AND m.chat_id = g.chat_id AND m.member_id = $2 AND m.status = 'joined')) \
           ORDER BY g.chat_id FOR UPDATE) \
         UPDATE external_group_chats g SET members_synced_version = NULL \
         FROM c WHERE g.corp_id = $1 AND g.chat_id = c.chat_id \
         RETURNING g.chat_id",
    )
    .bind(&r.corp_id)
    .bind(&r.from)
    .fetch_all(&mut **tx)
    .await?;
    if let Some(refetch) = r.refetch_chats.as_ref().filter(|_| !chats.is_empty()) {
        let jobs: Vec<JobRequest> = chats
            .iter()
            .map(|chat| JobRequest {
                kind: JobKind::GroupChat,
                app: refetch.app.clone(),
                corp_id: r.corp_id.clone(),
                subject: chat.clone(),
                event_id: refetch.event_id,
            })
            .collect();
        crate::store::jobs::enqueue_many(tx, jobs.iter()).await?;
    }
    Ok(())
}

/// Moves every follow of each (corp id, old userid, new userid) to the new userid: where the new userid has
/// a row for the customer already (events under it came first), the two are merged register by register,
/// each version winning as in the follow statement, so the result is the same whichever was written first;
/// then the old rows go. A change feed entry (and NOTIFY) says so for each moved follow:
/// `{"kind": "contact", "change": "userid_renamed", "userid": new, "previous_userid": old, …}`. Returns the
/// (corp id, new userid) of the follows moved.
async fn move_follows(
    tx: &mut Transaction<'_, Postgres>,
    renames: &[(String, String, String)],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if renames.is_empty() {
        return Ok(Vec::new());
    }
    // Two old userids renamed to the same one (a userid reused after its member was renamed away) could
    // merge two rows into one in a single statement, which PostgreSQL refuses: one rename at a time then.
    let mut targets: Vec<(&str, &str)> = renames
        .iter()
        .map(|r| (r.0.as_str(), r.2.as_str()))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    if renames.len() > 1 && targets.len() < renames.len() {
        let mut out = Vec::new();
        for r in renames {
            out.extend(Box::pin(move_follows(tx, std::slice::from_ref(r))).await?);
        }
        out.sort_unstable();
        out.dedup();
        return Ok(out);
    }
    let corps: Vec<&str> = renames.iter().map(|r| r.0.as_str()).collect();
    let from: Vec<&str> = renames.iter().map(|r| r.1.as_str()).collect();
    let to: Vec<&str> = renames.iter().map(|r| r.2.as_str()).collect();
    let columns = crate::store::projections::FOLLOW_COLUMNS;
    let merge = crate::store::projections::follow_merge_clause();
    // Built from constants only; every value is a bind. The old rows are deleted and re-inserted under the
    // new userid in one statement (a data-modifying CTE), merging into a row the new userid has already.
    let sql = format!(
        "WITH k AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k(corp_id, old, new)), \
         gone AS ( \
           DELETE FROM external_contact_follows o USING k \
           WHERE o.corp_id = k.corp_id AND o.userid = k.old AND k.old <> k.new \
           RETURNING o.*, k.new) \
         INSERT INTO external_contact_follows AS f ({columns}) \
         SELECT g.corp_id, g.new, g.external_userid, g.status, g.status_version, g.deleted_at, g.delete_source, \
           g.listed_version, g.state, g.welcome_code, g.added_at, g.add_version, g.last_change_type, \
           g.last_event_at, g.last_version, g.last_event_id, g.remark, g.description, g.remark_mobiles, \
           g.add_way, g.oper_userid, g.tags, g.detail_synced_at, g.detail_version, g.resync_run \
         FROM gone g ORDER BY g.corp_id, g.new, g.external_userid \
         ON CONFLICT (corp_id, userid, external_userid) DO UPDATE SET {merge} \
         RETURNING f.corp_id, f.userid, f.external_userid"
    );
    let moved: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&corps)
        .bind(&from)
        .bind(&to)
        .fetch_all(&mut **tx)
        .await?;
    let previous = |corp: &str, new: &str| {
        renames
            .iter()
            .find(|r| r.0 == corp && r.2 == new)
            .map(|r| r.1.clone())
    };
    let payloads: Vec<serde_json::Value> = moved
        .iter()
        .map(|(corp, userid, ext)| {
            serde_json::json!({
                "kind": "contact",
                "source": "event",
                "corp_id": corp,
                "external_userid": ext,
                "userid": userid,
                "change": "userid_renamed",
                "previous_userid": previous(corp, userid),
                "event_id": null,
            })
        })
        .collect();
    crate::store::projections::notify(tx, &payloads).await?;
    let mut out: Vec<(String, String)> = moved.into_iter().map(|(c, u, _)| (c, u)).collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// How many renames of one member are followed from a userid (a → b → c …); the versions rule out a cycle,
/// this bounds the work if the data ever held one.
const MAX_HOPS: usize = 8;

/// First key of the per-member rename locks (the second: a hash of corp id and userid).
const RENAME_LOCK: i32 = 0x5745_5245;

/// Moves the follows just written under a userid that has been renamed to its successor, and on along the
/// renames after it (a → b → c), as the rename itself moves those it finds: a follow event of the old userid
/// applied after the rename (a late delivery, or a concurrent batch) must not leave the customer with a
/// userid that no longer exists. `written`: the (corp id, userid) of every follow the batch wrote.
///
/// A concurrent rename and follow write must not both miss each other: the rename takes the member's lock
/// exclusively before moving, this takes it shared (in a statement of its own, so the move below reads
/// after any rename that held it) — whichever comes second sees the first's commit.
pub(crate) async fn follows_of_renamed(
    tx: &mut Transaction<'_, Postgres>,
    written: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    if written.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<(String, String)> = written
        .iter()
        .map(|(c, u)| ((*c).to_owned(), (*u).to_owned()))
        .collect();
    // Hop by hop (a → b → c): each hop's userids are locked before their renames are read.
    for _ in 0..MAX_HOPS {
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            break;
        }
        let corps: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let userids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        sqlx::query(
            "SELECT count(pg_advisory_xact_lock_shared($1, hashtext(k.c || '/' || k.u))) \
             FROM UNNEST($2::text[], $3::text[]) AS k(c, u)",
        )
        .bind(RENAME_LOCK)
        .bind(&corps)
        .bind(&userids)
        .execute(&mut **tx)
        .await?;
        let renames: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT s.corp_id, s.userid, s.renamed_to FROM UNNEST($1::text[], $2::text[]) AS k(c, u) \
             JOIN staff s ON s.corp_id = k.c AND s.userid = k.u \
             WHERE s.renamed_to IS NOT NULL AND s.renamed_to <> s.userid \
               AND EXISTS (SELECT 1 FROM external_contact_follows f \
                           WHERE f.corp_id = s.corp_id AND f.userid = s.userid)",
        )
        .bind(&corps)
        .bind(&userids)
        .fetch_all(&mut **tx)
        .await?;
        keys = move_follows(tx, &renames).await?;
    }
    Ok(())
}
