//! Reading the log back for a rebuild: the stored rows in replay order, which observations merge into event
//! batches ([`Replay::Plan`]) and which are replayed in order, and the replay itself (the same code that
//! applied each one first).

use sqlx::{Postgres, Transaction};

use super::{KnownTagRecord, Observation};
use crate::sync::plan;

/// A stored observation as the rebuild reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct Stored {
    pub(crate) seq: i64,
    pub(crate) corp_id: String,
    pub(crate) kind: String,
    pub(crate) events_before: i64,
    pub(crate) body: serde_json::Value,
}

/// The next `limit` observations after `(events_before, seq)`, in replay order.
pub(crate) async fn after(
    tx: &mut Transaction<'_, Postgres>,
    cursor: (i64, i64),
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, corp_id, kind, events_before, body FROM wecom_api_observations \
         WHERE (events_before, seq) > ($1, $2) ORDER BY events_before, seq LIMIT $3",
    )
    .bind(cursor.0)
    .bind(cursor.1)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// How a rebuild replays a stored observation.
pub(crate) enum Replay {
    /// A plan under the same last-writer-wins registers as events' (`externalcontact/get` answers and resync
    /// listings): it commutes with events and with other such plans, so the rebuild merges it into an event
    /// batch instead of splitting the batch at its place in the log.
    Plan(Box<plan::Plan>),
    /// Order-dependent (sweeps, marks, member lists, tag lists, ...): replayed with [`replay`] right after
    /// the events that preceded it, and after every plan before it.
    InOrder,
    /// The body no longer reads as an observation (written by a newer version): skipped with a warning.
    Unreadable,
}

/// The observation `stored` holds; `None`, with a warning, when its body no longer reads as one (written by a
/// newer version): it is not replayed.
fn read(stored: &Stored) -> Option<Observation> {
    match serde_json::from_value(stored.body.clone()) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::warn!(seq = stored.seq, kind = %stored.kind, error = %e,
                "stored API observation does not read; not replayed");
            None
        }
    }
}

/// Classifies `stored` for a rebuild (see [`Replay`]).
pub(crate) fn classify(stored: &Stored) -> Replay {
    let Some(obs) = read(stored) else {
        return Replay::Unreadable;
    };
    let corp = stored.corp_id.as_str();
    match obs {
        Observation::ContactDetail { answer, fetched_at } => {
            Replay::Plan(Box::new(plan::observe_contact(corp, &answer, fetched_at)))
        }
        Observation::FollowEntry {
            contact,
            follow,
            fetched_at,
            run_id,
            known,
        } => {
            let known = KnownTagRecord::to_names(&known);
            Replay::Plan(Box::new(plan::observe_follow_entry(
                corp, &contact, &follow, fetched_at, run_id, &known,
            )))
        }
        _ => Replay::InOrder,
    }
}

/// Applies one stored observation again inside `tx`, through the same code that applied it first (no
/// notifications: nothing changed for a backend that saw the first application). `Ok(false)`: the body no
/// longer reads as an observation (written by a newer version); it is skipped with a warning.
pub(crate) async fn replay(
    tx: &mut Transaction<'_, Postgres>,
    stored: &Stored,
) -> Result<bool, sqlx::Error> {
    let Some(obs) = read(stored) else {
        return Ok(false);
    };
    let corp = stored.corp_id.as_str();
    use crate::store::{directory, enrichment, projections, sweeps};
    use crate::sync::directory as plan_dir;
    match obs {
        Observation::ContactDetail { answer, fetched_at } => {
            let plan = plan::observe_contact(corp, &answer, fetched_at);
            projections::observe_in(tx, plan, false).await?;
        }
        Observation::FollowEntry {
            contact,
            follow,
            fetched_at,
            run_id,
            known,
        } => {
            let known = KnownTagRecord::to_names(&known);
            let plan =
                plan::observe_follow_entry(corp, &contact, &follow, fetched_at, run_id, &known);
            projections::observe_in(tx, plan, false).await?;
        }
        Observation::GroupChat { chat, fetched_at } => {
            enrichment::group_chat_in(tx, corp, &chat, fetched_at).await?;
        }
        Observation::CorpTags { answer, fetched_at } => {
            enrichment::corp_tags_in(tx, corp, &answer, fetched_at).await?;
        }
        Observation::MarkChat {
            chat_id,
            run_id,
            run_started_at,
        } => {
            sweeps::mark_chat_in(tx, corp, &chat_id, run_id, run_started_at).await?;
        }
        Observation::MarkTags { ids, run_id, .. } => {
            sweeps::mark_tags_in(tx, corp, &ids, run_id).await?;
        }
        Observation::SweepFollows {
            keys,
            run_id,
            run_started_at,
        } => {
            sweeps::resweep_follows(tx, corp, run_id, run_started_at, &keys).await?;
        }
        Observation::RemoveUnassigned {
            keys,
            run_id,
            run_started_at,
        } => {
            sweeps::reremove_unassigned(tx, corp, run_id, run_started_at, &keys).await?;
        }
        Observation::SweepChats {
            chat_ids,
            run_id,
            run_started_at,
        } => {
            sweeps::resweep_chats(tx, corp, run_id, run_started_at, &chat_ids).await?;
        }
        Observation::SweepTags {
            ids,
            run_id,
            run_started_at,
        } => {
            sweeps::resweep_tags(tx, corp, run_id, run_started_at, &ids).await?;
        }
        Observation::UnlistedTags { ids, listed_at } => {
            sweeps::resweep_unlisted_tags(tx, corp, &ids, listed_at).await?;
        }
        Observation::StaffDetail { member, fetched_at } => {
            directory::execute(tx, &plan_dir::member_plan(corp, &member, fetched_at)).await?;
        }
        Observation::Departments { list, fetched_at } => {
            let known = directory::known_departments(tx, corp).await?;
            let plan = plan_dir::departments_plan(corp, &list, fetched_at, &known);
            directory::execute(tx, &plan).await?;
        }
        Observation::ListedStaff {
            userids, run_id, ..
        } => {
            directory::execute(tx, &plan_dir::listed_plan(corp, &userids, run_id)).await?;
        }
        Observation::SweepStaff {
            userids,
            run_id,
            run_started_at,
        } => {
            sweeps::resweep_staff(tx, corp, run_id, run_started_at, &userids).await?;
        }
    }
    Ok(true)
}
