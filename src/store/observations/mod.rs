//! The log of what WeCom's API taught (`wecom_api_observations`), so a rebuild loses nothing.
//!
//! Events are not the only source of the synced tables: enrichment ([`crate::store::enrichment`]) and the
//! resync ([`crate::store::resync`]) write rows and columns no event carries (names, remarks, tags, members,
//! contacts only a resync listed) and decide removals (the sweeps). Each of those writes appends one
//! [`Observation`] here **in the transaction that applies it**, so the log holds exactly what was applied.
//! `rebuild` then replays events and observations through the same code (the planner and executor for
//! contacts and follows, the same statements for chats, members, tags, marks and sweeps) and gets the
//! incrementally maintained tables.
//!
//! **Why a log of typed answers, not of resulting rows:** the registers are versioned last-writer-wins, so
//! replaying an answer reproduces exactly what it wrote, and the log stays readable (it is WeCom's answer).
//! **Order:** most rules do not depend on order, but a few do — a sweep only touches rows `active` at the
//! time, a member list marks `left` only the rows that existed, a listing revives only a follow that is
//! `removed`. So each observation records `events_before`, the events applied before it (all ids below the
//! oldest unapplied one: the projector applies in id order), and a rebuild replays it right after those
//! events, observations in the order they were recorded. A sweep records the rows it changed, and its replay
//! touches those rows only (with the same guards).
//!
//! **Retention** ([`compact`], after every finished resync run and hourly with the done-jobs pruning): an observation is deleted when a newer one
//! of the same kind and subject covers everything it wrote (the same follow relations with the same
//! `createtime`, the same members, the same tags), unless it is *pinned*: it created a row or changed a
//! status (those depend on when they happened, see above). Sweeps are never deleted. So the log holds, per
//! customer, follow, chat and tag list, the newest observation plus the ones that created or changed
//! something: it grows with real changes, not with the number of fetches.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

use crate::sync::client::types::{
    CorpTagList, Department, ExternalContact, ExternalContactDetail, FollowInfo, GroupChat,
    StaffMember,
};
use crate::sync::plan;

mod replay;

pub(crate) use replay::{Replay, after, classify, replay};

/// A tag name as the resync knew it when it named a follow's tag ids ([`plan::KnownTag`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownTagRecord {
    pub id: String,
    pub tag_name: Option<String>,
    pub group_name: Option<String>,
    pub rule_group: bool,
}

impl KnownTagRecord {
    /// The records of `known`, sorted by id (so equal knowledge serialises equally).
    pub fn from_names(known: &plan::TagNames) -> Vec<KnownTagRecord> {
        let mut out: Vec<KnownTagRecord> = known
            .iter()
            .map(|(id, k)| KnownTagRecord {
                id: id.clone(),
                tag_name: k.tag_name.clone(),
                group_name: k.group_name.clone(),
                rule_group: k.rule_group,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Back to what the planner takes.
    pub fn to_names(records: &[KnownTagRecord]) -> plan::TagNames {
        records
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    plan::KnownTag {
                        tag_name: r.tag_name.clone(),
                        group_name: r.group_name.clone(),
                        rule_group: r.rule_group,
                    },
                )
            })
            .collect()
    }
}

/// One thing WeCom's API taught, with what replaying it needs. Stored as JSON in `body` (tagged by `kind`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// `externalcontact/get` (enrichment).
    ContactDetail {
        answer: ExternalContactDetail,
        fetched_at: DateTime<Utc>,
    },
    /// One `batch/get_by_user` entry of resync run `run_id`, with the tag names known then.
    FollowEntry {
        contact: Box<ExternalContact>,
        follow: Box<FollowInfo>,
        fetched_at: DateTime<Utc>,
        run_id: i64,
        known: Vec<KnownTagRecord>,
    },
    /// `groupchat/get` (enrichment or resync).
    GroupChat {
        chat: GroupChat,
        fetched_at: DateTime<Utc>,
    },
    /// `get_corp_tag_list` or `get_strategy_tag_list`.
    CorpTags {
        answer: CorpTagList,
        fetched_at: DateTime<Utc>,
    },
    /// A resync run listed the chat.
    MarkChat {
        chat_id: String,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// A resync run listed these tags.
    MarkTags {
        ids: Vec<String>,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// The follow sweep of a run removed these `(userid, external_userid)`.
    SweepFollows {
        keys: Vec<(String, String)>,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// A run found these `(userid, external_userid)` in `get_unassigned_list` (the member left) and marked
    /// them removed.
    RemoveUnassigned {
        keys: Vec<(String, String)>,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// The chat sweep of a run dismissed these chats.
    SweepChats {
        chat_ids: Vec<String>,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// The tag sweep of a run deleted these tags.
    SweepTags {
        ids: Vec<String>,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// `user/get` (the worker's staff detail job, or the directory resync): one member as the secret could
    /// read them.
    StaffDetail {
        member: StaffMember,
        fetched_at: DateTime<Utc>,
    },
    /// `department/list` (the directory resync).
    Departments {
        list: Vec<Department>,
        fetched_at: DateTime<Utc>,
    },
    /// A page of `user/list_id`: a directory resync run listed these members.
    ListedStaff {
        userids: Vec<String>,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// The staff sweep of a run marked these members `left` (gone from `user/list_id`).
    SweepStaff {
        userids: Vec<String>,
        run_id: i64,
        run_started_at: DateTime<Utc>,
    },
    /// A tag job read both tag lists (the earlier asked for at `listed_at`) and deleted these tags, which
    /// neither named.
    UnlistedTags {
        ids: Vec<String>,
        listed_at: DateTime<Utc>,
    },
}

/// Kinds that are never compacted away.
const SWEEPS: [&str; 6] = [
    "sweep_follows",
    "remove_unassigned",
    "sweep_chats",
    "sweep_tags",
    "sweep_staff",
    "unlisted_tags",
];

impl Observation {
    /// The stored `kind` (the serde tag).
    pub fn kind(&self) -> &'static str {
        match self {
            Observation::ContactDetail { .. } => "contact_detail",
            Observation::FollowEntry { .. } => "follow_entry",
            Observation::GroupChat { .. } => "group_chat",
            Observation::CorpTags { .. } => "corp_tags",
            Observation::MarkChat { .. } => "mark_chat",
            Observation::MarkTags { .. } => "mark_tags",
            Observation::SweepFollows { .. } => "sweep_follows",
            Observation::RemoveUnassigned { .. } => "remove_unassigned",
            Observation::SweepChats { .. } => "sweep_chats",
            Observation::SweepTags { .. } => "sweep_tags",
            Observation::StaffDetail { .. } => "staff_detail",
            Observation::Departments { .. } => "departments",
            Observation::ListedStaff { .. } => "listed_staff",
            Observation::SweepStaff { .. } => "sweep_staff",
            Observation::UnlistedTags { .. } => "unlisted_tags",
        }
    }

    /// What it is about within its kind: the unit of compaction.
    fn subject(&self) -> String {
        match self {
            Observation::ContactDetail { answer, .. } => answer
                .external_contact
                .as_ref()
                .and_then(|c| c.external_userid.clone())
                .unwrap_or_default(),
            Observation::FollowEntry {
                contact, follow, ..
            } => format!(
                "{}\t{}",
                follow.userid.as_deref().unwrap_or_default(),
                contact.external_userid.as_deref().unwrap_or_default()
            ),
            Observation::GroupChat { chat, .. } => chat.chat_id.clone().unwrap_or_default(),
            Observation::MarkChat { chat_id, .. } => chat_id.clone(),
            Observation::StaffDetail { member, .. } => member.userid.clone(),
            Observation::CorpTags { .. }
            | Observation::MarkTags { .. }
            | Observation::Departments { .. }
            | Observation::ListedStaff { .. }
            | Observation::UnlistedTags { .. } => String::new(),
            Observation::SweepStaff { run_id, .. }
            | Observation::SweepFollows { run_id, .. }
            | Observation::RemoveUnassigned { run_id, .. }
            | Observation::SweepChats { run_id, .. }
            | Observation::SweepTags { run_id, .. } => run_id.to_string(),
        }
    }

    /// When WeCom said it (the run's start for marks and sweeps, whose writes are dated so).
    fn observed_at(&self) -> DateTime<Utc> {
        match self {
            Observation::ContactDetail { fetched_at, .. }
            | Observation::FollowEntry { fetched_at, .. }
            | Observation::GroupChat { fetched_at, .. }
            | Observation::CorpTags { fetched_at, .. }
            | Observation::StaffDetail { fetched_at, .. }
            | Observation::Departments { fetched_at, .. } => *fetched_at,
            Observation::UnlistedTags { listed_at, .. } => *listed_at,
            Observation::ListedStaff { run_started_at, .. }
            | Observation::SweepStaff { run_started_at, .. }
            | Observation::MarkChat { run_started_at, .. }
            | Observation::MarkTags { run_started_at, .. }
            | Observation::SweepFollows { run_started_at, .. }
            | Observation::RemoveUnassigned { run_started_at, .. }
            | Observation::SweepChats { run_started_at, .. }
            | Observation::SweepTags { run_started_at, .. } => *run_started_at,
        }
    }
}

/// What a follow-relation observation covers: each relation with its `createtime` (a newer answer that lists
/// the same relations at the same `createtime` rewrites everything this one wrote).
pub fn follow_covers<'a>(follows: impl IntoIterator<Item = &'a FollowInfo>) -> Vec<String> {
    let mut out: Vec<String> = follows
        .into_iter()
        .map(|f| {
            format!(
                "{}@{}",
                f.userid.as_deref().unwrap_or_default(),
                f.createtime
                    .map_or_else(|| "-".to_owned(), |t| t.to_string())
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Appends `obs` to the log inside `tx` (the transaction that applied it). `pinned`: it created a row or
/// changed a status, so compaction keeps it; `covers`: what it wrote (see the module docs).
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    obs: &Observation,
    pinned: bool,
    covers: &[String],
) -> Result<(), sqlx::Error> {
    let body = serde_json::to_value(obs).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // Every event below the oldest unapplied one has been applied (the projector applies in id order); with
    // none unapplied, every event so far. The pending queue's primary key makes the min cheap.
    sqlx::query(
        "INSERT INTO wecom_api_observations (corp_id, kind, subject, observed_at, events_before, pinned, covers, body) \
         VALUES ($1, $2, $3, $4, \
             COALESCE((SELECT min(id) - 1 FROM wecom_events_pending), \
                      (SELECT max(id) FROM wecom_events), 0), \
             $5, $6, $7)",
    )
    .bind(corp_id)
    .bind(obs.kind())
    .bind(obs.subject())
    .bind(obs.observed_at())
    .bind(pinned)
    .bind(covers)
    .bind(body)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes the observations a newer one supersedes (see the module docs for the rule). Returns how many.
pub async fn compact(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A large log may take longer than the service's statement timeout.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    let r = sqlx::query(
        "DELETE FROM wecom_api_observations o \
         WHERE NOT o.pinned AND o.kind <> ALL($1) \
           AND EXISTS (SELECT 1 FROM wecom_api_observations n \
                       WHERE n.corp_id = o.corp_id AND n.kind = o.kind AND n.subject = o.subject \
                         AND n.seq > o.seq AND n.covers @> o.covers)",
    )
    .bind(&SWEEPS[..])
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An answer survives the log: what is read back plans exactly the same writes.
    #[test]
    fn an_answer_reads_back_as_it_was() {
        let answer: ExternalContactDetail = serde_json::from_value(json!({
            "external_contact": {"external_userid": "wm1", "name": "N", "type": 1, "external_profile": null},
            "follow_user": [{"userid": "alice", "createtime": 100, "remark_mobiles": ["1"],
                "tags": [{"tag_id": "et1", "tag_name": "A", "group_name": "G", "type": 1}]},
                {"userid": "bob"}]
        }))
        .expect("answer");
        let at = DateTime::from_timestamp(300, 5_000).expect("time");
        let obs = Observation::ContactDetail {
            answer: answer.clone(),
            fetched_at: at,
        };
        let back: Observation =
            serde_json::from_value(serde_json::to_value(&obs).expect("ser")).expect("de");
        let Observation::ContactDetail {
            answer: read,
            fetched_at,
        } = back
        else {
            panic!("kind changed");
        };
        assert_eq!(fetched_at, at);
        assert_eq!(
            plan::observe_contact("wwc", &read, fetched_at),
            plan::observe_contact("wwc", &answer, at)
        );
        // `null` and "not sent" stay apart.
        let c = read.external_contact.expect("contact");
        assert_eq!(c.external_profile, Some(serde_json::Value::Null));
        assert_eq!(read.follow_user[1].tags, None);
    }

    #[test]
    fn the_kind_is_the_tag() {
        let obs = Observation::MarkTags {
            ids: vec!["et1".into()],
            run_id: 3,
            run_started_at: DateTime::UNIX_EPOCH,
        };
        assert_eq!(
            serde_json::to_value(&obs).expect("ser")["kind"],
            json!(obs.kind())
        );
    }
}
