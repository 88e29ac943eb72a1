//! An API answer with the instant its request was sent.

use chrono::{DateTime, Utc};

/// An answer and the instant its request was sent: what WeCom said as of then. Two fetches of the same thing
/// are ordered by it (the later request's answer wins), so it is taken just before the HTTP request that was
/// answered, never when the answer is stored: a page written entry by entry would otherwise date its last
/// entries after a newer fetch made meanwhile, and put back what that fetch had replaced.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    /// What WeCom answered.
    pub value: T,
    /// When the request was sent.
    pub at: DateTime<Utc>,
}
