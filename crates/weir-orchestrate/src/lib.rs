//! Orchestration: the pipeline as a DAG of tasks, run on a schedule with
//! retries, timeouts, concurrency limits and a durable history, in one
//! process or across several worker processes.
//!
//! - [`dag`]: tasks and their edges, checked once and stored with each run.
//! - [`schedule`]: schedules and logical data intervals, pure functions of "now".
//! - [`retry`]: which errors are retried, and the back-off.
//! - [`db`] and [`store`]: the metadata store (SQLite by default, PostgreSQL
//!   for several workers): runs, task instances with leases, attempts, pools,
//!   the notification outbox. Every decision about a run is made there.
//! - [`worker`]: the loop that claims ready tasks, runs them and records how
//!   each attempt ended.
//! - [`scheduler`]: the long-running loop that creates and starts runs (`weir up`).
//! - [`pipeline`]: the Weir pipeline's DAG and the runner of its tasks.
//! - [`notify`]: the webhook and shell hook that hear about failures.
//!
//! Invariants: knows the extract, load and transform crates and the config;
//! knows nothing of the command line. A task's state changes only in a store
//! transaction, and a worker acts on a task only while it holds the task's
//! lease, so a crash at any moment loses at most the attempts that were
//! running, and those are found and run again.

pub mod dag;
pub(crate) mod db;
pub mod notify;
pub mod pipeline;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod worker;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Held by the one process that runs a project's pipeline on a SQLite store
/// (single-host): while it is held no other `weir run`/`up`/`retry` starts,
/// so no interval runs twice at once, and attempts left `running` by a
/// process that died can be handed back at once.
pub struct ProjectLock {
    _file: File,
    pub path: PathBuf,
}

impl ProjectLock {
    pub fn acquire(state_dir: &Path) -> Result<ProjectLock, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let path = state_dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes who it is just after it takes the lock:
                // give a process that is starting that moment to do so.
                let mut holder = String::new();
                for _ in 0..20 {
                    holder = std::fs::read_to_string(&path).unwrap_or_default();
                    if !holder.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                let who = match holder.trim() {
                    "" => "its PID was not recorded".to_owned(),
                    h => h.to_owned(),
                };
                return Err(format!(
                    "another weir process ({who}) is running this project's pipeline; stop it first or wait for it"
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
        let _ = file.set_len(0);
        let command: Vec<String> = std::env::args().take(2).collect();
        let _ = write!(
            file,
            "pid {}, `{}`, since {}",
            std::process::id(),
            command.join(" "),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        let _ = file.flush();
        Ok(ProjectLock { _file: file, path })
    }

    /// Whether a live process holds the project (the lock file names a
    /// process that still exists). Reads only, so it never gets in the way
    /// of a process taking the lock.
    pub fn is_held(state_dir: &Path) -> bool {
        let text = std::fs::read_to_string(state_dir.join("lock")).unwrap_or_default();
        let pid = text
            .strip_prefix("pid ")
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u32>().ok());
        match pid {
            Some(pid) if pid == std::process::id() => true,
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            None => false,
        }
    }
}

/// Who runs attempts, as recorded with each: host and process.
pub fn owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
