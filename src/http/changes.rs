//! `GET /api/v1/changes`: the change feed (see [`crate::store::feed`]), paged by cursor, with an optional
//! long poll. The handler only translates.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::domain::ChangeKind;
use crate::http::AppState;
use crate::http::auth::BearerAuth;
use crate::http::error::ApiError;
use crate::store::feed::{self, Filter, ReadError};

/// Most entries per page.
const MAX_LIMIT: i64 = 1000;
/// Entries per page without `limit`.
const DEFAULT_LIMIT: i64 = 100;
/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a long poll looks at the feed's head.
const POLL: Duration = Duration::from_millis(100);

/// The query string.
#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    /// Entries strictly after this cursor (0, or absent: from the oldest retained).
    pub after: Option<i64>,
    pub limit: Option<i64>,
    pub corp: Option<String>,
    pub kind: Option<String>,
    /// Seconds to wait for an entry when there is none yet (at most 30).
    pub wait: Option<u64>,
}

/// `GET /api/v1/changes?after=CURSOR&limit=N[&corp=…&kind=…&wait=SECONDS]`.
pub async fn changes(
    _: BearerAuth,
    q: web::Query<ChangesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(n) if n >= 1 => n.min(MAX_LIMIT),
        Some(_) => return Err(ApiError::BadLimit),
    };
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::BadCursor);
    }
    let kinds = match &q.kind {
        None => Vec::new(),
        Some(k) => vec![
            k.parse::<ChangeKind>()
                .map_err(|_| ApiError::BadKind(k.clone()))?,
        ],
    };
    let filter = Filter {
        corps: q.corp.iter().cloned().collect(),
        kinds,
    };
    let deadline = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0)).min(MAX_WAIT);
    let mut after = after;
    loop {
        let page = feed::read(&state.pool, after, limit, &filter)
            .await
            .map_err(|e| match e {
                ReadError::Expired {
                    cursor,
                    pruned_through,
                    head,
                } => ApiError::CursorExpired {
                    cursor,
                    pruned_through,
                    head,
                },
                ReadError::Database(e) => ApiError::from(e),
            })?;
        // Entries the filter skipped are behind the next cursor too: a later poll starts after them.
        after = page.next;
        if !page.entries.is_empty() || Instant::now() >= deadline {
            return Ok(HttpResponse::Ok().json(json!({
                "changes": page.entries,
                "next_cursor": page.next,
                "head": page.head,
            })));
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
