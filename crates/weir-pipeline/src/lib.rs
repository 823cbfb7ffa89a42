//! A project's run lifecycle, as every front end drives it: the CLI's `weir
//! run`, `up`, `worker`, `retry` and `backfill`, and the web UI's buttons call
//! these same functions, so a run started from either behaves the same.
//!
//! - [`Workspace`]: a project folder with its `weir.yml`, its orchestration
//!   settings and its metadata store, the project lock and local workers;
//! - [`runs`]: creating, resuming and recovering runs, retrying a run's failed
//!   tasks, a run's per-stage timing and the state a person should see;
//! - [`backfill`]: the intervals a date range holds (the preview the UI shows
//!   is the plan the CLI runs);
//! - [`catalog`]: the dbt nodes and source tables the pipeline builds and
//!   reads, with their latest states, lineage, extracts and lake runs.
//!
//! Nothing here prints: what happened is returned for the caller to show.

pub mod access;
pub mod backfill;
pub mod catalog;
pub mod runs;
mod workspace;

pub use workspace::Workspace;

use weir_orchestrate::pipeline::PipelineError;
use weir_orchestrate::store::StoreError;

/// Why a lifecycle step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// What was asked cannot be done as asked: a missing or malformed
    /// project, an unknown run, a range with no interval. The CLI exits 2;
    /// the web UI answers 400 or 404.
    #[error("{0}")]
    Usage(String),
    /// What was named does not exist (a run). The web UI answers 404.
    #[error("{0}")]
    NotFound(String),
    /// The run is not in a state that allows this (retrying a running run).
    /// The web UI answers 409.
    #[error("{0}")]
    Conflict(String),
    /// The project's pipeline cannot be built (its source or dbt project).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LifecycleError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        LifecycleError::Usage(message.into())
    }

    /// The request, not the machinery, is at fault.
    pub fn is_usage(&self) -> bool {
        matches!(self, LifecycleError::Usage(_) | LifecycleError::Pipeline(_))
    }
}
