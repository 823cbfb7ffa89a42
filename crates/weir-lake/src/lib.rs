//! The lake: object storage through `object_store` (local folder, `gs://`,
//! `s3://`), streaming Parquet and NDJSON writers, and run manifests.
//!
//! Layout: `{lake}/{project}/{table}/run={run_id}/part-NNNNN.{parquet|json|json.gz}`
//! and `{lake}/{project}/_manifests/{run_id}.json`. A data file becomes visible
//! only when complete (a single atomic put, or a multipart upload that is
//! completed last); the manifest is written after every file, so a run that
//! dies leaves no manifest and nothing a loader would read.
//!
//! Invariants: this crate knows nothing of PostgreSQL or warehouses; it takes
//! Arrow batches and gives back files and manifests. CPU-heavy encoding runs on
//! blocking threads; the async side only moves bytes.

pub mod gc;
mod manifest;
mod store;
mod write;

pub use manifest::{
    FileEntry, IncrementalEntry, Manifest, SnapshotEntry, TableEntry, MANIFEST_VERSION,
};
pub use store::{new_run_id, Lake};
pub use write::{write_part, PartStats, WriteOptions};

/// Everything that can go wrong in the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake {url}: {message}")]
    Open { url: String, message: String },
    #[error("lake object {path}: {message}")]
    Store {
        path: String,
        message: String,
        /// Trying again can help: the store failed or could not be reached
        /// (object_store has already retried); not a missing object, a
        /// refused permission or a bad path.
        transient: bool,
    },
    #[error("encoding {path}: {message}")]
    Encode { path: String, message: String },
    #[error("manifest {path}: {message}")]
    Manifest { path: String, message: String },
    #[error("cancelled")]
    Cancelled,
}

impl LakeError {
    /// An object-store call on `path` that failed.
    pub fn store(path: impl Into<String>, e: &object_store::Error) -> LakeError {
        LakeError::Store {
            path: path.into(),
            message: e.to_string(),
            transient: store_transient(e),
        }
    }

    /// An upload through `object_store`'s `BufWriter`, which reports the
    /// store's error inside an I/O error.
    pub fn upload(path: impl Into<String>, e: &std::io::Error) -> LakeError {
        let transient = match e
            .get_ref()
            .and_then(|i| i.downcast_ref::<object_store::Error>())
        {
            Some(inner) => store_transient(inner),
            None => !matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
            ),
        };
        LakeError::Store {
            path: path.into(),
            message: e.to_string(),
            transient,
        }
    }

    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LakeError::Store {
                transient: true,
                ..
            }
        )
    }
}

fn store_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::Generic { source, .. } => {
            // A local folder's errors are I/O errors (under object_store's
            // own): a full disk or a missing permission will not pass by
            // itself; a remote store's are HTTP failures object_store has
            // already retried.
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(err) = cur {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    use std::io::ErrorKind as K;
                    return !matches!(
                        io.kind(),
                        K::PermissionDenied
                            | K::StorageFull
                            | K::ReadOnlyFilesystem
                            | K::NotFound
                            | K::QuotaExceeded
                            | K::FileTooLarge
                    );
                }
                cur = err.source();
            }
            true
        }
        E::JoinError { .. } => true,
        _ => false,
    }
}
