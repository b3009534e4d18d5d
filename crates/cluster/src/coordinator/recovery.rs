//! Restarting failed jobs.
//!
//! A job that fails (an operator error, a panic, a lost subtask) is restarted after a
//! backoff, the way Flink's exponential-delay restart strategy does it. Checkpoints are
//! global (one epoch cuts every job at once), so recovery is global too, as in
//! RisingWave: every job stops, every view goes back to the last completed checkpoint
//! (a view it does not hold is computed from scratch), tables replay the changes made
//! since, and everything starts again. A view reading another view can only resume from
//! a checkpoint that its input resumes from as well, which is what makes this simple and
//! exactly-once.
//!
//! A job that keeps failing is given up after `restart_attempts` restarts (counted over
//! failures less than [`RESTART_COUNT_RESET`] apart) and stays FAILED with its error;
//! views reading it stay failed with it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sluice_common::config::{MAX_RESTART_BACKOFF_SECS, RESTART_COUNT_RESET};
use sluice_runtime::exchange::INPUT_STOPPED;
use tokio::sync::{mpsc, watch};

use sluice_common::error::{Result, SluiceError, SqlState};

use super::rescale::Rescale;
use super::{Coordinator, dependencies, take_view_restore};
use crate::checkpoints::RestorePlan;
use crate::job::{FailureHook, Job, JobState};

/// When to restart a failed job.
#[derive(Debug, Clone, Copy)]
pub(super) struct RestartPolicy {
    /// Restarts before a job is given up.
    pub attempts: u32,
    /// The wait before the first restart; it doubles with each further one.
    pub backoff: Duration,
}

impl RestartPolicy {
    /// The wait before restart number `attempt` (1-based).
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64((self.backoff.as_secs_f64() * factor).min(MAX_RESTART_BACKOFF_SECS))
    }
}

/// One view's failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Failures in a row (each less than [`RESTART_COUNT_RESET`] after the previous one).
    recent: u32,
    last: Instant,
    /// Restarts over the view's life, for SHOW JOBS.
    restarts: u32,
}

#[derive(Debug, Default)]
struct RestartState {
    /// Incremented by every recovery; a failure reported by a job of an older
    /// generation was already dealt with by the recovery that replaced it.
    generation: u64,
    failures: BTreeMap<String, Failures>,
    /// Views whose restart is scheduled.
    restarting: BTreeSet<String>,
    /// Views given up: left FAILED, not restarted by later recoveries.
    given_up: BTreeSet<String>,
}

/// The restart bookkeeping shared by the coordinator and every job's failure hook.
pub(super) struct Restarts {
    policy: RestartPolicy,
    state: Mutex<RestartState>,
    /// Restarts requested and not yet carried out; FLUSH waits for 0.
    pending: watch::Sender<u64>,
    /// Recoveries begun so far: a FLUSH that saw this change while it waited waited on
    /// jobs that a recovery replaced, and flushes again.
    recoveries: std::sync::atomic::AtomicU64,
    /// Each request carries its backoff.
    requests: mpsc::UnboundedSender<Duration>,
}

impl Restarts {
    /// The bookkeeping, and the receiver of restart requests that
    /// [`restart_failed_jobs`] serves.
    pub(super) fn new(policy: RestartPolicy) -> (Arc<Restarts>, mpsc::UnboundedReceiver<Duration>) {
        let (requests, received) = mpsc::unbounded_channel();
        let restarts = Restarts {
            policy,
            state: Mutex::new(RestartState::default()),
            pending: watch::channel(0).0,
            recoveries: std::sync::atomic::AtomicU64::new(0),
            requests,
        };
        (Arc::new(restarts), received)
    }

    /// The hook a job of view `view` deployed now reports its failure through.
    pub(super) fn hook(self: &Arc<Self>, view: &str) -> FailureHook {
        let restarts = self.clone();
        let view = view.to_string();
        let generation = self.state.lock().generation;
        Arc::new(move |error: &str| restarts.on_failure(&view, generation, error))
    }

    /// Decides what a failure of `view`'s job leads to: a restart after a backoff, or
    /// giving the view up.
    fn on_failure(&self, view: &str, generation: u64, error: &str) {
        let mut state = self.state.lock();
        if generation != state.generation || error == INPUT_STOPPED {
            // Stale, or the consequence of an input's failure, which that input reports.
            return;
        }
        let now = Instant::now();
        let failures = state.failures.entry(view.to_string()).or_insert(Failures {
            recent: 0,
            last: now,
            restarts: 0,
        });
        if now.duration_since(failures.last) > RESTART_COUNT_RESET {
            failures.recent = 0;
        }
        failures.recent += 1;
        failures.last = now;
        let attempt = failures.recent;
        if attempt > self.policy.attempts {
            tracing::error!(
                view,
                error,
                attempts = self.policy.attempts,
                "giving up on a job that keeps failing"
            );
            state.given_up.insert(view.to_string());
            return;
        }
        failures.restarts += 1;
        state.restarting.insert(view.to_string());
        let delay = self.policy.delay(attempt);
        tracing::warn!(
            view,
            error,
            attempt,
            delay_ms = delay.as_millis() as u64,
            "restarting failed job"
        );
        self.request_recovery(delay);
    }

    /// Asks for a recovery of every job after `delay`: for failures, and to move jobs
    /// onto workers that registered (see [`rebalance_on_registration`]).
    pub(super) fn request_recovery(&self, delay: Duration) {
        self.pending.send_modify(|n| *n += 1);
        let _ = self.requests.send(delay);
    }

    /// Waits until no restart is pending.
    pub(super) async fn settled(&self) {
        let _ = self.pending.subscribe().wait_for(|&n| n == 0).await;
    }

    pub(super) fn is_pending(&self) -> bool {
        *self.pending.borrow() > 0
    }

    /// How many recoveries have begun.
    pub(super) fn recoveries(&self) -> u64 {
        self.recoveries.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How often `view`'s job was restarted, and whether a restart is scheduled.
    pub(super) fn status(&self, view: &str) -> (u32, bool) {
        let state = self.state.lock();
        let restarts = state.failures.get(view).map_or(0, |f| f.restarts);
        (restarts, state.restarting.contains(view))
    }

    /// Forgets a dropped view.
    pub(super) fn forget(&self, view: &str) {
        let mut state = self.state.lock();
        state.failures.remove(view);
        state.restarting.remove(view);
        state.given_up.remove(view);
    }
}

/// Serves restart requests until the coordinator is gone: waits out the backoff (the
/// longest of the requests that are waiting), then recovers every job once for all of
/// them.
pub(super) async fn restart_failed_jobs(
    coordinator: std::sync::Weak<Coordinator>,
    mut requests: mpsc::UnboundedReceiver<Duration>,
) {
    while let Some(mut delay) = requests.recv().await {
        let mut served = 1;
        while let Ok(more) = requests.try_recv() {
            delay = delay.max(more);
            served += 1;
        }
        tokio::time::sleep(delay).await;
        while requests.try_recv().is_ok() {
            served += 1;
        }
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        coordinator.recover().await;
        coordinator.restarts.pending.send_modify(|n| *n -= served);
    }
}

/// Moves jobs onto workers as they register (Flink's reactive scheduling, done the
/// way failures are recovered): when a job waits for slots that now exist, or runs on
/// fewer workers than are alive (it was deployed, or restored at a coordinator restart,
/// before they registered), every job is recovered from the last checkpoint and placed
/// anew. The recovery waits one heartbeat interval, by when the other workers of a
/// restarted cluster have registered too, so that they are moved onto once.
pub(super) async fn rebalance_on_registration(
    coordinator: std::sync::Weak<Coordinator>,
    mut registrations: watch::Receiver<u64>,
) {
    while registrations.changed().await.is_ok() {
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        let jobs: Vec<Arc<Job>> = coordinator.inner.lock().jobs.values().cloned().collect();
        let cluster = &coordinator.cluster;
        if let Some(job) = jobs.iter().find(|job| cluster.would_spread_wider(job)) {
            tracing::info!(view = %job.view, "a worker registered: moving jobs onto the workers");
            coordinator
                .restarts
                .request_recovery(cluster.membership.interval());
        }
    }
}

impl Coordinator {
    /// Stops every job and starts it again from the last completed checkpoint (from
    /// scratch when there is none). Views that were given up, and the views reading
    /// them, and cancelled views are left as they are.
    async fn recover(&self) {
        // Without a rescale, nothing in a recovery returns an error.
        let _ = self.recover_with(None).await;
    }

    /// [`Self::recover`], redeploying `rescale`'s view with its new graph. Fails when
    /// the rescale cannot be applied (every job is restarted all the same).
    pub(super) async fn recover_with(&self, rescale: Option<Rescale>) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        let _checkpointing = match &self.durable {
            Some(durable) => Some(durable.checkpointing.lock().await),
            None => None,
        };
        let _epochs = self.epochs.lock().await;
        // From here on, failures of the jobs being replaced restart nothing more.
        {
            let mut state = self.restarts.state.lock();
            state.generation += 1;
            state.restarting.clear();
        }
        self.restarts
            .recoveries
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (jobs, tables, left_failed) = {
            let inner = self.inner.lock();
            let mut jobs: Vec<Arc<Job>> = inner.jobs.values().cloned().collect();
            jobs.sort_by_key(|job| job.id);
            let mut left_failed = self.restarts.state.lock().given_up.clone();
            for job in &jobs {
                if dependencies(&job.graph)
                    .iter()
                    .any(|d| left_failed.contains(d))
                {
                    left_failed.insert(job.view.clone());
                }
            }
            let tables: Vec<_> = inner.tables.values().cloned().collect();
            (jobs, tables, left_failed)
        };
        // Cancelled jobs stay as they are too.
        let jobs: Vec<Arc<Job>> = jobs
            .into_iter()
            .filter(|job| !left_failed.contains(&job.view) && job.state() != JobState::Canceled)
            .collect();
        for job in &jobs {
            job.stop().await;
        }
        let plan = self.restore_point().await;
        tracing::info!(
            jobs = jobs.len(),
            epoch = plan.as_ref().map(|p| p.epoch),
            "recovering streaming jobs"
        );
        // No table change may slip in between a view's replay of a table and its
        // subscription to the table's later changes.
        let mut paused = Vec::with_capacity(tables.len());
        for table in &tables {
            paused.push(table.pause_writes().await);
        }
        let mut started = Vec::new();
        // A rescale whose view is not among the jobs restarted (it was given up
        // meanwhile) has not happened.
        let mut outcome = match &rescale {
            Some(r) if !jobs.iter().any(|job| job.id == r.id) => Err(SluiceError::new(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "the job of materialized view \"{}\" failed and was given up; its parallelism is unchanged",
                    r.view
                ),
            )),
            _ => Ok(()),
        };
        {
            let mut inner = self.inner.lock();
            inner.restore_plan = plan;
            inner.restored_views.clear();
            for old in jobs {
                let mut graph = old.graph.clone();
                let mut partitions = inner.views.get(&old.view).cloned().unwrap_or_default();
                if let Some(rescale) = rescale.as_ref().filter(|r| r.id == old.id) {
                    match self.apply_rescale(&mut inner, rescale) {
                        Ok(replanned) => (graph, partitions) = replanned,
                        Err(e) => outcome = Err(e),
                    }
                }
                let restore = take_view_restore(&mut inner, old.id, &dependencies(&old.graph));
                let restored = restore.is_some();
                // A view the checkpoint does not hold is recomputed from scratch.
                let restored_epoch = inner.restore_plan.as_ref().filter(|_| restored);
                let restored_epoch = restored_epoch.map(|plan| plan.epoch);
                for partition in &partitions {
                    partition.reset(restored_epoch);
                }
                let job = match self.deploy_view(
                    &inner,
                    old.id,
                    &old.view,
                    graph.clone(),
                    &partitions,
                    restore,
                ) {
                    Ok(job) => Arc::new(job),
                    Err(e) => {
                        tracing::error!(view = %old.view, error = %e, "cannot restart a failed job");
                        for partition in &partitions {
                            partition.fail(&e.message);
                        }
                        self.restarts.state.lock().given_up.insert(old.view.clone());
                        let failed = JobState::Failed(e.message);
                        Arc::new(Job::inert(old.id, &old.view, graph, failed))
                    }
                };
                if restored {
                    inner.restored_views.insert(old.view.clone());
                }
                inner.jobs.insert(old.view.clone(), job.clone());
                started.push(job);
            }
            inner.restore_plan = None;
            inner.restored_views.clear();
        }
        drop(paused);
        for job in started {
            job.start();
        }
        outcome
    }

    /// The checkpoint a recovery resumes from: the latest complete one, if every table
    /// still retains the changes made since it.
    async fn restore_point(&self) -> Option<RestorePlan> {
        let durable = self.durable.as_ref()?;
        let scratch = self.restore_scratch();
        let latest = match durable
            .checkpointer
            .store()
            .latest_restorable_with(Some(scratch.downloads()))
            .await
        {
            Ok(latest) => latest?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the checkpoint store; restarting jobs from scratch");
                return None;
            }
        };
        let plan = match scratch.decode(latest) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(error = %e, "cannot decode the latest checkpoint; restarting jobs from scratch");
                return None;
            }
        };
        let inner = self.inner.lock();
        let replayable = inner.tables.values().all(|table| {
            let id = inner.catalog.get(&table.name).map(|r| r.id);
            id.and_then(|id| plan.table_positions.get(&id))
                .is_none_or(|&position| table.retains_after(position))
        });
        if !replayable {
            tracing::warn!(
                epoch = plan.epoch,
                "tables no longer hold the changes since the latest checkpoint; restarting jobs from scratch"
            );
            return None;
        }
        Some(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restarts(attempts: u32) -> (Arc<Restarts>, mpsc::UnboundedReceiver<Duration>) {
        Restarts::new(RestartPolicy {
            attempts,
            backoff: Duration::from_millis(100),
        })
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let policy = RestartPolicy {
            attempts: 10,
            backoff: Duration::from_secs(1),
        };
        assert_eq!(policy.delay(1), Duration::from_secs(1));
        assert_eq!(policy.delay(2), Duration::from_secs(2));
        assert_eq!(policy.delay(3), Duration::from_secs(4));
        assert_eq!(
            policy.delay(40),
            Duration::from_secs_f64(MAX_RESTART_BACKOFF_SECS)
        );
    }

    #[test]
    fn a_view_is_given_up_after_its_attempts() {
        let (restarts, mut requests) = restarts(2);
        let hook = restarts.hook("v");
        hook("boom");
        hook("boom");
        assert_eq!(requests.try_recv().ok(), Some(Duration::from_millis(100)));
        assert_eq!(requests.try_recv().ok(), Some(Duration::from_millis(200)));
        assert_eq!(restarts.status("v"), (2, true));
        assert!(restarts.is_pending());
        hook("boom");
        assert!(
            requests.try_recv().is_err(),
            "the third failure is not restarted"
        );
        assert!(restarts.state.lock().given_up.contains("v"));
    }

    #[test]
    fn stale_failures_and_failures_of_inputs_restart_nothing() {
        let (restarts, mut requests) = restarts(3);
        let old = restarts.hook("v");
        restarts.state.lock().generation += 1;
        old("boom");
        restarts.hook("w")(INPUT_STOPPED);
        assert!(requests.try_recv().is_err());
        assert_eq!(restarts.status("v"), (0, false));
        assert!(!restarts.is_pending());
    }
}
