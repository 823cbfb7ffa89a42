//! Backfill: the schedule's intervals in a date range, each a run. The plan
//! is computed once, the same way for the CLI's `weir backfill` and the UI's
//! preview, so what the preview shows is what runs.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_orchestrate::dag::Dag;
use weir_orchestrate::schedule::{Interval, Schedule};
use weir_orchestrate::store::{RunKind, RunState, Store};
use weir_orchestrate::worker::{Observer, Scope, WorkEnd};

use crate::runs::Prepared;
use crate::{LifecycleError, Workspace};

/// The intervals a backfill from `from` to `to` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub intervals: Vec<Interval>,
}

/// The intervals of the project's schedule that lie whole between `from`
/// and `to` (YYYY-MM-DD or RFC 3339), refused past `max_runs`.
pub fn plan(ws: &Workspace, from: &str, to: &str, max_runs: usize) -> Result<Plan, LifecycleError> {
    let parse = |s: &str, what: &str| {
        weir_config::parse_start_date(s).ok_or_else(|| {
            LifecycleError::usage(format!(
                "{what} `{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
    };
    let (start, end) = (parse(from, "from")?, parse(to, "to")?);
    if start >= end {
        return Err(LifecycleError::usage(format!(
            "from {from} is not before to {to}: the range holds no interval"
        )));
    }
    let schedule = ws.schedule()?;
    if !matches!(schedule, Schedule::Cron { .. }) {
        return Err(LifecycleError::usage(
            "backfill needs a periodic `orchestrate.schedule` (e.g. @daily) to cut intervals",
        ));
    }
    let intervals = schedule.between(start, end, max_runs.saturating_add(1));
    if intervals.len() > max_runs {
        return Err(LifecycleError::usage(format!(
            "{from} to {to} holds more than {max_runs} intervals of the schedule (each a run); narrow the range, or raise the limit"
        )));
    }
    if intervals.is_empty() {
        return Err(LifecycleError::usage(format!(
            "no whole interval of the schedule lies between {from} and {to}"
        )));
    }
    Ok(Plan {
        from: start,
        to: end,
        intervals,
    })
}

/// Create the plan's runs, `queued`: the scheduler of a running `weir up`
/// starts them within `max_active_runs`. Returns the runs created.
pub async fn enqueue(
    ws: &Workspace,
    store: &Store,
    dag: &Dag,
    plan: &Plan,
) -> Result<Vec<i64>, LifecycleError> {
    let mut ids = Vec::new();
    for iv in &plan.intervals {
        if let Some(id) = store
            .create_run(
                dag,
                RunKind::Backfill,
                *iv,
                RunState::Queued,
                ws.config.max_active_tasks,
                Utc::now(),
            )
            .await?
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// How a foreground backfill ended.
pub struct Outcome {
    pub runs: Vec<i64>,
    pub failed: usize,
    /// The run shutdown stopped at, if it came.
    pub stopped_at: Option<i64>,
}

/// Run the plan's intervals one after another in this process (`weir
/// backfill`), telling `started` of each run as it begins.
pub async fn run(
    ws: &Workspace,
    prepared: &Prepared,
    plan: &Plan,
    observer: Arc<dyn Observer>,
    shutdown: CancellationToken,
    mut started: impl FnMut(i64, Interval),
) -> Result<Outcome, LifecycleError> {
    let (store, dag) = (&prepared.store, &prepared.pipeline.dag);
    let runner = prepared.pipeline.runner(store.clone());
    let mut out = Outcome {
        runs: Vec::new(),
        failed: 0,
        stopped_at: None,
    };
    for iv in &plan.intervals {
        let Some(id) = store
            .create_run(
                dag,
                RunKind::Backfill,
                *iv,
                RunState::Running,
                ws.config.max_active_tasks,
                Utc::now(),
            )
            .await?
        else {
            continue;
        };
        started(id, *iv);
        out.runs.push(id);
        let worker = ws.worker(
            store,
            runner.clone(),
            ws.config.max_active_tasks,
            observer.clone(),
        );
        match worker.work(Scope::Run(id), shutdown.clone()).await? {
            WorkEnd::Run(RunState::Success) => {}
            WorkEnd::Run(_) => out.failed += 1,
            WorkEnd::Stopped => {
                out.stopped_at = Some(id);
                break;
            }
        }
    }
    let _ =
        weir_orchestrate::notify::dispatch(store, &ws.config.notify, &weir_orchestrate::owner())
            .await;
    Ok(out)
}
