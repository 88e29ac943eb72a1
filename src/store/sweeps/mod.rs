//! Mark-and-sweep of what WeCom no longer lists: the resync's marks (a run saw this row) and sweeps (a row in
//! a listing's scope that the run did not see is removed, dismissed or deleted), each recorded in the
//! observation log in the transaction that applies it, and each with the keyed statement a rebuild replays.
//!
//! By what is swept: `follows`, `chats`, `tags`, `staff`; each sweep ends in `commit_sweep`.

mod chats;
mod follows;
mod staff;
mod tags;

pub use chats::*;
pub use follows::*;
pub use staff::*;
pub use tags::*;

use sqlx::{Postgres, Transaction};

use crate::store::observations::{self, Observation};

/// The end of every sweep: the keys it changed, if any, go into the observation log as `observation` (a
/// sweep is never compacted away: it depends on when it happened), and the transaction commits. Returns how
/// many rows changed.
async fn commit_sweep<K>(
    mut tx: Transaction<'_, Postgres>,
    corp_id: &str,
    swept: Vec<K>,
    observation: impl FnOnce(Vec<K>) -> Observation,
) -> Result<u64, sqlx::Error> {
    let n = swept.len() as u64;
    if n > 0 {
        observations::record(&mut tx, corp_id, &observation(swept), true, &[]).await?;
    }
    tx.commit().await?;
    Ok(n)
}
