//! `weir run`, `weir up`, `weir worker`, `weir runs`, `weir logs`, `weir retry`,
//! `weir backfill`: the pipeline as a DAG, with its history in the metadata
//! store (`.weir/metadata.db`, or `orchestrate.metadata: postgres://…`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use clap::Args;
use tokio_util::sync::CancellationToken;
use weir_config::{OrchestrateConfig, Project};
use weir_orchestrate::dag::Dag;
use weir_orchestrate::pipeline::{state_dir, Pipeline};
use weir_orchestrate::schedule::{Interval, Schedule, SystemClock};
use weir_orchestrate::scheduler::Scheduler;
use weir_orchestrate::store::{ts, RunKind, RunState, Store, TaskState};
use weir_orchestrate::worker::{Observer, Scope, TaskRunner, WorkEnd, Worker, WorkerOptions};
use weir_orchestrate::ProjectLock;

use crate::extract::load_project;
use crate::{project_dir, usage, Failure};

#[derive(Args)]
pub struct ProjectArg {
    /// Project folder holding weir.yml (default: the current folder).
    #[arg(short = 'p', long = "project-dir")]
    pub project: Option<PathBuf>,
}

/// The source database, as every command that extracts accepts it.
#[derive(Args)]
pub struct SourceArg {
    /// PostgreSQL URL of the source; overrides `source.postgres.url`.
    #[arg(long, env = "WEIR_SOURCE_URL", hide_env_values = true)]
    pub source_url: Option<String>,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    #[command(flatten)]
    pub src: SourceArg,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    #[command(flatten)]
    pub src: SourceArg,
    /// Start a new run even if an unfinished one could be resumed.
    #[arg(long)]
    pub new: bool,
    /// Only create the run and return: a running `weir up` or `weir worker`
    /// processes run it.
    #[arg(long, conflicts_with = "new")]
    pub detach: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    #[command(flatten)]
    pub src: SourceArg,
    /// Tasks this worker runs at once (default: orchestrate.max_active_tasks).
    #[arg(long)]
    pub slots: Option<usize>,
}

#[derive(Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    /// The run's number (from `weir runs`).
    pub run: i64,
    /// Only this task's attempts.
    pub task: Option<String>,
}

#[derive(Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    #[command(flatten)]
    pub src: SourceArg,
    /// The run whose failed and skipped tasks run again.
    pub run: i64,
}

#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub p: ProjectArg,
    #[command(flatten)]
    pub src: SourceArg,
    /// First interval start (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub from: String,
    /// Intervals ending at or before this (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub to: String,
    /// Refuse a range of more intervals than this (each is a run).
    #[arg(long, default_value_t = 1000)]
    pub max_runs: usize,
}

/// Prints one line per task that ended (or will retry).
pub struct Printer {
    /// Print only what did not succeed.
    pub quiet_success: bool,
    /// Prefix lines with the run (several runs at once: `weir up`).
    pub show_run: bool,
}

impl Observer for Printer {
    fn finished(&self, run: i64, task: &str, state: TaskState, seconds: f64, message: &str) {
        let mark = match state {
            TaskState::Success => {
                if self.quiet_success {
                    return;
                }
                "✓"
            }
            TaskState::UpForRetry => "↻",
            TaskState::Queued | TaskState::Pending | TaskState::Running => "…",
            TaskState::Skipped => "-",
            TaskState::Failed | TaskState::UpstreamFailed => "✗",
        };
        let run = if self.show_run {
            format!("run {run} ")
        } else {
            String::new()
        };
        say!(
            "{mark} {run}{task:<48} {:<15} {seconds:>7.2}s  {}",
            state.as_str(),
            message.lines().next().unwrap_or("")
        );
    }
}

fn project(dir: &Path, src: &SourceArg) -> Result<Project, Failure> {
    let mut p = load_project(dir)?.ok_or_else(|| no_project(dir))?;
    if let Some(url) = &src.source_url {
        match p.source.as_mut() {
            Some(s) => s.url = weir_config::SecretUrl::new(url.clone()),
            None => {
                return Err(usage(anyhow!(
                "--source-url is given but {} has no `source:` section to say which tables to read",
                dir.join(weir_config::PROJECT_FILE).display()
            )))
            }
        }
    }
    Ok(p)
}

fn no_project(dir: &Path) -> Failure {
    usage(anyhow!(
        "no {} in {}",
        weir_config::PROJECT_FILE,
        dir.display()
    ))
}

/// The project, for the commands that only read the run history: they work
/// without the source's variables, which they never use.
fn history_project(dir: &Path) -> Result<Project, Failure> {
    if !dir.join(weir_config::PROJECT_FILE).exists() {
        return Err(no_project(dir));
    }
    Project::load_for_history(dir).map_err(usage)
}

fn config(p: &Project) -> OrchestrateConfig {
    p.orchestrate.clone().unwrap_or_default()
}

async fn open_store(dir: &Path, cfg: &OrchestrateConfig) -> Result<Arc<Store>, Failure> {
    Store::open(cfg.metadata.as_ref(), &state_dir(dir))
        .await
        .map(Arc::new)
        .map_err(Failure::from)
}

/// On the single-process SQLite store, the project lock; on PostgreSQL none
/// (several processes share the work, fenced by leases).
fn lock(dir: &Path, store: &Store) -> Result<Option<ProjectLock>, Failure> {
    if store.is_shared() {
        return Ok(None);
    }
    ProjectLock::acquire(&state_dir(dir))
        .map(Some)
        .map_err(|e| {
            usage(anyhow!(
                "{e} (`weir run --detach` hands a run to a running `weir up`)"
            ))
        })
}

/// A worker in this process running the pipeline's tasks, `slots` at once,
/// logging under `.weir/logs` and printing with `printer`.
fn local_worker(
    dir: &Path,
    cfg: &OrchestrateConfig,
    store: &Arc<Store>,
    runner: Arc<dyn TaskRunner>,
    slots: usize,
    printer: Printer,
) -> Worker {
    let opts = WorkerOptions {
        owner: weir_orchestrate::owner(),
        slots: slots.max(1),
        lease: cfg.lease,
        poll: cfg.poll,
        logs_dir: state_dir(dir).join("logs"),
        grace: Duration::from_secs(10),
        notify: cfg.notify.clone(),
    };
    Worker::new(
        store.clone(),
        runner,
        opts,
        Arc::new(SystemClock),
        Arc::new(printer),
    )
}

/// Run `run` to its end (or Ctrl-C) with `worker`, send what is to be told,
/// and report it.
async fn work_run(
    worker: &Worker,
    store: &Store,
    cfg: &OrchestrateConfig,
    run: i64,
    t0: Instant,
) -> Result<RunReport, Failure> {
    let end = worker.work(Scope::Run(run), shutdown_on_signal()).await?;
    let _ = weir_orchestrate::notify::dispatch(store, &cfg.notify, &worker.opts.owner).await;
    Ok(RunReport {
        run_id: run,
        state: match end {
            WorkEnd::Run(s) => Some(s),
            WorkEnd::Stopped => None,
        },
        seconds: t0.elapsed().as_secs_f64(),
        stages: stages(store, run).await?,
    })
}

/// A token cancelled by Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        eprintln!("stopping: running tasks are cancelled and queued for the next start");
        t.cancel();
    });
    token
}

/// With the lock held, every attempt still `running` belongs to a process
/// that died: hand those tasks back.
async fn recover(store: &Store, dag: &str) -> Result<(), Failure> {
    if store.is_shared() {
        return Ok(());
    }
    let stale = store.reap(dag, true, Utc::now()).await?;
    if !stale.is_empty() {
        say!(
            "recovered {} task(s) left running by a process that stopped: {}",
            stale.len(),
            stale
                .iter()
                .map(|r| format!("run {} {} ({})", r.run_id, r.task_id, r.state.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// A new manual run of `dag`, running now (its interval is the moment it was asked for).
async fn manual_run(store: &Store, dag: &Dag, cfg: &OrchestrateConfig) -> Result<i64, Failure> {
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
        .ok_or_else(|| anyhow!("could not create a run").into())
}

/// What one `weir run` did (the demo prints it too).
pub struct RunReport {
    pub run_id: i64,
    pub state: Option<RunState>,
    pub seconds: f64,
    /// Per stage, from the run's first attempt: when its first task started
    /// and its last ended, in seconds (stages overlap: a table loads while
    /// others are still extracted).
    pub stages: Vec<Stage>,
}

pub struct Stage {
    pub name: &'static str,
    pub from: f64,
    pub to: f64,
}

/// Run a project's pipeline once, in the foreground; resume the newest
/// unfinished manual run unless `new`.
pub async fn run_pipeline(
    project: Project,
    new: bool,
    printer: Printer,
) -> Result<RunReport, Failure> {
    let dir = project.dir.clone();
    let t0 = Instant::now();
    let cfg = config(&project);
    let store = open_store(&dir, &cfg).await?;
    let _lock = lock(&dir, &store)?;
    let pipeline = Pipeline::load(project).await.map_err(usage)?;
    let dag = &pipeline.dag;
    recover(&store, &dag.name).await?;
    // Notifications a stopped process left unsent go out now.
    let _ =
        weir_orchestrate::notify::dispatch(&store, &cfg.notify, &weir_orchestrate::owner()).await;
    let resumable = if new {
        None
    } else {
        store
            .runs_in_state(&dag.name, RunState::Running)
            .await?
            .into_iter()
            .filter(|r| r.kind == RunKind::Manual.as_str())
            .max_by_key(|r| r.id)
    };
    let run_id = match resumable {
        Some(r) => {
            say!(
                "resuming run {} (started {}); `weir run --new` starts afresh",
                r.id,
                r.started_at.map(ts).unwrap_or_default()
            );
            r.id
        }
        None => {
            let id = manual_run(&store, dag, &cfg).await?;
            say!("run {id}: {} tasks", dag.tasks.len());
            id
        }
    };
    let worker = local_worker(
        &dir,
        &cfg,
        &store,
        pipeline.runner(store.clone()),
        cfg.max_active_tasks,
        printer,
    );
    work_run(&worker, &store, &cfg, run_id, t0).await
}

fn stage_of(task: &str) -> &'static str {
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

async fn stages(store: &Store, run: i64) -> Result<Vec<Stage>, Failure> {
    let attempts = store.attempts(run, None).await?;
    let Some(first) = attempts.iter().map(|a| a.started_at).min() else {
        return Ok(Vec::new());
    };
    let mut spans: BTreeMap<&'static str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for a in &attempts {
        let Some(e) = a.ended_at else { continue };
        let span = spans
            .entry(stage_of(&a.task_id))
            .or_insert((a.started_at, e));
        span.0 = span.0.min(a.started_at);
        span.1 = span.1.max(e);
    }
    let secs = |t: DateTime<Utc>| (t - first).num_milliseconds() as f64 / 1000.0;
    Ok(["start", "extract", "load", "transform", "other", "end"]
        .into_iter()
        .filter_map(|name| {
            spans.get(name).map(|(s, e)| Stage {
                name,
                from: secs(*s),
                to: secs(*e),
            })
        })
        .collect())
}

pub fn print_report(r: &RunReport) {
    let stages: Vec<String> = r
        .stages
        .iter()
        .filter(|s| s.name != "start" && s.name != "end")
        .map(|s| format!("{} {:.2}s", s.name, s.to - s.from))
        .collect();
    say!(
        "run {} {} in {:.2}s ({})",
        r.run_id,
        match r.state {
            Some(RunState::Success) => "succeeded",
            Some(RunState::Failed) => "failed",
            Some(_) | None => "was stopped",
        },
        r.seconds,
        stages.join(", ")
    );
}

fn outcome(r: &RunReport) -> Result<(), Failure> {
    match r.state {
        Some(RunState::Success) => Ok(()),
        Some(RunState::Failed) => Err(anyhow!(
            "run {} failed; `weir logs {}` shows why, `weir retry {}` runs the failed tasks again",
            r.run_id,
            r.run_id,
            r.run_id
        )
        .into()),
        _ => Err(anyhow!("run {} was stopped; `weir run` resumes it", r.run_id).into()),
    }
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.p.project);
    let p = project(&dir, &args.src)?;
    if args.detach {
        let cfg = config(&p);
        let store = open_store(&dir, &cfg).await?;
        let pipeline = Pipeline::load(p).await.map_err(usage)?;
        let id = manual_run(&store, &pipeline.dag, &cfg).await?;
        say!(
            "run {id} created ({} tasks); `weir up` or `weir worker` runs it",
            pipeline.dag.tasks.len()
        );
        return Ok(());
    }
    let printer = Printer {
        quiet_success: false,
        show_run: false,
    };
    let report = run_pipeline(p, args.new, printer).await?;
    print_report(&report);
    outcome(&report)
}

pub async fn up(args: UpArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.p.project);
    let p = project(&dir, &args.src)?;
    let cfg = config(&p);
    let schedule =
        Schedule::parse(cfg.schedule.as_deref(), &cfg.timezone).map_err(|e| usage(anyhow!(e)))?;
    let store = open_store(&dir, &cfg).await?;
    let _lock = lock(&dir, &store)?;
    let pipeline = Pipeline::load(p).await.map_err(usage)?;
    recover(&store, &pipeline.dag.name).await?;
    let worker = Arc::new(local_worker(
        &dir,
        &cfg,
        &store,
        pipeline.runner(store.clone()),
        cfg.max_active_tasks,
        Printer {
            quiet_success: false,
            show_run: true,
        },
    ));
    // Without a start_date, the schedule starts with the interval `weir up`
    // first ran in (the oldest scheduled run), so a restart does not move
    // it: the first run comes at the next tick.
    let start_date = match cfg.start_date {
        Some(d) => d,
        None => match store.first_scheduled_start(&pipeline.dag.name).await? {
            Some(d) => d,
            None => schedule.prev_tick(Utc::now()).unwrap_or_else(Utc::now),
        },
    };
    let scheduler = Scheduler {
        store: store.clone(),
        dag: pipeline.dag.clone(),
        schedule,
        start_date,
        catchup: cfg.catchup,
        max_active_runs: cfg.max_active_runs,
        max_active_tasks: cfg.max_active_tasks,
    };
    say!(
        "weir up: {} ({} tasks), schedule {}{}, metadata {}; Ctrl-C stops",
        pipeline.dag.name,
        pipeline.dag.tasks.len(),
        cfg.schedule.as_deref().unwrap_or("none (manual runs only)"),
        if cfg.catchup { ", catching up" } else { "" },
        store.describe()
    );
    let owner = worker.opts.owner.clone();
    scheduler
        .serve(
            Some(worker),
            Arc::new(SystemClock),
            cfg.notify.clone(),
            owner,
            shutdown_on_signal(),
        )
        .await?;
    Ok(())
}

pub async fn worker(args: WorkerArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.p.project);
    let p = project(&dir, &args.src)?;
    let cfg = config(&p);
    if cfg.metadata.is_none() {
        return Err(usage(anyhow!(
            "`weir worker` shares work through a PostgreSQL metadata store: set `orchestrate.metadata: postgres://…` in weir.yml (with the default SQLite store, `weir up` runs the tasks itself)"
        )));
    }
    let store = open_store(&dir, &cfg).await?;
    let pipeline = Pipeline::load(p).await.map_err(usage)?;
    let worker = local_worker(
        &dir,
        &cfg,
        &store,
        pipeline.runner(store.clone()),
        args.slots.unwrap_or(cfg.max_active_tasks),
        Printer {
            quiet_success: false,
            show_run: true,
        },
    );
    say!(
        "weir worker {}: {} ({} slots), metadata {}; Ctrl-C stops",
        worker.opts.owner,
        pipeline.dag.name,
        worker.opts.slots,
        store.describe()
    );
    worker
        .work(Scope::Dag(pipeline.dag.name.clone()), shutdown_on_signal())
        .await?;
    Ok(())
}

pub async fn runs(args: RunsArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.p.project);
    let p = history_project(&dir)?;
    let store = open_store(&dir, &config(&p)).await?;
    say!(
        "{:>5}  {:<9}  {:<8}  {:<24}  {:<24}  {:>9}  tasks",
        "run",
        "kind",
        "state",
        "interval start",
        "started",
        "seconds"
    );
    // With the single-process store, a run left `running` by a process that
    // is gone is stopped (the next `weir run` resumes it), not running.
    let nobody_runs = !store.is_shared() && !ProjectLock::is_held(&state_dir(&dir));
    for r in store.runs(args.limit).await? {
        let state = match r.state {
            RunState::Running if nobody_runs => "stopped",
            s => s.as_str(),
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in store.tasks(r.id).await? {
            *counts.entry(t.state.as_str()).or_default() += 1;
        }
        let seconds = match (r.started_at, r.ended_at) {
            (Some(s), Some(e)) => format!("{:.2}", (e - s).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        };
        say!(
            "{:>5}  {:<9}  {:<8}  {:<24}  {:<24}  {:>9}  {}",
            r.id,
            r.kind,
            state,
            ts(r.interval.start),
            r.started_at.map(ts).unwrap_or_default(),
            seconds,
            counts
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

pub async fn logs(args: LogsArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.p.project);
    let p = history_project(&dir)?;
    let store = open_store(&dir, &config(&p)).await?;
    if store.run(args.run).await?.is_none() {
        return Err(usage(anyhow!(
            "there is no run {}; `weir runs` lists them",
            args.run
        )));
    }
    let attempts = store.attempts(args.run, args.task.as_deref()).await?;
    if attempts.is_empty() {
        return Err(usage(anyhow!(
            "run {} has no attempts{}",
            args.run,
            args.task
                .map(|t| format!(" of task {t}"))
                .unwrap_or_default()
        )));
    }
    for a in attempts {
        let moved = match (a.rows, a.bytes) {
            (Some(r), Some(b)) => format!(", {r} rows, {b} bytes"),
            (Some(r), None) => format!(", {r} rows"),
            _ => String::new(),
        };
        say!(
            "=== {} try {} — {} ({} → {}, by {}{}{})",
            a.task_id,
            a.try_number,
            a.state,
            ts(a.started_at),
            a.ended_at.map(ts).unwrap_or_default(),
            a.owner,
            moved,
            a.peak_rss_kb
                .map(|k| format!(", peak RSS {} MB", k / 1024))
                .unwrap_or_default()
        );
        if let Some(e) = &a.error {
            say!("    error: {}", weir_config::scrub(e));
        }
        // The log file where it ran; else the copy the store keeps. Logs
        // written by an older weir may hold what is now scrubbed.
        match std::fs::read_to_string(&a.log_path) {
            Ok(text) => say!("{}", weir_config::scrub(text.trim_end())),
            Err(_) => match &a.log_tail {
                Some(t) => say!("{}", weir_config::scrub(t.trim_end())),
                None => say!("(no log: {} is not on this machine)", a.log_path),
            },
        }
    }
    Ok(())
}

pub async fn retry(args: RetryArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.p.project);
    let p = project(&dir, &args.src)?;
    let cfg = config(&p);
    let store = open_store(&dir, &cfg).await?;
    let _lock = lock(&dir, &store)?;
    let Some(run) = store.run(args.run).await? else {
        return Err(usage(anyhow!(
            "there is no run {}; `weir runs` lists them",
            args.run
        )));
    };
    recover(&store, &run.dag).await?;
    let n = store
        .reset_for_retry(run.id, Utc::now())
        .await
        .map_err(|e| usage(anyhow!(e)))?;
    if n == 0 {
        say!(
            "run {} is {} and has no failed or skipped task to run again",
            run.id,
            run.state.as_str()
        );
        return Ok(());
    }
    say!("run {}: {n} failed or skipped task(s) to run again", run.id);
    let t0 = Instant::now();
    // The run keeps the DAG it was created with; tasks run with today's weir.yml.
    let pipeline = Pipeline::load(p).await.map_err(usage)?;
    let worker = local_worker(
        &dir,
        &cfg,
        &store,
        pipeline.runner(store.clone()),
        cfg.max_active_tasks,
        Printer {
            quiet_success: false,
            show_run: false,
        },
    );
    let report = work_run(&worker, &store, &cfg, run.id, t0).await?;
    print_report(&report);
    outcome(&report)
}

pub async fn backfill(args: BackfillArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.p.project);
    let p = project(&dir, &args.src)?;
    let cfg = config(&p);
    let parse = |s: &str, what: &str| {
        weir_config::parse_start_date(s).ok_or_else(|| {
            usage(anyhow!(
                "--{what} `{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
    };
    let (from, to) = (parse(&args.from, "from")?, parse(&args.to, "to")?);
    if from >= to {
        return Err(usage(anyhow!(
            "--from {} is not before --to {}: the range holds no interval",
            args.from,
            args.to
        )));
    }
    let schedule =
        Schedule::parse(cfg.schedule.as_deref(), &cfg.timezone).map_err(|e| usage(anyhow!(e)))?;
    if !matches!(schedule, Schedule::Cron { .. }) {
        return Err(usage(anyhow!(
            "backfill needs a periodic `orchestrate.schedule` (e.g. @daily) to cut intervals"
        )));
    }
    let store = open_store(&dir, &cfg).await?;
    let _lock = lock(&dir, &store)?;
    let pipeline = Pipeline::load(p).await.map_err(usage)?;
    recover(&store, &pipeline.dag.name).await?;
    let intervals = schedule.between(from, to, args.max_runs.saturating_add(1));
    if intervals.len() > args.max_runs {
        return Err(usage(anyhow!(
            "{} to {} holds more than {} intervals of the schedule (each a run); narrow the range, or raise --max-runs",
            args.from,
            args.to,
            args.max_runs
        )));
    }
    if intervals.is_empty() {
        return Err(usage(anyhow!(
            "no whole interval of the schedule lies between {} and {}",
            args.from,
            args.to
        )));
    }
    say!(
        "backfill: {} interval(s) from {} to {}",
        intervals.len(),
        ts(from),
        ts(to)
    );
    let shutdown = shutdown_on_signal();
    let runner = pipeline.runner(store.clone());
    let mut failed = 0;
    for iv in intervals {
        let now = Utc::now();
        let Some(id) = store
            .create_run(
                &pipeline.dag,
                RunKind::Backfill,
                iv,
                RunState::Running,
                cfg.max_active_tasks,
                now,
            )
            .await?
        else {
            continue;
        };
        say!("run {id}: {} → {}", ts(iv.start), ts(iv.end));
        let worker = local_worker(
            &dir,
            &cfg,
            &store,
            runner.clone(),
            cfg.max_active_tasks,
            Printer {
                quiet_success: true,
                show_run: false,
            },
        );
        match worker.work(Scope::Run(id), shutdown.clone()).await? {
            WorkEnd::Run(RunState::Success) => {}
            WorkEnd::Run(_) => failed += 1,
            WorkEnd::Stopped => return Err(anyhow!("backfill stopped at run {id}").into()),
        }
    }
    let _ =
        weir_orchestrate::notify::dispatch(&store, &cfg.notify, &weir_orchestrate::owner()).await;
    if failed > 0 {
        return Err(anyhow!("{failed} backfill run(s) failed; `weir runs` lists them").into());
    }
    Ok(())
}
