//! Suite tickets, and the applier's writes for suite events ([`crate::sync::provider::plan`]).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::sync::provider::plan::ProviderPlan;

/// A suite's newest ticket.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ticket {
    pub ticket: String,
    pub pushed_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Seconds since it was received.
    pub age_secs: i64,
}

/// The newest ticket of `suite_id`.
pub async fn ticket(pool: &PgPool, suite_id: &str) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query_as(
        "SELECT ticket, pushed_at, received_at, extract(epoch FROM now() - received_at)::bigint AS age_secs \
         FROM wecom_suite_tickets WHERE suite_id = $1",
    )
    .bind(suite_id)
    .fetch_optional(pool)
    .await
}

/// Runs a batch's suite writes in the applier's transaction: tickets (newest push wins, per suite),
/// cancellations (the corp is marked cancelled and its queued jobs dropped, so nothing more is called for
/// it), and jobs.
pub async fn execute(
    tx: &mut Transaction<'_, Postgres>,
    plan: &ProviderPlan,
) -> Result<(), sqlx::Error> {
    for t in &plan.tickets {
        sqlx::query(
            "INSERT INTO wecom_suite_tickets AS t (suite_id, ticket, pushed_at, event_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (suite_id) DO UPDATE SET ticket = EXCLUDED.ticket, pushed_at = EXCLUDED.pushed_at, \
               received_at = now(), event_id = EXCLUDED.event_id \
             WHERE t.pushed_at <= EXCLUDED.pushed_at",
        )
        .bind(&t.suite_id)
        .bind(&t.ticket)
        .bind(t.pushed_at)
        .bind(t.event_id)
        .execute(&mut **tx)
        .await?;
    }
    for c in &plan.cancels {
        crate::store::corps::cancel(tx, &c.suite_id, &c.corp_id).await?;
    }
    if !plan.jobs.is_empty() {
        crate::store::jobs::enqueue_many(tx, plan.jobs.iter()).await?;
        // An AuthCode lives 10 minutes: wake the workers rather than wait for their next poll.
        crate::store::jobs::notify_queued(tx).await?;
    }
    Ok(())
}

/// One row of `doctor`'s suite check.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketAge {
    pub suite_id: String,
    pub age_secs: i64,
}

/// Every stored ticket's age.
pub async fn ticket_ages(pool: &PgPool) -> Result<Vec<TicketAge>, sqlx::Error> {
    sqlx::query_as(
        "SELECT suite_id, extract(epoch FROM now() - received_at)::bigint AS age_secs FROM wecom_suite_tickets \
         ORDER BY suite_id",
    )
    .fetch_all(pool)
    .await
}

/// The stored message of event `id` (a job reads its AuthCode from there).
pub async fn event_message(pool: &PgPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT message FROM wecom_events WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}
