//! The chats step: `groupchat/list` per chunk of owners, `groupchat/get` per chat, the chats of unknown
//! owners asked one by one, and the chat sweep; skipped as a whole when the app may not call the 客户群 APIs.

use std::time::Instant;

use crate::store::enrichment;
use crate::store::resync as runs;
use crate::store::sweeps;
use crate::sync::client::{ApiError, Fetched};
use crate::sync::resync::walk::Walk;
use crate::sync::resync::{API_NOT_AUTHORISED, ResyncError};

impl Walk<'_> {
    /// The chat step. A 48002 (the app may not call the 客户群 APIs) fails every chat call, but retrying the
    /// run would only fail the same way: the step is recorded as skipped (nothing swept) and the run finishes.
    pub(super) async fn chats(&mut self, users: &[String]) -> Result<(), ResyncError> {
        match self.chat_step(users).await {
            Err(ResyncError::Api(ApiError::Wecom(w))) if w.errcode == API_NOT_AUTHORISED => {
                let e = format!(
                    "the chat step was skipped and no chat was swept: groupchat/list or groupchat/get was \
                     refused with {w} A 代开发 or 第三方 app also needs its 客户群 (customer group chat) \
                     permission, granted by the corp's admin. Follows and tags were synced; the next resync reads \
                     the chats once the app may"
                );
                self.skip_step(e).await
            }
            other => other,
        }
    }

    async fn chat_step(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        let (api, creds) = (self.api, self.creds);
        self.done_at_start = self.run.progress.owners_done.len();
        self.started = Instant::now();
        loop {
            let p = &self.run.progress;
            let owners: Vec<String> = users
                .iter()
                .filter(|u| !p.owners_done.contains(*u) && !p.owners_failed.contains(*u))
                .take(self.chunk_size())
                .cloned()
                .collect();
            if owners.is_empty() {
                break;
            }
            let listed = self
                .attempt(|| {
                    let owners = owners.clone();
                    async move {
                        let mut ids = Vec::new();
                        let mut pages = api.group_chat_list(creds, &owners);
                        while let Some(page) = pages.next().await? {
                            ids.extend(page.group_chat_list.into_iter().filter_map(|c| c.chat_id));
                        }
                        Ok(ids)
                    }
                })
                .await?;
            let ids = match listed {
                Ok(ids) => ids,
                Err(e) => {
                    let what = format!(
                        "groupchat/list for {} owners ({}…)",
                        owners.len(),
                        owners.first().map_or("", String::as_str)
                    );
                    self.skip(&what, &e);
                    self.run.progress.owners_failed.extend(owners);
                    self.save().await?;
                    continue;
                }
            };
            for chat_id in &ids {
                let created = sweeps::mark_chat(self.pool, &corp, chat_id, self.run).await?;
                let before = runs::chat_fingerprint(self.pool, &corp, chat_id).await?;
                let got = self.attempt(|| api.group_chat(creds, chat_id)).await?;
                match got {
                    Ok(Fetched { value: Some(g), at }) => {
                        enrichment::group_chat(self.pool, &corp, &g, at).await?
                    }
                    Ok(Fetched { value: None, .. }) => {}
                    Err(e) => {
                        if created {
                            self.run.progress.drift.chats_created += 1;
                        }
                        self.skip(&format!("groupchat/get {chat_id}"), &e);
                        continue;
                    }
                }
                let after = runs::chat_fingerprint(self.pool, &corp, chat_id).await?;
                let d = &mut self.run.progress.drift;
                if created {
                    // A chat no event told us of.
                    d.chats_created += 1;
                } else if before != after {
                    d.chats_updated += 1;
                }
            }
            self.run.progress.owners_done.extend(owners);
            self.save().await?;
            self.report(self.run.progress.owners_done.len());
        }
        let p = &self.run.progress;
        let listed: Vec<String> = users
            .iter()
            .filter(|u| p.owners_done.contains(*u))
            .cloned()
            .collect();
        // Not listed is not proof: `groupchat/list`'s cursor is opaque, and were it an offset, a chat dismissed
        // between two pages would shift the rest so that one listed all along is skipped. So every active chat
        // this run did not list, of an owner listed completely or of no known owner (no listing by owner
        // covers those), is asked for: dismissed only when WeCom has no such chat (40050).
        let mut gone = Vec::new();
        let mut kept = 0u64;
        for chat_id in sweeps::unseen_chats(self.pool, &corp, self.run, &listed).await? {
            match self.attempt(|| api.group_chat(creds, &chat_id)).await? {
                Ok(Fetched { value: Some(g), at }) => {
                    enrichment::group_chat(self.pool, &corp, &g, at).await?;
                    sweeps::mark_chat(self.pool, &corp, &chat_id, self.run).await?;
                    kept += 1;
                }
                Ok(Fetched { value: None, .. }) => {}
                Err(ApiError::Wecom(e)) if e.errcode == 40050 => gone.push(chat_id),
                Err(e) => self.skip(
                    &format!("groupchat/get {chat_id} (not listed; kept until the next resync)"),
                    &e,
                ),
            }
        }
        if kept > 0 {
            tracing::info!(
                app = self.app,
                run = self.run.id,
                kept,
                "groupchat/get found chats that groupchat/list left out (no known owner, or the listing skipped \
                 them while the corp changed); they were kept, not dismissed"
            );
        }
        self.run.progress.drift.chats_unlisted_kept += kept;
        let dismissed = sweeps::sweep_chats(self.pool, &corp, self.run, &gone).await?;
        self.run.progress.drift.chats_dismissed += dismissed;
        Ok(())
    }
}
