//! The worker: the loop that claims ready tasks from the store, runs them
//! (each with its timeout and a cancellation token), keeps their leases
//! alive and records how each attempt ended.
//!
//! One loop over a closed [`Event`] enum (an attempt finished, a timer fired,
//! shutdown was asked), so every trigger of work is in one `match`. The same
//! loop serves `weir run` (one run, one process, SQLite), `weir up` and
//! `weir worker` (every running run of the DAG, any number of processes on a
//! PostgreSQL store): what is ready, and who may run it, is decided by the
//! store in a transaction, never here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::dag::{RunParams, Task};
use crate::retry::{ErrorKind, TaskError};
use crate::schedule::{Clock, Interval};
use crate::store::{
    event_body, Claim, Event as Notice, Finished, Outcome, RunState, Store, StoreError, TaskState,
    LOG_TAIL_BYTES,
};

/// What a task is given to run.
pub struct TaskContext {
    pub run_id: i64,
    pub task: Task,
    pub try_number: u32,
    pub interval: Interval,
    /// What the run was asked for (full refresh, a dbt selector).
    pub params: RunParams,
    /// Outputs of the tasks it depends on, by task id.
    pub upstream: HashMap<String, serde_json::Value>,
    pub log: TaskLog,
    /// Cancelled on timeout, shutdown or a lost lease: stop, release
    /// connections (cancel server-side queries), return.
    pub cancel: CancellationToken,
}

/// What a successful task reports.
#[derive(Debug, Clone, Default)]
pub struct TaskOutput {
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    /// Passed to downstream tasks (e.g. the lake run an extract wrote).
    pub data: Option<serde_json::Value>,
    pub message: String,
}

/// Runs a task's body. The pipeline's runner does extract, load, transform,
/// SQL and shell tasks; tests run their own.
#[async_trait::async_trait]
pub trait TaskRunner: Send + Sync {
    async fn run(&self, ctx: TaskContext) -> Result<TaskOutput, TaskError>;
}

/// Hears about task progress (for printing).
pub trait Observer: Send + Sync {
    fn started(&self, _run: i64, _task: &str, _try_number: u32) {}
    /// `state` is the task's new state (`UpForRetry` and `Queued` included).
    fn finished(&self, _run: i64, _task: &str, _state: TaskState, _seconds: f64, _message: &str) {}
}

pub struct Quiet;
impl Observer for Quiet {}

/// One attempt's log file.
#[derive(Clone)]
pub struct TaskLog {
    pub path: PathBuf,
    file: Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

impl TaskLog {
    pub fn create(path: PathBuf) -> TaskLog {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        TaskLog {
            path,
            file: Arc::new(std::sync::Mutex::new(file)),
        }
    }

    /// Append a line, prefixed with the time.
    pub fn line(&self, text: &str) {
        use std::io::Write;
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = f.as_mut() {
            let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let text = weir_config::scrub(text);
            for l in text.lines() {
                let _ = writeln!(f, "{now} {l}");
            }
        }
    }

    /// Append raw bytes (a command's output).
    pub fn raw(&self, bytes: &[u8]) {
        use std::io::Write;
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = f.as_mut() {
            // A command's output may echo a secret the project passed it.
            let text = String::from_utf8_lossy(bytes);
            let _ = f.write_all(weir_config::scrub(&text).as_bytes());
        }
    }

    /// The end of the log, at most `LOG_TAIL_BYTES`, cut at a line start.
    pub fn tail(&self) -> Option<String> {
        let bytes = std::fs::read(&self.path).ok()?;
        let from = bytes.len().saturating_sub(LOG_TAIL_BYTES);
        let mut s = &bytes[from..];
        if from > 0 {
            if let Some(nl) = s.iter().position(|b| *b == b'\n') {
                s = &s[nl + 1..];
            }
        }
        Some(String::from_utf8_lossy(s).into_owned())
    }
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Who runs the attempts (host and pid), recorded with each.
    pub owner: String,
    /// Tasks this process runs at once (each run also has `max_active_tasks`).
    pub slots: usize,
    /// A claim is held this long without a heartbeat.
    pub lease: Duration,
    /// How often an idle worker looks for work others made ready.
    pub poll: Duration,
    /// Attempt logs go under `logs_dir/run_<id>/<task>/try_<n>.log`.
    pub logs_dir: PathBuf,
    /// How long a cancelled task has to clean up before it is dropped.
    pub grace: Duration,
    pub notify: weir_config::NotifyConfig,
}

impl WorkerOptions {
    pub fn log_path(&self, run: i64, task: &str, try_number: u32) -> PathBuf {
        self.logs_dir
            .join(format!("run_{run}"))
            .join(task)
            .join(format!("try_{try_number}.log"))
    }
}

/// Which runs a worker takes tasks from.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One run, until it ends (`weir run`, `weir retry`).
    Run(i64),
    /// Every running run of the DAG, until shutdown (`weir up`, `weir worker`).
    Dag(String),
}

/// How [`Worker::work`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkEnd {
    /// The run (scope `Run`) ended in this state.
    Run(RunState),
    /// Shutdown was asked; unfinished tasks are queued for whoever comes next.
    Stopped,
}

/// What the loop waits for.
enum Event {
    Finished {
        claim: Claim,
        seconds: f64,
        result: Result<TaskOutput, TaskError>,
    },
    /// Time to renew leases, sample memory, look for work.
    Timer,
    Shutdown,
}

/// A claimed attempt in flight.
struct InFlight {
    claim: Claim,
    cancel: CancellationToken,
    log: TaskLog,
    peak_rss_kb: u64,
}

/// Resident memory of this process now, from /proc (Linux).
pub fn rss_kb() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

pub struct Worker {
    pub store: Arc<Store>,
    pub runner: Arc<dyn TaskRunner>,
    pub opts: WorkerOptions,
    pub clock: Arc<dyn Clock>,
    pub observer: Arc<dyn Observer>,
    /// Nudged when new work may be ready (the scheduler started a run).
    pub wake: Arc<Notify>,
    /// Nudged when a run this worker was part of ended (the scheduler may
    /// start a queued one).
    pub run_ended: Arc<Notify>,
    /// Notifications being sent; awaited before [`Worker::work`] returns, so
    /// a process does not exit holding an event it claimed but did not send.
    sending: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// How often a running worker renews leases and samples memory.
const TICK: Duration = Duration::from_millis(250);

impl Worker {
    pub fn new(
        store: Arc<Store>,
        runner: Arc<dyn TaskRunner>,
        opts: WorkerOptions,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
    ) -> Worker {
        Worker {
            store,
            runner,
            opts,
            clock,
            observer,
            wake: Arc::new(Notify::new()),
            run_ended: Arc::new(Notify::new()),
            sending: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        }
    }

    /// Work until the scope is done or `shutdown` fires.
    pub async fn work(
        &self,
        scope: Scope,
        shutdown: CancellationToken,
    ) -> Result<WorkEnd, StoreError> {
        let end = self.work_loop(scope, shutdown).await;
        let mut sending =
            std::mem::take(&mut *self.sending.lock().unwrap_or_else(|p| p.into_inner()));
        while sending.join_next().await.is_some() {}
        end
    }

    async fn work_loop(
        &self,
        scope: Scope,
        shutdown: CancellationToken,
    ) -> Result<WorkEnd, StoreError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let mut running: HashMap<(i64, String), InFlight> = HashMap::new();
        let mut stopping = false;
        let mut last_heartbeat = Instant::now();
        let mut last_reap: Option<Instant> = None;
        let heartbeat_every = self.opts.lease / 3;
        let dag_name = match &scope {
            Scope::Run(id) => self.store.run(*id).await?.map(|r| r.dag),
            Scope::Dag(name) => Some(name.clone()),
        };
        loop {
            let now = self.clock.now();
            // 1. Tasks whose worker died go back to the queue (other
            //    processes' leases only exist on a shared store).
            if self.store.is_shared()
                && last_reap.is_none_or(|t| t.elapsed() >= self.opts.lease / 2)
            {
                last_reap = Some(Instant::now());
                if let Some(dag) = &dag_name {
                    for r in self.store.reap(dag, false, now).await? {
                        tracing::warn!(run = r.run_id, task = %r.task_id, "lease of {} expired; task {}", r.owner, r.state.as_str());
                    }
                }
            }
            // 2. Claim what is ready, up to the free slots.
            if !stopping {
                let runs: Vec<i64> = match &scope {
                    Scope::Run(id) => vec![*id],
                    Scope::Dag(name) => self
                        .store
                        .runs_in_state(name, RunState::Running)
                        .await?
                        .into_iter()
                        .map(|r| r.id)
                        .collect(),
                };
                for run in runs {
                    let free = self.opts.slots.saturating_sub(running.len());
                    if free == 0 {
                        break;
                    }
                    let claims = self
                        .store
                        .claim(
                            run,
                            free,
                            &self.opts.owner,
                            self.opts.lease,
                            self.clock.now(),
                            &|r, t, n| self.opts.log_path(r, t, n),
                        )
                        .await?;
                    for c in claims {
                        let inflight = self.spawn(c, &shutdown, tx.clone()).await?;
                        running.insert(inflight.0, inflight.1);
                    }
                }
            }
            // 3. Done?
            if running.is_empty() {
                if let Scope::Run(id) = &scope {
                    let state = self.store.run(*id).await?.map(|r| r.state);
                    match state {
                        Some(s) if s.is_done() => return Ok(WorkEnd::Run(s)),
                        None => return Ok(WorkEnd::Run(RunState::Failed)),
                        _ => {}
                    }
                    // Alone on the store, nothing running here and nothing
                    // that can become ready: only a bug in Weir gets here.
                    if !self.store.is_shared() && !stopping {
                        let live = self.store.tasks(*id).await?.iter().any(|t| {
                            matches!(
                                t.state,
                                TaskState::Queued | TaskState::UpForRetry | TaskState::Running
                            )
                        });
                        if !live {
                            return Err(StoreError::Invalid {
                                at: self.store.describe(),
                                message: format!(
                                    "run {id} stalled with tasks pending and none ready (a bug in Weir, please report it)"
                                ),
                            });
                        }
                    }
                }
                if stopping {
                    return Ok(WorkEnd::Stopped);
                }
            }
            // 4. Wait for something to happen.
            let wait = if running.is_empty() {
                let retry = match &scope {
                    Scope::Run(id) => self.store.next_retry_at(*id).await?,
                    Scope::Dag(_) => None,
                };
                let until_retry =
                    retry.map(|t| (t - self.clock.now()).to_std().unwrap_or(Duration::ZERO));
                match (
                    until_retry,
                    self.store.is_shared() || matches!(scope, Scope::Dag(_)),
                ) {
                    (Some(r), true) => r.min(self.opts.poll),
                    (Some(r), false) => r,
                    (None, _) => self.opts.poll,
                }
            } else {
                TICK
            };
            let event = tokio::select! {
                Some(ev) = rx.recv() => ev,
                () = tokio::time::sleep(wait) => Event::Timer,
                () = self.wake.notified() => Event::Timer,
                () = shutdown.cancelled(), if !stopping => Event::Shutdown,
            };
            match event {
                Event::Finished {
                    claim,
                    seconds,
                    result,
                } => {
                    let key = (claim.run_id, claim.task_id.clone());
                    let Some(inflight) = running.remove(&key) else {
                        continue;
                    };
                    self.record(&claim, inflight, seconds, result).await?;
                }
                Event::Timer => {}
                Event::Shutdown => {
                    stopping = true;
                    for f in running.values() {
                        f.cancel.cancel();
                    }
                }
            }
            // Memory, and leases (a lost lease cancels the attempt: someone
            // else has the task now, and our result could not be recorded).
            if !running.is_empty() {
                let rss = rss_kb().unwrap_or(0);
                for f in running.values_mut() {
                    f.peak_rss_kb = f.peak_rss_kb.max(rss);
                }
            }
            if !running.is_empty() && last_heartbeat.elapsed() >= heartbeat_every {
                last_heartbeat = Instant::now();
                let now = self.clock.now();
                for f in running.values() {
                    if !self.store.heartbeat(&f.claim, self.opts.lease, now).await? {
                        tracing::warn!(run = f.claim.run_id, task = %f.claim.task_id, "lease lost; cancelling the attempt");
                        f.cancel.cancel();
                    }
                }
            }
        }
    }

    /// Start a claimed attempt on its own tokio task.
    async fn spawn(
        &self,
        claim: Claim,
        shutdown: &CancellationToken,
        tx: mpsc::UnboundedSender<Event>,
    ) -> Result<((i64, String), InFlight), StoreError> {
        let dag = self.store.run_dag(claim.run_id).await?;
        let Some(i) = dag.get(&claim.task_id) else {
            return Err(StoreError::Invalid {
                at: self.store.describe(),
                message: format!(
                    "run {}: task {} is not in its DAG",
                    claim.run_id, claim.task_id
                ),
            });
        };
        let task = dag.tasks[i].clone();
        let ups: Vec<&str> = dag
            .upstream(i)
            .iter()
            .map(|&u| dag.tasks[u].id.as_str())
            .collect();
        let upstream = self.store.outputs(claim.run_id, &ups).await?;
        let log = TaskLog::create(self.opts.log_path(
            claim.run_id,
            &claim.task_id,
            claim.try_number,
        ));
        log.line(&format!(
            "{} try {} started by {}",
            claim.task_id, claim.try_number, claim.owner
        ));
        self.observer
            .started(claim.run_id, &claim.task_id, claim.try_number);
        let cancel = shutdown.child_token();
        let inflight = InFlight {
            cancel: cancel.clone(),
            log: log.clone(),
            peak_rss_kb: rss_kb().unwrap_or(0),
            claim: claim.clone(),
        };
        let ctx = TaskContext {
            run_id: claim.run_id,
            task,
            try_number: claim.try_number,
            interval: claim.interval,
            params: dag.params.clone(),
            upstream,
            log,
            cancel,
        };
        let runner = self.runner.clone();
        let grace = self.opts.grace;
        let key = (claim.run_id, claim.task_id.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = attempt(runner, ctx, grace).await;
            let _ = tx.send(Event::Finished {
                claim,
                seconds: t0.elapsed().as_secs_f64(),
                result,
            });
        });
        Ok((key, inflight))
    }

    /// Decide what an attempt's end means, record it, tell the observer.
    async fn record(
        &self,
        claim: &Claim,
        inflight: InFlight,
        seconds: f64,
        result: Result<TaskOutput, TaskError>,
    ) -> Result<(), StoreError> {
        let dag = self.store.run_dag(claim.run_id).await?;
        let Some(task) = dag.get(&claim.task_id).map(|i| &dag.tasks[i]) else {
            return Ok(());
        };
        match &result {
            Ok(o) => inflight.log.line(&format!("success {}", o.message)),
            Err(e) => inflight
                .log
                .line(&format!("{} error: {}", e.kind.as_str(), e.message)),
        }
        let now = self.clock.now();
        let mut outcome = decide(task, claim, &result, now);
        outcome.peak_rss_kb = Some(inflight.peak_rss_kb.max(rss_kb().unwrap_or(0)));
        outcome.log_tail = inflight.log.tail();
        let has_event = outcome.event.is_some();
        match self.store.finish(claim, &outcome, now).await? {
            Finished::LeaseLost => {
                inflight.log.line(
                    "lease lost before the result was recorded: this attempt's result is discarded",
                );
                self.observer.finished(
                    claim.run_id,
                    &claim.task_id,
                    TaskState::Running,
                    seconds,
                    "lease lost: another worker has the task; this result is discarded",
                );
            }
            Finished::Committed { settled, run } => {
                if run.is_some() {
                    self.run_ended.notify_one();
                }
                let message = match &result {
                    Ok(o) => o.message.clone(),
                    Err(e) => match outcome.next_try_at {
                        Some(at) => format!(
                            "{} (retry {} of {} in {:.1}s)",
                            e.message,
                            claim.failures + 1,
                            task.retry.retries,
                            (at - now).num_milliseconds() as f64 / 1000.0
                        ),
                        None => e.message.clone(),
                    },
                };
                self.observer.finished(
                    claim.run_id,
                    &claim.task_id,
                    outcome.task_state,
                    seconds,
                    &message,
                );
                for (t, s) in settled {
                    self.observer.finished(claim.run_id, &t, s, 0.0, "");
                }
                if has_event {
                    let store = self.store.clone();
                    let notify = self.opts.notify.clone();
                    let owner = self.opts.owner.clone();
                    self.sending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .spawn(async move {
                            if let Err(e) = crate::notify::dispatch(&store, &notify, &owner).await {
                                tracing::warn!("notifications: {e}");
                            }
                        });
                }
            }
        }
        Ok(())
    }
}

/// What an attempt's result means for its task: success; a retry after the
/// back-off (transient errors and timeouts, while retries remain); back to
/// the queue (interrupted by shutdown); or failure, with a notification.
pub fn decide(
    task: &Task,
    claim: &Claim,
    result: &Result<TaskOutput, TaskError>,
    now: DateTime<Utc>,
) -> Outcome {
    let base = Outcome {
        attempt_state: "success",
        error: None,
        error_kind: None,
        error_code: None,
        rows: None,
        bytes: None,
        peak_rss_kb: None,
        log_tail: None,
        task_state: TaskState::Success,
        counts_as_failure: false,
        interruption: false,
        next_try_at: None,
        output: None,
        event: None,
    };
    let notice = |kind: &str, text: String| Notice {
        key: format!(
            "{}/{}/{}/{kind}",
            claim.run_id, claim.task_id, claim.try_number
        ),
        kind: kind.to_owned(),
        run_id: claim.run_id,
        task_id: Some(claim.task_id.clone()),
        body: event_body(kind, claim.run_id, &claim.task_id, claim.try_number, &text),
    };
    match result {
        Ok(out) => Outcome {
            rows: out.rows,
            bytes: out.bytes,
            output: out.data.clone(),
            event: (claim.failures > 0).then(|| {
                notice(
                    "recovered",
                    format!(
                        "{} succeeded on try {} after {} failed tr{}",
                        claim.task_id,
                        claim.try_number,
                        claim.failures,
                        if claim.failures == 1 { "y" } else { "ies" }
                    ),
                )
            }),
            ..base
        },
        Err(e) if e.kind == ErrorKind::Cancelled => Outcome {
            attempt_state: "interrupted",
            error: Some(e.message.clone()),
            error_kind: Some(e.kind.as_str()),
            task_state: TaskState::Queued,
            ..base
        },
        Err(e) => {
            let retry = claim.failures.saturating_add(1);
            let failed = Outcome {
                attempt_state: "failed",
                error: Some(e.message.clone()),
                error_kind: Some(e.kind.as_str()),
                error_code: e.code.clone(),
                counts_as_failure: true,
                ..base
            };
            if e.kind.retryable() && retry <= task.retry.retries {
                let wait = task
                    .retry
                    .backoff(retry, (claim.run_id, &claim.task_id, claim.try_number));
                let at = now
                    .checked_add_signed(
                        chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                    )
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                Outcome {
                    task_state: TaskState::UpForRetry,
                    next_try_at: Some(at),
                    ..failed
                }
            } else {
                let (kind, text) = if e.kind.retryable() && task.retry.retries > 0 {
                    (
                        "retries_exhausted",
                        format!(
                            "{} failed after {} tries: {}",
                            claim.task_id, claim.try_number, e.message
                        ),
                    )
                } else {
                    ("failed", format!("{} failed: {}", claim.task_id, e.message))
                };
                Outcome {
                    task_state: TaskState::Failed,
                    event: Some(notice(kind, text)),
                    ..failed
                }
            }
        }
    }
}

/// One attempt: the runner's work, raced against the task's timeout and its
/// cancellation. A timed-out or cancelled task gets `grace` to stop cleanly
/// (its runner cancels server-side queries and closes connections); after
/// that its future is dropped, which closes whatever it still holds.
async fn attempt(
    runner: Arc<dyn TaskRunner>,
    ctx: TaskContext,
    grace: Duration,
) -> Result<TaskOutput, TaskError> {
    let timeout = ctx.task.retry.timeout;
    let cancel = ctx.cancel.clone();
    let work = runner.run(ctx);
    tokio::pin!(work);
    let timer = async {
        match timeout {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = &mut work => r,
        () = timer => {
            cancel.cancel();
            let _ = tokio::time::timeout(grace, &mut work).await;
            Err(TaskError {
                code: None,
                kind: ErrorKind::Timeout,
                message: format!(
                    "timed out after {:.1}s and was cancelled",
                    timeout.unwrap_or_default().as_secs_f64()
                ),
            })
        }
        () = cancel.cancelled() => {
            let _ = tokio::time::timeout(grace, &mut work).await;
            Err(TaskError {
                code: None,
                kind: ErrorKind::Cancelled,
                message: "cancelled: the run was stopped or the lease lost".to_owned(),
            })
        }
    }
}
