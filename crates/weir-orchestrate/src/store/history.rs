//! Bounded reads for pages that show the history: a page of runs by state
//! and interval, task states of several runs at once, recent failures and
//! what runs now. Each is one indexed query with a limit, so a page costs
//! the same at ten runs and at ten thousand.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{from_ms, ms, run_row, RunRow, RunState, Store, StoreError, TaskState, RUN_COLUMNS};
use crate::db::{params, Value};

/// Which runs a page lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<RunState>,
    /// Runs whose interval starts at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Runs whose interval starts before this.
    pub to: Option<DateTime<Utc>>,
}

/// One task of one run, as a grid cell shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub run_id: i64,
    pub task_id: String,
    pub state: TaskState,
    pub tries: u32,
}

/// A failed attempt, for the home page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub run_id: i64,
    pub task_id: String,
    pub try_number: u32,
    pub ended_at: DateTime<Utc>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub error_code: Option<String>,
}

/// A task running now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub run_id: i64,
    pub task_id: String,
    pub owner: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
}

/// A task of a recent run with its last attempt: what the Models and
/// Sources pages show of a node or a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskHistory {
    pub run_id: i64,
    pub task_id: String,
    pub state: TaskState,
    pub tries: u32,
    pub output: Option<serde_json::Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
}

fn id_list(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Newest first, `limit` runs after skipping `offset`.
    pub async fn runs_page(
        &self,
        filter: &RunFilter,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE ($1 = '' OR state = $1) AND interval_start >= $2 AND interval_start < $3
             ORDER BY id DESC LIMIT $4 OFFSET $5"
        );
        let rows = self
            .read(
                &sql,
                params![
                    filter.state.map_or("", RunState::as_str),
                    filter.from.map_or(i64::MIN, ms),
                    filter.to.map_or(i64::MAX, ms),
                    limit,
                    offset
                ],
            )
            .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    /// Runs of `dag` with an id at most `upto`, newest first: the columns of a grid.
    pub async fn runs_before(
        &self,
        dag: &str,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE dag = $1 AND id <= $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = self.read(&sql, params![dag, upto, limit]).await?;
        Ok(rows.iter().map(run_row).collect())
    }

    /// The task states of several runs (at most a page's worth).
    pub async fn cells(&self, runs: &[i64]) -> Result<Vec<Cell>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT run_id, task_id, state, tries FROM task_instances WHERE run_id IN ({})",
            id_list(1, runs.len())
        );
        let p: Vec<Value> = runs.iter().map(|&r| Value::from(r)).collect();
        let rows = self.read(&sql, &p).await?;
        Ok(rows
            .iter()
            .map(|r| Cell {
                run_id: r.int(0),
                task_id: r.text(1),
                state: TaskState::parse(&r.text(2)).unwrap_or(TaskState::Pending),
                tries: r.int(3) as u32,
            })
            .collect())
    }

    /// How many tasks of each run are in each state.
    pub async fn task_counts(
        &self,
        runs: &[i64],
    ) -> Result<BTreeMap<i64, BTreeMap<String, usize>>, StoreError> {
        let mut out: BTreeMap<i64, BTreeMap<String, usize>> = BTreeMap::new();
        if runs.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT run_id, state, COUNT(*) FROM task_instances WHERE run_id IN ({})
             GROUP BY run_id, state",
            id_list(1, runs.len())
        );
        let p: Vec<Value> = runs.iter().map(|&r| Value::from(r)).collect();
        for r in self.read(&sql, &p).await? {
            out.entry(r.int(0))
                .or_default()
                .insert(r.text(1), r.int(2) as usize);
        }
        Ok(out)
    }

    /// Attempts that failed since `since`, newest first.
    pub async fn failures_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Failure>, StoreError> {
        let rows = self
            .read(
                "SELECT run_id, task_id, try_number, ended_at, error, error_kind, error_code
                 FROM attempts WHERE state = 'failed' AND ended_at >= $1
                 ORDER BY ended_at DESC LIMIT $2",
                params![ms(since), limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Failure {
                run_id: r.int(0),
                task_id: r.text(1),
                try_number: r.int(2) as u32,
                ended_at: from_ms(r.int(3)),
                error: r.opt_text(4),
                error_kind: r.opt_text(5),
                error_code: r.opt_text(6),
            })
            .collect())
    }

    /// Tasks running now, oldest attempt first.
    pub async fn running_tasks(&self, limit: usize) -> Result<Vec<Running>, StoreError> {
        let rows = self
            .read(
                "SELECT t.run_id, t.task_id, t.lease_owner, a.started_at
                 FROM task_instances t
                 LEFT JOIN attempts a ON a.run_id = t.run_id AND a.task_id = t.task_id
                     AND a.try_number = t.tries
                 WHERE t.state = 'running' ORDER BY a.started_at LIMIT $1",
                params![limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Running {
                run_id: r.int(0),
                task_id: r.text(1),
                owner: r.opt_text(2),
                started_at: r.opt_int(3).map(from_ms),
            })
            .collect())
    }

    /// The tasks whose ids start with one of `prefixes` (`extract.`,
    /// `model.`: literal text, no `%` or `_`) in the last `runs` runs of
    /// `dag`, newest run first, each with its last attempt (the first 500
    /// characters of its error).
    pub async fn recent_tasks(
        &self,
        dag: &str,
        prefixes: &[&str],
        runs: usize,
    ) -> Result<Vec<TaskHistory>, StoreError> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        debug_assert!(prefixes.iter().all(|p| !p.contains(['%', '_'])));
        let like: Vec<String> = (0..prefixes.len())
            .map(|i| format!("t.task_id LIKE ${}", i + 3))
            .collect();
        let sql = format!(
            "SELECT t.run_id, t.task_id, t.state, t.tries, t.output, a.started_at, a.ended_at,
                 a.rows_moved, a.bytes_moved, substr(a.error, 1, 500)
             FROM task_instances t
             LEFT JOIN attempts a ON a.run_id = t.run_id AND a.task_id = t.task_id
                 AND a.try_number = t.tries
             WHERE t.run_id IN (SELECT id FROM runs WHERE dag = $1 ORDER BY id DESC LIMIT $2)
                 AND ({})
             ORDER BY t.run_id DESC, t.ord",
            like.join(" OR ")
        );
        let mut p: Vec<Value> = vec![Value::from(dag), Value::from(runs)];
        p.extend(prefixes.iter().map(|x| Value::from(format!("{x}%"))));
        let rows = self.read(&sql, &p).await?;
        Ok(rows
            .iter()
            .map(|r| TaskHistory {
                run_id: r.int(0),
                task_id: r.text(1),
                state: TaskState::parse(&r.text(2)).unwrap_or(TaskState::Pending),
                tries: r.int(3) as u32,
                output: r.opt_text(4).and_then(|o| serde_json::from_str(&o).ok()),
                started_at: r.opt_int(5).map(from_ms),
                ended_at: r.opt_int(6).map(from_ms),
                rows: r.opt_int(7).map(|v| v as u64),
                bytes: r.opt_int(8).map(|v| v as u64),
                error: r.opt_text(9),
            })
            .collect())
    }

    /// A cheap fingerprint of the history: it changes whenever a run or an
    /// attempt does, so live pages know when to look again.
    pub async fn change_mark(&self) -> Result<String, StoreError> {
        let rows = self
            .read(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM runs),
                     (SELECT COUNT(*) FROM runs WHERE state IN ('running', 'queued')),
                     (SELECT COALESCE(MAX(ended_at), 0) FROM runs),
                     (SELECT COUNT(*) FROM attempts WHERE run_id >= (SELECT COALESCE(MIN(id),
                         (SELECT COALESCE(MAX(id), 0) + 1 FROM runs)) FROM runs WHERE state IN ('running', 'queued'))),
                     (SELECT COALESCE(MAX(ended_at), 0) FROM attempts WHERE run_id >= (SELECT COALESCE(MIN(id),
                         (SELECT COALESCE(MAX(id), 0) + 1 FROM runs)) FROM runs WHERE state IN ('running', 'queued')))",
                params![],
            )
            .await?;
        Ok(rows.first().map_or_else(String::new, |r| {
            (0..5)
                .map(|i| r.int(i).to_string())
                .collect::<Vec<_>>()
                .join(".")
        }))
    }
}
