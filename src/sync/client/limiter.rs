//! Cluster-wide limits on WeCom API calls, per corp and API, shared by every replica through PostgreSQL
//! ([`crate::store::limits`]). WeCom counts per corp, not per process: past a few concurrent calls of one API
//! it answers 45033, past its call rate 45009, so `worker_concurrency` × replicas must not decide the load.
//!
//! Each HTTP exchange (every attempt, `gettoken` included) first reserves its place on the corp's shared rate
//! schedule and waits for it, then leases one of the API's concurrency slots for the call (a lease, so a
//! replica that dies mid-call frees its slot after [`ApiLimits::lease`]); no database connection is held while
//! WeCom answers. A 45033 or 45009 slows the corp down for every replica for [`ApiLimits::slowdown`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgPool;

use super::ApiError;
use crate::store::limits;

/// The limits of one API (per corp, across every replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Calls in flight at once.
    pub concurrency: u32,
    /// Calls per minute, sustained.
    pub per_minute: u32,
    /// Calls that may go at once after a quiet spell.
    pub burst: u32,
}

/// Every API's limits and the slowdown after WeCom's limit errors.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiLimits {
    /// Off: no limit at all (tests, and a fake API).
    pub enabled: bool,
    /// APIs not named in `apis`.
    pub default: Limit,
    /// By API path without `/cgi-bin/`, e.g. `externalcontact/get`.
    pub apis: BTreeMap<String, Limit>,
    /// How long a 45033 / 45009 slows the corp down.
    pub slowdown: Duration,
    /// The rate is divided by this (and bursts are off) while slowed down.
    pub slowdown_factor: u32,
    /// A concurrency lease outlives the longest call (the HTTP timeout is 10 s).
    pub lease: Duration,
    /// Waiting for a slot longer than this fails the call ([`ApiError::Throttled`]; jobs retry later).
    pub max_wait: Duration,
}

impl ApiLimits {
    /// No limits.
    pub fn unlimited() -> ApiLimits {
        ApiLimits {
            enabled: false,
            ..crate::config::limits::defaults()
        }
    }

    /// The limits of `api` (a path, with or without `/cgi-bin/`).
    pub fn limit(&self, api: &str) -> Limit {
        self.apis
            .get(api_name(api))
            .copied()
            .unwrap_or(self.default)
    }
}

impl Default for ApiLimits {
    /// The configuration defaults (`[api_limits]` in the file).
    fn default() -> Self {
        crate::config::limits::defaults()
    }
}

/// `/cgi-bin/externalcontact/get` → `externalcontact/get`.
pub fn api_name(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    p.strip_prefix("cgi-bin/").unwrap_or(p)
}

/// The limiter of one client.
#[derive(Clone)]
pub(super) struct Limiter {
    pool: PgPool,
    limits: Arc<ApiLimits>,
}

/// A leased concurrency slot; given back by [`Limiter::release`], or when dropped (a cancelled call).
pub(super) struct Permit {
    pool: PgPool,
    corp_id: String,
    api: String,
    slot: i32,
    holder: String,
    released: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // A call cut short (its future dropped): give the slot back rather than let it block for a lease.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (pool, corp, api, slot, holder) = (
                self.pool.clone(),
                std::mem::take(&mut self.corp_id),
                std::mem::take(&mut self.api),
                self.slot,
                std::mem::take(&mut self.holder),
            );
            rt.spawn(async move {
                let _ = limits::release_slot(&pool, &corp, &api, slot, &holder).await;
            });
        }
    }
}

impl Limiter {
    pub(super) fn new(pool: PgPool, limits: ApiLimits) -> Limiter {
        Limiter {
            pool,
            limits: Arc::new(limits),
        }
    }

    /// Waits for the call's turn on the corp's rate schedule and for a free slot. `None` when limits are off.
    pub(super) async fn acquire(
        &self,
        corp_id: &str,
        path: &str,
    ) -> Result<Option<Permit>, ApiError> {
        if !self.limits.enabled {
            return Ok(None);
        }
        let api = api_name(path);
        let limit = self.limits.limit(api);
        let wait = limits::reserve_rate(
            &self.pool,
            corp_id,
            api,
            limit.per_minute,
            limit.burst,
            self.limits.slowdown_factor,
        )
        .await?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let holder = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(slot) = limits::try_acquire_slot(
                &self.pool,
                corp_id,
                api,
                limit.concurrency,
                &holder,
                self.limits.lease,
            )
            .await?
            {
                return Ok(Some(Permit {
                    pool: self.pool.clone(),
                    corp_id: corp_id.to_owned(),
                    api: api.to_owned(),
                    slot,
                    holder,
                    released: false,
                }));
            }
            if started.elapsed() >= self.limits.max_wait {
                return Err(ApiError::Throttled {
                    corp_id: corp_id.to_owned(),
                    api: api.to_owned(),
                    concurrency: limit.concurrency,
                    waited: started.elapsed(),
                });
            }
            // Jittered, so replicas waiting on one corp do not poll in step.
            let jitter = rand::rng().random_range(0..=pause.as_millis() as u64);
            tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Gives the slot back.
    pub(super) async fn release(&self, permit: Option<Permit>) {
        let Some(mut p) = permit else { return };
        p.released = true;
        if let Err(e) =
            limits::release_slot(&self.pool, &p.corp_id, &p.api, p.slot, &p.holder).await
        {
            // The lease expires on its own; the slot is only unusable until then.
            tracing::warn!(error = %e, corp_id = %p.corp_id, api = %p.api, "could not give an API slot back; it frees itself when its lease expires");
        }
    }

    /// WeCom answered `errcode`: a 45033 or 45009 slows the corp down for every replica.
    pub(super) async fn observed(&self, corp_id: &str, errcode: i64) {
        if !self.limits.enabled || !matches!(errcode, 45009 | 45033) {
            return;
        }
        tracing::warn!(
            corp_id,
            errcode,
            secs = self.limits.slowdown.as_secs(),
            factor = self.limits.slowdown_factor,
            "WeCom says this corp's API limit is reached: every replica calls it more slowly for a while"
        );
        if let Err(e) = limits::slow_down(&self.pool, corp_id, errcode, self.limits.slowdown).await
        {
            tracing::warn!(error = %e, corp_id, "could not record the slowdown; backing off locally only");
        }
    }
}
