//! `weir load` and `weir query`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use clap::Args;
use weir_config::{LoadMode, Project, WarehouseConfig};
use weir_lake::Lake;
use weir_warehouse::{LoadOptions, LoadSummary, Warehouse, WarehouseError};

use crate::extract::load_project;
use crate::{project_dir, usage, Failure};
use weir_config::project_name;

#[derive(Args)]
pub struct LoadArgs {
    /// Project folder holding weir.yml (default: the current folder).
    #[arg(short = 'p', long = "project-dir")]
    pub project: Option<PathBuf>,
    /// The extract run to load: a run id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub run: String,
    /// Only these tables (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// A DuckDB file or a postgres:// URL; overrides `warehouse:`.
    #[arg(long, env = "WEIR_WAREHOUSE", hide_env_values = true)]
    pub warehouse: Option<String>,
    /// Lake URL (file://…, gs://…, s3://…); overrides `lake.url`.
    #[arg(long)]
    pub lake: Option<String>,
    /// How every table is written; overrides `warehouse.mode` and per-table `load_mode`.
    #[arg(long, value_parser = ["truncate", "append", "merge"])]
    pub mode: Option<String>,
    /// Print a JSON summary on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The warehouse settings: weir.yml's, with `--warehouse` taking precedence.
pub fn warehouse_config(project: Option<&Project>, arg: Option<&str>) -> WarehouseConfig {
    let mut cfg = project.map(|p| p.warehouse.clone()).unwrap_or_default();
    if let Some(a) = arg {
        cfg.target = weir_warehouse::target_from_arg(a);
    }
    cfg
}

/// The lake URL: `--lake`, else weir.yml's, else the default folder.
pub fn lake_url(project: Option<&Project>, arg: Option<&str>) -> String {
    match arg {
        Some(a) => a.to_owned(),
        None => project.map_or_else(
            || weir_config::LakeConfig::default().url,
            |p| p.lake.url.clone(),
        ),
    }
}

pub async fn open_warehouse(
    dir: &Path,
    project: Option<&Project>,
    arg: Option<&str>,
) -> Result<Box<dyn Warehouse>, Failure> {
    let cfg = warehouse_config(project, arg);
    weir_warehouse::open(&cfg, dir, &lake_url(project, None))
        .await
        .map_err(|e| match e {
            WarehouseError::Open { .. } => usage(e),
            e => Failure::from(e),
        })
}

/// Load options from weir.yml and the flags.
pub fn load_options(
    project: Option<&Project>,
    cfg: &WarehouseConfig,
    run: &str,
    tables: Option<Vec<String>>,
    mode: Option<&str>,
) -> LoadOptions {
    LoadOptions {
        mode: mode.and_then(LoadMode::parse),
        ..LoadOptions::for_project(project, cfg, run, tables)
    }
}

/// Open the lake and warehouse of a project and load a run.
/// What the command line overrides in weir.yml.
#[derive(Default, Clone, Copy)]
pub struct Overrides<'a> {
    pub lake: Option<&'a str>,
    pub warehouse: Option<&'a str>,
}

pub async fn load_run(
    dir: &Path,
    project: Option<&Project>,
    name: &str,
    overrides: Overrides<'_>,
    run: &str,
    tables: Option<Vec<String>>,
    mode: Option<&str>,
) -> Result<LoadSummary, Failure> {
    let cfg = warehouse_config(project, overrides.warehouse);
    let lake_url = lake_url(project, overrides.lake);
    let lake = Lake::open(&lake_url, dir, name).map_err(usage)?;
    let wh = weir_warehouse::open(&cfg, dir, &lake_url)
        .await
        .map_err(|e| match e {
            WarehouseError::Open { .. } => usage(e),
            e => Failure::from(e),
        })?;
    let opts = load_options(project, &cfg, run, tables, mode);
    weir_warehouse::load(wh.as_ref(), &lake, &opts)
        .await
        .map_err(|e| match e {
            WarehouseError::Load { .. }
            | WarehouseError::Names { .. }
            | WarehouseError::NoRun { .. }
            | WarehouseError::UnknownRun { .. } => usage(e),
            e => Failure::from(e),
        })
}

pub fn print_load_summary(s: &LoadSummary) {
    let rows: u64 = s.tables.iter().map(|t| t.rows).sum();
    say!(
        "loaded {rows} rows into {} schema {} in {:.2}s (run {})",
        s.warehouse,
        s.schema,
        s.seconds,
        s.run_id
    );
    for t in &s.tables {
        match &t.error {
            None => say!(
                "  {:<36} {:>10} rows {:>6} rejected  {:<8} {:>7.2}s",
                t.name,
                t.rows,
                t.rejected,
                t.mode.as_str(),
                t.seconds
            ),
            Some(e) => say!("  {:<36} FAILED: {e}", t.name),
        }
        if let Some(f) = &t.rejects_file {
            say!("  {:<36} bad records: {f}", "");
        }
    }
}

pub fn summary_json(s: &LoadSummary) -> serde_json::Value {
    serde_json::json!({
        "run_id": s.run_id,
        "warehouse": s.warehouse,
        "schema": s.schema,
        "seconds": s.seconds,
        "tables": s.tables.iter().map(|t| serde_json::json!({
            "name": t.name,
            "mode": t.mode.as_str(),
            "rows_loaded": t.rows,
            "rows_rejected": t.rejected,
            "seconds": t.seconds,
            "rejects_file": t.rejects_file,
            "error": t.error.as_ref().map(|e| e.to_string()),
        })).collect::<Vec<_>>(),
    })
}

pub async fn run(args: LoadArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.project);
    let project = load_project(&dir)?;
    let summary = load_run(
        &dir,
        project.as_ref(),
        &project_name(&dir, project.as_ref()),
        Overrides {
            lake: args.lake.as_deref(),
            warehouse: args.warehouse.as_deref(),
        },
        &args.run,
        args.tables.clone(),
        args.mode.as_deref(),
    )
    .await?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&summary_json(&summary))?);
    } else {
        print_load_summary(&summary);
    }
    match summary.failed() {
        0 => Ok(()),
        n => Err(
            anyhow!("{n} table(s) failed to load; their previous contents are untouched").into(),
        ),
    }
}

#[derive(Args)]
pub struct QueryArgs {
    /// Project folder holding weir.yml (default: the current folder).
    #[arg(short = 'p', long = "project-dir")]
    pub project: Option<PathBuf>,
    /// The SQL to run on the warehouse.
    pub sql: String,
    /// Output format (default: an aligned table on a terminal, csv otherwise).
    #[arg(long, value_parser = ["table", "csv", "json"])]
    pub format: Option<String>,
    /// A DuckDB file or a postgres:// URL; overrides `warehouse:`.
    #[arg(long, env = "WEIR_WAREHOUSE", hide_env_values = true)]
    pub warehouse: Option<String>,
    /// Allow statements that change the warehouse (by default the warehouse
    /// is opened read-only, and a DuckDB file must already exist).
    #[arg(long)]
    pub write: bool,
}

pub async fn query(args: QueryArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.project);
    let project = load_project(&dir)?;
    let access = if args.write {
        weir_warehouse::Access::ReadWrite
    } else {
        weir_warehouse::Access::ReadOnly
    };
    let cfg = warehouse_config(project.as_ref(), args.warehouse.as_deref());
    let wh = weir_warehouse::open_with(&cfg, &dir, &lake_url(project.as_ref(), None), access)
        .await
        .map_err(|e| match e {
            WarehouseError::Open { .. } => usage(e),
            e => Failure::from(e),
        })?;
    let result = wh.query(&args.sql).await?;
    let format = args.format.unwrap_or_else(|| {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            "table".to_owned()
        } else {
            "csv".to_owned()
        }
    });
    let mut out = std::io::stdout().lock();
    write_result(&mut out, &result, &format)?;
    out.flush()?;
    Ok(())
}

/// Print query results as an aligned table, CSV (header row, empty for NULL) or a JSON array.
pub fn write_result(
    out: &mut impl Write,
    result: &weir_warehouse::QueryResult,
    format: &str,
) -> Result<(), Failure> {
    match format {
        "json" => {
            // Every key in every object: a NULL is `null`, not a missing key.
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut *out);
            for b in &result.batches {
                w.write(b)?;
            }
            w.finish()?;
            if result.batches.iter().all(|b| b.num_rows() == 0) {
                out.write_all(b"[]")?;
            }
            writeln!(out)?;
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(result.schema.fields().iter().map(|f| f.name()))?;
            let opts = FormatOptions::default();
            for b in &result.batches {
                let fmts: Vec<ArrayFormatter> = b
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                    .collect::<Result<_, _>>()?;
                for row in 0..b.num_rows() {
                    w.write_record(fmts.iter().map(|f| f.value(row).to_string()))?;
                }
            }
            w.flush()?;
        }
        _ => {
            if result.batches.is_empty() {
                let names: Vec<&str> = result
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                writeln!(out, "{}\n(0 rows)", names.join(" | "))?;
            } else {
                let table = arrow::util::pretty::pretty_format_batches(&result.batches)?;
                writeln!(out, "{table}")?;
                writeln!(out, "({} rows)", result.num_rows())?;
            }
        }
    }
    Ok(())
}
