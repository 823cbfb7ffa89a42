//! `weir extract`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Args;
use weir_config::{
    LakeConfig, LakeFormat, Project, SecretUrl, TableSelection, DEFAULT_CHUNK_BYTES, DEFAULT_JOBS,
};
use weir_extract::{ExtractOptions, ExtractSummary, Quiet};
use weir_lake::{Lake, WriteOptions};

use crate::progress::Bars;
use crate::{project_dir, usage, Failure};

#[derive(Args)]
pub struct ExtractArgs {
    /// Project folder holding weir.yml (default: the current folder).
    #[arg(short = 'p', long = "project-dir")]
    pub project: Option<PathBuf>,
    /// PostgreSQL URL; overrides `source.postgres.url`.
    #[arg(long, env = "WEIR_SOURCE_URL", hide_env_values = true)]
    pub source_url: Option<String>,
    /// Source schema; overrides `source.postgres.schema`.
    #[arg(long)]
    pub schema: Option<String>,
    /// Only these tables (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Lake URL (file://…, gs://…, s3://…); overrides `lake.url`.
    #[arg(long)]
    pub lake: Option<String>,
    /// File format; overrides `lake.format`.
    #[arg(long, value_parser = ["parquet", "ndjson"])]
    pub format: Option<String>,
    /// Parallel connections.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print a JSON summary on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The project in `dir`, or `None` when it has no weir.yml.
pub fn load_project(dir: &Path) -> Result<Option<Project>, Failure> {
    if !dir.join(weir_config::PROJECT_FILE).exists() {
        return Ok(None);
    }
    Project::load(dir).map(Some).map_err(usage)
}

/// Combine weir.yml with command-line overrides.
pub fn options(
    args: &ExtractArgs,
    dir: &Path,
    project: Option<&Project>,
) -> Result<(ExtractOptions, LakeConfig), Failure> {
    let source = project.and_then(|p| p.source.as_ref());
    let url = match (&args.source_url, source) {
        (Some(u), _) => SecretUrl::new(u.clone()),
        (None, Some(s)) => s.url.clone(),
        (None, None) => {
            return Err(usage(anyhow!(
                "no source database: give --source-url (or WEIR_SOURCE_URL), or a `source:` section in {}",
                dir.join(weir_config::PROJECT_FILE).display()
            )))
        }
    };
    let mut lake = project.map(|p| p.lake.clone()).unwrap_or_default();
    if let Some(u) = &args.lake {
        lake.url = u.clone();
    }
    if let Some(f) = &args.format {
        lake.format = LakeFormat::parse(f).unwrap_or(LakeFormat::Parquet);
    }
    let opts = ExtractOptions {
        project: weir_config::project_name(dir, project),
        source_url: url,
        schema: args
            .schema
            .clone()
            .or_else(|| source.map(|s| s.schema.clone()))
            .unwrap_or_else(|| "public".to_owned()),
        tables: source.map(|s| s.tables.clone()).unwrap_or(TableSelection {
            all: true,
            tables: vec![],
            exclude: vec![],
        }),
        only: args.tables.clone(),
        jobs: args.jobs.or(source.map(|s| s.jobs)).unwrap_or(DEFAULT_JOBS),
        chunk_bytes: source.map_or(DEFAULT_CHUNK_BYTES, |s| s.chunk_bytes),
        write: WriteOptions::from_config(&lake),
        snapshot: None,
        full_refresh: false,
    };
    Ok((opts, lake))
}

/// Run an extraction with progress bars on a terminal.
pub async fn extract_with_progress(
    dir: &Path,
    opts: &ExtractOptions,
    lake_cfg: &LakeConfig,
    show_progress: bool,
) -> Result<ExtractSummary, Failure> {
    let lake = Lake::open(&lake_cfg.url, dir, &opts.project).map_err(usage)?;
    let result = if show_progress {
        let bars = Bars::new();
        let r = weir_extract::extract(&lake, opts, &bars).await;
        bars.finish();
        r
    } else {
        weir_extract::extract(&lake, opts, &Quiet).await
    };
    result.map_err(|e| match e {
        weir_extract::ExtractError::Config(_) => usage(e),
        e => Failure::from(e),
    })
}

pub fn print_summary(s: &ExtractSummary) {
    say!(
        "extracted {} rows, {:.1} MB in {:.2}s (run {}, snapshot {})",
        s.rows,
        s.bytes as f64 / 1e6,
        s.seconds,
        s.run_id,
        s.snapshot
    );
    for t in &s.tables {
        say!(
            "  {:<36} {:>10} rows {:>9.1} MB {:>3} file(s) {:>7.2}s",
            t.name,
            t.rows,
            t.bytes as f64 / 1e6,
            t.files,
            t.seconds
        );
    }
    say!("manifest: {}", s.manifest_url);
}

pub async fn run(args: ExtractArgs) -> Result<(), Failure> {
    let dir = project_dir(&args.project);
    let project = load_project(&dir)?;
    let (opts, lake) = options(&args, &dir, project.as_ref())?;
    let progress = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let summary = extract_with_progress(&dir, &opts, &lake, progress).await?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}
