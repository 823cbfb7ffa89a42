//! Runs: creating, resuming, recovering and retrying them, and what a person
//! should be told about one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_config::OrchestrateConfig;
use weir_orchestrate::dag::{Dag, RunParams};
use weir_orchestrate::pipeline::Pipeline;
use weir_orchestrate::schedule::{Interval, Schedule};
use weir_orchestrate::scheduler::Scheduler;
use weir_orchestrate::store::{AttemptRow, Reaped, RunKind, RunRow, RunState, Store};
use weir_orchestrate::worker::{Scope, WorkEnd, Worker};
use weir_orchestrate::ProjectLock;

use crate::{LifecycleError, Workspace};

/// What every command that runs tasks holds: the store, the lock (SQLite),
/// the pipeline, and what was recovered on the way in.
pub struct Prepared {
    pub store: Arc<Store>,
    pub lock: Option<ProjectLock>,
    pub pipeline: Arc<Pipeline>,
    /// Tasks a process that stopped had left running, handed back.
    pub recovered: Vec<Reaped>,
}

/// Open the store, take the lock, load the pipeline, hand back what a dead
/// process left running, and send the notifications it left unsent.
pub async fn prepare(ws: &Workspace) -> Result<Prepared, LifecycleError> {
    let store = ws.store().await?;
    let lock = ws.lock(&store)?;
    let pipeline = ws.pipeline().await?;
    let recovered = recover(&store, &pipeline.dag.name).await?;
    let _ =
        weir_orchestrate::notify::dispatch(&store, &ws.config.notify, &weir_orchestrate::owner())
            .await;
    Ok(Prepared {
        store,
        lock,
        pipeline: Arc::new(pipeline),
        recovered,
    })
}

/// With the lock held (SQLite), every attempt still `running` belongs to a
/// process that died: hand those tasks back. On a shared store the leases
/// expire instead, and the scheduler reaps them.
pub async fn recover(store: &Store, dag: &str) -> Result<Vec<Reaped>, LifecycleError> {
    if store.is_shared() {
        return Ok(Vec::new());
    }
    Ok(store.reap(dag, true, Utc::now()).await?)
}

/// A new manual run of `dag`, running now (its interval is the moment it
/// was asked for): `weir run`, `weir run --detach`, the UI's Trigger.
pub async fn create_manual(
    store: &Store,
    dag: &Dag,
    cfg: &OrchestrateConfig,
) -> Result<i64, LifecycleError> {
    let now = Utc::now();
    store
        .create_run(
            dag,
            RunKind::Manual,
            Interval {
                start: now,
                end: now,
            },
            RunState::Running,
            cfg.max_active_tasks,
            now,
        )
        .await?
        .ok_or_else(|| LifecycleError::usage("could not create a run"))
}

/// A new manual run asked to do `params`: the whole pipeline, or the part
/// its tables and dbt selector name (an unknown table or a selector that
/// picks nothing is refused before any run exists).
pub async fn create_with(
    store: &Store,
    pipeline: &Pipeline,
    cfg: &OrchestrateConfig,
    params: &RunParams,
) -> Result<i64, LifecycleError> {
    let dag = pipeline.dag_for(params)?;
    create_manual(store, &dag, cfg).await
}

/// The run `weir run` works on.
pub enum Started {
    /// The newest unfinished manual run, picked up where it stopped.
    Resumed(RunRow),
    /// A new manual run.
    Created(i64),
}

impl Started {
    pub fn id(&self) -> i64 {
        match self {
            Started::Resumed(r) => r.id,
            Started::Created(id) => *id,
        }
    }
}

/// Resume the newest unfinished manual run, or (`new`, or none) create one.
/// The run resumed must have been asked for the same `params`: an
/// unfinished run asked for others is refused, with the command that
/// resumes it, rather than left behind for a new one.
pub async fn start_manual(
    store: &Store,
    pipeline: &Pipeline,
    cfg: &OrchestrateConfig,
    params: &RunParams,
    new: bool,
) -> Result<Started, LifecycleError> {
    if !new {
        let newest = store
            .runs_in_state(&pipeline.dag.name, RunState::Running)
            .await?
            .into_iter()
            .filter(|r| r.kind == RunKind::Manual.as_str())
            .max_by_key(|r| r.id);
        match newest {
            Some(r) if r.params == *params => return Ok(Started::Resumed(r)),
            Some(r) => {
                let asked = r.params.describe();
                return Err(LifecycleError::usage(format!(
                    "run {} is unfinished and was asked for {}: `weir run{}` resumes it, \
                     `weir run --new{}` starts another",
                    r.id,
                    if asked.is_empty() {
                        "the whole pipeline".to_owned()
                    } else {
                        asked
                    },
                    r.params.flags(),
                    params.flags()
                )));
            }
            None => {}
        }
    }
    Ok(Started::Created(
        create_with(store, pipeline, cfg, params).await?,
    ))
}

/// What working one run to its end did.
pub struct RunReport {
    pub run_id: i64,
    /// `None`: stopped (Ctrl-C) before it ended.
    pub state: Option<RunState>,
    pub seconds: f64,
    /// Per stage, from the run's first attempt: when its first task started
    /// and its last ended, in seconds (stages overlap: a table loads while
    /// others are still extracted).
    pub stages: Vec<Stage>,
    /// What the run was asked for.
    pub params: RunParams,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub from: f64,
    pub to: f64,
}

/// Run `run` to its end (or until `shutdown`) with `worker`, send what is to
/// be told, and report it.
pub async fn work_run(
    worker: &Worker,
    store: &Store,
    cfg: &OrchestrateConfig,
    run: i64,
    t0: Instant,
    shutdown: CancellationToken,
) -> Result<RunReport, LifecycleError> {
    let end = worker.work(Scope::Run(run), shutdown).await?;
    let _ = weir_orchestrate::notify::dispatch(store, &cfg.notify, &worker.opts.owner).await;
    Ok(RunReport {
        run_id: run,
        state: match end {
            WorkEnd::Run(s) => Some(s),
            WorkEnd::Stopped => None,
        },
        seconds: t0.elapsed().as_secs_f64(),
        stages: stages(store, run).await?,
        params: store.run_dag(run).await?.params.clone(),
    })
}

/// The stage a task belongs to, by its id's prefix.
pub fn stage_of(task: &str) -> &'static str {
    if task == "transform.setup" {
        return "start";
    }
    match task.split('.').next().unwrap_or("") {
        "start" => "start",
        "extract" => "extract",
        "load" => "load",
        "transform" | "model" | "seed" | "test" | "snapshot" => "transform",
        "end" => "end",
        _ => "other",
    }
}

/// The stages in the order a run goes through them.
pub const STAGES: [&str; 6] = ["start", "extract", "load", "transform", "other", "end"];

/// When each stage of `run` began and ended, in seconds from its first attempt.
pub async fn stages(store: &Store, run: i64) -> Result<Vec<Stage>, LifecycleError> {
    Ok(stages_of(&store.attempt_summaries(run, None).await?))
}

/// The stages of a run from its attempts.
pub fn stages_of(attempts: &[AttemptRow]) -> Vec<Stage> {
    let Some(first) = attempts.iter().map(|a| a.started_at).min() else {
        return Vec::new();
    };
    let mut spans: BTreeMap<&'static str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for a in attempts {
        let Some(e) = a.ended_at else { continue };
        let span = spans
            .entry(stage_of(&a.task_id))
            .or_insert((a.started_at, e));
        span.0 = span.0.min(a.started_at);
        span.1 = span.1.max(e);
    }
    let secs = |t: DateTime<Utc>| (t - first).num_milliseconds() as f64 / 1000.0;
    STAGES
        .into_iter()
        .filter_map(|name| {
            spans.get(name).map(|(s, e)| Stage {
                name,
                from: secs(*s),
                to: secs(*e),
            })
        })
        .collect()
}

/// A run's state as a person should read it: on the single-process store,
/// a run left `running` by a process that is gone is `stopped` (the next
/// `weir run` resumes it).
pub fn shown_state(run: &RunRow, someone_runs: bool) -> &'static str {
    match run.state {
        RunState::Running if !someone_runs => "stopped",
        s => s.as_str(),
    }
}

/// What asking for a retry did.
pub struct Retry {
    pub run: RunRow,
    /// Failed and skipped tasks queued again (0: nothing to retry).
    pub reset: usize,
}

/// Queue run `id`'s failed and skipped tasks again; a worker (this
/// process's, or `weir up`'s) then runs them with today's weir.yml.
pub async fn retry(store: &Store, id: i64) -> Result<Retry, LifecycleError> {
    let Some(run) = store.run(id).await? else {
        return Err(no_run(id));
    };
    recover(store, &run.dag).await?;
    let reset = store
        .reset_for_retry(run.id, Utc::now())
        .await
        .map_err(|e| match e.refusal() {
            Some(m) => LifecycleError::Conflict(m.to_owned()),
            None => LifecycleError::Store(e),
        })?;
    Ok(Retry { run, reset })
}

pub fn no_run(id: i64) -> LifecycleError {
    LifecycleError::NotFound(format!("there is no run {id}; `weir runs` lists them"))
}

/// The scheduler `weir up` serves. Without a `start_date` the schedule starts
/// with the interval `weir up` first ran in (the oldest scheduled run), so a
/// restart does not move it: the first run comes at the next tick.
pub async fn scheduler(
    ws: &Workspace,
    store: &Arc<Store>,
    dag: &Dag,
    schedule: Schedule,
) -> Result<Scheduler, LifecycleError> {
    let cfg = &ws.config;
    let start_date = match cfg.start_date {
        Some(d) => d,
        None => match store.first_scheduled_start(&dag.name).await? {
            Some(d) => d,
            None => schedule.prev_tick(Utc::now()).unwrap_or_else(Utc::now),
        },
    };
    Ok(Scheduler {
        store: store.clone(),
        dag: dag.clone(),
        schedule,
        start_date,
        catchup: cfg.catchup,
        max_active_runs: cfg.max_active_runs,
        max_active_tasks: cfg.max_active_tasks,
    })
}
