//! The directory (通讯录) step: departments, the member listing page by page with `user/get` where needed,
//! and the staff sweep; skipped as a whole when WeCom refuses the secret the directory.

use std::time::Instant;

use crate::store::directory as store_dir;
use crate::store::resync as runs;
use crate::store::sweeps;
use crate::sync::client::types::StaffMember;
use crate::sync::client::{ApiError, Fetched};
use crate::sync::resync::ResyncError;
use crate::sync::resync::walk::Walk;

/// Errcodes with which WeCom refuses the configured secret the directory: 48002 (API not allowed for the
/// app), 60011 (no privilege: the member or department is outside the app's 可见范围), 48009 (the 通讯录
/// secret called from an IP that is not trusted, since 2022).
const DIRECTORY_REFUSED: [i64; 3] = [48002, 60011, 48009];

impl Walk<'_> {
    /// The directory step. When WeCom refuses the secret the directory ([`DIRECTORY_REFUSED`]), retrying the
    /// run would only be refused the same way: the step is recorded as skipped (no member swept) and the run
    /// finishes, so it neither fails nor counts toward abandonment.
    pub(super) async fn directory(&mut self, users: &[String]) -> Result<(), ResyncError> {
        match self.directory_step(users).await {
            Err(ResyncError::Api(ApiError::Wecom(w))) if DIRECTORY_REFUSED.contains(&w.errcode) => {
                let why = match w.errcode {
                    48009 => {
                        "WeCom refuses the 通讯录 (directory) secret from this server's IP: add it to the \
                         corp's 企业可信IP, or configure the app's own secret"
                    }
                    60011 => {
                        "the app may not read the directory beyond its 可见范围 (visible range): widen the \
                         visible range in the admin console"
                    }
                    _ => {
                        "the app may not call the 通讯录 APIs: grant it the directory permission (a 代开发 or \
                         第三方 app needs 通讯录 access granted by the corp's admin)"
                    }
                };
                let e = format!(
                    "{} and no member was swept: department/list, user/list_id or user/get was refused with \
                     {w} {why}. The staff table keeps what the 通讯录 callbacks and user/get jobs wrote; follows, \
                     tags and chats were synced",
                    runs::DIRECTORY_SKIPPED
                );
                self.skip_step(e).await
            }
            other => other,
        }
    }

    /// [`Walk::attempt`], with a directory refusal turned into the error that skips the step.
    async fn directory_call<T, F, Fut>(
        &mut self,
        call: F,
    ) -> Result<Result<T, ApiError>, ResyncError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        match self.attempt(call).await? {
            Err(ApiError::Wecom(w)) if DIRECTORY_REFUSED.contains(&w.errcode) => {
                Err(ApiError::Wecom(w).into())
            }
            other => Ok(other),
        }
    }

    async fn directory_step(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        let (api, creds) = (self.api, self.creds);
        // Departments: one call, read again on a resume (it is cheap and a resume wants today's).
        match self.directory_call(|| api.department_list(creds)).await? {
            Ok(list) => {
                let before = store_dir::department_fingerprints(self.pool, &corp).await?;
                store_dir::observe_departments(self.pool, &corp, &list.value, list.at).await?;
                let after = store_dir::department_fingerprints(self.pool, &corp).await?;
                let d = &mut self.run.progress.drift;
                for (id, fp) in &after {
                    match before.get(id) {
                        None => d.departments_created += 1,
                        Some(b) if b != fp => d.departments_updated += 1,
                        Some(_) => {}
                    }
                }
            }
            Err(e) => self.skip("department/list; departments were not refreshed", &e),
        }
        self.save().await?;
        let stale_before = chrono::Utc::now()
            - chrono::Duration::from_std(self.options.staff_detail_max_age)
                .unwrap_or(chrono::Duration::MAX);
        self.done_at_start = 0;
        self.started = Instant::now();
        while !self.run.progress.directory_complete {
            let cursor = self.run.progress.directory_cursor.clone();
            let page = match self
                .directory_call(|| api.user_list_id(creds, &cursor))
                .await?
            {
                Ok(page) => page,
                Err(e) => {
                    // The listing is incomplete: nobody is swept (the next run lists again).
                    self.skip(
                        "user/list_id; the rest of the directory was not listed and no member was swept",
                        &e,
                    );
                    self.save().await?;
                    return Ok(());
                }
            };
            let mut userids: Vec<String> = page
                .dept_user
                .into_iter()
                .map(|u| u.userid)
                .filter(|u| !u.is_empty())
                .collect();
            userids.sort();
            userids.dedup();
            let before = store_dir::staff_fingerprints(self.pool, &corp).await?;
            let created = store_dir::mark_listed(
                self.pool,
                &corp,
                self.run.id,
                self.run.started_at,
                &userids,
            )
            .await?;
            // `user/get` only where the row is missing, never fetched, stale, or says `left`.
            for userid in
                store_dir::needing_detail(self.pool, &corp, &userids, stale_before).await?
            {
                match self.directory_call(|| api.user_get(creds, &userid)).await? {
                    Ok(Fetched { value: member, at }) => {
                        // Some answers omit the userid asked for; the member asked for is the subject.
                        let member = StaffMember { userid, ..member };
                        store_dir::observe_member(self.pool, &corp, &member, at).await?;
                    }
                    // Listed a moment ago, gone now: the next run's listing decides.
                    Err(ApiError::Wecom(w)) if w.errcode == 60111 => {}
                    Err(e) => self.skip(&format!("user/get {userid}"), &e),
                }
            }
            let after = store_dir::staff_fingerprints(self.pool, &corp).await?;
            let updated = userids
                .iter()
                .filter(|u| {
                    before
                        .get(*u)
                        .is_some_and(|b| after.get(*u).is_some_and(|a| a != b))
                })
                .count() as u64;
            let p = &mut self.run.progress;
            p.drift.staff_created += created;
            p.drift.staff_updated += updated;
            p.directory_listed += userids.len() as u64;
            p.directory_complete = page.next_cursor.is_empty();
            p.directory_cursor = page.next_cursor;
            self.save().await?;
            let listed = usize::try_from(self.run.progress.directory_listed).unwrap_or(usize::MAX);
            self.report_of(listed, listed);
        }
        self.sweep_staff().await?;
        self.follows_listed_nowhere(users).await
    }

    /// The follows of members gone from the directory that WeCom lists nowhere: not under a member of this
    /// run's follow-user list, not in its `get_unassigned_list` (which names every customer of a member who
    /// left and waits for 离职继承; a customer already reassigned is no longer the leaver's). What remains is a
    /// relation WeCom no longer has: reassigned away, or kept under a userid that was renamed while its
    /// callback was lost (WeCom lists those customers under the new userid). They become `removed` (source
    /// `resync`), as the unassigned ones do. Only after a complete directory listing and a complete
    /// unassigned listing in this run; a member this run's listing still names is not touched.
    async fn follows_listed_nowhere(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let p = &self.run.progress;
        if !(p.directory_complete && p.unassigned_listed) {
            return Ok(());
        }
        let corp = &self.creds.corp_id;
        let pairs = sweeps::follows_listed_nowhere(self.pool, corp, self.run, users).await?;
        if pairs.is_empty() {
            return Ok(());
        }
        let removed = sweeps::remove_unassigned(self.pool, corp, self.run, &pairs).await?;
        self.run.progress.drift.follows_removed += removed;
        self.save().await?;
        Ok(())
    }

    /// The staff sweep over a complete listing, behind the same mass-removal guard as the follow sweep.
    async fn sweep_staff(&mut self) -> Result<(), ResyncError> {
        let corp = &self.creds.corp_id;
        let present = sweeps::present_staff(self.pool, corp).await?;
        if self.run.progress.directory_listed == 0 {
            // Never swept after an empty listing; worth an error only when there was someone to sweep.
            if present > 0 {
                let e = format!(
                    "user/list_id listed nobody although {present} members are known: the secret sees no \
                     member (check the app's 可见范围); no member was swept"
                );
                self.note(e);
                self.save().await?;
            }
            return Ok(());
        }
        let candidates = sweeps::staff_sweep_candidates(self.pool, corp, self.run).await?;
        let count = candidates.len() as u64;
        if self.refuses_mass_removal(count, present) {
            let e = format!(
                "the staff sweep was refused: it would mark {count} of the corp's {present} members \
                 left (more than {pct} %, api.resync_max_removal_share). user/list_id not listing that many \
                 usually means the secret sees less of the directory (a narrowed 可见范围, another secret), \
                 not that they left. Check the app's visible range; if they really left, run \
                 `wecom-callback resync --allow-mass-removal`",
                pct = self.options.max_removal_share * 100.0
            );
            self.note(e);
            self.run.progress.drift.staff_removal_refused = count;
            self.save().await?;
            return Ok(());
        }
        let confirmed = self.confirm_departures(candidates).await?;
        let left =
            sweeps::sweep_staff(self.pool, &self.creds.corp_id, self.run, &confirmed).await?;
        self.run.progress.drift.staff_left += left;
        self.save().await?;
        Ok(())
    }

    /// Which of the staff sweep's `candidates` WeCom confirms gone, asked one by one with `user/get`. Not
    /// being listed by `user/list_id` is not proof: its cursor is opaque, and were it an offset, a member
    /// leaving between two pages would shift the rest so that one listed all along is skipped. A member the
    /// answer still has is written and kept; 60111 (no such userid) confirms; any other answer (60011: outside
    /// the app's visible range, say) is skipped like every failing item, the member kept until the next run.
    async fn confirm_departures(
        &mut self,
        candidates: Vec<String>,
    ) -> Result<Vec<String>, ResyncError> {
        let (api, creds) = (self.api, self.creds);
        let corp = self.creds.corp_id.clone();
        let mut confirmed = Vec::new();
        let mut kept = 0u64;
        for userid in candidates {
            match self.attempt(|| api.user_get(creds, &userid)).await? {
                Ok(Fetched { value: member, at }) => {
                    let member = StaffMember { userid, ..member };
                    store_dir::observe_member(self.pool, &corp, &member, at).await?;
                    kept += 1;
                }
                Err(ApiError::Wecom(w)) if w.errcode == 60111 => confirmed.push(userid),
                Err(e) => self.skip(
                    &format!(
                        "user/get {userid} (confirming that a member user/list_id did not list left; kept \
                         until the next resync)"
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
                "user/list_id left out members that user/get still has (WeCom's paging skipped them while the \
                 directory changed); they were kept, not marked left"
            );
        }
        self.run.progress.drift.staff_unlisted_kept += kept;
        Ok(confirmed)
    }
}
