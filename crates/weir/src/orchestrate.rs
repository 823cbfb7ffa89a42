//! `weir run`, `weir up`, `weir worker`, `weir runs`, `weir logs`, `weir retry`,
//! `weir backfill`: the pipeline as a DAG, with its history in the metadata
//! store (`.weir/metadata.db`, or `orchestrate.metadata: postgres://…`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use clap::Args;
use tokio_util::sync::CancellationToken;
use weir_orchestrate::dag::RunParams;
use weir_orchestrate::schedule::SystemClock;
use weir_orchestrate::store::{ts, Reaped, RunState, TaskState};
use weir_orchestrate::worker::{Observer, Scope};
use weir_pipeline::runs::{self, Prepared, RunReport, Started};
use weir_pipeline::{backfill, LifecycleError, Workspace};

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
    #[command(flatten)]
    pub ui: UiArgs,
    /// Do not serve the web UI.
    #[arg(long)]
    pub no_ui: bool,
}

/// Where the web UI listens, over `ui:` in weir.yml.
#[derive(Args)]
pub struct UiArgs {
    /// Address and port of the web UI (default: ui.listen, else 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub ui_listen: Option<std::net::SocketAddr>,
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
    #[command(flatten)]
    pub params: ParamArgs,
}

/// What a run is asked to do beyond the whole pipeline.
#[derive(Args, Default)]
pub struct ParamArgs {
    /// Read incremental tables whole, replace what loads append or merge,
    /// and rebuild incremental dbt models (dbt's `--full-refresh`).
    #[arg(long)]
    pub full_refresh: bool,
    /// Extract and load only these source tables (comma-separated).
    #[arg(long, value_name = "TABLES", value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Build only the dbt nodes these selectors pick (dbt's `--select`: each
    /// one's nodes, together).
    #[arg(long, short = 's', value_name = "SELECTOR", num_args = 1..)]
    pub select: Vec<String>,
}

impl ParamArgs {
    pub fn params(&self) -> RunParams {
        let select = self.select.join(" ");
        RunParams::new(
            self.full_refresh,
            self.tables.iter().map(String::as_str),
            Some(select.as_str()),
        )
    }
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
    /// Also serve the web UI (every process on a shared store shows the same history).
    #[arg(long)]
    pub ui: bool,
    #[command(flatten)]
    pub ui_args: UiArgs,
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

/// A lifecycle error with its exit code: 2 for what the user asked, 1 for
/// what failed underneath.
pub fn lifecycle(e: LifecycleError) -> Failure {
    if e.is_usage() {
        usage(e)
    } else {
        e.into()
    }
}

fn workspace(p: &ProjectArg, src: &SourceArg) -> Result<Workspace, Failure> {
    Workspace::open(&project_dir(&p.project), src.source_url.as_deref()).map_err(lifecycle)
}

fn history(p: &ProjectArg) -> Result<Workspace, Failure> {
    Workspace::open_for_history(&project_dir(&p.project)).map_err(lifecycle)
}

fn printer(quiet_success: bool, show_run: bool) -> Arc<Printer> {
    Arc::new(Printer {
        quiet_success,
        show_run,
    })
}

fn say_recovered(stale: &[Reaped]) {
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
}

/// Open, lock, load, recover: what every command that runs tasks does first.
async fn prepare(ws: &Workspace) -> Result<Prepared, Failure> {
    let p = runs::prepare(ws).await.map_err(lifecycle)?;
    say_recovered(&p.recovered);
    Ok(p)
}

/// Run a project's pipeline once, in the foreground; resume the newest
/// unfinished manual run unless `new`.
pub async fn run_pipeline(
    ws: &Workspace,
    new: bool,
    params: &RunParams,
    printer: Arc<Printer>,
) -> Result<RunReport, Failure> {
    let t0 = Instant::now();
    let p = prepare(ws).await?;
    let started = runs::start_manual(&p.store, &p.pipeline, &ws.config, params, new)
        .await
        .map_err(lifecycle)?;
    match &started {
        Started::Resumed(r) => say!(
            "resuming run {} (started {}); `weir run --new` starts afresh",
            r.id,
            r.started_at.map(ts).unwrap_or_default()
        ),
        Started::Created(id) => {
            let tasks = p
                .store
                .run_dag(*id)
                .await
                .map_err(Failure::from)?
                .tasks
                .len();
            let asked = params.describe();
            if asked.is_empty() {
                say!("run {id}: {tasks} tasks");
            } else {
                say!("run {id}: {tasks} tasks ({asked})");
            }
        }
    }
    let worker = ws.worker(
        &p.store,
        p.pipeline.runner(p.store.clone()),
        ws.config.max_active_tasks,
        printer,
    );
    runs::work_run(
        &worker,
        &p.store,
        &ws.config,
        started.id(),
        t0,
        shutdown_on_signal(),
    )
    .await
    .map_err(lifecycle)
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
        _ => Err(anyhow!(
            "run {} was stopped; `weir run{}` resumes it",
            r.run_id,
            r.params.flags()
        )
        .into()),
    }
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let ws = workspace(&args.p, &args.src)?;
    if args.detach {
        let store = ws.store().await.map_err(lifecycle)?;
        let pipeline = ws.pipeline().await.map_err(lifecycle)?;
        let params = args.params.params();
        let id = runs::create_with(&store, &pipeline, &ws.config, &params)
            .await
            .map_err(lifecycle)?;
        say!(
            "run {id} created ({} tasks); `weir up` or `weir worker` runs it",
            store.run_dag(id).await.map_err(Failure::from)?.tasks.len()
        );
        return Ok(());
    }
    let report = run_pipeline(&ws, args.new, &args.params.params(), printer(false, false)).await?;
    print_report(&report);
    outcome(&report)
}

/// Bind the web UI and serve it on its own task until `shutdown`.
async fn serve_ui(
    ws: &Workspace,
    pipeline: &Arc<weir_orchestrate::pipeline::Pipeline>,
    args: &UiArgs,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let mut config = ws.project.ui.clone();
    if let Some(addr) = args.ui_listen {
        config.listen = addr;
    }
    let server = weir_web::Server::bind(ws.clone(), pipeline.clone(), config)
        .await
        .map_err(usage)?;
    say!("web UI at {}", server.url);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(stop).await {
            tracing::error!("the web UI stopped: {e}");
        }
    });
    Ok(())
}

pub async fn up(args: UpArgs) -> Result<(), Failure> {
    let ws = workspace(&args.p, &args.src)?;
    let schedule = ws.schedule().map_err(lifecycle)?;
    let p = prepare(&ws).await?;
    let cfg = &ws.config;
    let shutdown = shutdown_on_signal();
    if !args.no_ui && ws.project.ui.enabled {
        serve_ui(&ws, &p.pipeline, &args.ui, &shutdown).await?;
    }
    let worker = Arc::new(ws.worker(
        &p.store,
        p.pipeline.runner(p.store.clone()),
        cfg.max_active_tasks,
        printer(false, true),
    ));
    let scheduler = runs::scheduler(&ws, &p.store, &p.pipeline.dag, schedule)
        .await
        .map_err(lifecycle)?;
    say!(
        "weir up: {} ({} tasks), schedule {}{}, metadata {}; Ctrl-C stops",
        p.pipeline.dag.name,
        p.pipeline.dag.tasks.len(),
        cfg.schedule.as_deref().unwrap_or("none (manual runs only)"),
        if cfg.catchup { ", catching up" } else { "" },
        p.store.describe()
    );
    let owner = worker.opts.owner.clone();
    scheduler
        .serve(
            Some(worker),
            Arc::new(SystemClock),
            cfg.notify.clone(),
            owner,
            shutdown,
        )
        .await?;
    Ok(())
}

pub async fn worker(args: WorkerArgs) -> Result<(), Failure> {
    let ws = workspace(&args.p, &args.src)?;
    if ws.config.metadata.is_none() {
        return Err(usage(anyhow!(
            "`weir worker` shares work through a PostgreSQL metadata store: set `orchestrate.metadata: postgres://…` in weir.yml (with the default SQLite store, `weir up` runs the tasks itself)"
        )));
    }
    let store = ws.store().await.map_err(lifecycle)?;
    let pipeline = Arc::new(ws.pipeline().await.map_err(lifecycle)?);
    let worker = ws.worker(
        &store,
        pipeline.runner(store.clone()),
        args.slots.unwrap_or(ws.config.max_active_tasks),
        printer(false, true),
    );
    say!(
        "weir worker {}: {} ({} slots), metadata {}; Ctrl-C stops",
        worker.opts.owner,
        pipeline.dag.name,
        worker.opts.slots,
        store.describe()
    );
    let shutdown = shutdown_on_signal();
    if args.ui {
        serve_ui(&ws, &pipeline, &args.ui_args, &shutdown).await?;
    }
    worker
        .work(Scope::Dag(pipeline.dag.name.clone()), shutdown)
        .await?;
    Ok(())
}

pub async fn runs(args: RunsArgs) -> Result<(), Failure> {
    let ws = history(&args.p)?;
    let store = ws.store().await.map_err(lifecycle)?;
    say!(
        "{:>5}  {:<9}  {:<8}  {:<24}  {:<24}  {:>9}  tasks",
        "run",
        "kind",
        "state",
        "interval start",
        "started",
        "seconds"
    );
    let someone_runs = ws.someone_runs(&store);
    for r in store.runs(args.limit).await? {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in store.tasks(r.id).await? {
            *counts.entry(t.state.as_str()).or_default() += 1;
        }
        let seconds = match (r.started_at, r.ended_at) {
            (Some(s), Some(e)) => format!("{:.2}", (e - s).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        };
        let asked = r.params.describe();
        say!(
            "{:>5}  {:<9}  {:<8}  {:<24}  {:<24}  {:>9}  {}{}",
            r.id,
            r.kind,
            runs::shown_state(&r, someone_runs),
            ts(r.interval.start),
            r.started_at.map(ts).unwrap_or_default(),
            seconds,
            counts
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            if asked.is_empty() {
                String::new()
            } else {
                format!("  ({asked})")
            }
        );
    }
    Ok(())
}

pub async fn logs(args: LogsArgs) -> Result<(), Failure> {
    let ws = history(&args.p)?;
    let store = ws.store().await.map_err(lifecycle)?;
    if store.run(args.run).await?.is_none() {
        return Err(lifecycle(runs::no_run(args.run)));
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
    let ws = workspace(&args.p, &args.src)?;
    let store = ws.store().await.map_err(lifecycle)?;
    let _lock = ws.lock(&store).map_err(lifecycle)?;
    let r = runs::retry(&store, args.run).await.map_err(lifecycle)?;
    if r.reset == 0 {
        say!(
            "run {} is {} and has no failed or skipped task to run again",
            r.run.id,
            r.run.state.as_str()
        );
        return Ok(());
    }
    say!(
        "run {}: {} failed or skipped task(s) to run again",
        r.run.id,
        r.reset
    );
    let t0 = Instant::now();
    // The run keeps the DAG it was created with; tasks run with today's weir.yml.
    let pipeline = ws.pipeline().await.map_err(lifecycle)?;
    let worker = ws.worker(
        &store,
        pipeline.runner(store.clone()),
        ws.config.max_active_tasks,
        printer(false, false),
    );
    let report = runs::work_run(
        &worker,
        &store,
        &ws.config,
        r.run.id,
        t0,
        shutdown_on_signal(),
    )
    .await
    .map_err(lifecycle)?;
    print_report(&report);
    outcome(&report)
}

pub async fn backfill(args: BackfillArgs) -> Result<(), Failure> {
    let ws = workspace(&args.p, &args.src)?;
    let plan = backfill::plan(&ws, &args.from, &args.to, args.max_runs).map_err(lifecycle)?;
    let p = prepare(&ws).await?;
    say!(
        "backfill: {} interval(s) from {} to {}",
        plan.intervals.len(),
        ts(plan.from),
        ts(plan.to)
    );
    let out = backfill::run(
        &ws,
        &p,
        &plan,
        printer(true, false),
        shutdown_on_signal(),
        |id, iv| say!("run {id}: {} → {}", ts(iv.start), ts(iv.end)),
    )
    .await
    .map_err(lifecycle)?;
    if let Some(id) = out.stopped_at {
        return Err(anyhow!("backfill stopped at run {id}").into());
    }
    if out.failed > 0 {
        return Err(anyhow!(
            "{} backfill run(s) failed; `weir runs` lists them",
            out.failed
        )
        .into());
    }
    Ok(())
}
