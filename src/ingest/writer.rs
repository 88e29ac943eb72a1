//! The group-commit writer: concurrent callbacks are gathered into one multi-row `INSERT ... ON CONFLICT DO
//! NOTHING` and one commit, and each waiting request is answered only after the commit that holds its row.
//! One commit per request tops out around 10k/s on a small machine; a batch amortises the WAL flush.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::config::StoreSettings;
use crate::store::{NewEvent, StoreError, StoreOutcome, insert_events};

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
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(pool: PgPool, settings: &StoreSettings) -> EventWriter {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let committed = Arc::new(Notify::new());
        tokio::spawn(run_writer(
            pool,
            rx,
            settings.max_batch_rows,
            settings.max_in_flight_batches,
            committed.clone(),
        ));
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
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        // Take a slot before collecting: while every slot is busy committing, callbacks pile up in the
        // channel and the next batch grows, which is what makes throughput scale with load.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        let committed = committed.clone();
        tokio::spawn(async move {
            if flush(&pool, batch).await {
                committed.notify_one();
            }
            drop(slot);
        });
    }
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
