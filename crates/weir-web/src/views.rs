//! What pages and the API show, built once for both: a page renders these
//! structures, `/api/v1` returns them as JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use weir_config::WarehouseTarget;
use weir_orchestrate::dag::RunParams;
use weir_orchestrate::store::{ts, AttemptRow, RunFilter, RunRow, RunState};
use weir_pipeline::runs;

use crate::{Ui, WebError};

/// Runs a page lists.
pub const PER_PAGE: usize = 50;
/// The furthest page a runs list goes to.
pub const MAX_PAGE: usize = 1_000_000;
/// The largest byte offset or page length a log request may name (2^53 - 1,
/// what every JSON client holds exactly).
pub const MAX_LOG_NUMBER: u64 = 9_007_199_254_740_991;
/// Runs a grid shows side by side.
pub const GRID_RUNS: usize = 12;

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub dag: String,
    pub kind: String,
    /// As a person should read it (`stopped`: left running by a process that is gone).
    pub state: String,
    pub interval_start: String,
    pub interval_end: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub seconds: Option<f64>,
    pub tasks: BTreeMap<String, usize>,
    /// What the run was asked for beyond the whole pipeline.
    pub params: RunParams,
    /// The same, as a person reads it (empty: the whole pipeline).
    pub asked: String,
}

fn secs(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// `someone_runs`: whether a process holds the project (read once a request).
pub fn summary(r: &RunRow, someone_runs: bool, tasks: BTreeMap<String, usize>) -> RunSummary {
    RunSummary {
        id: r.id,
        dag: r.dag.clone(),
        kind: r.kind.clone(),
        state: runs::shown_state(r, someone_runs).to_owned(),
        interval_start: ts(r.interval.start),
        interval_end: ts(r.interval.end),
        created_at: ts(r.created_at),
        started_at: r.started_at.map(ts),
        ended_at: r.ended_at.map(ts),
        seconds: r.started_at.zip(r.ended_at).map(|(s, e)| secs(s, e)),
        tasks,
        params: r.params.clone(),
        asked: r.params.describe(),
    }
}

#[derive(Debug, Serialize)]
pub struct RunsPage {
    pub runs: Vec<RunSummary>,
    pub page: usize,
    pub has_next: bool,
    pub state: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct RunsQuery {
    pub state: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub page: Option<usize>,
}

fn date(s: &Option<String>, what: &str) -> Result<Option<DateTime<Utc>>, WebError> {
    match s.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => weir_config::parse_start_date(v).map(Some).ok_or_else(|| {
            WebError::bad_request(format!(
                "{what} `{v}` is not a date (YYYY-MM-DD) or RFC 3339"
            ))
        }),
    }
}

pub async fn runs_page(ui: &Ui, q: &RunsQuery) -> Result<RunsPage, WebError> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            WebError::bad_request(format!(
                "state `{s}` is none of queued, running, success, failed"
            ))
        })?),
    };
    let filter = RunFilter {
        state,
        from: date(&q.from, "from")?,
        to: date(&q.to, "to")?,
    };
    let page = q.page.unwrap_or(1);
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(WebError::bad_request(format!(
            "page {page} is not between 1 and {MAX_PAGE}"
        )));
    }
    let mut rows = ui
        .store()
        .runs_page(&filter, PER_PAGE + 1, (page - 1) * PER_PAGE)
        .await?;
    let has_next = rows.len() > PER_PAGE;
    rows.truncate(PER_PAGE);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut counts = ui.store().task_counts(&ids).await?;
    let someone = ui.ws.someone_runs(ui.store());
    Ok(RunsPage {
        runs: rows
            .iter()
            .map(|r| summary(r, someone, counts.remove(&r.id).unwrap_or_default()))
            .collect(),
        page,
        has_next,
        state: q.state.clone().filter(|s| !s.is_empty()),
        from: q.from.clone().filter(|s| !s.is_empty()),
        to: q.to.clone().filter(|s| !s.is_empty()),
    })
}

/// One task of a run with what its attempts did.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub group: String,
    pub state: String,
    pub tries: u32,
    pub seconds: Option<f64>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub error_kind: Option<String>,
    pub error_code: Option<String>,
}

/// The group a task is drawn in: `extract`, `load`, `model`, `test`…
pub fn group_of(task: &str) -> &str {
    task.split('.').next().unwrap_or(task)
}

#[derive(Debug, Serialize)]
pub struct RunDetail {
    pub run: RunSummary,
    pub stages: Vec<runs::Stage>,
    pub tasks: Vec<TaskView>,
}

pub async fn run_detail(ui: &Ui, id: i64) -> Result<(RunDetail, Vec<AttemptRow>), WebError> {
    let Some(r) = ui.store().run(id).await? else {
        return Err(WebError::not_found(format!("there is no run {id}")));
    };
    let dag = ui.store().run_dag(id).await?;
    let tasks = ui.store().tasks(id).await?;
    let attempts = ui.store().attempt_summaries(id, None).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tasks {
        *counts.entry(t.state.as_str().to_owned()).or_default() += 1;
    }
    let by_id: BTreeMap<&str, &weir_orchestrate::store::TaskRow> =
        tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
    let mut last: BTreeMap<&str, &AttemptRow> = BTreeMap::new();
    for a in &attempts {
        let e = last.entry(a.task_id.as_str()).or_insert(a);
        if a.try_number >= e.try_number {
            *e = a;
        }
    }
    let views = dag
        .tasks
        .iter()
        .map(|t| {
            let row = by_id.get(t.id.as_str());
            let a = last.get(t.id.as_str());
            TaskView {
                id: t.id.clone(),
                group: group_of(&t.id).to_owned(),
                state: row.map_or("pending", |r| r.state.as_str()).to_owned(),
                tries: row.map_or(0, |r| r.tries),
                seconds: a.and_then(|a| a.ended_at.map(|e| secs(a.started_at, e))),
                rows: a.and_then(|a| a.rows),
                bytes: a.and_then(|a| a.bytes),
                error_kind: a.and_then(|a| a.error_kind.clone()),
                error_code: a.and_then(|a| a.error_code.clone()),
            }
        })
        .collect();
    let stages = runs::stages_of(&attempts);
    Ok((
        RunDetail {
            run: summary(&r, ui.ws.someone_runs(ui.store()), counts),
            stages,
            tasks: views,
        },
        attempts,
    ))
}

/// Tasks (rows, in the DAG's order) against recent runs (columns, newest first).
#[derive(Debug, Serialize)]
pub struct Grid {
    pub runs: Vec<RunSummary>,
    pub rows: Vec<GridRow>,
}

#[derive(Debug, Serialize)]
pub struct GridRow {
    pub task: String,
    pub group: String,
    /// `(state, tries)` per column; `None` where that run has no such task.
    pub cells: Vec<Option<(String, u32)>>,
}

pub async fn grid(ui: &Ui, detail: &RunDetail) -> Result<Grid, WebError> {
    let cols = ui
        .store()
        .runs_before(&detail.run.dag, detail.run.id, GRID_RUNS)
        .await?;
    let ids: Vec<i64> = cols.iter().map(|r| r.id).collect();
    let mut cells: BTreeMap<(i64, String), (String, u32)> = BTreeMap::new();
    for c in ui.store().cells(&ids).await? {
        cells.insert(
            (c.run_id, c.task_id),
            (c.state.as_str().to_owned(), c.tries),
        );
    }
    let rows = detail
        .tasks
        .iter()
        .map(|t| GridRow {
            task: t.id.clone(),
            group: t.group.clone(),
            cells: ids
                .iter()
                .map(|&r| cells.get(&(r, t.id.clone())).cloned())
                .collect(),
        })
        .collect();
    let someone = ui.ws.someone_runs(ui.store());
    Ok(Grid {
        runs: cols
            .iter()
            .map(|r| summary(r, someone, BTreeMap::new()))
            .collect(),
        rows,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub run_id: i64,
    pub task_id: String,
    pub try_number: u32,
    pub state: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub seconds: Option<f64>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    /// The SQLSTATE of a database error.
    pub error_code: Option<String>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub peak_rss_mb: Option<u64>,
    pub owner: String,
}

pub fn attempt_view(run: i64, a: &AttemptRow) -> AttemptView {
    AttemptView {
        run_id: run,
        task_id: a.task_id.clone(),
        try_number: a.try_number,
        state: a.state.clone(),
        started_at: ts(a.started_at),
        ended_at: a.ended_at.map(ts),
        seconds: a.ended_at.map(|e| secs(a.started_at, e)),
        error: a
            .error
            .as_deref()
            .map(|e| weir_config::scrub(e).into_owned()),
        error_kind: a.error_kind.clone(),
        error_code: a.error_code.clone(),
        rows: a.rows,
        bytes: a.bytes,
        peak_rss_mb: a.peak_rss_kb.map(|k| k / 1024),
        owner: a.owner.clone(),
    }
}

/// The attempt `try_number` of `task` in `run` (the newest when 0).
pub async fn attempt(
    ui: &Ui,
    run: i64,
    task: &str,
    try_number: u32,
) -> Result<AttemptRow, WebError> {
    let all = ui.store().attempt_summaries(run, Some(task)).await?;
    pick(all, run, task, try_number)
}

/// Attempt `try_number` (the newest when 0) out of a task's attempts.
pub fn pick(
    all: Vec<AttemptRow>,
    run: i64,
    task: &str,
    try_number: u32,
) -> Result<AttemptRow, WebError> {
    let found = if try_number == 0 {
        all.into_iter().max_by_key(|a| a.try_number)
    } else {
        all.into_iter().find(|a| a.try_number == try_number)
    };
    found.ok_or_else(|| {
        WebError::not_found(format!(
            "run {run} has no attempt {try_number} of task {task}"
        ))
    })
}

#[derive(Debug, Serialize)]
pub struct Home {
    pub dag: String,
    pub tasks: usize,
    pub schedule: String,
    pub paused: bool,
    pub next_due: Option<String>,
    pub last_run: Option<RunSummary>,
    pub failures: Vec<FailureView>,
    pub running: Vec<RunningView>,
    pub source: Option<String>,
    pub warehouse: String,
    pub metadata: String,
    /// The source tables a triggered run may be limited to.
    pub tables: Vec<String>,
    /// Whether the pipeline builds a dbt project (a selector applies).
    pub dbt: bool,
}

#[derive(Debug, Serialize)]
pub struct FailureView {
    pub run_id: i64,
    pub task_id: String,
    pub try_number: u32,
    pub ended_at: String,
    pub error: String,
    pub error_kind: Option<String>,
    pub error_code: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RunningView {
    pub run_id: i64,
    pub task_id: String,
    pub owner: Option<String>,
    pub started_at: Option<String>,
}

pub fn describe_warehouse(t: &WarehouseTarget) -> String {
    match t {
        WarehouseTarget::DuckDb { path } => format!("DuckDB {}", path.display()),
        WarehouseTarget::Postgres { url } => format!("PostgreSQL {}", url.redacted()),
        WarehouseTarget::BigQuery(b) => format!("BigQuery project {}", b.project),
    }
}

pub async fn home(ui: &Ui) -> Result<Home, WebError> {
    let cfg = &ui.ws.config;
    let dag = ui.dag().name.clone();
    let now = Utc::now();
    let last = ui
        .store()
        .runs_page(&RunFilter::default(), 1, 0)
        .await?
        .into_iter()
        .next();
    let last_run = match last {
        Some(r) => {
            let mut c = ui.store().task_counts(&[r.id]).await?;
            Some(summary(
                &r,
                ui.ws.someone_runs(ui.store()),
                c.remove(&r.id).unwrap_or_default(),
            ))
        }
        None => None,
    };
    let next_due = ui
        .ws
        .schedule()
        .ok()
        .and_then(|s| s.next_due_at(now))
        .map(ts);
    let failures = ui
        .store()
        .failures_since(now - chrono::Duration::days(1), 20)
        .await?
        .into_iter()
        .map(|f| FailureView {
            run_id: f.run_id,
            task_id: f.task_id,
            try_number: f.try_number,
            ended_at: ts(f.ended_at),
            error: weir_config::scrub(
                f.error
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or(""),
            )
            .into_owned(),
            error_kind: f.error_kind,
            error_code: f.error_code,
        })
        .collect();
    let running = ui
        .store()
        .running_tasks(50)
        .await?
        .into_iter()
        .map(|r| RunningView {
            run_id: r.run_id,
            task_id: r.task_id,
            owner: r.owner,
            started_at: r.started_at.map(ts),
        })
        .collect();
    Ok(Home {
        tasks: ui.dag().tasks.len(),
        schedule: cfg
            .schedule
            .clone()
            .unwrap_or_else(|| "none (manual runs only)".to_owned()),
        paused: ui.store().is_paused(&dag).await?,
        dag,
        next_due,
        last_run,
        failures,
        running,
        source: ui
            .ws
            .project
            .source
            .as_ref()
            .map(|s| format!("PostgreSQL {} schema {}", s.url.redacted(), s.schema)),
        warehouse: describe_warehouse(&ui.ws.project.warehouse.target),
        metadata: ui.store().describe(),
        tables: ui.pipeline.tables.clone(),
        dbt: ui.pipeline.dbt().is_some(),
    })
}
