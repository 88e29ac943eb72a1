//! The follows step: `batch/get_by_user` per chunk of staff (resumable at its cursor), the follow sweep
//! behind the mass-removal guard, and the follows of members who left (`get_unassigned_list`).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::store::enrichment;
use crate::store::resync::{self as runs, Drift};
use crate::store::sweeps;
use crate::sync::client::{ApiError, Fetched};
use crate::sync::resync::walk::{Walk, fails_everything, transient};
use crate::sync::resync::{API_NOT_AUTHORISED, ResyncError};

impl Walk<'_> {
    pub(super) async fn follows(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        self.done_at_start = self.run.progress.users_done.len();
        self.started = Instant::now();
        // A chunk interrupted by the last attempt: anyone in it who is no longer listed is dropped, and then
        // the chunk starts over (its cursor belongs to the old `userid_list`).
        let p = &mut self.run.progress;
        if p.chunk_users
            .iter()
            .any(|u| users.binary_search(u).is_err())
        {
            p.chunk_users.retain(|u| users.binary_search(u).is_ok());
            p.cursor.clear();
        }
        loop {
            if self.run.progress.chunk_users.is_empty() {
                let p = &self.run.progress;
                let next: Vec<String> = users
                    .iter()
                    .filter(|u| {
                        !p.users_done.contains(*u)
                            && !p.users_failed.contains(*u)
                            && !p.unlicensed.contains(*u)
                    })
                    .take(self.chunk_size())
                    .cloned()
                    .collect();
                if next.is_empty() {
                    break;
                }
                self.run.progress.chunk_users = next;
                self.run.progress.cursor.clear();
            }
            let chunk = self.run.progress.chunk_users.clone();
            let mut tries = 0;
            let outcome = loop {
                match self.chunk(&corp, &chunk).await {
                    Ok(()) => break Ok(()),
                    Err(ChunkError::Stop(e)) => return Err(e),
                    Err(ChunkError::Item(e)) => {
                        tries += 1;
                        if tries >= self.options.item_attempts.max(1) || !transient(&e) {
                            break Err(e);
                        }
                        tokio::time::sleep(self.options.item_backoff).await;
                    }
                }
            };
            let p = &mut self.run.progress;
            match outcome {
                Ok(()) => {
                    let unlicensed = p.unlicensed.clone();
                    p.users_done
                        .extend(chunk.iter().filter(|u| !unlicensed.contains(*u)).cloned());
                }
                Err(e) => {
                    p.users_failed.extend(chunk.iter().cloned());
                    let what = format!(
                        "batch/get_by_user for {} staff ({}…)",
                        chunk.len(),
                        chunk.first().map_or("", String::as_str)
                    );
                    self.skip(&what, &e);
                }
            }
            let p = &mut self.run.progress;
            p.chunk_users.clear();
            p.cursor.clear();
            self.save().await?;
            self.report(self.run.progress.users_done.len());
        }
        self.sweep_follows(users).await?;
        self.unassigned(users).await
    }

    /// The follows of members who left the corp: they are in no follow-user list, so no sweep covers them,
    /// and no callback says so; `get_unassigned_list` names them (waiting for 离职继承). They become `removed`.
    /// WeCom names them one by one, so the mass-removal guard (which is about not seeing) does not apply.
    async fn unassigned(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let (api, creds) = (self.api, self.creds);
        let pause = self.options.pause;
        let listed = self
            .attempt(|| async move {
                let mut pairs = Vec::new();
                let mut pages = api.unassigned_list(creds).with_pause(pause);
                while let Some(page) = pages.next().await? {
                    pairs.extend(
                        page.info
                            .into_iter()
                            .filter_map(|e| Some((e.handover_userid?, e.external_userid?))),
                    );
                }
                Ok(pairs)
            })
            .await;
        let pairs = match listed {
            Ok(Ok(pairs)) => {
                self.run.progress.unassigned_listed = true;
                pairs
            }
            Ok(Err(e)) => {
                self.skip(
                    "get_unassigned_list; the follows of members who left were not removed",
                    &e,
                );
                return Ok(());
            }
            Err(ResyncError::Api(ApiError::Wecom(w))) if w.errcode == API_NOT_AUTHORISED => {
                self.skip(
                    "get_unassigned_list (离职继承 not allowed for this app); the follows of members who left \
                     were not removed",
                    &ApiError::Wecom(w),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Someone this run listed is still here, whatever an older listing says.
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .filter(|(u, _)| users.binary_search(u).is_err())
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let removed =
            sweeps::remove_unassigned(self.pool, &self.creds.corp_id, self.run, &pairs).await?;
        self.run.progress.drift.follows_removed += removed;
        self.save().await?;
        Ok(())
    }

    /// One chunk of staff from the saved cursor to its last page, saving after every page.
    async fn chunk(&mut self, corp: &str, chunk: &[String]) -> Result<(), ChunkError> {
        let cursor = self.run.progress.cursor.clone();
        let mut pages = self
            .api
            .batch_get_by_user(self.creds, chunk, &cursor)
            .with_pause(self.options.pause);
        loop {
            self.run.progress.calls += 1;
            let page = match pages.next().await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(()),
                Err(e) if fails_everything(&e) => return Err(ChunkError::Stop(e.into())),
                Err(e) => return Err(ChunkError::Item(e)),
            };
            let pairs: Vec<(String, String)> = page
                .external_contact_list
                .iter()
                .filter_map(|e| {
                    let user = e.follow_info.as_ref()?.userid.clone()?;
                    let ext = e.external_contact.as_ref()?.external_userid.clone()?;
                    Some((user, ext))
                })
                .collect();
            let before = runs::follow_fingerprints(self.pool, corp, &pairs)
                .await
                .map_err(|e| ChunkError::Stop(e.into()))?;
            // Every entry is as of the page's request, however long writing the page takes.
            let fetched_at = pages.fetched_at().unwrap_or_else(chrono::Utc::now);
            let mut seen = Drift::default();
            for entry in &page.external_contact_list {
                if let (Some(contact), Some(follow)) = (&entry.external_contact, &entry.follow_info)
                {
                    let entry = runs::Entry {
                        contact,
                        follow,
                        fetched_at,
                    };
                    runs::upsert_entry(self.pool, corp, self.run, entry, &mut seen)
                        .await
                        .map_err(|e| ChunkError::Stop(e.into()))?;
                }
            }
            let after = runs::follow_fingerprints(self.pool, corp, &pairs)
                .await
                .map_err(|e| ChunkError::Stop(e.into()))?;
            // Drift counts rows whose values changed: a follow that was there and now differs.
            let updated = after
                .iter()
                .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
                .count() as u64;
            let p = &mut self.run.progress;
            p.drift.contacts_created += seen.contacts_created;
            p.drift.follows_created += seen.follows_created;
            p.drift.follows_updated += updated;
            if let Some(fail) = &page.fail_info {
                p.unlicensed
                    .extend(fail.unlicensed_userid_list.iter().cloned());
            }
            p.cursor = page.next_cursor.clone();
            self.save().await.map_err(ChunkError::Stop)?;
            if page.next_cursor.is_empty() {
                return Ok(());
            }
        }
    }

    /// The follow sweep over the staff this run listed completely, behind the mass-removal guard, removing
    /// only what [`Self::confirm_removals`] confirms.
    async fn sweep_follows(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let p = &self.run.progress;
        let scope: Vec<String> = users
            .iter()
            .filter(|u| p.users_done.contains(*u) && !p.unlicensed.contains(*u))
            .cloned()
            .collect();
        if scope.is_empty() {
            tracing::info!(
                app = self.app,
                run = self.run.id,
                "no staff member was listed completely; no follow is swept"
            );
            return Ok(());
        }
        let corp = &self.creds.corp_id;
        let candidates = sweeps::follow_sweep_candidates(self.pool, corp, self.run, &scope).await?;
        let active = sweeps::active_follows(self.pool, corp).await?;
        let count = candidates.len() as u64;
        if self.refuses_mass_removal(count, active) {
            let e = format!(
                "the follow sweep was refused: it would mark {count} of the corp's {active} active follows \
                 removed (more than {pct} %, api.resync_max_removal_share). WeCom not listing that many usually \
                 means a listing problem (a changed visible range or secret, unlicensed staff), not that \
                 customers left. Check the app's visible range and licences; if the removals are real, run \
                 `wecom-callback resync --allow-mass-removal`",
                pct = self.options.max_removal_share * 100.0
            );
            self.note(e);
            self.run.progress.drift.follows_removal_refused = count;
            return Ok(());
        }
        let confirmed = self.confirm_removals(&candidates).await?;
        let removed = sweeps::sweep_follows(self.pool, corp, self.run, &confirmed).await?;
        self.run.progress.drift.follows_removed += removed;
        Ok(())
    }

    /// Which of the sweep's `candidates` WeCom confirms ended, asked per customer with `externalcontact/get`
    /// (which lists every follower). Not being listed by `batch/get_by_user` is not proof: its cursor is
    /// opaque, and were it an offset, a relation ending between two pages of the walk would shift the rest
    /// so that one listed all along is skipped. A follow the answer still lists is kept (and written, fresh);
    /// 84061 or 40096 (no relation with anyone) confirms them all; a customer that cannot be asked is skipped
    /// like every failing item, its follows kept until the next run.
    async fn confirm_removals(
        &mut self,
        candidates: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ResyncError> {
        let mut by_customer: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (userid, ext) in candidates {
            by_customer.entry(ext).or_default().push(userid);
        }
        let (api, creds) = (self.api, self.creds);
        let mut confirmed = Vec::new();
        let mut kept = 0u64;
        for (ext, users) in by_customer {
            match self.attempt(|| api.external_contact(creds, ext)).await? {
                Ok(Fetched { value, at }) => {
                    enrichment::contact_detail(self.pool, &self.creds.corp_id, &value, at).await?;
                    for userid in users {
                        if value
                            .follow_user
                            .iter()
                            .any(|f| f.userid.as_deref() == Some(userid))
                        {
                            kept += 1;
                        } else {
                            confirmed.push((userid.to_owned(), ext.to_owned()));
                        }
                    }
                }
                Err(ApiError::Wecom(w)) if matches!(w.errcode, 84061 | 40096) => confirmed
                    .extend(users.into_iter().map(|u| (u.to_owned(), ext.to_owned()))),
                Err(e) => self.skip(
                    &format!(
                        "externalcontact/get {ext} (confirming that {} follow(s) WeCom's listing left out \
                         ended; kept until the next resync)",
                        users.len()
                    ),
                    &e,
                ),
            }
        }
        if kept > 0 {
            tracing::warn!(
                app = self.app,
                run = self.run.id,
                kept,
                "batch/get_by_user left out follows that externalcontact/get still lists (WeCom's paging \
                 skipped them while the corp changed); they were kept, not swept"
            );
        }
        self.run.progress.drift.follows_unlisted_kept += kept;
        Ok(confirmed)
    }
}

/// How one staff chunk failed.
enum ChunkError {
    /// Stop the run (it is resumed at the saved cursor).
    Stop(ResyncError),
    /// Retry the chunk from the saved cursor, then skip it.
    Item(ApiError),
}
