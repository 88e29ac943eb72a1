//! Wiring: database, event writer, background tasks and the HTTP server.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::app::AppConfig;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::ingest::Ingest;
use crate::ingest::spool::Spool;
use crate::ingest::writer::EventWriter;
use crate::metrics::Metrics;
use crate::store::{self, StoreError};
use crate::tasks::{Faults, TaskFailure, Tasks};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{}", bind_message(addr, source))]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid database settings: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot set up the WeCom API client: {0}")]
    Api(String),
    /// The spool directory cannot be opened, or another process uses it.
    #[error(transparent)]
    Spool(#[from] crate::ingest::spool::OpenError),
}

/// The listen failure in words: a port in use is said as such.
fn bind_message(addr: &str, source: &std::io::Error) -> String {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port in use: another process already listens on {addr} (find it with `ss -ltnp`); stop it, or \
             choose another address with WECOM_LISTEN / --listen"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "not allowed to listen on {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port \
             above 1024 behind your proxy (WECOM_LISTEN)"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {addr}: no interface of this machine has that address; use 0.0.0.0 or \
             127.0.0.1 (WECOM_LISTEN)"
        ),
        _ => format!(
            "cannot listen on {addr}: {source}; set WECOM_LISTEN to an address this machine can use"
        ),
    }
}

/// Why the service stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An HTTP server (the main one or the `/metrics` one) failed.
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    /// A critical background task failed (see [`crate::tasks`]).
    #[error("{0}; exiting so that the service is restarted (nothing acknowledged was lost)")]
    Task(TaskFailure),
}

/// A built, bound, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    metrics_server: Option<Server>,
    /// The background tasks (see [`crate::tasks`]).
    tasks: Tasks,
}

impl Application {
    /// Prepares the database (create if missing, migrate), binds the listener and builds the server.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        store::ensure_database_exists(&settings.database).await?;
        let pool = store::pool(&settings.database)?;
        store::migrate(&pool).await?;
        let listener =
            TcpListener::bind(settings.http.listen).map_err(|source| StartupError::Bind {
                addr: settings.http.listen.to_string(),
                source,
            })?;
        Self::build_with(settings, pool, listener)
    }

    /// Builds the server on an existing pool and listener (tests use this with a random port).
    pub fn build_with(
        settings: Settings,
        pool: PgPool,
        listener: TcpListener,
    ) -> Result<Application, StartupError> {
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.http.listen.to_string(),
                source,
            })?
            .port();
        let metrics = Metrics::new();
        // Every background task below is owned by `tasks` and stops on its token (see crate::tasks).
        let tasks = Tasks::new(
            CancellationToken::new(),
            Some(metrics.task_restarts.clone()),
            Faults::new(&settings.fault_panic_once),
        );
        let writer = EventWriter::spawn(pool.clone(), &settings.store, &tasks);
        let credentials = crate::sync::worker::credentials(&settings.apps);
        if settings.run_projector {
            let (pool, committed) = (pool.clone(), writer.committed());
            // Suite apps queue jobs too: they run with each authorising corp's own token.
            let enrich: HashSet<String> = credentials
                .keys()
                .cloned()
                .chain(settings.provider.app_names().cloned())
                .collect();
            let batching = settings.projector.clone();
            tasks.spawn_restarting("projector", move |token| {
                crate::sync::projector::run(
                    pool.clone(),
                    committed.clone(),
                    enrich.clone(),
                    batching.clone(),
                    token,
                )
            });
        }
        let api = if credentials.is_empty() && !settings.provider.is_enabled() {
            None
        } else {
            Some(
                crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())
                    .map_err(|e| StartupError::Api(e.to_string()))?
                    .with_limits(settings.api.limits.clone())
                    .with_metrics(metrics.clone()),
            )
        };
        if let (Some(api), false) = (&api, settings.api.resync_interval.is_zero()) {
            let (pool, api, credentials) = (pool.clone(), api.clone(), credentials.clone());
            let mut options = crate::sync::resync::Options::new(settings.api.resync_pause);
            options.max_removal_share = settings.api.resync_max_removal_share;
            let (interval, metrics) = (settings.api.resync_interval, metrics.clone());
            tasks.spawn_restarting("resync", move |token| {
                crate::sync::resync::schedule(
                    pool.clone(),
                    api.clone(),
                    credentials.clone(),
                    interval,
                    options.clone(),
                    Some(metrics.clone()),
                    token,
                )
            });
        }
        if settings.provider.is_enabled() && !settings.api.resync_interval.is_zero() {
            let (pool, interval) = (pool.clone(), settings.api.resync_interval);
            tasks.spawn_restarting("provider-resync", move |token| {
                crate::sync::provider::auth::schedule_resyncs(pool.clone(), interval, token)
            });
        }
        if let (Some(api), true) = (&api, settings.api.worker_concurrency > 0) {
            let worker = crate::sync::worker::Worker {
                pool: pool.clone(),
                api: api.clone(),
                credentials: credentials.clone(),
                max_attempts: settings.api.max_attempts,
                metrics: Some(metrics.clone()),
                idle: std::time::Duration::from_secs(1),
                provider: settings.provider.clone(),
                wake: Some(std::sync::Arc::new(tokio::sync::Notify::new())),
            };
            if let Some(wake) = worker.wake.clone() {
                let pool = pool.clone();
                tasks.spawn_restarting("jobs-listen", move |token| {
                    crate::sync::worker::listen(pool.clone(), wake.clone(), token)
                });
            }
            for _ in 0..settings.api.worker_concurrency {
                let worker = worker.clone();
                tasks.spawn_restarting("worker", move |token| {
                    crate::sync::worker::work(worker.clone(), token)
                });
            }
        }
        // Done jobs are pruned whether or not this replica runs workers: another one may.
        {
            let (pool, retention, every) = (
                pool.clone(),
                settings.api.jobs_retention,
                settings.api.jobs_prune_interval,
            );
            let provider = settings.provider.clone();
            tasks.spawn_restarting("jobs-prune", move |token| {
                crate::sync::worker::prune(pool.clone(), retention, every, provider.clone(), token)
            });
        }
        // The change feed: sequencer, retention, webhook senders (see crate::deliver).
        if settings.feed.run_sequencer {
            let (pool, feed, metrics) = (pool.clone(), settings.feed.clone(), metrics.clone());
            tasks.spawn_restarting("feed-sequencer", move |token| {
                crate::deliver::sequencer::run(
                    pool.clone(),
                    feed.clone(),
                    Some(metrics.clone()),
                    token,
                )
            });
        }
        {
            let (pool, feed) = (pool.clone(), settings.feed.clone());
            tasks.spawn_restarting("feed-prune", move |token| {
                crate::deliver::sequencer::prune(pool.clone(), feed.clone(), token)
            });
        }
        for hook in &settings.webhooks {
            let (pool, hook, metrics) = (pool.clone(), hook.clone(), metrics.clone());
            tasks.spawn_restarting("webhook", move |token| {
                crate::deliver::sender::run(
                    pool.clone(),
                    hook.clone(),
                    Some(metrics.clone()),
                    token,
                )
            });
        }
        let api_enabled = settings.api_token.is_some();
        let apps: HashMap<String, AppConfig> = settings
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        let spool = match &settings.spool.dir {
            Some(dir) => {
                let spool = Spool::open_supervised(dir, settings.spool.max_bytes, &tasks)?;
                let (drain_spool, pool, apps, committed) = (
                    spool.clone(),
                    pool.clone(),
                    apps.clone(),
                    writer.committed(),
                );
                tasks.spawn_restarting("drain", move |token| {
                    crate::ingest::drain::run(
                        drain_spool.clone(),
                        pool.clone(),
                        apps.clone(),
                        committed.clone(),
                        token,
                    )
                });
                Some(spool)
            }
            None => None,
        };
        let default_app = match settings.apps.as_slice() {
            [only] => Some(only.name.clone()),
            _ => None,
        };
        let status = crate::http::status::StatusRecorder::new();
        {
            let (status, pool) = (status.clone(), pool.clone());
            tasks.spawn_restarting("status", move |token| {
                crate::http::status::recorder::run(status.clone(), pool.clone(), token)
            });
        }
        // Captures are a diagnosis aid: a directory that cannot be made turns them off, never the service.
        let captures = settings.capture.dir.as_ref().and_then(|dir| {
            crate::tools::capture::Captures::open(dir, settings.capture.per_app)
                .inspect_err(|e| {
                    tracing::warn!(
                        dir = %dir.display(),
                        error = %e,
                        "cannot create the capture directory: refused requests will not be kept for \
                         `decrypt --last`; set [capture] dir to a writable directory"
                    );
                })
                .ok()
        });
        let state = web::Data::new(AppState {
            apps,
            default_app,
            ingest: Ingest::new(
                writer,
                spool,
                settings.spool.after,
                settings.http.request_deadline,
            )
            .with_instruction_budget(
                settings.http.instruction_spool_after,
                settings.http.instruction_deadline,
            )
            .with_fault_ack_before_commit(settings.fault_ack_before_commit),
            pool,
            http: settings.http.clone(),
            api_token: settings.api_token.clone(),
            metrics,
            verification_files: settings.verification_files.clone(),
            api,
            credentials,
            suites: settings.provider.suites.clone(),
            provider_key: settings.provider.key.clone(),
            suite_corps: Default::default(),
            tasks: tasks.health(),
            status,
            captures,
        });
        let separate_metrics = settings.metrics_listen;
        let http = settings.http.clone();
        let metrics_state = state.clone();
        let mut server = HttpServer::new(move || {
            let api = web::scope("/api/v1")
                .route("/openapi.yaml", web::get().to(http::api::openapi))
                .route(
                    "/corps/{corp}/staff/{userid}/customers",
                    web::get().to(http::api::staff_customers),
                )
                // Before `/customers/{external_userid}`, whose path it would match too.
                .route(
                    "/corps/{corp}/customers/by-unionid",
                    web::post().to(http::identity::by_unionid),
                )
                .route(
                    "/corps/{corp}/customers/{external_userid}",
                    web::get().to(http::api::customer),
                )
                .route(
                    "/corps/{corp}/customers/{external_userid}/timeline",
                    web::get().to(http::api::timeline),
                )
                .route(
                    "/corps/{corp}/staff/{userid}",
                    web::get().to(http::directory::staff),
                )
                .route(
                    "/corps/{corp}/departments/{id}/staff",
                    web::get().to(http::directory::department_staff),
                )
                .route("/changes", web::get().to(http::changes::changes))
                .route(
                    "/miniprogram/session",
                    web::post().to(http::api::miniprogram_session),
                );
            App::new()
                .app_data(state.clone())
                .configure(|cfg| {
                    if api_enabled {
                        cfg.service(api);
                    }
                })
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(http::readyz))
                .route("/status", web::get().to(http::status::page))
                .route("/status.json", web::get().to(http::status::json))
                .configure(|cfg| {
                    if separate_metrics.is_none() {
                        cfg.route("/metrics", web::get().to(http::metrics));
                    }
                })
                // One handler per method: without `{app}` in the path they serve the only configured app.
                .route("/callback", web::get().to(http::verify_url))
                .route("/callback", web::post().to(http::receive_callback))
                .route("/callback/{app}", web::get().to(http::verify_url))
                .route("/callback/{app}", web::post().to(http::receive_callback))
                .route("/{file}", web::get().to(http::verification_file))
        })
        // Slow request heads are cut off by actix itself with 408.
        .client_request_timeout(http.header_read_timeout)
        .shutdown_timeout(10)
        // Signals are handled in run_until, which bounds the whole stop (see there).
        .disable_signals();
        if http.workers > 0 {
            server = server.workers(http.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: http.listen.to_string(),
                source,
            })?
            .run();
        let metrics_server = match separate_metrics {
            Some(addr) => {
                let state = metrics_state;
                Some(
                    HttpServer::new(move || {
                        App::new()
                            .app_data(state.clone())
                            .route("/metrics", web::get().to(http::metrics))
                    })
                    .workers(1)
                    .disable_signals()
                    .bind(addr)
                    .map_err(|source| StartupError::Bind {
                        addr: addr.to_string(),
                        source,
                    })?
                    .run(),
                )
            }
            None => None,
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            tasks,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The background tasks' supervisor (tests use it to see that a stop ended every task).
    #[doc(hidden)]
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Serves until SIGTERM/SIGINT: [`Application::run_until`] with the signals as the shutdown.
    pub async fn run_until_stopped(self) -> Result<(), RunError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, an HTTP server ends, or a critical background task fails (see
    /// [`crate::tasks`]); then stops HTTP gracefully (bounded to 15 s), cancels the background tasks (the
    /// writer commits and answers what it has queued) and waits for them (bounded to 10 s).
    ///
    /// Returns an error when a critical task failed or an HTTP server failed, so the process exits non-zero.
    ///
    /// actix's own signal handling was seen (rarely) to leave the server future pending after its workers had
    /// stopped, so a SIGTERM never ended the process; here the stop is requested explicitly and bounded.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let tasks = self.tasks;
        let handles: Vec<_> = std::iter::once(self.server.handle())
            .chain(self.metrics_server.as_ref().map(Server::handle))
            .collect();
        let servers = async move {
            match self.metrics_server {
                Some(metrics) => {
                    let (a, b) = futures_util::future::join(self.server, metrics).await;
                    a.and(b)
                }
                None => self.server.await,
            }
        };
        tokio::pin!(servers);
        tokio::pin!(shutdown);
        let mut outcome = tokio::select! {
            result = &mut servers => {
                // A server that ended on its own needs no stop; the background tasks still do.
                tracing::warn!("the HTTP server ended by itself; stopping the background tasks");
                tasks.shutdown(TASKS_STOP_BOUND).await;
                return result.map_err(RunError::Http).and(recorded_failure(&tasks));
            }
            () = &mut shutdown => {
                tracing::info!("stop requested: refusing new connections, finishing in-flight callbacks");
                Ok(())
            }
            failure = tasks.critical_failure() => {
                // Let a load balancer polling /readyz (which fails now) take us out before the port closes;
                // callbacks meanwhile are spooled or answered 503, which WeCom retries.
                tokio::select! {
                    () = tokio::time::sleep(READINESS_GRACE) => {}
                    () = &mut shutdown => {}
                }
                tracing::error!(%failure, "stopping the service");
                Err(RunError::Task(failure))
            }
        };
        for h in &handles {
            // Graceful: workers finish what they have (up to the 10 s shutdown timeout).
            let stop = h.stop(true);
            tokio::spawn(stop);
        }
        match tokio::time::timeout(Duration::from_secs(15), &mut servers).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => outcome = outcome.and(Err(RunError::Http(e))),
            Err(_) => {
                tracing::warn!(
                    "the HTTP server did not confirm its stop within 15 s; exiting anyway"
                );
            }
        }
        // Only now: in-flight callbacks needed the writer until HTTP had stopped.
        tasks.shutdown(TASKS_STOP_BOUND).await;
        outcome.and(recorded_failure(&tasks))
    }
}

/// How long the background tasks may take to stop once cancelled.
const TASKS_STOP_BOUND: Duration = Duration::from_secs(10);
/// How long `/readyz` fails before the service stops after a critical task failed.
const READINESS_GRACE: Duration = Duration::from_secs(2);

/// A critical failure recorded so far (also one that happened while stopping), as an error.
fn recorded_failure(tasks: &Tasks) -> Result<(), RunError> {
    match tasks.health().failure() {
        Some(f) => Err(RunError::Task(f)),
        None => Ok(()),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
