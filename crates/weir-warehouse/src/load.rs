//! `weir load`: one extract run's tables into the warehouse's raw schema.
//!
//! Per table: read the manifest's Arrow schema, map it to column types, check
//! it against the existing table (new columns are added; a change that would
//! lose data fails before anything is written), stage the files, set aside bad
//! NDJSON records (failing past the budget), then publish atomically. Tables
//! load in parallel up to `jobs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::Schema;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use weir_config::{LakeFormat, LoadMode};
use weir_lake::{Lake, Manifest, TableEntry};

use crate::types::{columns_for, fit, Fit};
use crate::{Column, Lineage, Publish, Result, StageRequest, Warehouse, WarehouseError};

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Run id, or `None` for the latest committed run.
    pub run: Option<String>,
    /// Only these tables (all of the run's when `None`).
    pub tables: Option<Vec<String>>,
    /// Forces one mode for every table (the `--mode` flag).
    pub mode: Option<LoadMode>,
    /// The mode for tables without their own (`warehouse.mode`).
    pub default_mode: LoadMode,
    /// Per-table modes from `weir.yml`.
    pub table_modes: HashMap<String, LoadMode>,
    pub schema: String,
    pub lineage: bool,
    pub max_bad_records: u64,
    pub table_max_bad_records: HashMap<String, u64>,
    pub jobs: usize,
}

impl LoadOptions {
    /// What weir.yml says: the warehouse's settings and each source table's
    /// own `load_mode` and `max_bad_records`.
    pub fn for_project(
        project: Option<&weir_config::Project>,
        cfg: &weir_config::WarehouseConfig,
        run: &str,
        tables: Option<Vec<String>>,
    ) -> LoadOptions {
        let mut table_modes = HashMap::new();
        let mut table_max_bad_records = HashMap::new();
        if let Some(src) = project.and_then(|p| p.source.as_ref()) {
            for t in &src.tables.tables {
                if let Some(m) = t.load_mode {
                    table_modes.insert(t.name.clone(), m);
                }
                if let Some(b) = t.max_bad_records {
                    table_max_bad_records.insert(t.name.clone(), b);
                }
            }
        }
        LoadOptions {
            run: Some(run.to_owned()),
            tables,
            mode: None,
            default_mode: cfg.mode,
            table_modes,
            schema: cfg.schema.clone(),
            lineage: cfg.lineage,
            max_bad_records: cfg.max_bad_records,
            table_max_bad_records,
            jobs: cfg.jobs,
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            run: None,
            tables: None,
            mode: None,
            default_mode: LoadMode::Truncate,
            table_modes: HashMap::new(),
            schema: "raw".to_owned(),
            lineage: false,
            max_bad_records: 0,
            table_max_bad_records: HashMap::new(),
            jobs: 4,
        }
    }
}

/// The outcome for one table.
#[derive(Debug, Clone)]
pub struct TableLoad {
    pub name: String,
    pub mode: LoadMode,
    pub rows: u64,
    pub rejected: u64,
    pub seconds: f64,
    /// Where the bad records were written, if there were any.
    pub rejects_file: Option<String>,
    /// Why the table failed (the old table is untouched); shared, so the
    /// summary stays `Clone` and callers can still tell what kind of error it was.
    pub error: Option<Arc<WarehouseError>>,
}

#[derive(Debug, Clone)]
pub struct LoadSummary {
    pub run_id: String,
    pub warehouse: String,
    pub schema: String,
    pub tables: Vec<TableLoad>,
    pub seconds: f64,
}

impl LoadSummary {
    pub fn failed(&self) -> usize {
        self.tables.iter().filter(|t| t.error.is_some()).count()
    }
}

/// The staging table of `table`: fixed, so a killed load's leftover is found
/// and dropped by the next one, and cut to the warehouse's identifier limit
/// without two tables ever sharing one (see [`Dialect::derived_name`]).
pub fn staging_name(dialect: crate::Dialect, table: &str) -> String {
    dialect.derived_name(table, "_weir_stage_", "")
}

/// Source tables that would land on the same relation in the warehouse
/// (DuckDB ignores case, PostgreSQL keeps 63 bytes), or in Weir's own
/// naming space (`_weir_…`, where staging tables live and leftovers are
/// dropped): each problem, named. Checked before anything is written,
/// because either would lose a table while reporting it loaded.
pub fn name_problems(dialect: crate::Dialect, tables: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_key: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for t in tables {
        by_key.entry(dialect.identifier_key(t)).or_default().push(t);
        if dialect
            .identifier_key(t)
            .starts_with(&dialect.identifier_key(crate::sql::RESERVED_PREFIX))
        {
            problems.push(format!(
                "table `{t}`: names beginning with `{}` are Weir's own (its staging tables); exclude the table or rename it at the source",
                crate::sql::RESERVED_PREFIX
            ));
        }
    }
    for (key, names) in by_key {
        if names.len() > 1 {
            let why = match dialect {
                crate::Dialect::DuckDb => "DuckDB compares names without case".to_owned(),
                crate::Dialect::Postgres => {
                    format!("PostgreSQL keeps only the first 63 bytes of a name (`{key}`)")
                }
                crate::Dialect::BigQuery => "BigQuery sees them as one".to_owned(),
            };
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            problems.push(format!(
                "tables {} would be one table in the warehouse ({why}); load only one of them (`--tables`, or `exclude:` in weir.yml)",
                list.join(" and ")
            ));
        }
    }
    problems
}

/// Load a run. Manifest problems fail the whole load; a table that fails is
/// reported in the summary while the others go on.
pub async fn load(wh: &dyn Warehouse, lake: &Lake, opts: &LoadOptions) -> Result<LoadSummary> {
    let started = Instant::now();
    // One listing answers both "which is the latest" and "does this run exist".
    let runs = lake.list_runs().await?;
    let run_id = match &opts.run {
        Some(r) if r != "latest" => r.clone(),
        _ => runs.last().cloned().ok_or_else(|| WarehouseError::NoRun {
            project: lake.project().to_owned(),
            lake: lake.url().to_owned(),
        })?,
    };
    if !runs.contains(&run_id) {
        return Err(WarehouseError::UnknownRun {
            run: run_id,
            project: lake.project().to_owned(),
            lake: lake.url().to_owned(),
            latest: runs.last().cloned().unwrap_or_else(|| "none".to_owned()),
        });
    }
    let manifest = Arc::new(lake.read_manifest(&run_id).await?);
    let format = LakeFormat::parse(&manifest.format).ok_or_else(|| {
        WarehouseError::Lake(weir_lake::LakeError::Manifest {
            path: lake.manifest_url(&run_id),
            message: format!("unknown format `{}`", manifest.format),
        })
    })?;
    let selected: Vec<&TableEntry> = match &opts.tables {
        None => manifest.tables.iter().collect(),
        Some(names) => {
            let missing: Vec<&str> = names
                .iter()
                .filter(|n| manifest.table(n).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(WarehouseError::Load {
                    table: missing.join(", "),
                    message: format!(
                        "not in run {run_id} (it has: {})",
                        manifest
                            .tables
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            manifest
                .tables
                .iter()
                .filter(|t| names.contains(&t.name))
                .collect()
        }
    };
    let names: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
    let problems = name_problems(wh.dialect(), &names);
    if !problems.is_empty() {
        return Err(WarehouseError::Names { problems });
    }
    wh.ensure_schema(&opts.schema).await?;
    let lineage = opts.lineage.then(|| Lineage {
        run_id: run_id.clone(),
        loaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    // The futures are made first and then driven, rather than made inside
    // the stream by a closure, so the whole load stays `Send` (the
    // orchestrator runs it on a spawned task).
    let loads: Vec<_> = selected
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            load_one(
                wh,
                lake,
                &manifest,
                format,
                entry,
                lineage.as_ref(),
                opts,
                i,
            )
        })
        .collect();
    let mut results: Vec<(usize, TableLoad)> = futures::stream::iter(loads)
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    Ok(LoadSummary {
        run_id,
        warehouse: wh.describe_target(),
        schema: opts.schema.clone(),
        tables: results.into_iter().map(|(_, t)| t).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Load one table of the run, with its outcome (an error is reported in
/// the result, so one table failing does not stop the others).
#[allow(clippy::too_many_arguments)]
async fn load_one(
    wh: &dyn Warehouse,
    lake: &Lake,
    manifest: &Manifest,
    format: LakeFormat,
    entry: &TableEntry,
    lineage: Option<&Lineage>,
    opts: &LoadOptions,
    i: usize,
) -> (usize, TableLoad) {
    let t0 = Instant::now();
    let mode = mode_for(opts, entry);
    let mut out = TableLoad {
        name: entry.name.clone(),
        mode,
        rows: 0,
        rejected: 0,
        seconds: 0.0,
        rejects_file: None,
        error: None,
    };
    if let Err(e) = load_table(
        wh, lake, manifest, format, entry, mode, lineage, opts, &mut out,
    )
    .await
    {
        out.rows = 0;
        out.error = Some(Arc::new(e));
    }
    out.seconds = t0.elapsed().as_secs_f64();
    (i, out)
}

/// `--mode`, else the table's `load_mode`, else merge for an incremental
/// run that read from a mark (a delta must never replace the table), else the default.
fn mode_for(opts: &LoadOptions, entry: &TableEntry) -> LoadMode {
    if let Some(m) = opts.mode {
        return m;
    }
    if let Some(m) = opts.table_modes.get(&entry.name) {
        return *m;
    }
    if entry.incremental.as_ref().is_some_and(|i| i.from.is_some()) {
        return LoadMode::Merge;
    }
    opts.default_mode
}

/// Columns to add and widen on the existing table, or the first lossy change.
fn reconcile(
    table: &str,
    existing: &[Column],
    incoming: &[Column],
) -> (Vec<Column>, Vec<Column>, Option<WarehouseError>) {
    let mut add = Vec::new();
    let mut widen = Vec::new();
    let mut lossy = None;
    for c in incoming {
        match existing.iter().find(|e| e.name == c.name) {
            None => add.push(c.clone()),
            Some(old) => match fit(&old.data_type, &c.data_type) {
                Fit::AsIs => {}
                Fit::Widen => widen.push(c.clone()),
                Fit::Lossy => {
                    lossy.get_or_insert(WarehouseError::TypeDrift {
                        table: table.to_owned(),
                        column: c.name.clone(),
                        old: old.data_type.clone(),
                        new: c.data_type.clone(),
                    });
                }
            },
        }
    }
    (add, widen, lossy)
}

#[allow(clippy::too_many_arguments)]
async fn load_table(
    wh: &dyn Warehouse,
    lake: &Lake,
    manifest: &Manifest,
    format: LakeFormat,
    entry: &TableEntry,
    mode: LoadMode,
    lineage: Option<&Lineage>,
    opts: &LoadOptions,
    out: &mut TableLoad,
) -> Result<()> {
    let table = entry.name.as_str();
    let arrow: Schema = serde_json::from_value(entry.arrow_schema.clone()).map_err(|e| {
        WarehouseError::Lake(weir_lake::LakeError::Manifest {
            path: lake.manifest_url(&manifest.run_id),
            message: format!("table {table}: unreadable arrow_schema: {e}"),
        })
    })?;
    let columns = columns_for(wh.dialect(), table, &arrow, lineage.is_some())?;
    if mode == LoadMode::Merge && entry.primary_key.is_empty() {
        return Err(WarehouseError::Load {
            table: table.to_owned(),
            message: "merge needs a primary key: the source table has none; set `primary_key` for it in weir.yml".to_owned(),
        });
    }
    let existing = wh.describe(&opts.schema, table).await?;
    let (add, widen) = match &existing {
        Some(old) => {
            let (add, widen, lossy) = reconcile(table, old, &columns);
            if let (Some(e), LoadMode::Append | LoadMode::Merge) = (lossy, mode) {
                return Err(e);
            }
            (add, widen)
        }
        None => (Vec::new(), Vec::new()),
    };
    verify_files(lake, manifest, entry, format).await?;
    let staging = staging_name(wh.dialect(), table);
    wh.drop_table(&opts.schema, &staging).await?;
    let budget = opts
        .table_max_bad_records
        .get(table)
        .copied()
        .unwrap_or(opts.max_bad_records);
    let req = StageRequest {
        lake,
        format,
        table: entry,
        arrow: Arc::new(arrow),
        schema: &opts.schema,
        staging: &staging,
        columns: &columns,
        lineage,
        max_bad_records: budget,
    };
    let result = async {
        let staged = wh.stage(&req).await?;
        // Every row the run wrote is in staging or set aside, or the files
        // are not the run's any more: publishing them would shrink the table.
        if staged.rows + staged.rejected_count != entry.rows
            && staged.rejected_count <= budget
        {
            return Err(WarehouseError::Load {
                table: table.to_owned(),
                message: format!(
                    "the run's files hold {} row(s) ({} loaded, {} set aside) but its manifest says {}; they were changed after the run committed, so the table is left as it was",
                    staged.rows + staged.rejected_count,
                    staged.rows,
                    staged.rejected_count,
                    entry.rows
                ),
            });
        }
        out.rows = staged.rows;
        out.rejected = staged.rejected_count;
        if staged.rejected_count > 0 {
            let rel = format!(
                "{}/_manifests/{}.rejects/{table}.ndjson",
                manifest.project, manifest.run_id
            );
            let mut body = Vec::new();
            for r in &staged.rejected {
                serde_json::to_writer(&mut body, r)
                    .map_err(|e| WarehouseError::Bug(e.to_string()))?;
                body.push(b'\n');
            }
            lake.store
                .put(&lake.object_path(&rel), PutPayload::from(body))
                .await
                .map_err(|e| WarehouseError::Lake(weir_lake::LakeError::store(rel.clone(), &e)))?;
            let shown = format!("{}/{rel}", lake.url().trim_end_matches('/'));
            out.rejects_file = Some(shown.clone());
            if staged.rejected_count > budget {
                return Err(WarehouseError::BadRecords {
                    table: table.to_owned(),
                    rejected: staged.rejected_count,
                    budget,
                    first: staged
                        .rejected
                        .first()
                        .map_or_else(String::new, |r| match r.line {
                            Some(l) => format!("{} line {l}: {}", r.file, r.reason),
                            None => format!("{}: {}", r.file, r.reason),
                        }),
                    rejects: shown,
                });
            }
        }
        wh.publish(&Publish {
            schema: &opts.schema,
            staging: &staging,
            table,
            mode,
            exists: existing.is_some(),
            columns: &columns,
            add: &add,
            widen: &widen,
            primary_key: &entry.primary_key,
        })
        .await
    }
    .await;
    if result.is_err() {
        // Best effort: the next load drops it anyway.
        let _ = wh.drop_table(&opts.schema, &staging).await;
    }
    result
}

/// Check a table's files against its manifest before anything is staged:
/// each path inside the run's own folder, each file of the size the run
/// wrote, and each Parquet file holding the rows the run wrote (read from its
/// footer). The rows of NDJSON files are counted as they load.
async fn verify_files(
    lake: &Lake,
    manifest: &Manifest,
    entry: &TableEntry,
    format: LakeFormat,
) -> Result<()> {
    let table = entry.name.as_str();
    let listed: u64 = entry.files.iter().map(|f| f.rows).sum();
    if listed != entry.rows {
        return Err(WarehouseError::Lake(weir_lake::LakeError::Manifest {
            path: lake.manifest_url(&manifest.run_id),
            message: format!(
                "table {table}: its files hold {listed} row(s) but the table {}",
                entry.rows
            ),
        }));
    }
    let changed = |f: &weir_lake::FileEntry, what: String| {
        WarehouseError::Load {
        table: table.to_owned(),
        message: format!(
            "{}: {what}; the file was changed after the run committed, so the table is left as it was",
            f.path
        ),
    }
    };
    for f in &entry.files {
        lake.check_run_file(table, &manifest.run_id, &f.path)?;
        let path = lake.object_path(&f.path);
        let meta =
            lake.store.head(&path).await.map_err(|e| {
                WarehouseError::Lake(weir_lake::LakeError::store(f.path.clone(), &e))
            })?;
        if meta.size != f.bytes {
            return Err(changed(
                f,
                format!("it is {} bytes, the manifest says {}", meta.size, f.bytes),
            ));
        }
        if format == LakeFormat::Parquet {
            let rows = crate::read::parquet_rows(lake, &f.path, meta.size)
                .await
                .map_err(|e| changed(f, format!("its Parquet footer cannot be read ({e})")))?;
            if rows != f.rows {
                return Err(changed(
                    f,
                    format!("it holds {rows} rows, the manifest says {}", f.rows),
                ));
            }
        }
    }
    Ok(())
}
