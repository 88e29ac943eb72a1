//! The receive ids a suite's data callback URLs accept beyond their configured ones: the corps that
//! authorised the suite (third-party 数据回调, the 代开发 app's own callback URL), read from the store and
//! cached briefly so a callback costs no query.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// How long a suite's corps are used before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(10);
/// A miss re-reads the corps at most this often per suite (a just-authorised corp's first callback passes;
/// a stranger's flood costs a query a second at most).
const RELOAD_AFTER: Duration = Duration::from_secs(1);

/// One suite's authorised corps and when they were read.
type Read = (Instant, Arc<HashSet<String>>);

/// Authorised corps per suite id, read at most every [`FRESH_FOR`].
#[derive(Default)]
pub struct SuiteCorps {
    cached: Mutex<HashMap<String, Read>>,
}

impl SuiteCorps {
    /// The corps authorising `suite_id`. `missed`: the cached set refused a receive id, so it is read again
    /// unless it is younger than [`RELOAD_AFTER`]. When the store cannot answer, the last set read (or none)
    /// serves: an unknown corp is refused either way.
    pub async fn get(&self, pool: &PgPool, suite_id: &str, missed: bool) -> Arc<HashSet<String>> {
        let max_age = if missed { RELOAD_AFTER } else { FRESH_FOR };
        let cached = self
            .cached
            .lock()
            .ok()
            .and_then(|c| c.get(suite_id).cloned());
        if let Some((at, set)) = &cached
            && at.elapsed() < max_age
        {
            return set.clone();
        }
        match crate::store::corps::authorised_ids(pool, Some(suite_id)).await {
            Ok(ids) => {
                let set = Arc::new(ids);
                if let Ok(mut c) = self.cached.lock() {
                    c.insert(suite_id.to_owned(), (Instant::now(), set.clone()));
                }
                set
            }
            Err(e) => {
                tracing::warn!(suite_id, error = %e, "reading the suite's authorised corps failed; using the last list");
                cached.map(|(_, s)| s).unwrap_or_default()
            }
        }
    }
}
