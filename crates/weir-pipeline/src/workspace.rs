//! A project folder as the lifecycle sees it: `weir.yml`, its orchestration
//! settings, its metadata store, the project lock and local workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use weir_config::{OrchestrateConfig, Project, SecretUrl};
use weir_orchestrate::pipeline::{state_dir, Pipeline};
use weir_orchestrate::schedule::{Schedule, SystemClock};
use weir_orchestrate::store::Store;
use weir_orchestrate::worker::{Observer, TaskRunner, Worker, WorkerOptions};
use weir_orchestrate::ProjectLock;

use crate::LifecycleError;

/// How long a stopping worker gives its tasks to end by themselves.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A loaded project and where its run history lives.
#[derive(Clone)]
pub struct Workspace {
    pub dir: PathBuf,
    pub project: Project,
    pub config: OrchestrateConfig,
}

impl Workspace {
    /// The project in `dir`, fully resolved (its source's variables too), for
    /// the commands that run tasks. `source_url` (`--source-url`) replaces
    /// `source.postgres.url`.
    pub fn open(dir: &Path, source_url: Option<&str>) -> Result<Workspace, LifecycleError> {
        require_file(dir)?;
        let mut project = Project::load(dir).map_err(|e| LifecycleError::usage(e.to_string()))?;
        if let Some(url) = source_url {
            match project.source.as_mut() {
                Some(s) => s.url = SecretUrl::new(url.to_owned()),
                None => {
                    return Err(LifecycleError::usage(format!(
                        "--source-url is given but {} has no `source:` section to say which tables to read",
                        dir.join(weir_config::PROJECT_FILE).display()
                    )))
                }
            }
        }
        Ok(Workspace::of(dir, project))
    }

    /// The project, for what only reads or serves the run history: it works
    /// without the source's variables, which it never uses.
    pub fn open_for_history(dir: &Path) -> Result<Workspace, LifecycleError> {
        require_file(dir)?;
        let project =
            Project::load_for_history(dir).map_err(|e| LifecycleError::usage(e.to_string()))?;
        Ok(Workspace::of(dir, project))
    }

    /// A project already loaded (and perhaps adjusted: `weir demo` points
    /// its source at the demo's database).
    pub fn of(dir: &Path, project: Project) -> Workspace {
        let config = project.orchestrate.clone().unwrap_or_default();
        Workspace {
            dir: dir.to_path_buf(),
            project,
            config,
        }
    }

    /// `.weir` in the project folder: the SQLite store, logs, the lock.
    pub fn state_dir(&self) -> PathBuf {
        state_dir(&self.dir)
    }

    /// The metadata store: `orchestrate.metadata`, else `.weir/metadata.db`.
    pub async fn store(&self) -> Result<Arc<Store>, LifecycleError> {
        Ok(Arc::new(
            Store::open(self.config.metadata.as_ref(), &self.state_dir()).await?,
        ))
    }

    /// On the single-process SQLite store, the project lock; on PostgreSQL
    /// none (several processes share the work, fenced by leases).
    pub fn lock(&self, store: &Store) -> Result<Option<ProjectLock>, LifecycleError> {
        if store.is_shared() {
            return Ok(None);
        }
        ProjectLock::acquire(&self.state_dir())
            .map(Some)
            .map_err(|e| {
                LifecycleError::usage(format!(
                    "{e} (`weir run --detach` hands a run to a running `weir up`)"
                ))
            })
    }

    /// Whether a process holds the project lock now (a run left `running`
    /// with nobody holding it is stopped, not running).
    pub fn someone_runs(&self, store: &Store) -> bool {
        store.is_shared() || ProjectLock::is_held(&self.state_dir())
    }

    /// The schedule `orchestrate.schedule` describes.
    pub fn schedule(&self) -> Result<Schedule, LifecycleError> {
        Schedule::parse(self.config.schedule.as_deref(), &self.config.timezone)
            .map_err(LifecycleError::usage)
    }

    /// The project's pipeline: its tables, dbt nodes and tasks.
    pub async fn pipeline(&self) -> Result<Pipeline, LifecycleError> {
        Ok(Pipeline::load(self.project.clone()).await?)
    }

    /// A worker in this process running the pipeline's tasks, `slots` at
    /// once, logging under `.weir/logs` and telling `observer` what ended.
    pub fn worker(
        &self,
        store: &Arc<Store>,
        runner: Arc<dyn TaskRunner>,
        slots: usize,
        observer: Arc<dyn Observer>,
    ) -> Worker {
        let opts = WorkerOptions {
            owner: weir_orchestrate::owner(),
            slots: slots.max(1),
            lease: self.config.lease,
            poll: self.config.poll,
            logs_dir: self.state_dir().join("logs"),
            grace: STOP_GRACE,
            notify: self.config.notify.clone(),
        };
        Worker::new(store.clone(), runner, opts, Arc::new(SystemClock), observer)
    }
}

fn require_file(dir: &Path) -> Result<(), LifecycleError> {
    if dir.join(weir_config::PROJECT_FILE).exists() {
        return Ok(());
    }
    Err(LifecycleError::usage(format!(
        "no {} in {}",
        weir_config::PROJECT_FILE,
        dir.display()
    )))
}
