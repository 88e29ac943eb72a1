//! Background task supervision: every long-running task of `serve` is owned here, takes a
//! [`CancellationToken`], and has a policy for when it panics or ends on its own.
//!
//! # Policies
//!
//! | task | policy |
//! |------|--------|
//! | `projector` (events → synced tables) | restart with backoff |
//! | `worker` (WeCom API jobs, one task per concurrent loop) | restart with backoff |
//! | `resync` (the scheduled full resync) | restart with backoff |
//! | `drain` (spool → `wecom_events`) | restart with backoff |
//! | `feed-sequencer` (staged changes → the change feed, see [`crate::store::feed`]) | restart with backoff |
//! | `feed-prune` (the change feed's retention) | restart with backoff |
//! | `webhook` (one per `[[webhooks]]` subscriber, see [`crate::deliver::sender`]) | restart with backoff |
//! | `writer` (the group-commit writer and its batch commits) | critical |
//! | `spool` (the spool's append-and-fsync thread) | critical |
//!
//! **Restart with backoff**: a panic (or an end that nobody asked for) is logged at error with the task name and
//! the panic message, counted in `wecom_background_task_restarts_total{task}`, and the task is started again
//! after 250 ms, doubling per consecutive restart up to 30 s (a task that ran for a minute starts again at
//! 250 ms). These tasks only read and write PostgreSQL, where their work is transactional or resumable, so a
//! fresh start loses nothing.
//!
//! **Critical**: the process cannot acknowledge callbacks without them. A panic or an unrequested end is logged
//! at error, `/readyz` answers 503 from then on, and [`Application::run_until`] stops the service and returns
//! an error, so the process exits non-zero and systemd or Kubernetes starts a fresh one. That loses nothing:
//! a callback is acknowledged only once committed to PostgreSQL or fsynced to the spool.
//!
//! # Shutdown
//! [`Tasks::shutdown`] cancels the token, which every task `select!`s on at its sleeps and waits (work under
//! way, such as a batch of events being applied or a job being run, is finished first), and waits for every
//! task with a bound.
//!
//! [`Application::run_until`]: crate::http::server::Application::run_until

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// First pause before restarting a task.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A task that ran this long before failing is restarted after [`FIRST_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// A critical task that failed: the service cannot work on and must stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the critical background task {task:?} failed: {reason}")]
pub struct TaskFailure {
    /// The task's name (see the module doc).
    pub task: &'static str,
    /// What happened (`panicked: ...`, or why it ended).
    pub reason: String,
}

/// What `/readyz` needs to know: whether a critical task has failed. Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskHealth {
    failure: Arc<Mutex<Option<TaskFailure>>>,
}

impl TaskHealth {
    /// The first critical failure, if any.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records `failure` unless one is recorded already (the first is the cause, later ones its effects).
    fn record(&self, failure: TaskFailure) {
        let mut slot = self
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(failure);
        }
    }
}

/// Test-only faults: the named tasks panic once. Never settable from a file or the environment.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct Faults {
    armed: Arc<Mutex<HashSet<String>>>,
}

impl Faults {
    /// Arms a one-time panic for each named task.
    #[doc(hidden)]
    pub fn new<S: AsRef<str>>(tasks: &[S]) -> Faults {
        Faults {
            armed: Arc::new(Mutex::new(
                tasks.iter().map(|t| t.as_ref().to_owned()).collect(),
            )),
        }
    }

    /// Panics if a fault is armed for `task`, disarming it (so the restarted task runs normally).
    #[doc(hidden)]
    pub fn fire(&self, task: &str) {
        let armed = self
            .armed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(task);
        if armed {
            panic!("test fault: {task} panics once");
        }
    }
}

/// The owner of every background task. Cheap to clone (all clones are the same supervisor).
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    token: CancellationToken,
    /// Cancelled when a critical task fails.
    failed: CancellationToken,
    health: TaskHealth,
    restarts: Option<IntCounterVec>,
    faults: Faults,
}

impl Tasks {
    /// A supervisor whose tasks stop when `token` is cancelled. `restarts` counts restarts by task name.
    pub fn new(token: CancellationToken, restarts: Option<IntCounterVec>, faults: Faults) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            token,
            failed: CancellationToken::new(),
            health: TaskHealth::default(),
            restarts,
            faults,
        }
    }

    /// The token every task stops on.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The health handle `/readyz` reads.
    pub fn health(&self) -> TaskHealth {
        self.health.clone()
    }

    /// The test-only faults (tasks with their own fault points fire them there).
    #[doc(hidden)]
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Resolves when a critical task has failed, with the first failure.
    pub async fn critical_failure(&self) -> TaskFailure {
        self.failed.cancelled().await;
        self.health.failure().unwrap_or_else(|| TaskFailure {
            task: "unknown",
            reason: "a critical task failed".into(),
        })
    }

    /// Runs a restartable task: `start` builds the task's future from the token, again after each panic or
    /// unrequested end (see the module doc). The test-only fault for `name` fires at its first start.
    pub fn spawn_restarting<F, Fut>(&self, name: &'static str, mut start: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                if this.token.is_cancelled() {
                    return;
                }
                let started = Instant::now();
                let faults = this.faults.clone();
                let task = start(this.token.clone());
                let result = AssertUnwindSafe(async move {
                    faults.fire(name);
                    task.await
                })
                .catch_unwind()
                .await;
                let why = match result {
                    Err(panic) => format!("panicked: {}", panic_message(&*panic)),
                    Ok(()) if this.token.is_cancelled() => return,
                    Ok(()) => "ended although no stop was requested".to_owned(),
                };
                if this.token.is_cancelled() {
                    tracing::error!(task = name, %why, "background task failed while stopping");
                    return;
                }
                if started.elapsed() >= STABLE_AFTER {
                    backoff = FIRST_BACKOFF;
                }
                if let Some(r) = &this.restarts {
                    r.with_label_values(&[name]).inc();
                }
                tracing::error!(
                    task = name,
                    %why,
                    restart_in_ms = backoff.as_millis() as u64,
                    "background task failed; restarting it"
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = this.token.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// Runs a critical task (see the module doc). It should return `Ok(())` only once the token is
    /// cancelled; `Err(reason)` or a panic is a critical failure.
    pub fn spawn_critical<Fut>(&self, name: &'static str, task: Fut)
    where
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            let reason = match AssertUnwindSafe(task).catch_unwind().await {
                Err(panic) => format!("panicked: {}", panic_message(&*panic)),
                Ok(Err(reason)) => reason,
                Ok(Ok(())) if this.token.is_cancelled() => return,
                Ok(Ok(())) => "ended although no stop was requested".to_owned(),
            };
            this.fail(name, reason);
        });
    }

    /// Runs a short-lived part of critical task `name` (e.g. one group commit): a panic in it is a critical
    /// failure of `name`; its end is not.
    pub fn spawn_part<Fut>(&self, name: &'static str, part: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(part).catch_unwind().await {
                this.fail(name, format!("panicked: {}", panic_message(&*panic)));
            }
        });
    }

    /// Records a critical failure of `task`.
    pub fn fail(&self, task: &'static str, reason: String) {
        tracing::error!(
            task,
            %reason,
            "critical background task failed: /readyz now fails and the service stops (nothing acknowledged is lost)"
        );
        self.health.record(TaskFailure { task, reason });
        self.failed.cancel();
    }

    /// Cancels every task and waits for them, at most `bound`. Returns whether all finished in time.
    pub async fn shutdown(&self, bound: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        match tokio::time::timeout(bound, self.tracker.wait()).await {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    still_running = self.tracker.len(),
                    bound_s = bound.as_secs(),
                    "background tasks did not stop in time; exiting anyway"
                );
                false
            }
        }
    }

    /// How many tasks (including parts) are running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("r", "r"), &["task"]).expect("metric")
    }

    #[tokio::test]
    async fn a_panicking_task_is_counted_and_restarted() {
        let restarts = counter();
        let tasks = Tasks::new(
            CancellationToken::new(),
            Some(restarts.clone()),
            Faults::default(),
        );
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        tasks.spawn_restarting("t", move |token| {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("boom");
                }
                token.cancelled().await;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while starts.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(restarts.with_label_values(&["t"]).get(), 1);
        assert!(tasks.health().failure().is_none());
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn a_failing_critical_task_is_reported() {
        let tasks = Tasks::new(CancellationToken::new(), None, Faults::new(&["c"]));
        let faults = tasks.faults();
        tasks.spawn_critical("c", async move {
            faults.fire("c");
            Ok(())
        });
        let failure = tokio::time::timeout(Duration::from_secs(5), tasks.critical_failure())
            .await
            .expect("reported");
        assert_eq!(failure.task, "c");
        assert_eq!(failure.reason, "panicked: test fault: c panics once");
        assert_eq!(tasks.health().failure(), Some(failure));
    }

    #[tokio::test]
    async fn a_critical_task_ending_on_cancel_is_not_a_failure() {
        let tasks = Tasks::new(CancellationToken::new(), None, Faults::default());
        let token = tasks.token();
        tasks.spawn_critical("c", async move {
            token.cancelled().await;
            Ok(())
        });
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert!(tasks.health().failure().is_none());
    }
}
