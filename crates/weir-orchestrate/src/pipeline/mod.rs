//! The Weir pipeline as a DAG: `start` → `extract.T` → `load.T` for every
//! source table → the dbt project's nodes (or one `transform` task) → `end`,
//! plus the project's own `sql`/`shell` tasks (built in `build`), and the
//! [`PipelineRunner`] that runs those tasks with the extract, load and
//! transform crates.

mod build;
mod runner;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_config::{OrchestrateConfig, Project};

pub use build::build_dag;
pub use runner::{PipelineRunner, DUCKDB_IDLE_CLOSE};

use crate::dag::{Dag, RunParams};
use crate::retry::TaskError;
use crate::store::Store;

/// Retries for every task unless weir.yml says otherwise (only transient
/// errors are retried, so this never repeats a task that cannot succeed).
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(10);
pub const DEFAULT_MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Transform(#[from] weir_transform::Problems),
    #[error("{0}")]
    Source(String),
}

/// Everything a run of a project needs, loaded once.
pub struct Pipeline {
    pub project: Project,
    pub config: OrchestrateConfig,
    pub dag: Dag,
    /// The source tables, each an extract → load task group.
    pub tables: Vec<String>,
    dbt: Option<Arc<weir_transform::Project>>,
}

/// The dbt project a Weir project's `transform:` section names, on its warehouse.
pub fn load_dbt(
    project: &Project,
) -> Result<Option<weir_transform::Project>, weir_transform::Problems> {
    let Some(t) = &project.transform else {
        return Ok(None);
    };
    let opts = weir_transform::ProjectOptions {
        target: weir_transform::Target::for_project(project, t, "weir", t.threads),
        vars: serde_json::Map::new(),
        full_refresh: false,
    };
    weir_transform::load_project(&t.dbt_dir(&project.dir), &opts).map(Some)
}

/// How long building the DAG waits for a source that does not answer.
const SOURCE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The source tables the pipeline moves: those weir.yml lists, or with `"*"`
/// every base table of the schema (less `exclude`), read from the database.
async fn source_tables(project: &Project) -> Result<Vec<String>, PipelineError> {
    let Some(src) = &project.source else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = src.tables.tables.iter().map(|t| t.name.clone()).collect();
    if src.tables.all {
        // The same listing `weir extract` uses for "*". A source that is
        // briefly down (a restart) is waited for, as a task's retries would.
        let mut wait = std::time::Duration::from_millis(500);
        let all = loop {
            let listed = async {
                let client = weir_source::connect(&src.url).await?;
                weir_source::list_tables(&client, &src.schema).await
            }
            .await;
            match listed {
                Ok(all) => break all,
                Err(e) if TaskError::classify(&e).kind.retryable() && wait < SOURCE_WAIT => {
                    tracing::warn!("listing the source's tables: {e}; trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(PipelineError::Source(e.to_string())),
            }
        };
        for n in all {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.retain(|n| !src.tables.exclude.contains(n));
    Ok(names)
}

impl Pipeline {
    /// Read the project's pipeline: its tables, dbt nodes and extra tasks.
    pub async fn load(project: Project) -> Result<Pipeline, PipelineError> {
        let config = project.orchestrate.clone().unwrap_or_default();
        let tables = source_tables(&project).await?;
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        let problems = weir_warehouse::name_problems(
            weir_warehouse::Dialect::of(&project.warehouse.target),
            &names,
        );
        if !problems.is_empty() {
            return Err(PipelineError::Config(format!(
                "the source tables of {} cannot all be loaded:\n  {}",
                project.dir.join(weir_config::PROJECT_FILE).display(),
                problems.join("\n  ")
            )));
        }
        let dbt = load_dbt(&project)?.map(Arc::new);
        let dag = build_dag(&project, &config, &tables, dbt.as_deref())?;
        Ok(Pipeline {
            project,
            config,
            dag,
            tables,
            dbt,
        })
    }

    /// The DAG of a run asked to do `params`: the pipeline's whole DAG, or
    /// the part the tables and the dbt selector name.
    pub fn dag_for(&self, params: &RunParams) -> Result<Dag, PipelineError> {
        build::part(&self.dag, &self.tables, self.dbt.as_deref(), params)
    }

    /// The dbt project the pipeline builds, as loaded.
    pub fn dbt(&self) -> Option<&weir_transform::Project> {
        self.dbt.as_deref()
    }

    /// The runner for this pipeline's tasks (it opens the warehouse once, on
    /// first use, and shares it between tasks).
    pub fn runner(&self, store: Arc<Store>) -> Arc<PipelineRunner> {
        Arc::new(PipelineRunner::new(
            self.project.clone(),
            self.dbt.clone(),
            store,
            self.tables.clone(),
        ))
    }
}

/// Where a project keeps its run history and logs.
pub fn state_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(".weir")
}

/// The lake runs a pipeline run of `dag` extracted and has not loaded yet:
/// its run is still going, or failed and may be retried (`weir retry` loads
/// exactly the run its extract wrote). `weir lake gc` must keep them.
pub async fn lake_runs_in_use(
    store: &Store,
    dag: &str,
) -> Result<BTreeSet<String>, crate::store::StoreError> {
    let mut out = BTreeSet::new();
    for run in store.runs(100_000).await? {
        if run.dag != dag || run.state == crate::store::RunState::Success {
            continue;
        }
        let tasks = store.tasks(run.id).await?;
        let loaded = |table: &str| {
            tasks.iter().any(|t| {
                t.task_id == format!("load.{table}") && t.state == crate::store::TaskState::Success
            })
        };
        for t in &tasks {
            let Some(table) = t.task_id.strip_prefix("extract.") else {
                continue;
            };
            let lake_run = t
                .output
                .as_ref()
                .and_then(|o| o.get("lake_run"))
                .and_then(|r| r.as_str());
            if let Some(r) = lake_run.filter(|_| !loaded(table)) {
                out.insert(r.to_owned());
            }
        }
    }
    Ok(out)
}
