//! The extract stage: PostgreSQL tables to lake files, every connection in one
//! exported snapshot, tables and chunks of large tables read in parallel, and a
//! manifest committed last.
//!
//! This crate composes `weir-source` (reading) and `weir-lake` (writing); it is
//! the only place that knows both. It knows nothing of warehouses or the CLI.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use tokio::sync::mpsc;
use weir_config::{ChunkBy, SecretUrl, TableConfig, TableSelection};
use weir_lake::{
    new_run_id, write_part, FileEntry, IncrementalEntry, Lake, LakeError, Manifest, SnapshotEntry,
    TableEntry, WriteOptions, MANIFEST_VERSION,
};
use weir_source::{
    arrow_schema, describe, incremental_bounds, list_tables, plan_chunks, read_chunk, Chunk,
    ReadProgress, Snapshot, SnapshotRef, SourceError, TableInfo,
};

/// Batches buffered between a chunk's reader and its writer.
const CHANNEL_BATCHES: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Config(String),
}

/// What to extract and where to.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub project: String,
    pub source_url: SecretUrl,
    pub schema: String,
    pub tables: TableSelection,
    /// Restrict the run to these tables (the CLI's `--tables`).
    pub only: Option<Vec<String>>,
    pub jobs: usize,
    pub chunk_bytes: u64,
    pub write: WriteOptions,
    /// Read in this exported snapshot (held open elsewhere) instead of
    /// exporting one: the pipeline's per-table extract tasks share their
    /// run's snapshot this way.
    pub snapshot: Option<SnapshotRef>,
    /// Incremental tables are read whole (up to a new high-water mark), as
    /// if never extracted before: a full refresh's first half.
    pub full_refresh: bool,
}

/// Told about the run as it goes (progress bars, logs).
pub trait Observer: Send + Sync {
    /// The tables about to be read: name, size on disk in bytes, and counters the readers update.
    fn planned(&self, _run_id: &str, _tables: &[(String, u64, Arc<ReadProgress>)]) {}
    fn table_done(&self, _table: &TableSummary) {}
}

/// An observer that does nothing.
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableSummary {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub files: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtractSummary {
    pub run_id: String,
    pub manifest_url: String,
    pub snapshot: String,
    pub seconds: f64,
    pub rows: u64,
    pub bytes: u64,
    pub tables: Vec<TableSummary>,
}

struct Planned {
    info: TableInfo,
    config: TableConfig,
    schema: arrow::datatypes::SchemaRef,
    chunks: Vec<Chunk>,
    incremental: Option<IncrementalEntry>,
    /// The incremental window's condition, ANDed with each chunk's.
    row_filter: Option<String>,
    progress: Arc<ReadProgress>,
}

#[derive(Default)]
struct TableResult {
    files: Vec<(usize, FileEntry)>,
    started: Option<Instant>,
    finished: Option<Instant>,
}

impl TableResult {
    fn summary(&self, name: &str) -> TableSummary {
        TableSummary {
            name: name.to_owned(),
            rows: self.files.iter().map(|f| f.1.rows).sum(),
            bytes: self.files.iter().map(|f| f.1.bytes).sum(),
            files: self.files.len(),
            seconds: match (self.started, self.finished) {
                (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                _ => 0.0,
            },
        }
    }
}

/// Which tables of the schema this run reads, with their settings.
async fn select_tables(
    snapshot: &Snapshot,
    opts: &ExtractOptions,
) -> Result<Vec<TableConfig>, ExtractError> {
    let sel = &opts.tables;
    let mut out: Vec<TableConfig> = Vec::new();
    if sel.all {
        for name in list_tables(snapshot.client(), &opts.schema).await? {
            if sel.exclude.contains(&name) {
                continue;
            }
            let cfg = sel.tables.iter().find(|t| t.name == name).cloned();
            out.push(cfg.unwrap_or(TableConfig {
                name,
                ..TableConfig::default()
            }));
        }
        // Settings for a table that is not in the schema are a mistake worth reporting.
        for t in &sel.tables {
            if !out.iter().any(|o| o.name == t.name) && !sel.exclude.contains(&t.name) {
                return Err(SourceError::NoSuchTable {
                    schema: opts.schema.clone(),
                    table: t.name.clone(),
                }
                .into());
            }
        }
    } else {
        out = sel
            .tables
            .iter()
            .filter(|t| !sel.exclude.contains(&t.name))
            .cloned()
            .collect();
    }
    if let Some(only) = &opts.only {
        for name in only {
            if !out.iter().any(|t| &t.name == name) {
                let known: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
                return Err(ExtractError::Config(format!(
                    "--tables names `{name}`, which is not among the project's tables ({})",
                    known.join(", ")
                )));
            }
        }
        out.retain(|t| only.contains(&t.name));
    }
    if out.is_empty() {
        return Err(ExtractError::Config(format!(
            "no tables to extract in schema {}",
            opts.schema
        )));
    }
    Ok(out)
}

/// The most recent committed high-water mark of an incremental table.
async fn previous_mark(
    lake: &Lake,
    table: &str,
    cursor: &str,
) -> Result<Option<String>, ExtractError> {
    for run in lake.list_runs().await?.iter().rev() {
        let m = lake.read_manifest(run).await?;
        if let Some(inc) = m.table(table).and_then(|t| t.incremental.as_ref()) {
            if inc.cursor == cursor {
                return Ok(inc.mark.clone());
            }
        }
    }
    Ok(None)
}

/// Run one extraction and commit its manifest.
pub async fn extract(
    lake: &Lake,
    opts: &ExtractOptions,
    observer: &dyn Observer,
) -> Result<ExtractSummary, ExtractError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let run_id = new_run_id();
    let snapshot = match &opts.snapshot {
        Some(r) => Snapshot::import(&opts.source_url, r).await?,
        None => Snapshot::export(&opts.source_url).await?,
    };
    let result = extract_in_snapshot(lake, opts, observer, &snapshot, &run_id).await;
    let snap_entry = SnapshotEntry {
        id: snapshot.id.clone(),
        txid_snapshot: snapshot.txid_snapshot.clone(),
        taken_at: snapshot.taken_at.clone(),
    };
    snapshot.release().await;
    let (planned, results) = match result {
        Ok(r) => r,
        Err((e, written)) => {
            // Best effort: remove what this run wrote; without a manifest it is never read anyway.
            for path in written {
                let _ = lake.delete(&path).await;
            }
            return Err(e);
        }
    };
    let mut tables = Vec::new();
    let mut summaries = Vec::new();
    for (p, mut r) in planned.into_iter().zip(results) {
        let summary = r.summary(&p.info.name);
        r.files.sort_by_key(|f| f.0);
        let files: Vec<FileEntry> = r.files.into_iter().map(|f| f.1).collect();
        tables.push(TableEntry {
            name: p.info.name.clone(),
            source_table: p.info.display_name(),
            rows: summary.rows,
            bytes: summary.bytes,
            seconds: summary.seconds,
            arrow_schema: serde_json::to_value(p.schema.as_ref()).unwrap_or_default(),
            primary_key: p
                .config
                .primary_key
                .clone()
                .unwrap_or(p.info.primary_key.clone()),
            files,
            incremental: p.incremental,
        });
        summaries.push(summary);
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        run_id: run_id.clone(),
        project: opts.project.clone(),
        started_at,
        completed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        format: opts.write.format_name().to_owned(),
        compression: opts.write.compression_name(),
        source: format!("{} schema {}", opts.source_url.redacted(), opts.schema),
        snapshot: snap_entry.clone(),
        tables,
    };
    lake.write_manifest(&manifest).await?;
    Ok(ExtractSummary {
        manifest_url: lake.manifest_url(&run_id),
        run_id,
        snapshot: snap_entry.txid_snapshot,
        seconds: started.elapsed().as_secs_f64(),
        rows: summaries.iter().map(|t| t.rows).sum(),
        bytes: summaries.iter().map(|t| t.bytes).sum(),
        tables: summaries,
    })
}

type Failure = (ExtractError, Vec<String>);

async fn extract_in_snapshot(
    lake: &Lake,
    opts: &ExtractOptions,
    observer: &dyn Observer,
    snapshot: &Snapshot,
    run_id: &str,
) -> Result<(Vec<Planned>, Vec<TableResult>), Failure> {
    let plan = plan(lake, opts, snapshot)
        .await
        .map_err(|e| (e, Vec::new()))?;
    let listed: Vec<(String, u64, Arc<ReadProgress>)> = plan
        .iter()
        .map(|p| (p.info.name.clone(), p.info.size_bytes, p.progress.clone()))
        .collect();
    observer.planned(run_id, &listed);

    // Largest tables first, so the long chunks start early.
    let mut units: Vec<(usize, Chunk)> = plan
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.chunks.iter().map(move |c| (i, c.clone())))
        .collect();
    units.sort_by_key(|(i, _)| {
        std::cmp::Reverse(plan[*i].info.size_bytes / plan[*i].chunks.len().max(1) as u64)
    });
    let n_workers = opts.jobs.max(1).min(units.len());
    let queue = Mutex::new(units.into_iter().collect::<VecDeque<_>>());
    let results: Vec<Mutex<TableResult>> = plan
        .iter()
        .map(|_| Mutex::new(TableResult::default()))
        .collect();
    let written: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let failed = std::sync::atomic::AtomicBool::new(false);

    let worker = |_w: usize| async {
        let client = snapshot.join(&opts.source_url).await?;
        loop {
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            let Some((ti, chunk)) = queue.lock().map_or(None, |mut q| q.pop_front()) else {
                return Ok(());
            };
            let p = &plan[ti];
            if let Ok(mut r) = results[ti].lock() {
                r.started.get_or_insert_with(Instant::now);
            }
            let filter = match (chunk.filter.as_deref(), p.row_filter.as_deref()) {
                (None, None) => None,
                (Some(f), None) | (None, Some(f)) => Some(f.to_owned()),
                (Some(f), Some(i)) => Some(format!("({f}) AND ({i})")),
            };
            let rel = lake.part_path(&p.info.name, run_id, chunk.index, opts.write.extension());
            written.lock().map(|mut w| w.push(rel.clone())).ok();
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            let plain: Vec<String> = p
                .info
                .columns
                .iter()
                .filter(|c| c.mostly_distinct())
                .map(|c| c.name.clone())
                .collect();
            let writer = write_part(
                lake.store.clone(),
                lake.object_path(&rel),
                p.schema.clone(),
                opts.write,
                plain,
                rx,
            );
            let reader = async {
                let r = read_chunk(
                    &client,
                    &p.info,
                    p.schema.clone(),
                    filter.as_deref(),
                    &tx,
                    &p.progress,
                )
                .await;
                drop(tx);
                r
            };
            let (read, write) = tokio::join!(reader, writer);
            let stats = match (read, write) {
                (Ok(_), Ok(stats)) => stats,
                // A reader stopped by a failed writer reports the writer's error.
                (Err(SourceError::Cancelled), Err(w)) => return Err(w.into()),
                (Err(r), _) => return Err(r.into()),
                (Ok(_), Err(w)) => return Err(w.into()),
            };
            if let Ok(mut r) = results[ti].lock() {
                r.files.push((
                    chunk.index,
                    FileEntry {
                        path: rel,
                        rows: stats.rows,
                        bytes: stats.bytes,
                    },
                ));
                r.finished = Some(Instant::now());
                if r.files.len() == p.chunks.len() {
                    observer.table_done(&r.summary(&p.info.name));
                }
            }
        }
    };
    let outcomes = join_all((0..n_workers).map(|w| {
        let fut = worker(w);
        let failed = &failed;
        async move {
            let r: Result<(), ExtractError> = fut.await;
            if r.is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            r
        }
    }))
    .await;
    let written = written.into_inner().unwrap_or_default();
    if let Some(e) = outcomes.into_iter().find_map(Result::err) {
        return Err((e, written));
    }
    let results: Vec<TableResult> = results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_default())
        .collect();
    Ok((plan, results))
}

async fn plan(
    lake: &Lake,
    opts: &ExtractOptions,
    snapshot: &Snapshot,
) -> Result<Vec<Planned>, ExtractError> {
    let configs = select_tables(snapshot, opts).await?;
    let mut planned = Vec::with_capacity(configs.len());
    let mut problems: BTreeMap<String, String> = BTreeMap::new();
    for cfg in configs {
        let info = match describe(
            snapshot.client(),
            &opts.schema,
            &cfg.name,
            &cfg.cast_to_text,
        )
        .await
        {
            Ok(i) => i,
            Err(
                e @ (SourceError::UnsupportedType { .. }
                | SourceError::NoSuchColumn { .. }
                | SourceError::NoSuchTable { .. }),
            ) => {
                problems.insert(cfg.name.clone(), e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let schema = arrow_schema(&info);
        let chunk_by: Option<&ChunkBy> = cfg.chunk_by.as_ref();
        let chunks = plan_chunks(
            snapshot.client(),
            &info,
            chunk_by,
            opts.chunk_bytes,
            snapshot.server_version_num,
        )
        .await?;
        let (incremental, inc_filter) = match &cfg.cursor {
            Some(cursor) => {
                let prev = if opts.full_refresh {
                    None
                } else {
                    previous_mark(lake, &info.name, cursor).await?
                };
                let b = incremental_bounds(
                    snapshot.client(),
                    &info,
                    cursor,
                    prev.as_deref(),
                    cfg.cursor_lookback.as_deref(),
                    snapshot.oldest_open_write_start.as_deref(),
                )
                .await?;
                (
                    Some(IncrementalEntry {
                        cursor: cursor.clone(),
                        from: prev,
                        mark: b.mark,
                    }),
                    b.filter,
                )
            }
            None => (None, None),
        };
        planned.push(Planned {
            info,
            config: cfg,
            schema,
            chunks,
            incremental,
            row_filter: inc_filter,
            progress: Arc::new(ReadProgress::default()),
        });
    }
    if !problems.is_empty() {
        let lines: Vec<String> = problems.into_values().collect();
        return Err(ExtractError::Config(format!(
            "{} table(s) cannot be extracted:\n  {}",
            lines.len(),
            lines.join("\n  ")
        )));
    }
    Ok(planned)
}
