//! dbt-compatible SQL projects: read `dbt_project.yml`, models, sources,
//! schema tests, seeds and macros; render them with Jinja (minijinja) the way
//! dbt-core does (`ref`, `source`, `config`, `var`, `env_var`, `this`,
//! `target`, `is_incremental()`, project macros including
//! `generate_schema_name`); build the graph; and materialise nodes on any
//! [`weir_warehouse::Warehouse`] in graph order, in parallel.
//!
//! Invariants: knows warehouses through the `Warehouse` trait only; knows
//! nothing of the lake, the source database or the command line. Every problem
//! in a project (bad YAML, undefined refs, cycles, duplicate names, Jinja
//! errors) is collected and reported at once, before anything runs.

mod artifacts;
mod builtins;
mod graph;
mod materialize;
mod modules;
pub mod profiles;
mod project;
mod render;
mod run;
mod yaml;

use std::fmt;
use std::path::PathBuf;

pub use artifacts::write_manifest;
pub use graph::{select, Selector};
pub use project::{load_project, Column, Node, Project, ProjectOptions, ResourceType, Target};
pub use run::{
    execute, plan, prepare, run_one, target_file, Command, NodeResult, RunOptions, RunSummary,
    Status,
};

/// Read a YAML text (dbt's files, `--vars`) as a JSON value.
pub fn parse_yaml(file: &std::path::Path, text: &str) -> Result<serde_json::Value, TransformError> {
    yaml::parse(file, text)
}

/// Render a `profiles.yml` text: its values may use `{{ env_var('X', 'default') }}`.
pub fn render_profile(text: &str) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.add_function("env_var", |name: String, default: Option<String>| {
        std::env::var(&name).or_else(|_| {
            default.ok_or_else(|| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("Env var required but not provided: '{name}'"),
                )
            })
        })
    });
    env.render_str(text, ()).map_err(|e| e.to_string())
}

/// One problem with a project, or with running it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransformError {
    #[error("{}:{line}: invalid YAML: {message}", file.display())]
    Yaml {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// A problem with a project file, at a key path.
    #[error("{}: {key}: {message}", file.display())]
    Config {
        file: PathBuf,
        key: String,
        message: String,
    },
    /// A Jinja error while rendering a node: names the node, its file and line.
    #[error("{node} ({}:{line}): {message}", file.display())]
    Render {
        node: String,
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{node} ({}): {message}", file.display())]
    Graph {
        node: String,
        file: PathBuf,
        message: String,
    },
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
    #[error("{message}")]
    Selection { message: String },
    /// The warehouse refused what the run needs before any node (a schema).
    #[error("{context}: {source}")]
    Warehouse {
        context: String,
        #[source]
        source: std::sync::Arc<weir_warehouse::WarehouseError>,
    },
    /// Weir did something wrong, not the project.
    #[error("bug in Weir, please report it: {message}")]
    Bug { message: String },
}

/// Why one node failed while it ran: the warehouse's error (kept whole, so
/// the orchestrator can tell a dropped connection from bad SQL), or anything
/// else, as text.
#[derive(Debug)]
pub(crate) enum NodeError {
    Warehouse(weir_warehouse::WarehouseError),
    Other(String),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Warehouse(e) => write!(f, "{e}"),
            NodeError::Other(m) => f.write_str(m),
        }
    }
}

impl From<weir_warehouse::WarehouseError> for NodeError {
    fn from(e: weir_warehouse::WarehouseError) -> Self {
        NodeError::Warehouse(e)
    }
}

impl From<String> for NodeError {
    fn from(m: String) -> Self {
        NodeError::Other(m)
    }
}

/// Every problem found, in a stable order.
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<TransformError>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the project:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
