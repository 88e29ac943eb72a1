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
//! A provider's corp ([`Sim::start_provider`]): the corp authorises a simulated third-party suite
//! ([`Sim::authorise`]: suite_ticket and create_auth at the instruction URL, get_permanent_code and
//! get_corp_token at the fake), its callbacks reach the suite's data URL, and every call uses its corp
//! token; [`Sim::cancel`] then checks that nothing of it remains and nothing more is called.
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
use wecom_callback::app::AppKind;
use wecom_callback::sync::client::{Credentials, TokenSource, WecomApi};
use wecom_callback::sync::provider::{Provider, SecretKey, Suite, SuiteKind};

use crate::helpers::{MAIN, TestApp, TestAppConfig, sign_callback, spawn_app_with, unix_now};
use model::{Auth, Callback, Gen, Network, Step, Truth};

/// The simulated suite's instruction URL (指令回调URL): tickets and authorisations arrive here.
const SIM_SUITE: TestAppConfig = TestAppConfig {
    name: "simsuite",
    kind: AppKind::SuiteInstruction,
    token: "simSuiteToken7",
    encoding_aes_key: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    receive_id: model::SUITE_ID,
};

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
    /// The corp runs the simulated third-party suite (authorised with [`Sim::authorise`]) rather than a
    /// self-built app: its callbacks reach the suite's data URL `main`, and every call uses its corp token.
    provider: bool,
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
        Sim::new(seed, truth, app, fake, false)
    }

    /// Starts the fake WeCom and a service provider's server: the simulated suite's instruction URL and its
    /// data URL `main`, with no secret and no corp configured (the corp's receive id is accepted only once
    /// it authorised the suite). Call [`Sim::authorise`] before the history.
    pub async fn start_provider(seed: u64, mut truth: Truth) -> Sim {
        use base64::Engine;
        truth.auth = Auth::Cancelled; // Not installed yet: nothing is issued before create_auth.
        let truth = Arc::new(Mutex::new(truth));
        let fake = fake_api::start(truth.clone()).await;
        let uri = fake.server.uri();
        // The data URL's configured receive id is the provider's own corp, not the simulated one.
        let data = TestAppConfig {
            kind: AppKind::SuiteData,
            receive_id: "wwSIMPROVIDER",
            ..MAIN
        };
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let app = spawn_app_with(&[data, SIM_SUITE], move |s| {
            s.api.base_url = uri;
            s.api.worker_concurrency = 1;
            s.api.max_attempts = 3;
            s.provider = Provider {
                suites: vec![Suite {
                    name: SIM_SUITE.name.to_owned(),
                    kind: SuiteKind::ThirdParty,
                    suite_id: model::SUITE_ID.to_owned(),
                    secret: SecretString::from(model::SUITE_SECRET),
                    data_apps: vec![MAIN.name.to_owned()],
                }],
                key: Some(SecretKey::from_base64(&key).expect("key")),
                ..Provider::default()
            };
        })
        .await;
        Sim::new(seed, truth, app, fake, true)
    }

    fn new(
        seed: u64,
        truth: Arc<Mutex<Truth>>,
        app: TestApp,
        fake: fake_api::FakeWecom,
        provider: bool,
    ) -> Sim {
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
            provider,
        }
    }

    /// Posts a suite push (InfoType form) to the suite's instruction URL; WeCom wants `success`.
    async fn push_to_suite(&self, info: &str, inner: &str) {
        let xml = format!(
            "<xml><SuiteId><![CDATA[{}]]></SuiteId><InfoType><![CDATA[{info}]]></InfoType><TimeStamp>{}</TimeStamp>{inner}</xml>",
            model::SUITE_ID,
            unix_now()
        );
        let reply = self
            .app
            .post(SIM_SUITE.name, &sign_callback(&SIM_SUITE, &xml, unix_now()))
            .await;
        assert_eq!(reply.status().as_u16(), 200, "suite push {info} refused");
        assert_eq!(reply.text().await.expect("body"), "success", "{info}");
    }

    /// Polls `sql` (one count) until it is at least `want`, within 30 s.
    async fn wait_until(&self, what: &str, sql: &'static str, want: i64) {
        let started = Instant::now();
        loop {
            let n: i64 = sqlx::query_scalar(sql)
                .bind(model::CORP)
                .fetch_one(&self.app.pool)
                .await
                .expect("poll");
            if n >= want {
                return;
            }
            let jobs: Vec<(String, String, Option<String>)> =
                sqlx::query_as("SELECT kind, status, last_error FROM wecom_jobs ORDER BY id")
                    .fetch_all(&self.app.pool)
                    .await
                    .expect("jobs");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "seed {}: {what} did not happen within 30 s; jobs: {jobs:?}",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The corp installs the suite as WeCom would have it: a suite_ticket, then `create_auth` at the
    /// instruction URL; the service exchanges the AuthCode (get_permanent_code), stores the corp and
    /// resyncs it with its own token (get_corp_token).
    pub async fn authorise(&mut self) {
        self.truth.lock().expect("truth").auth = Auth::Authorised;
        self.push_to_suite(
            "suite_ticket",
            &format!(
                "<SuiteTicket><![CDATA[{}]]></SuiteTicket>",
                model::SUITE_TICKET
            ),
        )
        .await;
        self.push_to_suite(
            "create_auth",
            &format!("<AuthCode><![CDATA[{}]]></AuthCode>", model::AUTH_CODE),
        )
        .await;
        self.wait_until(
            "the authorisation",
            "SELECT count(*) FROM wecom_provider_corps WHERE corp_id = $1 AND state = 'authorised'",
            1,
        )
        .await;
        self.wait_until(
            "the authorised corp's first resync",
            "SELECT count(*) FROM wecom_resync_runs WHERE corp_id = $1 AND status = 'done'",
            1,
        )
        .await;
        self.log
            .push(format!("  t={} authorised the suite", unix_now()));
    }

    /// Every fake API call so far (all paths).
    fn api_calls(&self) -> u64 {
        self.fake
            .calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|(k, _)| k.starts_with('/') && !k.contains(' '))
            .map(|(_, n)| n)
            .sum()
    }

    /// Fake API calls to `path` so far.
    pub fn api_calls_to(&self, path: &str) -> u64 {
        self.fake
            .calls
            .lock()
            .expect("calls")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The corp cancels (`cancel_auth`, right after whatever the history left queued): returns what is
    /// wrong afterwards — a row of the corp left in a synced table, work still queued, or a WeCom call for
    /// the corp once the cancellation was processed (a late event, the resync schedule).
    pub async fn cancel(&mut self) -> Vec<String> {
        self.truth.lock().expect("truth").auth = Auth::Cancelled;
        self.push_to_suite(
            "cancel_auth",
            &format!("<AuthCorpId><![CDATA[{}]]></AuthCorpId>", model::CORP),
        )
        .await;
        self.wait_until(
            "the purge of the cancelled corp's rows",
            "SELECT count(*) FROM wecom_provider_corps WHERE corp_id = $1 AND rows_deleted_at IS NOT NULL",
            1,
        )
        .await;
        // Work under way at the cancellation ends (without calling again: see README).
        self.settle().await;
        let before = self.api_calls();
        // What would call WeCom again: a straggler contact event (suite form, at the instruction URL) and the
        // provider resync schedule.
        let (user, ext) = {
            let t = self.truth.lock().expect("truth");
            (
                t.staff.keys().next().cloned().unwrap_or_default(),
                t.customers.keys().next().cloned().unwrap_or_default(),
            )
        };
        self.push_to_suite(
            "change_external_contact",
            &format!(
                "<AuthCorpId><![CDATA[{}]]></AuthCorpId><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[{user}]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID>",
                model::CORP
            ),
        )
        .await;
        let mut out = Vec::new();
        match wecom_callback::store::corps::queue_due_resyncs(&self.app.pool, Duration::ZERO).await
        {
            Ok(0) => {}
            Ok(n) => out.push(format!("{n} resync(s) queued for the cancelled corp")),
            Err(e) => out.push(format!("queue_due_resyncs failed: {e}")),
        }
        self.settle().await;
        out.extend(check::purged(&self.app.pool, model::CORP).await);
        let after = self.api_calls();
        if after != before {
            out.push(format!(
                "{} WeCom API call(s) after the cancellation was processed",
                after - before
            ));
        }
        out
    }

    /// Applies `step` to the truth now and sends (or queues, or loses) its callbacks per `plan`
    /// (one entry per callback: the arrival delays in steps of each copy; empty = lost).
    async fn apply(&mut self, step: &Step, plan: impl FnMut(&Callback) -> Vec<usize>) {
        let mut plan = plan;
        if matches!(step, Step::Tick) {
            sleep_to_next_second().await;
        }
        // One change per subject per second. A rename moves the member's relations to the new userid: it
        // changes each of them too (a relation ended and re-added under the new userid in the rename's second
        // could not be ordered).
        let mut subjects = step.subjects();
        if let Step::UserRename { from, to } = step {
            let truth = self.truth.lock().expect("truth");
            for (u, e) in truth.follows.keys() {
                if u == from || u == to {
                    subjects.push(format!("f:{from}:{e}"));
                    subjects.push(format!("f:{to}:{e}"));
                }
            }
        }
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
            // A userid change may be lost like any callback: the resync then ends the old userid's
            // follows, which WeCom lists nowhere (simcorp_found_11).
            self.apply(&step, |_| history.plan_delivery(&net)).await;
        }
        self.deliver_due(usize::MAX).await;
    }

    /// Starts a full resync and goes on with the history while it runs (at most `max_steps` steps, each
    /// with a callback, none lost), WeCom's answers taking `latency` to arrive; then delivers what is late.
    pub async fn run_during_resync(
        &mut self,
        history: &mut Gen,
        net: Network,
        max_steps: usize,
        latency: &[(&str, Duration)],
    ) {
        if !self.truth.lock().expect("truth").trusted_ip {
            self.step(Step::TrustIp, Delivery::Now).await;
        }
        self.settle().await;
        for (path, d) in latency {
            self.set_latency(path, *d);
        }
        let net = Network { loss: 0.0, ..net };
        let run = self.start_resync();
        history.during_resync = true;
        let mut steps = 0;
        // Spread over seconds, so the changes land between the walk's pages, not all before its first answer.
        let pace = Duration::from_millis(15 + self.seed % 30);
        while !run.is_finished() && steps < max_steps {
            let step = {
                let mut t = self.truth.lock().expect("truth");
                history.next(&mut t)
            };
            self.apply(&step, |_| history.plan_delivery(&net)).await;
            steps += 1;
            tokio::time::sleep(pace).await;
        }
        history.during_resync = false;
        self.log
            .push(format!("  {steps} step(s) made while the resync ran"));
        if std::env::var("SIMCORP_VERBOSE").is_ok() {
            eprintln!(
                "SIMCORP seed {}: {steps} step(s) made while the resync ran",
                self.seed
            );
        }
        self.join_resync(run).await;
        self.deliver_due(usize::MAX).await;
        self.fake.latency.lock().expect("latency").clear();
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
        let run = self.start_resync();
        self.join_resync(run).await;
    }

    /// Waits (at most 20 s) until the fake has been asked for `path` more than `before` times: the request
    /// has arrived and the truth it answers from is read, while a delayed answer still travels.
    pub async fn until_asked(&self, path: &str, before: u64, what: &str) {
        let started = Instant::now();
        while self.api_calls_to(path) <= before {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "seed {}: {what}",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Delays the fake's answers to `path` by `latency` (the truth is read as the request arrives).
    pub fn set_latency(&self, path: &str, latency: Duration) {
        self.fake
            .latency
            .lock()
            .expect("latency")
            .insert(path.to_owned(), latency);
    }

    /// Starts a full resync in the background, as `serve` would run it, while the corp goes on changing
    /// ([`Sim::step`] meanwhile); [`Sim::join_resync`] waits for it.
    pub fn start_resync(&mut self) -> tokio::task::JoinHandle<String> {
        let api = WecomApi::new(&self.fake.server.uri(), self.app.pool.clone())
            .expect("client")
            .with_backoff(Duration::from_millis(5))
            .with_limits(sim_limits());
        // A provider's corp is resynced as its corp_resync job would: under the suite's app, with its token.
        let (app, creds) = if self.provider {
            (
                SIM_SUITE.name,
                Credentials {
                    corp_id: model::CORP.to_owned(),
                    secret: SecretString::from(model::PERMANENT_CODE),
                    source: TokenSource::Suite {
                        suite_id: model::SUITE_ID.to_owned(),
                        suite_secret: SecretString::from(model::SUITE_SECRET),
                    },
                },
            )
        } else {
            (
                "main",
                Credentials {
                    corp_id: MAIN.receive_id.to_owned(),
                    secret: SecretString::from("sim-secret"),
                    source: Default::default(),
                },
            )
        };
        let pool = self.app.pool.clone();
        self.log.push(format!("  t={} resync starts", unix_now()));
        tokio::spawn(async move {
            match wecom_callback::sync::resync::resync(&pool, &api, app, &creds, Duration::ZERO)
                .await
            {
                Ok(r) => format!("{r:?}"),
                Err(e) => format!("FAILED: {e}"),
            }
        })
    }

    /// Waits for a resync [`Sim::start_resync`] started; its error (if any) is reported by the check.
    pub async fn join_resync(&mut self, run: tokio::task::JoinHandle<String>) {
        let r = run
            .await
            .unwrap_or_else(|e| format!("FAILED: the task: {e}"));
        self.log.push(format!("  t={} resync: {r}", unix_now()));
        self.resyncs += 1;
        if let Some(e) = r.strip_prefix("FAILED: ") {
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
    /// Jobs that died on an answer that is no fault of the corp's set-up: WeCom's ordinary answers about a
    /// moving corp (a chat dismissed, a relation deleted before it was fetched) must end a job, not kill it.
    /// A job that died on 60020 (the app's IP not trusted, which the scenario may set up) is the corp's doing.
    async fn dead_jobs(&self) -> Vec<String> {
        let dead: Vec<(String, String, Option<i64>, Option<String>)> = match sqlx::query_as(
            "SELECT kind, subject, last_errcode, last_error FROM wecom_jobs \
             WHERE status = 'dead' AND last_errcode IS DISTINCT FROM 60020 ORDER BY id",
        )
        .fetch_all(&self.app.pool)
        .await
        {
            Ok(d) => d,
            Err(e) => return vec![format!("reading the jobs failed: {e}")],
        };
        dead.into_iter()
            .map(|(kind, subject, code, error)| {
                format!(
                    "job {kind} {subject} died: errcode {code:?}: {}",
                    error.unwrap_or_default()
                )
            })
            .collect()
    }

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
        diff.extend(self.dead_jobs().await);
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
