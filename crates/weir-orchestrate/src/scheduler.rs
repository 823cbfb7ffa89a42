//! `weir up`: the long-running loop that creates a run for each interval as it
//! comes due and starts queued runs within `max_active_runs`; a [`Worker`] in
//! the same process runs their tasks (other `weir worker` processes may help
//! when the store is PostgreSQL).
//!
//! Like the worker it waits on one closed [`Event`] enum, and its decisions
//! ([`Scheduler::tick`]) depend only on the store and the time it is given,
//! so tests drive it with any clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dag::Dag;
use crate::schedule::{Clock, Schedule};
use crate::store::{RunKind, RunState, Store, StoreError};
use crate::worker::{Scope, WorkEnd, Worker};

pub struct Scheduler {
    pub store: Arc<Store>,
    pub dag: Dag,
    pub schedule: Schedule,
    pub start_date: DateTime<Utc>,
    pub catchup: bool,
    pub max_active_runs: usize,
    pub max_active_tasks: usize,
}

/// What one tick decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Runs created for intervals that came due (queued).
    pub created: Vec<i64>,
    /// Queued runs started now, oldest interval first.
    pub started: Vec<i64>,
}

enum Event {
    Timer,
    RunEnded,
    Shutdown,
    WorkerStopped(Result<WorkEnd, StoreError>),
}

/// The longest the scheduler sleeps, so a wall clock that jumps is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(60);

impl Scheduler {
    /// Create runs for the intervals due at `now` (none while the DAG is
    /// paused), then start queued runs while fewer than `max_active_runs` run.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Tick, StoreError> {
        let last = self.store.last_scheduled_end(&self.dag.name).await?;
        let mut tick = Tick::default();
        let due = if self.store.is_paused(&self.dag.name).await? {
            Vec::new()
        } else {
            self.schedule.due(self.start_date, last, now, self.catchup)
        };
        for interval in due {
            if let Some(id) = self
                .store
                .create_run(
                    &self.dag,
                    RunKind::Scheduled,
                    interval,
                    RunState::Queued,
                    self.max_active_tasks,
                    now,
                )
                .await?
            {
                tick.created.push(id);
            }
        }
        tick.started = self
            .store
            .start_queued_runs(&self.dag.name, self.max_active_runs, now)
            .await?;
        Ok(tick)
    }

    /// Run until `shutdown`: runs are created and started as they come due;
    /// `worker` (if any) runs their tasks. At shutdown the worker's running
    /// attempts are cancelled and their tasks queued for the next start.
    pub async fn serve(
        &self,
        worker: Option<Arc<Worker>>,
        clock: Arc<dyn Clock>,
        notify: weir_config::NotifyConfig,
        owner: String,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let run_ended = worker
            .as_ref()
            .map_or_else(|| Arc::new(Notify::new()), |w| w.run_ended.clone());
        let wake = worker.as_ref().map(|w| w.wake.clone());
        if let Some(w) = worker {
            let (name, token) = (self.dag.name.clone(), shutdown.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let r = w.work(Scope::Dag(name), token).await;
                let _ = tx.send(Event::WorkerStopped(r));
            });
        }
        let mut stopping = false;
        loop {
            if !stopping {
                let tick = self.tick(clock.now()).await?;
                for id in &tick.created {
                    tracing::info!(run = id, "run created for a due interval");
                }
                if !tick.started.is_empty() {
                    for id in &tick.started {
                        tracing::info!(run = id, "run started");
                    }
                    if let Some(w) = &wake {
                        w.notify_one();
                    }
                }
                if let Err(e) = crate::notify::dispatch(&self.store, &notify, &owner).await {
                    tracing::warn!("notifications: {e}");
                }
            }
            let now = clock.now();
            let wait = self
                .schedule
                .next_due_at(now)
                .map_or(MAX_SLEEP, |t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .min(MAX_SLEEP);
            let event = tokio::select! {
                Some(ev) = rx.recv() => ev,
                () = tokio::time::sleep(wait), if !stopping => Event::Timer,
                () = run_ended.notified(), if !stopping => Event::RunEnded,
                () = shutdown.cancelled(), if !stopping => Event::Shutdown,
            };
            match event {
                Event::Timer | Event::RunEnded => {}
                Event::Shutdown => {
                    stopping = true;
                    if wake.is_none() {
                        return Ok(());
                    }
                }
                Event::WorkerStopped(r) => {
                    r?;
                    return Ok(());
                }
            }
        }
    }
}
