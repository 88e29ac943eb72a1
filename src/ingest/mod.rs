//! From a verified callback to an acknowledged one: [`accept`] (the acknowledgement policy), the group-commit
//! [`writer`], the [`spool`] that takes callbacks when the database cannot in time, the [`drain`] that stores
//! spooled callbacks later, and the [`outcome`] of each request as counted in the metrics.

pub mod accept;
pub mod drain;
pub mod outcome;
pub mod spool;
pub mod writer;

pub use accept::{Ack, Arrival, Ingest, IngestError, RawCallback, SPOOL_MARGIN};
pub use outcome::Outcome;
