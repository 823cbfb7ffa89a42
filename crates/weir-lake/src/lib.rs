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
    Store { path: String, message: String },
    #[error("encoding {path}: {message}")]
    Encode { path: String, message: String },
    #[error("manifest {path}: {message}")]
    Manifest { path: String, message: String },
    #[error("cancelled")]
    Cancelled,
}
