//! The group-commit writer: concurrent callbacks are gathered into one multi-row `INSERT ... ON CONFLICT DO
//! NOTHING` and one commit, and each waiting request is answered only after the commit that holds its row.
//! One commit per request tops out around 10k/s on a small machine; a batch amortises the WAL flush.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::config::StoreSettings;
use crate::store::{NewEvent, StoreError, StoreOutcome, insert_events};
use crate::tasks::Tasks;

/// The writer's name in [`crate::tasks`].
const TASK: &str = "writer";

type Reply = oneshot::Sender<Result<StoreOutcome, Arc<StoreError>>>;

struct Pending {
    event: NewEvent,
    reply: Reply,
}

/// Handle to the group-commit writer. Cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<Pending>,
    committed: Arc<Notify>,
}

impl EventWriter {
    /// Starts the writer as the critical task `writer` of `tasks` (see [`crate::tasks`]): if it or one of its
    /// commits panics, the service stops. When the token is cancelled it stops taking requests, commits and
    /// answers those already queued, and ends.
    pub fn spawn(pool: PgPool, settings: &StoreSettings, tasks: &Tasks) -> EventWriter {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let committed = Arc::new(Notify::new());
        tasks.spawn_critical(
            TASK,
            run_writer(
                pool,
                rx,
                settings.max_batch_rows,
                settings.max_in_flight_batches,
                committed.clone(),
                tasks.clone(),
            ),
        );
        EventWriter { tx, committed }
    }

    /// Signalled after every commit that added rows (the projector waits on it).
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Writes one event and waits for the commit that holds it. Cancel-safe: dropping the future (e.g. on a
    /// deadline) leaves the row to be committed or not, and never reports it as stored.
    pub async fn write(&self, event: NewEvent) -> Result<StoreOutcome, Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { event, reply })
            .await
            .map_err(|_| Arc::new(StoreError::WriterStopped))?;
        rx.await.map_err(|_| Arc::new(StoreError::WriterStopped))?
    }
}

async fn run_writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    max_in_flight: usize,
    committed: Arc<Notify>,
    tasks: Tasks,
) -> Result<(), String> {
    let token = tasks.token();
    let faults = tasks.faults();
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        // Take a slot before collecting: while every slot is busy committing, callbacks pile up in the
        // channel and the next batch grows, which is what makes throughput scale with load.
        let slot = tokio::select! {
            biased;
            () = token.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.map_err(|_| "the commit slots were closed".to_owned())?,
        };
        let first = tokio::select! {
            biased;
            () = token.cancelled() => break,
            first = rx.recv() => first,
        };
        let Some(first) = first else {
            // Every handle is gone (the HTTP server has stopped): nothing more can come.
            token.cancelled().await;
            return Ok(());
        };
        faults.fire(TASK);
        let batch = collect(first, &mut rx, max_batch);
        let pool = pool.clone();
        let committed = committed.clone();
        tasks.spawn_part(TASK, async move {
            if flush(&pool, batch).await {
                committed.notify_one();
            }
            drop(slot);
        });
    }
    // Stopping: refuse new requests and answer the queued ones (commits in flight are waited for by the
    // supervisor).
    rx.close();
    while let Some(first) = rx.recv().await {
        let batch = collect(first, &mut rx, max_batch);
        if flush(&pool, batch).await {
            committed.notify_one();
        }
    }
    Ok(())
}

/// `first` and whatever else is already waiting, up to `max_batch`.
fn collect(first: Pending, rx: &mut mpsc::Receiver<Pending>, max_batch: usize) -> Vec<Pending> {
    let mut batch = Vec::with_capacity(max_batch.min(64));
    batch.push(first);
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

/// Writes a batch and answers its requests. Returns whether any new row was committed.
async fn flush(pool: &PgPool, batch: Vec<Pending>) -> bool {
    // Requests whose deadline passed have dropped their receiver; do not write rows nobody will acknowledge
    // (WeCom will retry them), except that a row already on its way is harmless either way.
    let batch: Vec<Pending> = batch.into_iter().filter(|p| !p.reply.is_closed()).collect();
    if batch.is_empty() {
        return false;
    }
    let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
    let started = std::time::Instant::now();
    let result = insert_events(pool, &events).await;
    tracing::trace!(
        rows = batch.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "batch"
    );
    match result {
        Ok(new) => {
            let any_new = new.iter().any(|n| *n);
            for (p, is_new) in batch.into_iter().zip(new) {
                let outcome = if is_new {
                    StoreOutcome::Stored
                } else {
                    StoreOutcome::Duplicate
                };
                let _ = p.reply.send(Ok(outcome));
            }
            any_new
        }
        Err(e) => {
            let err = Arc::new(StoreError::Database(e));
            for p in batch {
                let _ = p.reply.send(Err(err.clone()));
            }
            false
        }
    }
}
