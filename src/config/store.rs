//! Group commit: how callbacks are batched into INSERTs.
//!
//! Environment variables: none (file only, `[store]`).

use super::file::FileConfig;

/// Group-commit settings for writing events.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Most rows written by one INSERT (and so one commit).
    pub max_batch_rows: usize,
    /// Most batches being committed at the same time.
    pub max_in_flight_batches: usize,
    /// Callbacks waiting for a batch; past it requests wait (and time out to 503).
    pub queue_capacity: usize,
}

pub(super) fn build(file: &FileConfig) -> StoreSettings {
    let s = &file.store;
    StoreSettings {
        max_batch_rows: s.max_batch_rows.clamp(1, 4096),
        max_in_flight_batches: s.max_in_flight_batches.max(1),
        queue_capacity: s.queue_capacity.max(1),
    }
}
