//! [`Ingest::accept`]: the acknowledgement policy. A verified callback is acknowledged only once it is
//! committed to PostgreSQL, or, when the database cannot take it in time, fsynced to the spool.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::app::AppKind;
use crate::ingest::outcome::Outcome;
use crate::ingest::spool::{Spool, SpoolError, SpooledRequest};
use crate::ingest::writer::EventWriter;
use crate::store::{NewEvent, StoreOutcome};
use crate::wecom::events::{self, EventKind};
use crate::wecom::verify::VerifiedCallback;

/// Time the spool keeps for its fsync before the request deadline, and the least time the database gets.
pub const SPOOL_MARGIN: Duration = Duration::from_millis(500);

/// Longest pause between two store attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(800);

/// The request as it arrived, which is what the spool keeps (the drain verifies it again later).
#[derive(Debug, Clone, Copy)]
pub struct RawCallback<'a> {
    /// The configured app it arrived for.
    pub app: &'a str,
    /// The raw query string.
    pub query: &'a str,
    /// The body as received.
    pub body: &'a [u8],
}

/// When a request arrived: the monotonic instant its deadline counts from, and the wall-clock time the
/// spool records.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    at: Instant,
    unix_us: i64,
}

impl Arrival {
    /// Now.
    pub fn now() -> Arrival {
        Arrival {
            at: Instant::now(),
            unix_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
        }
    }

    /// The monotonic arrival instant.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// Time since arrival.
    pub fn elapsed(&self) -> Duration {
        self.at.elapsed()
    }
}

/// How a callback was acknowledged: in every case WeCom may be answered `success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Committed as a new row; `unknown_type` when this version does not interpret its event type.
    Stored {
        /// The event type is not one this version interprets (stored all the same).
        unknown_type: bool,
    },
    /// An identical message was already stored.
    Duplicate,
    /// Not committed in time, but fsynced to the spool; the drain stores it when the database is back.
    Spooled,
}

impl Ack {
    /// The metric label.
    pub fn outcome(self) -> Outcome {
        match self {
            Ack::Stored {
                unknown_type: false,
            } => Outcome::Stored,
            Ack::Stored { unknown_type: true } => Outcome::UnknownType,
            Ack::Duplicate => Outcome::Duplicate,
            Ack::Spooled => Outcome::Spooled,
        }
    }
}

/// Why a callback was neither stored nor spooled: WeCom must not be told `success` (answer 503 so it may
/// retry).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not committed before the deadline, and no spool is configured.
    #[error("the database did not commit the callback in time and no spool is configured")]
    Unavailable,
    /// Not committed in time, and the spool is at its cap.
    #[error("the database did not commit the callback in time, and {0}")]
    SpoolFull(#[source] SpoolError),
    /// Not committed in time, and the spool write failed.
    #[error("the database did not commit the callback in time, and {0}")]
    SpoolFailed(#[source] SpoolError),
    /// Not committed in time, and the spool did not fsync before the deadline.
    #[error("the database did not commit the callback in time, and spooling took too long")]
    SpoolTimedOut,
}

impl IngestError {
    /// The metric label (and log class).
    pub fn outcome(&self) -> Outcome {
        match self {
            IngestError::Unavailable => Outcome::DbUnavailable,
            IngestError::SpoolFull(_) => Outcome::SpoolFull,
            IngestError::SpoolFailed(_) | IngestError::SpoolTimedOut => Outcome::SpoolError,
        }
    }
}

/// Takes verified callbacks to durable storage within the request deadline. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    writer: EventWriter,
    spool: Option<Spool>,
    spool_after: Duration,
    deadline: Duration,
    /// `(spool_after, deadline)` for `suite_instruction` apps, when they need a tighter budget.
    instruction: Option<(Duration, Duration)>,
    fault_ack_before_commit: bool,
}

impl Ingest {
    /// Stores through `writer`; without a commit within `spool_after`, spools to `spool` (if any). Either
    /// way the answer comes within `deadline` of arrival.
    pub fn new(
        writer: EventWriter,
        spool: Option<Spool>,
        spool_after: Duration,
        deadline: Duration,
    ) -> Ingest {
        Ingest {
            writer,
            spool,
            spool_after,
            deadline,
            instruction: None,
            fault_ack_before_commit: false,
        }
    }

    /// Callbacks of `suite_instruction` apps are spooled after `spool_after` and answered within
    /// `deadline`: WeCom wants their auth events (create_auth, change_auth, cancel_auth,
    /// reset_permanent_code, and suite_ticket) answered within 1000 ms, far tighter than the other kinds'
    /// 5 s. Both are capped at the general budget.
    pub fn with_instruction_budget(mut self, spool_after: Duration, deadline: Duration) -> Ingest {
        let deadline = deadline.min(self.deadline);
        self.instruction = Some((spool_after.min(deadline), deadline));
        self
    }

    /// Test-only fault (see `Settings::fault_ack_before_commit`): acknowledge before the commit. The bug the
    /// fault-injection checker must catch; never set it in production.
    #[doc(hidden)]
    pub fn with_fault_ack_before_commit(mut self, on: bool) -> Ingest {
        self.fault_ack_before_commit = on;
        self
    }

    /// The spool, when one is configured (its size is exported on `/metrics`).
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref()
    }

    /// Stores `verified` (retrying within the deadline) or, failing that in time, spools `raw`. `Ok` means
    /// it is durable and WeCom may be answered `success`. The budget of the general kinds; see
    /// [`Ingest::accept_for`].
    pub async fn accept(
        &self,
        verified: &VerifiedCallback,
        raw: RawCallback<'_>,
        arrived: Arrival,
    ) -> Result<Ack, IngestError> {
        self.accept_with(verified, raw, arrived, self.spool_after, self.deadline)
            .await
    }

    /// Like [`Ingest::accept`], with the budget of the app's kind (see [`Ingest::with_instruction_budget`]).
    pub async fn accept_for(
        &self,
        kind: AppKind,
        verified: &VerifiedCallback,
        raw: RawCallback<'_>,
        arrived: Arrival,
    ) -> Result<Ack, IngestError> {
        let (spool_after, deadline) = match (kind, self.instruction) {
            (AppKind::SuiteInstruction, Some(budget)) => budget,
            _ => (self.spool_after, self.deadline),
        };
        self.accept_with(verified, raw, arrived, spool_after, deadline)
            .await
    }

    async fn accept_with(
        &self,
        verified: &VerifiedCallback,
        raw: RawCallback<'_>,
        arrived: Arrival,
        spool_after: Duration,
        deadline: Duration,
    ) -> Result<Ack, IngestError> {
        let deadline = arrived.at + deadline;
        let event = NewEvent::from(verified);

        if self.fault_ack_before_commit {
            let writer = self.writer.clone();
            tokio::spawn(async move { writer.write(event).await });
            return Ok(Ack::Stored {
                unknown_type: false,
            });
        }

        // With a spool, give the database until `spool_after`, then spool: WeCom may never retry a 503.
        // A body that arrived slowly still gets a fair try at the database, and the spool keeps time to fsync.
        let db_deadline = match &self.spool {
            Some(_) => (arrived.at + spool_after)
                .max(Instant::now() + SPOOL_MARGIN)
                .min(deadline.checked_sub(SPOOL_MARGIN).unwrap_or(deadline)),
            None => deadline,
        };
        match self.store_until(event, db_deadline).await {
            Some(StoreOutcome::Stored) => {
                let message = verified.message();
                tracing::info!(
                    event = message.event().unwrap_or("-"),
                    change_type = message.change_type().unwrap_or("-"),
                    "callback stored"
                );
                // Stored like any other; counted apart so a new WeCom event type shows up on a dashboard.
                let unknown_type =
                    matches!(events::interpret(message).kind, EventKind::Unknown { .. });
                Ok(Ack::Stored { unknown_type })
            }
            Some(StoreOutcome::Duplicate) => {
                tracing::debug!("duplicate callback acknowledged");
                Ok(Ack::Duplicate)
            }
            None => match &self.spool {
                Some(spool) => Self::spool_to(spool, raw, arrived, deadline).await,
                None => {
                    tracing::error!(
                        class = Outcome::DbUnavailable.as_str(),
                        "callback not stored; answered 503 so WeCom may retry (no spool configured)"
                    );
                    Err(IngestError::Unavailable)
                }
            },
        }
    }

    /// Fsyncs the request to the spool before `deadline`.
    async fn spool_to(
        spool: &Spool,
        raw: RawCallback<'_>,
        arrived: Arrival,
        deadline: Instant,
    ) -> Result<Ack, IngestError> {
        let request = SpooledRequest {
            app: raw.app.to_owned(),
            query: raw.query.to_owned(),
            // The envelope parsed, so the body is UTF-8.
            body: String::from_utf8_lossy(raw.body).into_owned(),
            received_at_us: arrived.unix_us,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, spool.append(&request)).await {
            Ok(Ok(())) => {
                tracing::warn!(
                    class = Outcome::Spooled.as_str(),
                    spooled_bytes = spool.bytes(),
                    "database unavailable: callback fsynced to the spool and acknowledged; it is stored when the database is back"
                );
                Ok(Ack::Spooled)
            }
            Ok(Err(e)) => {
                let full = matches!(e, SpoolError::Full { .. });
                let class = if full {
                    Outcome::SpoolFull
                } else {
                    Outcome::SpoolError
                };
                tracing::error!(
                    class = class.as_str(),
                    error = %e,
                    "callback neither stored nor spooled; answered 503"
                );
                Err(if full {
                    IngestError::SpoolFull(e)
                } else {
                    IngestError::SpoolFailed(e)
                })
            }
            Err(_) => {
                tracing::error!(
                    class = Outcome::SpoolError.as_str(),
                    "spooling took too long; answered 503"
                );
                Err(IngestError::SpoolTimedOut)
            }
        }
    }

    /// Stores the event, retrying within `deadline`. `None` means it was not committed in time: the caller
    /// must not answer success.
    async fn store_until(&self, event: NewEvent, deadline: Instant) -> Option<StoreOutcome> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                tracing::warn!(
                    class = Outcome::DbUnavailable.as_str(),
                    "callback not committed in time"
                );
                return None;
            }
            match tokio::time::timeout(remaining, self.writer.write(event.clone())).await {
                Ok(Ok(outcome)) => return Some(outcome),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "storing the callback failed; retrying");
                    let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(_) => {
                    tracing::warn!(
                        class = Outcome::DbUnavailable.as_str(),
                        "callback not committed in time"
                    );
                    return None;
                }
            }
        }
    }
}
