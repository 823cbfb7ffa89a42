//! `weir lake gc`: remove old runs and what killed extracts left.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use weir_lake::gc::{self, GcOptions};
use weir_lake::Lake;

use crate::extract::load_project;
use crate::load::lake_url;
use crate::{project_dir, usage, Failure};
use weir_config::project_name;

#[derive(Subcommand)]
pub enum LakeCommand {
    /// Remove committed runs beyond the last --keep of each table, and run
    /// folders no manifest names. Shows what it would remove unless --apply.
    Gc(GcArgs),
}

#[derive(Args)]
pub struct GcArgs {
    /// Project folder holding weir.yml (default: the current folder).
    #[arg(short = 'p', long = "project-dir")]
    project: Option<PathBuf>,
    /// Lake URL (file://…, gs://…, s3://…); overrides `lake.url`.
    #[arg(long)]
    lake: Option<String>,
    /// Committed runs kept per table.
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Leave run folders without a manifest alone until their newest file is
    /// this old (an extract may still be writing them).
    #[arg(long, default_value = "24h")]
    orphan_age: String,
    /// Remove what is listed (without it, nothing is removed).
    #[arg(long)]
    apply: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: LakeCommand) -> Result<(), Failure> {
    let LakeCommand::Gc(args) = cmd;
    if args.keep == 0 {
        return Err(usage(anyhow!(
            "--keep must be at least 1: a load needs a run"
        )));
    }
    let orphan_age = weir_config::parse_duration(&args.orphan_age)
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .ok_or_else(|| {
            usage(anyhow!(
                "--orphan-age `{}` is not a duration (e.g. 30m, 24h)",
                args.orphan_age
            ))
        })?;
    let dir = project_dir(&args.project);
    let project = load_project(&dir)?;
    let name = project_name(&dir, project.as_ref());
    let lake = Lake::open(
        &lake_url(project.as_ref(), args.lake.as_deref()),
        &dir,
        &name,
    )
    .map_err(usage)?;
    // Runs an unfinished pipeline run may still load stay.
    let mut in_use = Default::default();
    if let Some(p) = &project {
        let cfg = p.orchestrate.clone().unwrap_or_default();
        let state = weir_orchestrate::pipeline::state_dir(&dir);
        if cfg.metadata.is_some() || state.join("metadata.db").exists() {
            let store = weir_orchestrate::store::Store::open(cfg.metadata.as_ref(), &state).await?;
            in_use = weir_orchestrate::pipeline::lake_runs_in_use(&store, &p.name).await?;
        }
    }
    let opts = GcOptions {
        keep: args.keep,
        orphan_age,
        in_use,
    };
    let plan = gc::plan(&lake, &opts, chrono::Utc::now()).await?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        for r in &plan.remove {
            say!(
                "{} {:<9} {:>8.1} MB {:>4} object(s)  {}",
                r.run_id,
                r.kind,
                r.bytes as f64 / 1e6,
                r.objects.len(),
                r.tables.join(", ")
            );
        }
        say!(
            "{} {} run(s), {:.1} MB in {} object(s); {} committed run(s) kept (the last {} of each table{})",
            if args.apply { "removing" } else { "would remove" },
            plan.remove.len(),
            plan.bytes() as f64 / 1e6,
            plan.objects(),
            plan.kept,
            args.keep,
            if opts.in_use.is_empty() { String::new() } else { format!(", and {} an unfinished pipeline run needs", opts.in_use.len()) }
        );
    }
    for r in &plan.refused {
        say!("left alone: {r}");
    }
    if args.apply {
        gc::apply(&lake, &plan).await?;
    } else if !args.json && !plan.remove.is_empty() {
        say!("(a dry run: `weir lake gc --apply` removes them)");
    }
    Ok(())
}
