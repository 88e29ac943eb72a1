//! Applying an API observation: the same executor as events, plus what it changed (to notify status
//! changes and to tell the observation log what to keep).

use std::collections::HashMap;

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::projections::contacts::contact_details;
use crate::store::projections::follows::follows;
use crate::store::projections::{APPLY_LOCK, notify};
use crate::sync::plan::{self, Batch, Plan};

/// What applying an API observation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub contacts_created: u64,
    pub follows_created: u64,
    pub follows_updated: u64,
    /// Follows whose status it changed (created rows included).
    pub statuses_changed: u64,
}

impl Observed {
    /// Whether it created a row or changed a status: the observation log keeps such an observation (see
    /// [`crate::store::observations`]).
    pub fn pinned(&self) -> bool {
        self.contacts_created > 0 || self.follows_created > 0 || self.statuses_changed > 0
    }
}

/// A transaction for applying an API observation: shared with appliers and waiting for a rebuild (whose
/// result would otherwise miss it), like an applier's.
pub(crate) async fn observation_tx(
    pool: &PgPool,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(APPLY_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Executes the plan of an API observation ([`plan::observe_contact`], [`plan::observe_follow_entry`]) in
/// one transaction, with the same executor and rules as events, and notifies (`"source": "api"`) each
/// follow whose status it changed. Nothing is recorded in the observation log: callers that must survive a
/// rebuild use [`observe_in`] and [`crate::store::observations::record`] in one transaction.
pub async fn apply_observation(pool: &PgPool, plan: Plan) -> Result<Observed, sqlx::Error> {
    let mut tx = observation_tx(pool).await?;
    let observed = observe_in(&mut tx, plan, true).await?;
    tx.commit().await?;
    Ok(observed)
}

/// Executes an observation's plan inside `tx` (taken with [`observation_tx`], or the rebuild's). `notify`:
/// send the `"source": "api"` notifications (not when a rebuild replays it).
pub(crate) async fn observe_in(
    tx: &mut Transaction<'_, Postgres>,
    plan: Plan,
    notify_changes: bool,
) -> Result<Observed, sqlx::Error> {
    let mut batch = Batch::default();
    batch.add(plan);
    // Same lock order as an applier (customers, then follows in key order), so the two cannot deadlock. An
    // observation plans customers' details and follows only.
    let mut observed = Observed::default();
    if !batch.contact_details.is_empty() {
        observed.contacts_created = contact_details(tx, batch.contact_details.values()).await?;
    }
    if batch.follows.is_empty() {
        return Ok(observed);
    }
    // The statuses before, rows locked in key order (the batch's order), to tell what the write changed.
    let keys = batch.follows.keys();
    let before: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT f.corp_id, f.userid, f.external_userid, f.status FROM external_contact_follows f \
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS u(corp_id, userid, external_userid) \
           USING (corp_id, userid, external_userid) \
         ORDER BY f.corp_id, f.userid, f.external_userid FOR UPDATE OF f",
    )
    .bind(keys.clone().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.clone().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .bind(keys.map(|k| k.2.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let before: HashMap<(String, String, String), String> = before
        .into_iter()
        .map(|(c, u, e, s)| ((c, u, e), s))
        .collect();
    let written = follows(tx, batch.follows.values(), true).await?;
    let mut notifications = Vec::new();
    for (key, status, created) in &written {
        if *created {
            observed.follows_created += 1;
        } else {
            observed.follows_updated += 1;
        }
        let previous = before.get(key).map(String::as_str);
        if previous != Some(status.as_str())
            && let Some(f) = batch.follows.get(key)
        {
            observed.statuses_changed += 1;
            notifications.push(plan::api_status_notification(f, previous, status));
        }
    }
    if notify_changes && !notifications.is_empty() {
        notify(tx, &notifications).await?;
    }
    // An answer fetched before a rename was applied lists the old userid: its follows go on to the
    // successor, as an event's do.
    let keys: Vec<(&str, &str)> = written
        .iter()
        .map(|((corp, userid, _), _, _)| (corp.as_str(), userid.as_str()))
        .collect();
    crate::store::directory::follows_of_renamed(tx, &keys).await?;
    Ok(observed)
}
