//! The projector: how stored events are batched into applying transactions.
//!
//! Environment variables: none (file only, `[projector]`).

use std::time::Duration;

use super::file::FileConfig;

/// How the projector sizes its batches (see [`crate::sync::projector`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorSettings {
    /// Events applied per transaction when there is no backlog, and where a growing batch starts.
    pub min_batch: usize,
    /// Most events applied per transaction; the batch doubles toward it while a backlog remains.
    pub max_batch: usize,
    /// After a commit wakes an idle projector, how long it waits for more events before applying, so that
    /// under load one transaction carries more events (less CPU per event). Zero applies at once.
    pub coalesce: Duration,
    /// Concurrent applying transactions inside this process (like replicas; see [`crate::sync::projector`]).
    pub appliers: usize,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        build(&FileConfig::default())
    }
}

pub(super) fn build(file: &FileConfig) -> ProjectorSettings {
    let p = &file.projector;
    let min_batch = p.min_batch.clamp(1, 50_000);
    ProjectorSettings {
        min_batch,
        max_batch: p.max_batch.clamp(min_batch, 50_000),
        // Longer would make the synced tables visibly stale; a coalescing wait of 1 s helps nobody.
        coalesce: Duration::from_millis(p.coalesce_ms.min(1000)),
        // Each takes a pooled connection while it applies; more than a few only wait on each other's row locks.
        appliers: p.appliers.clamp(1, 8),
    }
}
