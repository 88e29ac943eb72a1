//! A simulated corp: a model of one corp's truth over time ([`model`]) drives both the encrypted callbacks
//! WeCom sends the server and a fake WeCom API ([`fake_api`]) that answers from the truth at the moment of
//! each call. After a history and one resync, every synced table is compared with the truth ([`check`]).
//!
//! Time: a step's callbacks carry the wall-clock second the truth changed in, because the service versions
//! API answers by the wall clock; no subject changes twice in one second (WeCom's CreateTime could not order
//! them either), so the executor waits for the next second when a step would.
//!
//! Tables are checked after the history (when no callback was lost) and after one resync. Where neither a
//! callback nor an API answer could have told the service (a lost `del_follow_user`; a departure, before the
//! resync reads `get_unassigned_list`; a departed member's half-added relation, which no API lists), the check
//! accepts what the service could know.
//!
//! Use: `cargo test --test api simcorp` runs the baselines, the scenarios and the full-realism property
//! (`simcorp_full` alone: 8 seeds, about 35 s in a debug build); `SIMCORP_SEEDS=200` runs more seeds,
//! `SIMCORP_SEED=N` one seed (a failure prints its seed), `SIMCORP_VERBOSE=1` prints each corp's summary,
//! `SIMCORP_CORRUPT=1` corrupts a row before the final check (to see a failure).

mod check;
mod fake_api;
mod model;
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use wecom_callback::sync::client::{Credentials, WecomApi};

use crate::helpers::{MAIN, TestApp, sign_callback, spawn_app_with, unix_now};
use model::{Callback, Gen, Network, Step, Truth};

/// How a scripted step's callbacks travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Now,
    Lost,
}

pub struct Sim {
    pub seed: u64,
    pub truth: Arc<Mutex<Truth>>,
    pub app: TestApp,
    fake: fake_api::FakeWecom,
    delivered: HashSet<u64>,
    /// Callbacks waiting to be delivered: (step number due, callback).
    queue: Vec<(usize, Callback)>,
    step_no: usize,
    last_touch: HashMap<String, i64>,
    pub log: Vec<String>,
    resync_errors: Vec<String>,
    resyncs: usize,
    /// Also compare before the resync (when no callback is lost, events and enrichment alone must be right).
    pub check_before_resync: bool,
}

impl Sim {
    /// Starts the fake WeCom and the server (with a secret, so the worker enriches from the fake).
    pub async fn start(seed: u64, truth: Truth) -> Sim {
        let truth = Arc::new(Mutex::new(truth));
        let fake = fake_api::start(truth.clone()).await;
        let uri = fake.server.uri();
        let app = spawn_app_with(&[MAIN], move |s| {
            s.apps[0].secret = Some(SecretString::from("sim-secret"));
            s.api.base_url = uri;
            s.api.worker_concurrency = 1;
            s.api.max_attempts = 3;
        })
        .await;
        Sim {
            seed,
            truth,
            app,
            fake,
            delivered: HashSet::new(),
            queue: Vec::new(),
            step_no: 0,
            last_touch: HashMap::new(),
            log: Vec::new(),
            resync_errors: Vec::new(),
            resyncs: 0,
            check_before_resync: true,
        }
    }

    /// Applies `step` to the truth now and sends (or queues, or loses) its callbacks per `plan`
    /// (one entry per callback: the arrival delays in steps of each copy; empty = lost).
    async fn apply(&mut self, step: &Step, plan: impl FnMut(&Callback) -> Vec<usize>) {
        let mut plan = plan;
        if matches!(step, Step::Tick) {
            sleep_to_next_second().await;
        }
        // One change per subject per second.
        let subjects = step.subjects();
        while subjects
            .iter()
            .any(|s| self.last_touch.get(s) == Some(&unix_now()))
        {
            sleep_to_next_second().await;
        }
        let now = unix_now();
        for s in subjects {
            self.last_touch.insert(s, now);
        }
        let callbacks = self.truth.lock().expect("truth").apply(step, now);
        self.step_no += 1;
        if callbacks.is_empty() {
            self.log.push(format!("  t={now} step {step:?}"));
        }
        for cb in callbacks {
            let arrivals = plan(&cb);
            let fate = match arrivals.as_slice() {
                [] => "LOST".to_owned(),
                [0] => String::new(),
                a => format!("arrives after {a:?} steps"),
            };
            self.log
                .push(format!("  t={now} cb#{} {} {fate}", cb.id, cb.what));
            for a in arrivals {
                self.queue.push((self.step_no + a, cb.clone()));
            }
        }
        self.deliver_due(self.step_no).await;
    }

    /// A scripted step.
    pub async fn step(&mut self, step: Step, how: Delivery) {
        let arrivals = if how == Delivery::Lost {
            vec![]
        } else {
            vec![0]
        };
        self.apply(&step, |_| arrivals.clone()).await;
    }

    /// A seeded random history of `steps` steps.
    pub async fn run(&mut self, history: &mut Gen, net: Network, steps: usize) {
        for _ in 0..steps {
            let step = {
                let mut t = self.truth.lock().expect("truth");
                history.next(&mut t)
            };
            self.apply(&step, |_| history.plan_delivery(&net)).await;
        }
        self.deliver_due(usize::MAX).await;
    }

    async fn deliver_due(&mut self, upto: usize) {
        let mut due: Vec<(usize, Callback)> = Vec::new();
        let mut rest = Vec::new();
        for (at, cb) in self.queue.drain(..) {
            if at <= upto {
                due.push((at, cb));
            } else {
                rest.push((at, cb));
            }
        }
        self.queue = rest;
        due.sort_by_key(|(at, cb)| (*at, cb.id));
        for (_, cb) in due {
            let reply = self
                .app
                .post("main", &sign_callback(&MAIN, &cb.xml, unix_now()))
                .await;
            assert_eq!(reply.status().as_u16(), 200, "callback {} refused", cb.what);
            self.delivered.insert(cb.id);
        }
    }

    /// Waits until every delivered callback is applied and no enrichment job is running or due.
    pub async fn settle(&self) {
        let started = Instant::now();
        let mut idle_polls = 0;
        while idle_polls < 2 {
            let busy: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM wecom_events_pending) + \
                        (SELECT count(*) FROM wecom_jobs WHERE status = 'running' OR (status = 'queued' AND run_after <= now()))",
            )
            .fetch_one(&self.app.pool)
            .await
            .expect("count pending work");
            idle_polls = if busy == 0 { idle_polls + 1 } else { 0 };
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "seed {}: the server did not settle within 60 s ({busy} events/jobs pending)",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// One full resync, as `serve` would run it; its error (if any) is reported by the check.
    pub async fn resync(&mut self) {
        // A resync in the same second as the last change could not tell which came first.
        sleep_to_next_second().await;
        let api = WecomApi::new(&self.fake.server.uri(), self.app.pool.clone())
            .expect("client")
            .with_backoff(Duration::from_millis(5))
            .with_limits(sim_limits());
        let creds = Credentials {
            corp_id: MAIN.receive_id.to_owned(),
            secret: SecretString::from("sim-secret"),
            source: Default::default(),
        };
        let r = wecom_callback::sync::resync::resync(
            &self.app.pool,
            &api,
            "main",
            &creds,
            Duration::ZERO,
        )
        .await;
        self.log.push(format!("  t={} resync: {r:?}", unix_now()));
        self.resyncs += 1;
        if let Err(e) = r {
            self.resync_errors
                .push(format!("resync #{} failed: {e}", self.resyncs));
        }
    }

    /// Proves the check can fail (`SIMCORP_CORRUPT=1`): ends one active follow behind the check's back.
    async fn corrupt_one_row(&self) {
        let r = sqlx::query(
            "UPDATE external_contact_follows SET status = 'deleted_by_staff' WHERE (userid, external_userid) = \
               (SELECT userid, external_userid FROM external_contact_follows WHERE status = 'active' \
                ORDER BY userid, external_userid LIMIT 1)",
        )
        .execute(&self.app.pool)
        .await
        .expect("corrupt a follow");
        eprintln!(
            "SIMCORP seed {}: SIMCORP_CORRUPT ended {} active follow(s) behind the check's back",
            self.seed,
            r.rows_affected()
        );
    }

    /// The differences between the tables and the truth.
    pub async fn diff(&self) -> Vec<String> {
        let truth = self.truth.lock().expect("truth").clone();
        check::diff(&self.app.pool, &truth, &self.delivered, self.resyncs > 0).await
    }

    /// Settles, resyncs (trusting our IP first, as an operator would), settles and returns the report of
    /// differences (empty when the tables equal the truth).
    pub async fn finish(&mut self) -> Result<(), String> {
        self.settle().await;
        let mut diff = Vec::new();
        if self.check_before_resync {
            diff.extend(
                self.diff()
                    .await
                    .into_iter()
                    .map(|d| format!("before the resync: {d}")),
            );
        }
        if !self.truth.lock().expect("truth").trusted_ip {
            self.step(Step::TrustIp, Delivery::Now).await;
        }
        self.resync().await;
        self.settle().await;
        if std::env::var("SIMCORP_CORRUPT").is_ok() {
            self.corrupt_one_row().await;
        }
        diff.extend(self.resync_errors.iter().cloned());
        diff.extend(
            self.diff()
                .await
                .into_iter()
                .map(|d| format!("after the resync: {d}")),
        );
        // A rebuild (events + the API observation log) must give the same tables back: the truth again.
        if diff.is_empty() {
            match wecom_callback::store::rebuild::rebuild(&self.app.pool).await {
                Ok(_) => diff.extend(
                    self.diff()
                        .await
                        .into_iter()
                        .map(|d| format!("after a rebuild: {d}")),
                ),
                Err(e) => diff.push(format!("rebuild failed: {e}")),
            }
        }
        let calls = {
            let calls = self.fake.calls.lock().expect("calls");
            let mut paths: Vec<String> = calls
                .iter()
                .filter(|(k, _)| !k.contains(' '))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            paths.sort();
            paths.join(", ")
        };
        if std::env::var("SIMCORP_VERBOSE").is_ok() {
            eprintln!(
                "SIMCORP seed {}: {}; {} callbacks delivered; API calls: {calls}; {} difference(s)",
                self.seed,
                self.truth.lock().expect("truth").summary(),
                self.delivered.len(),
                diff.len()
            );
        }
        if diff.is_empty() {
            return Ok(());
        }
        let tail: Vec<&String> = self.log.iter().rev().take(150).rev().collect();
        Err(format!(
            "SIMCORP seed {seed}: the synced tables differ from WeCom's truth in {n} place(s):\n{diff}\n\
             the corp: {summary}\nfake WeCom API calls: {calls}\nhistory (last {k} lines):\n{tail}\n\
             rerun this seed alone with SIMCORP_SEED={seed} (TEST_LOG=1 shows the server's logs)",
            seed = self.seed,
            summary = self.truth.lock().expect("truth").summary(),
            n = diff.len(),
            diff = diff
                .iter()
                .map(|d| format!("  - {d}"))
                .collect::<Vec<_>>()
                .join("\n"),
            k = tail.len(),
            tail = tail
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    }
}

async fn sleep_to_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let left = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(left + Duration::from_millis(5)).await;
}

/// The seeds to run: `SIMCORP_SEED=N` alone, else `SIMCORP_SEEDS` (default `default`) seeds from `base`.
pub fn seeds(base: u64, default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("SIMCORP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("SIMCORP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (base..base + n).collect()
}

/// The cluster-wide limiter stays on (its paths are part of the realism, seeded 45033s slow the corp down),
/// at rates a fake answers in microseconds: WeCom's defaults would stretch a 1,000-member directory step
/// (one `user/get` each) over minutes.
fn sim_limits() -> wecom_callback::sync::client::limiter::ApiLimits {
    use wecom_callback::sync::client::limiter::{ApiLimits, Limit};
    ApiLimits {
        default: Limit {
            concurrency: 10,
            per_minute: 10_000,
            burst: 10_000,
        },
        apis: Default::default(),
        slowdown: Duration::from_millis(200),
        ..ApiLimits::default()
    }
}
