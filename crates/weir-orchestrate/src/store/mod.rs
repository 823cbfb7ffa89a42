//! Run history and the work queue: runs, task instances, attempts, pools and
//! the notification outbox, in SQLite (default) or PostgreSQL (several
//! workers). See [`crate::db`] for how one set of statements serves both.
//!
//! The store is the only place task states change, always in a transaction
//! that first locks the run's row, so every decision about a run (what is
//! ready, what a failure skips, whether the run is over) is made by one
//! process at a time, with the committed truth in front of it:
//!
//! - a task becomes `queued` when its trigger rule is met; upstream counters
//!   on each task instance make that an O(1) check per edge;
//! - [`Store::claim`] moves queued tasks to `running` under a lease, within the
//!   run's `max_active_tasks` and the DAG's pools (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL, so workers never wait on each other's candidates);
//! - [`Store::finish`] records the attempt only if the lease is still held and
//!   unexpired (a worker that lost its lease cannot commit), then settles the
//!   task's dependants and, when nothing is left, the run;
//! - [`Store::reap`] hands tasks whose lease expired (their worker died) back
//!   to the queue.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use weir_config::{SecretUrl, TriggerRule};

use crate::dag::{Dag, RunParams};
use crate::db::{params, retrying, Db, DbError, DbTx, Row};

mod access;
mod control;
mod history;
mod schema;

use crate::schedule::Interval;
pub use access::{ApiToken, AuditEntry, Role, Session, User};
pub use history::{Cell, Failure, RunFilter, Running, TaskHistory};
use schema::MIGRATIONS;

/// A task interrupted this many times (its process died each time) fails
/// instead of being queued again: something about it kills its worker.
pub const MAX_INTERRUPTIONS: i64 = 3;

/// The most of an attempt's log kept in the store (the end of it), so `weir
/// logs` works from any machine and after the log folder is gone.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store {at}: {source}")]
    Db { at: String, source: DbError },
    #[error("metadata store {at}: {message}")]
    Invalid { at: String, message: String },
}

impl StoreError {
    /// What the store refused to do as asked (a run in the wrong state, an
    /// unknown task), as opposed to the store failing: said to the user as
    /// it is. `None` for a failure of the database itself.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            StoreError::Invalid { message, .. } => Some(message),
            StoreError::Db {
                source: DbError::Other(m),
                ..
            } => Some(m),
            _ => None,
        }
    }
}

/// The state of one task in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for what it depends on.
    Pending,
    /// Ready: a worker may claim it.
    Queued,
    Running,
    /// Failed with a transient error; queued again at `next_try_at`.
    UpForRetry,
    Success,
    Failed,
    /// Not run: its trigger rule was not met.
    Skipped,
    /// Not run: something it needed failed.
    UpstreamFailed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::UpForRetry => "up_for_retry",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::UpstreamFailed => "upstream_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskState::Pending,
            "queued" => TaskState::Queued,
            "running" => TaskState::Running,
            "up_for_retry" => TaskState::UpForRetry,
            "success" => TaskState::Success,
            "failed" => TaskState::Failed,
            "skipped" => TaskState::Skipped,
            "upstream_failed" => TaskState::UpstreamFailed,
            _ => return None,
        })
    }

    pub fn is_done(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Skipped | TaskState::UpstreamFailed
        )
    }

    pub fn is_failure(self) -> bool {
        matches!(self, TaskState::Failed | TaskState::UpstreamFailed)
    }
}

/// How many of a task's upstream tasks ended, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upstream {
    pub total: i64,
    pub done: i64,
    pub success: i64,
    /// Failed or upstream-failed.
    pub failed: i64,
    pub skipped: i64,
}

impl Upstream {
    fn add(&mut self, s: TaskState) {
        if s.is_done() {
            self.done += 1;
        }
        match s {
            TaskState::Success => self.success += 1,
            TaskState::Failed | TaskState::UpstreamFailed => self.failed += 1,
            TaskState::Skipped => self.skipped += 1,
            _ => {}
        }
    }
}

/// What a pending task does given how its upstream tasks ended: `Some(Queued)`
/// means ready; `Some(Skipped | UpstreamFailed)` means it will never run;
/// `None` means wait.
pub fn resolve(rule: TriggerRule, up: Upstream) -> Option<TaskState> {
    match rule {
        TriggerRule::AllSuccess => {
            if up.failed > 0 {
                Some(TaskState::UpstreamFailed)
            } else if up.skipped > 0 {
                Some(TaskState::Skipped)
            } else if up.success == up.total {
                Some(TaskState::Queued)
            } else {
                None
            }
        }
        TriggerRule::AllDone => (up.done == up.total).then_some(TaskState::Queued),
        TriggerRule::OneFailed => {
            if up.failed > 0 {
                Some(TaskState::Queued)
            } else if up.done == up.total {
                Some(TaskState::Skipped)
            } else {
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Scheduled,
    Manual,
    Backfill,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Scheduled => "scheduled",
            RunKind::Manual => "manual",
            RunKind::Backfill => "backfill",
        }
    }
}

/// `queued` (waiting for `max_active_runs`), `running`, `success`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Queued,
    Running,
    Success,
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "success" => RunState::Success,
            "failed" => RunState::Failed,
            _ => return None,
        })
    }

    pub fn is_done(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub dag: String,
    pub kind: String,
    pub interval: Interval,
    pub state: RunState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub params: RunParams,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub task_id: String,
    pub state: TaskState,
    pub tries: u32,
    /// Failed tries that count against `retries` (interruptions do not).
    pub failures: u32,
    pub interruptions: u32,
    pub next_try_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub output: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub task_id: String,
    pub try_number: u32,
    /// `running`, `success`, `failed`, `interrupted`, `lost`.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    /// The SQLSTATE of a database error.
    pub error_code: Option<String>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    pub log_path: String,
    pub log_tail: Option<String>,
    pub owner: String,
}

/// A task a worker holds under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub run_id: i64,
    pub task_id: String,
    pub try_number: u32,
    /// Failed tries before this one.
    pub failures: u32,
    pub interruptions: u32,
    pub owner: String,
    pub interval: Interval,
}

/// How an attempt ended and what that means for its task, decided by the
/// worker ([`crate::worker::decide`]) and recorded by [`Store::finish`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `success`, `failed` or `interrupted`.
    pub attempt_state: &'static str,
    pub error: Option<String>,
    pub error_kind: Option<&'static str>,
    pub error_code: Option<String>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    pub log_tail: Option<String>,
    /// `Success`, `Failed`, `UpForRetry`, or `Queued` (interrupted: run again).
    pub task_state: TaskState,
    pub counts_as_failure: bool,
    pub interruption: bool,
    pub next_try_at: Option<DateTime<Utc>>,
    /// Handed to downstream tasks (the lake run an extract wrote).
    pub output: Option<serde_json::Value>,
    pub event: Option<Event>,
}

/// What [`Store::finish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Recorded. `settled` are dependants that will never run (skipped or
    /// upstream-failed); `run` is the run's state when this ended it.
    Committed {
        settled: Vec<(String, TaskState)>,
        run: Option<RunState>,
    },
    /// The lease had expired or passed to another worker: nothing was written.
    LeaseLost,
}

/// A task handed back by [`Store::reap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub run_id: i64,
    pub task_id: String,
    pub owner: String,
    /// `Queued` to run again, or `Failed` after too many interruptions.
    pub state: TaskState,
}

/// A notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Names what happened (run, task, try, kind): raising it again is a no-op.
    pub key: String,
    pub kind: String,
    pub run_id: i64,
    pub task_id: Option<String>,
    pub body: serde_json::Value,
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

/// A time as the CLI shows it.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub struct Store {
    db: Db,
    dags: Mutex<HashMap<i64, Arc<Dag>>>,
}

const RUN_COLUMNS: &str =
    "id, dag, kind, interval_start, interval_end, state, created_at, started_at, ended_at, params";

fn run_row(r: &Row) -> RunRow {
    RunRow {
        id: r.int(0),
        dag: r.text(1),
        kind: r.text(2),
        interval: Interval {
            start: from_ms(r.int(3)),
            end: from_ms(r.int(4)),
        },
        state: RunState::parse(&r.text(5)).unwrap_or(RunState::Failed),
        created_at: from_ms(r.int(6)),
        started_at: r.opt_int(7).map(from_ms),
        ended_at: r.opt_int(8).map(from_ms),
        // Unreadable parameters show as none rather than hide the run.
        params: r
            .opt_text(9)
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
    }
}

impl Store {
    /// The SQLite file at `path` (created, and its schema brought up to date).
    pub fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let db = Db::open_sqlite(path, &MIGRATIONS).map_err(|source| StoreError::Db {
            at: path.display().to_string(),
            source,
        })?;
        Ok(Store::new(db))
    }

    /// The PostgreSQL database at `url` (tables in its `weir` schema).
    pub async fn open_postgres(url: &SecretUrl) -> Result<Store, StoreError> {
        let db = Db::open_postgres(url, &MIGRATIONS)
            .await
            .map_err(|source| StoreError::Db {
                at: url.redacted().to_owned(),
                source,
            })?;
        Ok(Store::new(db))
    }

    /// `metadata` from weir.yml, or the SQLite file under `state_dir`.
    pub async fn open(metadata: Option<&SecretUrl>, state_dir: &Path) -> Result<Store, StoreError> {
        match metadata {
            Some(url) => Store::open_postgres(url).await,
            None => Store::open_sqlite(&state_dir.join("metadata.db")),
        }
    }

    fn new(db: Db) -> Store {
        Store {
            db,
            dags: Mutex::new(HashMap::new()),
        }
    }

    /// Several processes may share it (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.db.is_postgres()
    }

    pub fn describe(&self) -> String {
        self.db.describe()
    }

    fn err(&self, source: DbError) -> StoreError {
        StoreError::Db {
            at: self.db.describe(),
            source,
        }
    }

    fn invalid(&self, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            at: self.db.describe(),
            message: message.into(),
        }
    }

    /// A new run of `dag`: tasks with nothing upstream are queued, the others
    /// pending. A scheduled interval that has a run already gets none.
    pub async fn create_run(
        &self,
        dag: &Dag,
        kind: RunKind,
        interval: Interval,
        state: RunState,
        max_active_tasks: usize,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let json = dag.to_json();
        let params = (!dag.params.is_default())
            .then(|| serde_json::to_string(&dag.params).expect("parameters serialise"));
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            for (name, slots) in &dag.pools {
                tx.exec(
                    "INSERT INTO pools (dag, name, slots) VALUES ($1, $2, $3)
                     ON CONFLICT (dag, name) DO UPDATE SET slots = excluded.slots",
                    params![&dag.name, name, *slots],
                )
                .await?;
            }
            let started = (state == RunState::Running).then(|| ms(now));
            let Some(row) = tx
                .one(
                    "INSERT INTO runs (dag, kind, interval_start, interval_end, state, max_active_tasks,
                         created_at, started_at, dag_json, params)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING id",
                    params![
                        &dag.name,
                        kind.as_str(),
                        ms(interval.start),
                        ms(interval.end),
                        state.as_str(),
                        max_active_tasks.max(1),
                        ms(now),
                        started,
                        &json,
                        params.as_deref()
                    ],
                )
                .await?
            else {
                return Ok(None);
            };
            let id = row.int(0);
            for (i, t) in dag.tasks.iter().enumerate() {
                let ups = dag.upstream(i).len();
                let state = if ups == 0 { TaskState::Queued } else { TaskState::Pending };
                tx.exec(
                    "INSERT INTO task_instances (run_id, task_id, ord, pool, state, ups_total)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    params![id, &t.id, i, t.pool.clone(), state.as_str(), ups],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Some(id))
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Start queued runs of `dag`, oldest interval first, while fewer than
    /// `max_active_runs` run. Returns the runs started.
    pub async fn start_queued_runs(
        &self,
        dag: &str,
        max_active_runs: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            // Lock the DAG's running and queued runs so two schedulers agree.
            let rows = tx
                .query(
                    "SELECT id, state FROM runs WHERE dag = $1 AND state IN ('queued', 'running')
                     ORDER BY interval_start, id {FOR_UPDATE}",
                    params![dag],
                )
                .await?;
            let running = rows.iter().filter(|r| r.text(1) == "running").count();
            let mut started = Vec::new();
            for r in rows.iter().filter(|r| r.text(1) == "queued") {
                if running + started.len() >= max_active_runs {
                    break;
                }
                let id = r.int(0);
                tx.exec(
                    "UPDATE runs SET state = 'running', started_at = coalesce(started_at, $2) WHERE id = $1",
                    params![id, ms(now)],
                )
                .await?;
                started.push(id);
            }
            tx.commit().await?;
            Ok(started)
        })
        .await
        .map_err(|e| self.err(e))
    }

    pub async fn run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        self.read(&sql, params![id])
            .await
            .map(|rows| rows.first().map(run_row))
    }

    /// The newest runs first.
    pub async fn runs(&self, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1");
        self.read(&sql, params![limit])
            .await
            .map(|rows| rows.iter().map(run_row).collect())
    }

    /// Runs of `dag` in `state`, oldest interval first.
    pub async fn runs_in_state(
        &self,
        dag: &str,
        state: RunState,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE dag = $1 AND state = $2 ORDER BY interval_start, id"
        );
        self.read(&sql, params![dag, state.as_str()])
            .await
            .map(|rows| rows.iter().map(run_row).collect())
    }

    /// The end of the newest scheduled interval that has a run.
    pub async fn last_scheduled_end(&self, dag: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rows = self
            .read(
                "SELECT max(interval_end) FROM runs WHERE dag = $1 AND kind = 'scheduled'",
                params![dag],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.opt_int(0)).map(from_ms))
    }

    /// The start of the oldest scheduled interval that has a run.
    pub async fn first_scheduled_start(
        &self,
        dag: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rows = self
            .read(
                "SELECT min(interval_start) FROM runs WHERE dag = $1 AND kind = 'scheduled'",
                params![dag],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.opt_int(0)).map(from_ms))
    }

    /// The DAG a run was created with (cached: it never changes).
    pub async fn run_dag(&self, run: i64) -> Result<Arc<Dag>, StoreError> {
        if let Some(d) = self
            .dags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run)
        {
            return Ok(d.clone());
        }
        let rows = self
            .read("SELECT dag_json FROM runs WHERE id = $1", params![run])
            .await?;
        let json = rows
            .first()
            .map(|r| r.text(0))
            .ok_or_else(|| self.invalid(format!("there is no run {run}")))?;
        let dag =
            Arc::new(Dag::from_json(&json).map_err(|m| self.invalid(format!("run {run}: {m}")))?);
        self.dags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run, dag.clone());
        Ok(dag)
    }

    pub async fn tasks(&self, run: i64) -> Result<Vec<TaskRow>, StoreError> {
        let rows = self
            .read(
                "SELECT task_id, state, tries, failures, interruptions, next_try_at, lease_owner, output
                 FROM task_instances WHERE run_id = $1 ORDER BY ord",
                params![run],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| TaskRow {
                task_id: r.text(0),
                state: TaskState::parse(&r.text(1)).unwrap_or(TaskState::Pending),
                tries: r.int(2) as u32,
                failures: r.int(3) as u32,
                interruptions: r.int(4) as u32,
                next_try_at: r.opt_int(5).map(from_ms),
                lease_owner: r.opt_text(6),
                output: r.opt_text(7).and_then(|o| serde_json::from_str(&o).ok()),
            })
            .collect())
    }

    /// The outputs of `ids` in `run` (those that have one).
    pub async fn outputs(
        &self,
        run: i64,
        ids: &[&str],
    ) -> Result<HashMap<String, serde_json::Value>, StoreError> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let rows = self
            .read(
                "SELECT task_id, output FROM task_instances WHERE run_id = $1 AND output IS NOT NULL",
                params![run],
            )
            .await?;
        for r in rows {
            let id = r.text(0);
            if ids.contains(&id.as_str()) {
                if let Some(v) = r.opt_text(1).and_then(|o| serde_json::from_str(&o).ok()) {
                    out.insert(id, v);
                }
            }
        }
        Ok(out)
    }

    pub async fn attempts(
        &self,
        run: i64,
        task: Option<&str>,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        self.attempt_rows(run, task, true).await
    }

    /// [`Store::attempts`] without the stored log tails (`log_tail` is
    /// `None`): what a page listing many attempts needs.
    pub async fn attempt_summaries(
        &self,
        run: i64,
        task: Option<&str>,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        self.attempt_rows(run, task, false).await
    }

    async fn attempt_rows(
        &self,
        run: i64,
        task: Option<&str>,
        with_tail: bool,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let sql = format!(
            "SELECT task_id, try_number, state, started_at, ended_at, error, error_kind, rows_moved,
                 bytes_moved, peak_rss_kb, log_path, {}, owner, error_code
             FROM attempts WHERE run_id = $1 AND ($2 = '' OR task_id = $2)
             ORDER BY started_at, task_id, try_number",
            if with_tail { "log_tail" } else { "NULL" }
        );
        let rows = self.read(&sql, params![run, task.unwrap_or("")]).await?;
        Ok(rows
            .iter()
            .map(|r| AttemptRow {
                task_id: r.text(0),
                try_number: r.int(1) as u32,
                state: r.text(2),
                started_at: from_ms(r.int(3)),
                ended_at: r.opt_int(4).map(from_ms),
                error: r.opt_text(5),
                error_kind: r.opt_text(6),
                error_code: r.opt_text(13),
                rows: r.opt_int(7).map(|v| v as u64),
                bytes: r.opt_int(8).map(|v| v as u64),
                peak_rss_kb: r.opt_int(9).map(|v| v as u64),
                log_path: r.text(10),
                log_tail: r.opt_text(11),
                owner: r.text(12),
            })
            .collect())
    }

    /// One statement in its own write transaction; how many rows it changed.
    async fn write(&self, sql: &str, params: &[crate::db::Value]) -> Result<u64, StoreError> {
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let n = tx.exec(sql, params).await?;
            tx.commit().await?;
            Ok(n)
        })
        .await
        .map_err(|e| self.err(e))
    }

    async fn read(&self, sql: &str, params: &[crate::db::Value]) -> Result<Vec<Row>, StoreError> {
        retrying(|| async {
            let mut tx = self.db.begin_read().await?;
            let rows = tx.query(sql, params).await?;
            tx.commit().await?;
            Ok(rows)
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Claim up to `want` ready tasks of `run` for `owner`, each under a lease
    /// until `now + lease`, within the run's `max_active_tasks` and the pools.
    pub async fn claim(
        &self,
        run: i64,
        want: usize,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        log_path: &(dyn Fn(i64, &str, u32) -> PathBuf + Sync),
    ) -> Result<Vec<Claim>, StoreError> {
        if want == 0 {
            return Ok(Vec::new());
        }
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let Some(r) = tx
                .one(
                    "SELECT state, max_active_tasks, dag, interval_start, interval_end FROM runs
                     WHERE id = $1 {FOR_UPDATE}",
                    params![run],
                )
                .await?
            else {
                return Ok(Vec::new());
            };
            if r.text(0) != "running" {
                return Ok(Vec::new());
            }
            let dag = r.text(2);
            let interval = Interval {
                start: from_ms(r.int(3)),
                end: from_ms(r.int(4)),
            };
            let running = tx
                .one(
                    "SELECT count(*) FROM task_instances WHERE run_id = $1 AND state = 'running'",
                    params![run],
                )
                .await?
                .map_or(0, |r| r.int(0));
            let free = (r.int(1) - running).max(0) as usize;
            let want = want.min(free);
            if want == 0 {
                return Ok(Vec::new());
            }
            let candidates = tx
                .query(
                    "SELECT task_id, pool, tries, failures, interruptions FROM task_instances
                     WHERE run_id = $1 AND (state = 'queued' OR (state = 'up_for_retry' AND next_try_at <= $2))
                     ORDER BY ord LIMIT $3 {SKIP_LOCKED}",
                    params![run, ms(now), want + 64],
                )
                .await?;
            // Free slots per pool, counted under the pool's row lock.
            let mut pool_free: HashMap<String, i64> = HashMap::new();
            let mut pools: Vec<String> = candidates.iter().filter_map(|c| c.opt_text(1)).collect();
            pools.sort();
            pools.dedup();
            for p in pools {
                let slots = tx
                    .one(
                        "SELECT slots FROM pools WHERE dag = $1 AND name = $2 {FOR_UPDATE}",
                        params![&dag, &p],
                    )
                    .await?
                    .map_or(i64::MAX, |r| r.int(0));
                let used = tx
                    .one(
                        "SELECT count(*) FROM task_instances t JOIN runs r ON r.id = t.run_id
                         WHERE r.dag = $1 AND t.pool = $2 AND t.state = 'running'",
                        params![&dag, &p],
                    )
                    .await?
                    .map_or(0, |r| r.int(0));
                pool_free.insert(p, slots.saturating_sub(used));
            }
            let expires = ms(now).saturating_add(dur_ms(lease));
            let mut claims = Vec::new();
            for c in candidates {
                if claims.len() >= want {
                    break;
                }
                if let Some(p) = c.opt_text(1) {
                    let free = pool_free.entry(p).or_insert(0);
                    if *free <= 0 {
                        continue;
                    }
                    *free -= 1;
                }
                let task_id = c.text(0);
                let try_number = (c.int(2) + 1) as u32;
                tx.exec(
                    "UPDATE task_instances SET state = 'running', tries = $3, next_try_at = NULL,
                         lease_owner = $4, lease_expires_at = $5
                     WHERE run_id = $1 AND task_id = $2",
                    params![run, &task_id, try_number, owner, expires],
                )
                .await?;
                tx.exec(
                    "INSERT INTO attempts (run_id, task_id, try_number, state, started_at, log_path, owner)
                     VALUES ($1, $2, $3, 'running', $4, $5, $6)",
                    params![
                        run,
                        &task_id,
                        try_number,
                        ms(now),
                        log_path(run, &task_id, try_number).to_string_lossy().into_owned(),
                        owner
                    ],
                )
                .await?;
                claims.push(Claim {
                    run_id: run,
                    task_id,
                    try_number,
                    failures: c.int(3) as u32,
                    interruptions: c.int(4) as u32,
                    owner: owner.to_owned(),
                    interval,
                });
            }
            tx.commit().await?;
            Ok(claims)
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Extend a claim's lease; `false` when it is no longer held (it expired
    /// and was handed to another worker, or the run was reset).
    pub async fn heartbeat(
        &self,
        claim: &Claim,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let expires = ms(now).saturating_add(dur_ms(lease));
        let n = self
            .write(
                "UPDATE task_instances SET lease_expires_at = $5
                 WHERE run_id = $1 AND task_id = $2 AND tries = $3 AND lease_owner = $4
                   AND state = 'running' AND lease_expires_at > $6",
                params![
                    claim.run_id,
                    &claim.task_id,
                    claim.try_number,
                    &claim.owner,
                    expires,
                    ms(now)
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// The earliest time a task of `run` waiting for a retry becomes ready.
    pub async fn next_retry_at(&self, run: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rows = self
            .read(
                "SELECT min(next_try_at) FROM task_instances WHERE run_id = $1 AND state = 'up_for_retry'",
                params![run],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.opt_int(0)).map(from_ms))
    }

    /// Record how a claimed attempt ended, if the claim's lease still holds.
    pub async fn finish(
        &self,
        claim: &Claim,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<Finished, StoreError> {
        let dag = self.run_dag(claim.run_id).await?;
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            tx.one(
                "SELECT id FROM runs WHERE id = $1 {FOR_UPDATE}",
                params![claim.run_id],
            )
            .await?;
            let n = tx
                .exec(
                    "UPDATE task_instances SET state = $5, failures = failures + $6,
                         interruptions = interruptions + $7, next_try_at = $8,
                         output = coalesce($9, output), lease_owner = NULL, lease_expires_at = NULL
                     WHERE run_id = $1 AND task_id = $2 AND tries = $3 AND lease_owner = $4
                       AND state = 'running' AND lease_expires_at > $10",
                    params![
                        claim.run_id,
                        &claim.task_id,
                        claim.try_number,
                        &claim.owner,
                        outcome.task_state.as_str(),
                        i64::from(outcome.counts_as_failure),
                        i64::from(outcome.interruption),
                        outcome.next_try_at.map(ms),
                        outcome.output.as_ref().map(|o| o.to_string()),
                        ms(now)
                    ],
                )
                .await?;
            if n == 0 {
                return Ok(Finished::LeaseLost);
            }
            tx.exec(
                "UPDATE attempts SET state = $4, ended_at = $5, error = $6, error_kind = $7,
                     rows_moved = $8, bytes_moved = $9, peak_rss_kb = $10, log_tail = $11,
                     error_code = $12
                 WHERE run_id = $1 AND task_id = $2 AND try_number = $3",
                params![
                    claim.run_id,
                    &claim.task_id,
                    claim.try_number,
                    outcome.attempt_state,
                    ms(now),
                    // What is stored is read back by `weir logs` and the UI:
                    // no secret may reach it, whatever produced the text.
                    outcome
                        .error
                        .as_deref()
                        .map(|e| weir_config::scrub(e).into_owned()),
                    outcome.error_kind,
                    outcome.rows,
                    outcome.bytes,
                    outcome.peak_rss_kb,
                    outcome
                        .log_tail
                        .as_deref()
                        .map(|t| weir_config::scrub(t).into_owned()),
                    outcome.error_code.as_deref()
                ],
            )
            .await?;
            if let Some(e) = &outcome.event {
                insert_event(&mut tx, e, now).await?;
            }
            let mut settled = Vec::new();
            if outcome.task_state.is_done() {
                let i = dag.get(&claim.task_id).ok_or_else(|| {
                    DbError::Other(format!("task {} is not in its run's DAG", claim.task_id))
                })?;
                settle(
                    &mut tx,
                    &dag,
                    claim.run_id,
                    i,
                    outcome.task_state,
                    &mut settled,
                )
                .await?;
            }
            let run = end_run_if_done(&mut tx, claim.run_id, now).await?;
            tx.commit().await?;
            Ok(Finished::Committed { settled, run })
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Hand back tasks whose lease expired (their worker stopped), or with
    /// `all` every running task (after a crash, by the process that now holds
    /// the project; SQLite only). Each goes back to the queue, or fails after
    /// [`MAX_INTERRUPTIONS`].
    pub async fn reap(
        &self,
        dag_name: &str,
        all: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reaped>, StoreError> {
        let candidates = self
            .read(
                "SELECT t.run_id, t.task_id FROM task_instances t JOIN runs r ON r.id = t.run_id
                 WHERE r.dag = $1 AND t.state = 'running' AND ($2 = 1 OR t.lease_expires_at <= $3)
                 ORDER BY t.run_id",
                params![dag_name, i64::from(all), ms(now)],
            )
            .await?;
        let mut by_run: HashMap<i64, Vec<String>> = HashMap::new();
        for c in &candidates {
            by_run.entry(c.int(0)).or_default().push(c.text(1));
        }
        let mut out = Vec::new();
        for (run, tasks) in by_run {
            let dag = self.run_dag(run).await?;
            let reaped = retrying(|| async {
                let mut tx = self.db.begin().await?;
                tx.one("SELECT id FROM runs WHERE id = $1 {FOR_UPDATE}", params![run])
                    .await?;
                let mut reaped = Vec::new();
                let mut settled = Vec::new();
                for task in &tasks {
                    let Some(r) = tx
                        .one(
                            "SELECT tries, lease_owner, interruptions FROM task_instances
                             WHERE run_id = $1 AND task_id = $2 AND state = 'running'
                               AND ($3 = 1 OR lease_expires_at <= $4)",
                            params![run, task, i64::from(all), ms(now)],
                        )
                        .await?
                    else {
                        continue;
                    };
                    let (tries, owner, interruptions) = (r.int(0), r.text(1), r.int(2) + 1);
                    let state = if interruptions >= MAX_INTERRUPTIONS {
                        TaskState::Failed
                    } else {
                        TaskState::Queued
                    };
                    let why = if all {
                        format!("interrupted: the process running it ({owner}) stopped")
                    } else {
                        format!("lost: its worker ({owner}) stopped renewing the lease")
                    };
                    tx.exec(
                        "UPDATE task_instances SET state = $3, interruptions = $4, lease_owner = NULL,
                             lease_expires_at = NULL
                         WHERE run_id = $1 AND task_id = $2",
                        params![run, task, state.as_str(), interruptions],
                    )
                    .await?;
                    tx.exec(
                        "UPDATE attempts SET state = $4, ended_at = $5, error = $6, error_kind = 'interrupted'
                         WHERE run_id = $1 AND task_id = $2 AND try_number = $3",
                        params![
                            run,
                            task,
                            tries,
                            if all { "interrupted" } else { "lost" },
                            ms(now),
                            why
                        ],
                    )
                    .await?;
                    if state == TaskState::Failed {
                        let text = format!(
                            "{task} failed: interrupted {interruptions} times (its process kept dying)"
                        );
                        let e = Event {
                            key: format!("{run}/{task}/{tries}/failed"),
                            kind: "failed".to_owned(),
                            run_id: run,
                            task_id: Some(task.clone()),
                            body: event_body("failed", run, task, tries as u32, &text),
                        };
                        insert_event(&mut tx, &e, now).await?;
                        if let Some(i) = dag.get(task) {
                            settle(&mut tx, &dag, run, i, state, &mut settled).await?;
                        }
                    }
                    reaped.push(Reaped {
                        run_id: run,
                        task_id: task.clone(),
                        owner,
                        state,
                    });
                }
                end_run_if_done(&mut tx, run, now).await?;
                tx.commit().await?;
                Ok(reaped)
            })
            .await
            .map_err(|e| self.err(e))?;
            out.extend(reaped);
        }
        out.sort_by(|a, b| (a.run_id, &a.task_id).cmp(&(b.run_id, &b.task_id)));
        Ok(out)
    }

    /// `weir retry`: a finished run's failed, upstream-failed and skipped tasks
    /// become pending with a fresh retry budget, and the run runs again.
    /// Returns how many tasks were reset.
    pub async fn reset_for_retry(&self, run: i64, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let dag = self.run_dag(run).await?;
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let Some(r) = tx
                .one("SELECT state FROM runs WHERE id = $1 {FOR_UPDATE}", params![run])
                .await?
            else {
                return Err(DbError::Other(format!("there is no run {run}")));
            };
            if !RunState::parse(&r.text(0)).is_some_and(RunState::is_done) {
                return Err(DbError::Other(format!(
                    "run {run} is {}; only a finished run can be retried",
                    r.text(0)
                )));
            }
            let n = tx
                .exec(
                    "UPDATE task_instances SET state = 'pending', failures = 0, interruptions = 0,
                         next_try_at = NULL
                     WHERE run_id = $1 AND state IN ('failed', 'upstream_failed', 'skipped')",
                    params![run],
                )
                .await?;
            if n == 0 {
                // Nothing to run again: the run keeps its state and times.
                tx.commit().await?;
                return Ok(0);
            }
            recompute(&mut tx, &dag, run).await?;
            tx.exec(
                "UPDATE runs SET state = 'running', ended_at = NULL, started_at = coalesce(started_at, $2)
                 WHERE id = $1",
                params![run, ms(now)],
            )
            .await?;
            end_run_if_done(&mut tx, run, now).await?;
            tx.commit().await?;
            Ok(n as usize)
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Take unsent notifications to send: each is claimed for `hold`, so two
    /// processes never send the same one at once.
    pub async fn claim_events(
        &self,
        owner: &str,
        hold: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let rows = tx
                .query(
                    "SELECT key, kind, run_id, task_id, body FROM events
                     WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until <= $1)
                     ORDER BY created_at, key LIMIT 100 {SKIP_LOCKED}",
                    params![ms(now)],
                )
                .await?;
            let until = ms(now).saturating_add(dur_ms(hold));
            let mut out = Vec::new();
            for r in rows {
                tx.exec(
                    "UPDATE events SET claimed_by = $2, claimed_until = $3 WHERE key = $1",
                    params![r.text(0), owner, until],
                )
                .await?;
                out.push(Event {
                    key: r.text(0),
                    kind: r.text(1),
                    run_id: r.int(2),
                    task_id: r.opt_text(3),
                    body: serde_json::from_str(&r.text(4)).unwrap_or_default(),
                });
            }
            tx.commit().await?;
            Ok(out)
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Give back a claimed notification that could not be delivered, so the
    /// next process that dispatches tries it at once.
    pub async fn release_event(&self, key: &str) -> Result<(), StoreError> {
        self.write(
            "UPDATE events SET claimed_by = NULL, claimed_until = NULL WHERE key = $1 AND sent_at IS NULL",
            params![key],
        )
        .await
        .map(drop)
    }

    pub async fn mark_sent(&self, key: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(
            "UPDATE events SET sent_at = $2 WHERE key = $1",
            params![key, ms(now)],
        )
        .await
        .map(drop)
    }
}

/// The JSON body of a notification: Slack reads `text`; the rest is for machines.
pub fn event_body(
    kind: &str,
    run: i64,
    task: &str,
    try_number: u32,
    text: &str,
) -> serde_json::Value {
    serde_json::json!({
        "text": format!("weir: {text}"),
        "event": kind,
        "run_id": run,
        "task_id": task,
        "try": try_number,
    })
}

async fn insert_event(tx: &mut DbTx, e: &Event, now: DateTime<Utc>) -> Result<(), DbError> {
    // The key names what happened, so the same event raised again (after a
    // restart) is not queued twice.
    let mut body = e.body.clone();
    if let Some(o) = body.as_object_mut() {
        o.insert("id".to_owned(), serde_json::Value::String(e.key.clone()));
    }
    tx.exec(
        "INSERT INTO events (key, kind, run_id, task_id, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (key) DO NOTHING",
        params![
            &e.key,
            &e.kind,
            e.run_id,
            e.task_id.clone(),
            weir_config::scrub(&body.to_string()).into_owned(),
            ms(now)
        ],
    )
    .await?;
    Ok(())
}

/// Task `i` of `run` ended in `state`: count it in each dependant's upstream
/// counters and settle those whose trigger rule is now decided (queued, or
/// skipped/upstream-failed, which settles their own dependants in turn).
async fn settle(
    tx: &mut DbTx,
    dag: &Dag,
    run: i64,
    i: usize,
    state: TaskState,
    settled: &mut Vec<(String, TaskState)>,
) -> Result<(), DbError> {
    let mut stack = vec![(i, state)];
    while let Some((i, state)) = stack.pop() {
        for &d in dag.downstream(i) {
            let task = &dag.tasks[d];
            let Some(r) = tx
                .one(
                    "UPDATE task_instances SET ups_done = ups_done + 1, ups_success = ups_success + $3,
                         ups_failed = ups_failed + $4, ups_skipped = ups_skipped + $5
                     WHERE run_id = $1 AND task_id = $2
                     RETURNING state, ups_total, ups_done, ups_success, ups_failed, ups_skipped",
                    params![
                        run,
                        &task.id,
                        i64::from(state == TaskState::Success),
                        i64::from(state.is_failure()),
                        i64::from(state == TaskState::Skipped)
                    ],
                )
                .await?
            else {
                continue;
            };
            if r.text(0) != TaskState::Pending.as_str() {
                continue;
            }
            let up = Upstream {
                total: r.int(1),
                done: r.int(2),
                success: r.int(3),
                failed: r.int(4),
                skipped: r.int(5),
            };
            if let Some(next) = resolve(task.trigger_rule, up) {
                tx.exec(
                    "UPDATE task_instances SET state = $3 WHERE run_id = $1 AND task_id = $2",
                    params![run, &task.id, next.as_str()],
                )
                .await?;
                if next.is_done() {
                    settled.push((task.id.clone(), next));
                    stack.push((d, next));
                }
            }
        }
    }
    Ok(())
}

/// Rebuild every task's upstream counters from the states, and settle the
/// pending tasks (after `weir retry` reset some).
async fn recompute(tx: &mut DbTx, dag: &Dag, run: i64) -> Result<(), DbError> {
    let rows = tx
        .query(
            "SELECT task_id, state FROM task_instances WHERE run_id = $1",
            params![run],
        )
        .await?;
    let mut states = vec![TaskState::Pending; dag.tasks.len()];
    for r in rows {
        if let Some(i) = dag.get(&r.text(0)) {
            states[i] = TaskState::parse(&r.text(1)).unwrap_or(TaskState::Pending);
        }
    }
    // Tasks are in topological order: a task's upstream is settled first.
    for i in 0..dag.tasks.len() {
        let mut up = Upstream {
            total: dag.upstream(i).len() as i64,
            ..Upstream::default()
        };
        for &u in dag.upstream(i) {
            up.add(states[u]);
        }
        if states[i] == TaskState::Pending {
            if let Some(next) = resolve(dag.tasks[i].trigger_rule, up) {
                states[i] = next;
            }
        }
        tx.exec(
            "UPDATE task_instances SET state = $3, ups_done = $4, ups_success = $5, ups_failed = $6,
                 ups_skipped = $7
             WHERE run_id = $1 AND task_id = $2",
            params![
                run,
                &dag.tasks[i].id,
                states[i].as_str(),
                up.done,
                up.success,
                up.failed,
                up.skipped
            ],
        )
        .await?;
    }
    Ok(())
}

/// When no task of `run` is left to run, the run ends: failed if any task
/// failed, else success. Returns the new state then.
async fn end_run_if_done(
    tx: &mut DbTx,
    run: i64,
    now: DateTime<Utc>,
) -> Result<Option<RunState>, DbError> {
    let Some(r) = tx
        .one(
            "SELECT
                 sum(CASE WHEN state IN ('success', 'failed', 'skipped', 'upstream_failed') THEN 0 ELSE 1 END),
                 sum(CASE WHEN state IN ('failed', 'upstream_failed') THEN 1 ELSE 0 END)
             FROM task_instances WHERE run_id = $1",
            params![run],
        )
        .await?
    else {
        return Ok(None);
    };
    if r.int(0) > 0 {
        return Ok(None);
    }
    let state = if r.int(1) > 0 {
        RunState::Failed
    } else {
        RunState::Success
    };
    let n = tx
        .exec(
            "UPDATE runs SET state = $2, ended_at = $3 WHERE id = $1 AND state = 'running'",
            params![run, state.as_str(), ms(now)],
        )
        .await?;
    Ok((n > 0).then_some(state))
}
