//! `weir transform {run,test,build,compile,seed,ls}`: a dbt project on the
//! project's warehouse, or on the target a dbt `profiles.yml` names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use weir_config::{Project, WarehouseConfig};
use weir_transform::{
    Command, NodeResult, ProjectOptions, ResourceType, RunOptions, Selector, Status, Target,
};

use crate::extract::load_project;
use crate::{usage, Failure};

#[derive(Subcommand)]
pub enum TransformCommand {
    /// Build models (views, tables, incremental).
    Run(TransformArgs),
    /// Run data tests.
    Test(TransformArgs),
    /// Seeds, models and tests in graph order; a failing test skips its model's children.
    Build(TransformArgs),
    /// Render SQL into target/compiled without running it.
    Compile(TransformArgs),
    /// Load CSV seeds.
    Seed(TransformArgs),
    /// List the selected nodes.
    Ls(TransformArgs),
}

#[derive(Args, Clone)]
pub struct TransformArgs {
    /// A Weir project whose `transform:` section names the dbt project and whose warehouse is used.
    #[arg(short = 'p', long = "project")]
    pub weir_project: Option<PathBuf>,
    /// The dbt project folder (holding dbt_project.yml).
    #[arg(long)]
    pub project_dir: Option<PathBuf>,
    /// Where profiles.yml is (else DBT_PROFILES_DIR, the current folder, ~/.dbt).
    #[arg(long)]
    pub profiles_dir: Option<PathBuf>,
    /// The profile's target to use.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Nodes to act on (dbt selector syntax).
    #[arg(short = 's', long = "select", alias = "models", num_args = 1..)]
    pub select: Vec<String>,
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// Variables as YAML, e.g. `{start_date: 2024-01-01}`.
    #[arg(long)]
    pub vars: Option<String>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub full_refresh: bool,
    /// Stop at the first failure.
    #[arg(long, short = 'x')]
    pub fail_fast: bool,
}

/// Where the dbt project is, what it builds on, with which target settings.
struct Resolved {
    dbt_dir: PathBuf,
    warehouse: WarehouseConfig,
    base_dir: PathBuf,
    target: Target,
}

/// YAML (`--vars`, dbt_project.yml, profiles.yml) as JSON, through the transform crate's reader.
fn yaml_value(text: &str, what: &str) -> Result<serde_json::Value, Failure> {
    weir_transform::parse_yaml(Path::new(what), text).map_err(usage)
}

fn from_weir(dir: &Path, project: &Project, args: &TransformArgs) -> Result<Resolved, Failure> {
    let t = project.transform.clone().ok_or_else(|| {
        usage(anyhow!(
            "{} has no `transform:` section; add one (transform: {{ project: ./transform }}) or pass --project-dir",
            dir.join(weir_config::PROJECT_FILE).display()
        ))
    })?;
    Ok(Resolved {
        dbt_dir: args.project_dir.clone().unwrap_or_else(|| t.dbt_dir(dir)),
        warehouse: project.warehouse.clone(),
        base_dir: dir.to_path_buf(),
        target: Target::for_project(
            project,
            &t,
            args.target.as_deref().unwrap_or("weir"),
            args.threads.unwrap_or(t.threads),
        ),
    })
}

fn from_profiles(args: &TransformArgs) -> Result<Resolved, Failure> {
    let dbt_dir = args
        .project_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = weir_transform::profiles::profiles_dir(args.profiles_dir.as_deref());
    let p = weir_transform::profiles::resolve(&dbt_dir, &dir, args.target.as_deref(), args.threads)
        .map_err(|e| usage(anyhow!(e)))?;
    Ok(Resolved {
        dbt_dir,
        warehouse: p.warehouse,
        base_dir: PathBuf::from("."),
        target: p.target,
    })
}

fn line(i: usize, total: usize, r: &NodeResult) -> String {
    let what = match r.resource_type {
        ResourceType::Test => format!("test {}", r.name),
        ResourceType::Seed => format!("seed file {}", r.relation),
        ResourceType::Model => format!("{} model {}", r.materialized, r.relation),
    };
    let status = match r.status {
        Status::Success => "OK",
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Error => "ERROR",
        Status::Skipped => "SKIP",
    };
    let head = format!("{i:>3} of {total} {status} {what} ");
    let dots = ".".repeat(80usize.saturating_sub(head.chars().count()));
    let mut s = format!("{head}{dots} [{status} in {:.2}s]", r.seconds);
    if !r.message.is_empty() && r.status != Status::Success {
        s.push_str(&format!("\n      {}", r.message));
    }
    s
}

pub async fn run(cmd: TransformCommand) -> Result<(), Failure> {
    let (command, args) = match cmd {
        TransformCommand::Run(a) => (Command::Run, a),
        TransformCommand::Test(a) => (Command::Test, a),
        TransformCommand::Build(a) => (Command::Build, a),
        TransformCommand::Compile(a) => (Command::Compile, a),
        TransformCommand::Seed(a) => (Command::Seed, a),
        TransformCommand::Ls(a) => (Command::Ls, a),
    };
    let weir_dir = args.weir_project.clone().or_else(|| {
        (args.project_dir.is_none() && Path::new(weir_config::PROJECT_FILE).exists())
            .then(|| PathBuf::from("."))
    });
    let resolved = match &weir_dir {
        Some(dir) => {
            let project = load_project(dir)?
                .ok_or_else(|| usage(anyhow!("no weir.yml in {}", dir.display())))?;
            from_weir(dir, &project, &args)?
        }
        None => from_profiles(&args)?,
    };
    let vars = match &args.vars {
        Some(v) => match yaml_value(v, "--vars")? {
            serde_json::Value::Object(m) => m,
            _ => return Err(usage(anyhow!("--vars must be a YAML mapping"))),
        },
        None => serde_json::Map::new(),
    };
    let opts = ProjectOptions {
        target: resolved.target.clone(),
        vars,
        full_refresh: args.full_refresh,
    };
    let t0 = std::time::Instant::now();
    let project = weir_transform::load_project(&resolved.dbt_dir, &opts).map_err(usage)?;
    let parsed = t0.elapsed().as_secs_f64();
    let selector = Selector {
        select: args.select.clone(),
        exclude: args.exclude.clone(),
    };
    if command == Command::Ls {
        weir_transform::write_manifest(&project);
        let types = [ResourceType::Seed, ResourceType::Model, ResourceType::Test];
        for id in weir_transform::select(&project, &selector, &types).map_err(usage)? {
            say!("{id}");
        }
        return Ok(());
    }
    let wh = weir_warehouse::open(&resolved.warehouse, &resolved.base_dir, "")
        .await
        .map_err(usage)?;
    let wh: Arc<dyn weir_warehouse::Warehouse> = Arc::from(wh);
    say!(
        "Found {} models, {} tests, {} seeds, {} sources (parsed in {parsed:.2}s); target {} ({}) on {}",
        project.nodes.values().filter(|n| n.resource_type == ResourceType::Model).count(),
        project.nodes.values().filter(|n| n.resource_type == ResourceType::Test).count(),
        project.nodes.values().filter(|n| n.resource_type == ResourceType::Seed).count(),
        project.sources.len(),
        resolved.target.name,
        resolved.target.kind,
        wh.describe_target()
    );
    let run_opts = RunOptions {
        command,
        selector,
        threads: resolved.target.threads,
        fail_fast: args.fail_fast,
    };
    let project = Arc::new(project);
    let summary = weir_transform::execute(project, wh, &run_opts, &|i, total, r| {
        say!("{}", line(i, total, r))
    })
    .await
    .map_err(usage)?;
    say!(
        "\nFinished running {} node(s) in {:.2}s.\nDone. PASS={} WARN={} ERROR={} SKIP={} TOTAL={}",
        summary.results.len(),
        summary.seconds,
        summary.count(Status::Success) + summary.count(Status::Pass),
        summary.count(Status::Warn),
        summary.count(Status::Error) + summary.count(Status::Fail),
        summary.count(Status::Skipped),
        summary.results.len()
    );
    if summary.failed() {
        return Err(anyhow!(
            "{} node(s) failed",
            summary.count(Status::Error) + summary.count(Status::Fail)
        )
        .into());
    }
    Ok(())
}
