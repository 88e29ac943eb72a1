//! The tags step: both tag lists read and stored, and the tags neither names deleted (only when both
//! were read).

use std::collections::BTreeSet;

use crate::store::enrichment;
use crate::store::resync as runs;
use crate::store::sweeps;
use crate::sync::client::Fetched;
use crate::sync::resync::ResyncError;
use crate::sync::resync::walk::Walk;

impl Walk<'_> {
    pub(super) async fn tags(&mut self) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        let (api, creds) = (self.api, self.creds);
        let before = runs::tag_fingerprints(self.pool, &corp).await?;
        let mut complete = true;
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for strategy in [false, true] {
            let got = self
                .attempt(|| async move {
                    if strategy {
                        api.strategy_tag_list(creds).await
                    } else {
                        api.corp_tag_list(creds).await
                    }
                })
                .await?;
            let Fetched { value: list, at } = match got {
                Ok(list) => list,
                Err(e) => {
                    let what = if strategy {
                        "get_strategy_tag_list (rule-group tags)"
                    } else {
                        "get_corp_tag_list"
                    };
                    self.skip(&format!("{what}; no tag was swept"), &e);
                    complete = false;
                    continue;
                }
            };
            enrichment::corp_tags(self.pool, &corp, &list, at).await?;
            ids.extend(list.ids());
        }
        let ids: Vec<String> = ids.into_iter().collect();
        sweeps::mark_tags(self.pool, &corp, &ids, self.run).await?;
        let after = runs::tag_fingerprints(self.pool, &corp).await?;
        let d = &mut self.run.progress.drift;
        for (id, fp) in &after {
            match before.get(id) {
                None => d.tags_created += 1,
                Some(b) if b != fp => d.tags_updated += 1,
                Some(_) => {}
            }
        }
        // A tag learned from an event is deleted only when neither list names it.
        if complete {
            let deleted = sweeps::sweep_tags(self.pool, &corp, self.run).await?;
            self.run.progress.drift.tags_deleted += deleted;
        }
        Ok(())
    }
}
