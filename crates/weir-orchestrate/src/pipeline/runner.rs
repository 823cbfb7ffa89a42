//! The [`TaskRunner`] that runs the pipeline's tasks with the extract, load
//! and transform crates.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use weir_config::Project;
use weir_extract::{ExtractOptions, Quiet};
use weir_lake::{Lake, WriteOptions};
use weir_transform::{Command, ResourceType, Selector, Status};
use weir_warehouse::{LoadOptions, Warehouse};

use crate::dag::{RunParams, SqlOn, TaskKind};
use crate::retry::{ErrorKind, TaskError};
use crate::store::Store;
use crate::worker::{TaskContext, TaskOutput, TaskRunner};

/// How long an embedded warehouse stays open with no task using it.
pub const DUCKDB_IDLE_CLOSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The warehouse the runner has open, and when a task last asked for it.
type OpenWarehouse = (Arc<dyn Warehouse>, std::time::Instant);

/// Runs the pipeline's tasks in this process.
pub struct PipelineRunner {
    project: Project,
    dbt: Option<Arc<weir_transform::Project>>,
    warehouse: Arc<tokio::sync::Mutex<Option<OpenWarehouse>>>,
    store: Arc<Store>,
    /// The source tables the DAG extracts.
    tables: Vec<String>,
    /// The dbt project with `full_refresh` set, made on the first
    /// full-refresh run's first dbt task.
    dbt_full_refresh: std::sync::OnceLock<Arc<weir_transform::Project>>,
    /// Snapshots exported by `start` tasks this process ran, by run: held
    /// open until that run's extract tasks are over, so they all read the
    /// source as of one moment (as `weir extract` does).
    snapshots: Arc<std::sync::Mutex<HashMap<i64, weir_source::Snapshot>>>,
}

/// The dbt selector a run was given (none: every node).
pub(super) fn selector(params: &RunParams) -> Selector {
    Selector {
        select: params
            .select
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        exclude: Vec::new(),
    }
}

fn cancelled() -> TaskError {
    TaskError {
        code: None,
        kind: ErrorKind::Cancelled,
        message: "cancelled".to_owned(),
    }
}

impl PipelineRunner {
    pub(super) fn new(
        project: Project,
        dbt: Option<Arc<weir_transform::Project>>,
        store: Arc<Store>,
        tables: Vec<String>,
    ) -> PipelineRunner {
        PipelineRunner {
            project,
            dbt,
            warehouse: Arc::new(tokio::sync::Mutex::new(None)),
            store,
            tables,
            dbt_full_refresh: std::sync::OnceLock::new(),
            snapshots: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// The warehouse, opened on first use and shared by the tasks that run
    /// at once. An embedded DuckDB file is closed again once no task has
    /// used it for [`DUCKDB_IDLE_CLOSE`], so that between runs of `weir up`
    /// other processes (`weir query`, a notebook) can open it.
    async fn warehouse(&self) -> Result<Arc<dyn Warehouse>, TaskError> {
        let mut slot = self.warehouse.lock().await;
        if let Some((wh, used)) = slot.as_mut() {
            *used = std::time::Instant::now();
            return Ok(wh.clone());
        }
        let wh: Arc<dyn Warehouse> = weir_warehouse::open(
            &self.project.warehouse,
            &self.project.dir,
            &self.project.lake.url,
        )
        .await
        .map(Arc::from)
        .map_err(|e| TaskError::classify(&e))?;
        *slot = Some((wh.clone(), std::time::Instant::now()));
        if wh.dialect() == weir_warehouse::Dialect::DuckDb {
            let weak = Arc::downgrade(&self.warehouse);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(DUCKDB_IDLE_CLOSE / 2).await;
                    let Some(cell) = weak.upgrade() else { return };
                    let mut slot = cell.lock().await;
                    let idle = match slot.as_ref() {
                        None => return,
                        // Only the slot holds it, nothing started through it
                        // is still running, and nobody asked for a while.
                        Some((wh, used)) => {
                            Arc::strong_count(wh) == 1
                                && !wh.in_use()
                                && used.elapsed() >= DUCKDB_IDLE_CLOSE
                        }
                    };
                    if idle {
                        *slot = None;
                        return;
                    }
                }
            });
        }
        Ok(wh)
    }

    fn lake(&self) -> Result<Lake, TaskError> {
        Lake::open(
            &self.project.lake.url,
            &self.project.dir,
            &self.project.name,
        )
        .map_err(|e| TaskError::permanent(e.to_string()))
    }

    fn extract_options(&self, table: &str) -> Result<ExtractOptions, TaskError> {
        let src = self
            .project
            .source
            .as_ref()
            .ok_or_else(|| TaskError::permanent("the project has no `source:` section"))?;
        Ok(ExtractOptions {
            project: self.project.name.clone(),
            source_url: src.url.clone(),
            schema: src.schema.clone(),
            tables: src.tables.clone(),
            only: Some(vec![table.to_owned()]),
            jobs: src.jobs.max(1),
            chunk_bytes: src.chunk_bytes,
            write: WriteOptions::from_config(&self.project.lake),
            snapshot: None,
            full_refresh: false,
        })
    }

    fn load_options(&self, run: &str, table: &str, params: &RunParams) -> LoadOptions {
        LoadOptions {
            // One table per task; the tasks themselves run in parallel.
            jobs: 1,
            mode: (params.full_refresh && self.refreshable(table))
                .then_some(weir_config::LoadMode::Truncate),
            ..LoadOptions::for_project(
                Some(&self.project),
                &self.project.warehouse,
                run,
                Some(vec![table.to_owned()]),
            )
        }
    }

    /// Whether a full refresh replaces `table`: an incremental table (its
    /// full read holds every row) or one loaded by merging. A table loaded by
    /// appending whole extracts keeps its history, which lives nowhere else.
    fn refreshable(&self, table: &str) -> bool {
        let cfg = self
            .project
            .source
            .as_ref()
            .and_then(|s| s.tables.tables.iter().find(|t| t.name == table));
        let mode = cfg
            .and_then(|t| t.load_mode)
            .unwrap_or(self.project.warehouse.mode);
        cfg.is_some_and(|t| t.cursor.is_some()) || mode == weir_config::LoadMode::Merge
    }

    async fn start(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let Some(src) = self
            .project
            .source
            .as_ref()
            .filter(|_| !self.tables.is_empty())
        else {
            return Ok(TaskOutput {
                message: "no source tables".to_owned(),
                ..TaskOutput::default()
            });
        };
        let lake = self.lake()?;
        // Reaching the lake (a local folder is created when opened).
        lake.list_runs()
            .await
            .map_err(|e| TaskError::classify(&e))?;
        ctx.log.line(&format!("lake {} ready", lake.url()));
        let wh = self.warehouse().await?;
        wh.ensure_schema(&self.project.warehouse.schema)
            .await
            .map_err(|e| TaskError::classify(&e))?;
        ctx.log.line(&format!(
            "warehouse {} schema {} ready",
            wh.describe_target(),
            self.project.warehouse.schema
        ));
        // One snapshot for every extract task of this run.
        let snapshot = tokio::select! {
            r = weir_source::Snapshot::export(&src.url) => r.map_err(|e| TaskError::classify(&e))?,
            () = ctx.cancel.cancelled() => return Err(cancelled()),
        };
        // Every table's columns, read once here: a column type no Arrow
        // type holds fails the run now, with every such column of every
        // table at once, instead of one per extract attempt.
        let mut problems = Vec::new();
        // A run of some tables checks those.
        let tables = if ctx.params.tables.is_empty() {
            &self.tables
        } else {
            &ctx.params.tables
        };
        for table in tables {
            let cast = src
                .tables
                .tables
                .iter()
                .find(|t| &t.name == table)
                .map(|t| t.cast_to_text.clone())
                .unwrap_or_default();
            // A table that is missing (or names a missing column) fails its
            // own extract task; the others go on.
            match weir_source::describe(snapshot.client(), &src.schema, table, &cast).await {
                Err(e @ weir_source::SourceError::UnsupportedType { .. }) => {
                    problems.push(e.to_string())
                }
                Ok(_)
                | Err(
                    weir_source::SourceError::NoSuchColumn { .. }
                    | weir_source::SourceError::NoSuchTable { .. },
                ) => {}
                Err(e) => return Err(TaskError::classify(&e)),
            }
        }
        if !problems.is_empty() {
            snapshot.release().await;
            return Err(TaskError::permanent(format!(
                "{} source table(s) have columns without an Arrow type:\n  {}",
                problems.len(),
                problems.join("\n  ")
            )));
        }
        let reference = snapshot.reference();
        ctx.log.line(&format!(
            "exported snapshot {} ({}) for the run's extract tasks",
            reference.id, reference.txid_snapshot
        ));
        self.hold_snapshot(ctx.run_id, snapshot);
        Ok(TaskOutput {
            message: format!(
                "lake, schema {} and snapshot ready",
                self.project.warehouse.schema
            ),
            data: Some(serde_json::json!({ "snapshot": reference })),
            ..TaskOutput::default()
        })
    }

    /// Keep `snapshot` open until the run's extract tasks are all over (or
    /// the run ended), checking the store every second.
    fn hold_snapshot(&self, run: i64, snapshot: weir_source::Snapshot) {
        self.snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run, snapshot);
        let (store, snapshots) = (self.store.clone(), self.snapshots.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let over = match (store.run(run).await, store.tasks(run).await) {
                    (Ok(Some(r)), Ok(tasks)) => {
                        r.state.is_done()
                            || tasks
                                .iter()
                                .filter(|t| t.task_id.starts_with("extract."))
                                .all(|t| t.state.is_done())
                    }
                    // The store is unreachable: the snapshot is not worth a stuck source transaction.
                    _ => true,
                };
                if over {
                    let s = snapshots
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&run);
                    if let Some(s) = s {
                        s.release().await;
                    }
                    return;
                }
            }
        });
    }

    async fn extract(&self, ctx: &TaskContext, table: &str) -> Result<TaskOutput, TaskError> {
        let mut opts = self.extract_options(table)?;
        opts.full_refresh = ctx.params.full_refresh;
        opts.snapshot = ctx
            .upstream
            .get("start")
            .and_then(|o| o.get("snapshot"))
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        let lake = self.lake()?;
        let mut result = tokio::select! {
            r = weir_extract::extract(&lake, &opts, &Quiet) => r,
            () = ctx.cancel.cancelled() => return Err(cancelled()),
        };
        if let Err(weir_extract::ExtractError::Source(weir_source::SourceError::SnapshotGone {
            ..
        })) = &result
        {
            // The process that exported the run's snapshot stopped (a restart):
            // this table reads a snapshot of its own, later than the others'.
            ctx.log.line(
                "the run's snapshot is gone (the process that exported it stopped); \
                 this table is read in a new snapshot, later than the tables extracted before the restart",
            );
            tracing::warn!(task = %ctx.task.id, "the run's snapshot is gone; reading {table} in a new one");
            opts.snapshot = None;
            result = tokio::select! {
                r = weir_extract::extract(&lake, &opts, &Quiet) => r,
                () = ctx.cancel.cancelled() => return Err(cancelled()),
            };
        }
        let s = result.map_err(|e| TaskError::classify(&e))?;
        ctx.log.line(&format!(
            "extracted {} rows, {} bytes to {} (snapshot {})",
            s.rows, s.bytes, s.manifest_url, s.snapshot
        ));
        Ok(TaskOutput {
            rows: Some(s.rows),
            bytes: Some(s.bytes),
            data: Some(serde_json::json!({ "lake_run": s.run_id, "snapshot": s.snapshot })),
            message: format!("{} rows", s.rows),
        })
    }

    async fn load(&self, ctx: &TaskContext, table: &str) -> Result<TaskOutput, TaskError> {
        let run = ctx
            .upstream
            .get(&format!("extract.{table}"))
            .and_then(|o| o.get("lake_run"))
            .and_then(|r| r.as_str())
            .ok_or_else(|| TaskError::permanent(format!("no lake run from extract.{table}")))?
            .to_owned();
        let lake = self.lake()?;
        let wh = self.warehouse().await?;
        let opts = self.load_options(&run, table, &ctx.params);
        let s = tokio::select! {
            r = weir_warehouse::load(wh.as_ref(), &lake, &opts) => r.map_err(|e| TaskError::classify(&e))?,
            () = ctx.cancel.cancelled() => return Err(cancelled()),
        };
        let rows: u64 = s.tables.iter().map(|t| t.rows).sum();
        let rejected: u64 = s.tables.iter().map(|t| t.rejected).sum();
        for t in &s.tables {
            ctx.log.line(&format!(
                "{}: {} rows ({} rejected{}) {}",
                t.name,
                t.rows,
                t.rejected,
                t.rejects_file
                    .as_deref()
                    .map(|f| format!(", in {f}"))
                    .unwrap_or_default(),
                t.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
            ));
        }
        if let Some(e) = s.tables.iter().find_map(|t| t.error.clone()) {
            return Err(TaskError::classify(e.as_ref()));
        }
        Ok(TaskOutput {
            rows: Some(rows),
            data: Some(serde_json::json!({ "lake_run": run, "rows": rows, "rejected": rejected })),
            message: format!(
                "{rows} rows{}",
                if rejected > 0 {
                    format!(", {rejected} rejected")
                } else {
                    String::new()
                }
            ),
            ..TaskOutput::default()
        })
    }

    /// The dbt project as the run asked for it: with `full_refresh`,
    /// incremental models are rebuilt and seeds reloaded, as
    /// `dbt build --full-refresh` does.
    fn dbt(&self, params: &RunParams) -> Result<Arc<weir_transform::Project>, TaskError> {
        let dbt = self
            .dbt
            .clone()
            .ok_or_else(|| TaskError::permanent("the project has no `transform:` section"))?;
        if !params.full_refresh {
            return Ok(dbt);
        }
        Ok(self
            .dbt_full_refresh
            .get_or_init(|| {
                let mut p = (*dbt).clone();
                p.full_refresh = true;
                Arc::new(p)
            })
            .clone())
    }

    async fn node(&self, ctx: &TaskContext, unique_id: &str) -> Result<TaskOutput, TaskError> {
        let dbt = self.dbt(&ctx.params)?;
        if !dbt.nodes.contains_key(unique_id) {
            return Err(TaskError::permanent(format!(
                "{unique_id} is no longer in the dbt project; start a new run"
            )));
        }
        let wh = self.warehouse().await?;
        let r = tokio::select! {
            r = weir_transform::run_one(dbt.clone(), wh, unique_id, Command::Build) => r,
            () = ctx.cancel.cancelled() => return Err(cancelled()),
        };
        ctx.log.line(&format!(
            "{} {}: {}",
            r.status.as_str(),
            r.relation,
            r.message
        ));
        match r.status {
            Status::Success | Status::Pass | Status::Warn | Status::Skipped => Ok(TaskOutput {
                rows: None,
                message: if r.resource_type == ResourceType::Test {
                    format!("{} {}", r.status.as_str(), r.message)
                } else {
                    r.message
                },
                ..TaskOutput::default()
            }),
            Status::Error | Status::Fail => Err(match &r.error {
                // Classified by the warehouse's error, with the node's message.
                Some(e) => TaskError {
                    message: r.message,
                    ..TaskError::classify(e.as_ref())
                },
                None => TaskError::from_message(r.message),
            }),
        }
    }

    async fn transform_setup(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let dbt = self.dbt(&ctx.params)?;
        let wh = self.warehouse().await?;
        let schemas =
            weir_transform::prepare(&dbt, wh.as_ref(), Command::Build, &selector(&ctx.params))
                .await
                .map_err(|e| TaskError::classify(&e))?;
        ctx.log.line(&format!("schemas: {}", schemas.join(", ")));
        Ok(TaskOutput {
            message: format!("{} schema(s)", schemas.len()),
            ..TaskOutput::default()
        })
    }

    async fn transform(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let dbt = self.dbt(&ctx.params)?;
        let wh = self.warehouse().await?;
        let opts = weir_transform::RunOptions {
            command: Command::Build,
            selector: selector(&ctx.params),
            threads: dbt.target.threads,
            fail_fast: false,
        };
        let log = ctx.log.clone();
        let report = move |i: usize, total: usize, r: &weir_transform::NodeResult| {
            log.line(&format!(
                "{i} of {total} {} {} {:.2}s {}",
                r.status.as_str(),
                r.unique_id,
                r.seconds,
                r.message
            ));
        };
        let s = tokio::select! {
            r = weir_transform::execute(dbt.clone(), wh, &opts, &report) => r.map_err(|e| TaskError::classify(&e))?,
            () = ctx.cancel.cancelled() => return Err(cancelled()),
        };
        if s.failed() {
            let failed: Vec<&weir_transform::NodeResult> = s
                .results
                .iter()
                .filter(|r| matches!(r.status, Status::Error | Status::Fail))
                .collect();
            let message = format!(
                "{} node(s) failed; first: {}",
                failed.len(),
                failed
                    .first()
                    .map(|r| format!("{}: {}", r.unique_id, r.message))
                    .unwrap_or_default()
            );
            // Worth another try only when every failure was a transient
            // warehouse error (a dropped connection, a serialization failure).
            let all_transient = failed.iter().all(|r| {
                r.error
                    .as_ref()
                    .is_some_and(|e| TaskError::classify(e.as_ref()).kind.retryable())
            });
            return Err(if all_transient {
                TaskError::transient(message)
            } else {
                TaskError::permanent(message)
            });
        }
        Ok(TaskOutput {
            message: format!("{} nodes", s.results.len()),
            ..TaskOutput::default()
        })
    }

    async fn sql(&self, ctx: &TaskContext, on: SqlOn, sql: &str) -> Result<TaskOutput, TaskError> {
        match on {
            SqlOn::Warehouse => {
                let wh = self.warehouse().await?;
                tokio::select! {
                    r = wh.execute(sql) => r.map_err(|e| TaskError::classify(&e))?,
                    () = ctx.cancel.cancelled() => return Err(cancelled()),
                }
            }
            SqlOn::Source => {
                let src =
                    self.project.source.as_ref().ok_or_else(|| {
                        TaskError::permanent("the project has no `source:` section")
                    })?;
                let client = weir_source::connect(&src.url)
                    .await
                    .map_err(|e| TaskError::classify(&e))?;
                let cancel = client.cancel_token();
                tokio::select! {
                    r = client.batch_execute(sql) => r.map_err(|e| {
                        TaskError::classify(&weir_pg::PgError::new("the source refused the task's SQL", e))
                    })?,
                    () = ctx.cancel.cancelled() => {
                        // Stop the query on the server, not just here.
                        let r = cancel.cancel_query(tokio_postgres::NoTls).await;
                        ctx.log.line(&format!("cancelled the query on the server: {r:?}"));
                        return Err(cancelled());
                    }
                }
            }
        }
        ctx.log.line("ok");
        Ok(TaskOutput {
            message: "ok".to_owned(),
            ..TaskOutput::default()
        })
    }

    async fn shell(&self, ctx: &TaskContext, command: &str) -> Result<TaskOutput, TaskError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.project.dir)
            .env("WEIR_RUN_ID", ctx.run_id.to_string())
            .env("WEIR_TASK_ID", &ctx.task.id)
            .env("WEIR_TRY", ctx.try_number.to_string())
            .env("WEIR_INTERVAL_START", crate::store::ts(ctx.interval.start))
            .env("WEIR_INTERVAL_END", crate::store::ts(ctx.interval.end))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| TaskError::permanent(format!("cannot start `sh -c {command}`: {e}")))?;
        let pid = child.id();
        let out = pump(child.stdout.take(), ctx.log.clone());
        let err = pump(child.stderr.take(), ctx.log.clone());
        let status = tokio::select! {
            (s, (), ()) = async { tokio::join!(child.wait(), out, err) } => s,
            () = ctx.cancel.cancelled() => {
                // The whole process group, so the command's children stop too.
                if let Some(pid) = pid {
                    let _ = std::process::Command::new("kill").arg("-KILL").arg(format!("-{pid}")).status();
                }
                return Err(cancelled());
            }
        }
        .map_err(|e| TaskError::permanent(format!("waiting for `{command}`: {e}")))?;
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(TaskOutput {
                message: "exit 0".to_owned(),
                ..TaskOutput::default()
            }),
            // EX_TEMPFAIL: the command says "try again later".
            (Some(75), _) => Err(TaskError::transient(format!(
                "`{command}` exited with 75 (temporary failure)"
            ))),
            (Some(code), _) => Err(TaskError::permanent(format!(
                "`{command}` exited with {code} (see {})",
                ctx.log.path.display()
            ))),
            (None, sig) => Err(TaskError::transient(format!(
                "`{command}` was killed by signal {}",
                sig.unwrap_or(0)
            ))),
        }
    }
}

/// Copy a command's output into its attempt's log as it comes, whole lines
/// at a time: a character (or a secret to scrub) split between two reads is
/// written whole. A line longer than 64 KiB is written in pieces.
async fn pump(r: Option<impl tokio::io::AsyncRead + Unpin>, log: crate::worker::TaskLog) {
    let Some(mut r) = r else { return };
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let cut = match pending.iter().rposition(|b| *b == b'\n') {
            Some(nl) => nl + 1,
            None if pending.len() > 64 * 1024 => pending.len(),
            None => continue,
        };
        log.raw(&pending[..cut]);
        pending.drain(..cut);
    }
    if !pending.is_empty() {
        log.raw(&pending);
    }
}

#[async_trait::async_trait]
impl TaskRunner for PipelineRunner {
    async fn run(&self, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
        let kind = ctx.task.kind.clone();
        match &kind {
            TaskKind::Start => self.start(&ctx).await,
            TaskKind::Extract { table } => self.extract(&ctx, table).await,
            TaskKind::Load { table } => self.load(&ctx, table).await,
            TaskKind::TransformSetup => self.transform_setup(&ctx).await,
            TaskKind::Node { unique_id } => self.node(&ctx, unique_id).await,
            TaskKind::Transform => self.transform(&ctx).await,
            TaskKind::Sql { on, sql } => self.sql(&ctx, *on, sql).await,
            TaskKind::Shell { command } => self.shell(&ctx, command).await,
            TaskKind::Empty => Ok(TaskOutput::default()),
        }
    }
}
