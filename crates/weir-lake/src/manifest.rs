//! The run manifest: the only way a reader learns what a run wrote.
//! It is a format users keep, so it carries a version from the start.

use serde::{Deserialize, Serialize};

/// Bumped on any change a version-1 reader could misread.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub run_id: String,
    pub project: String,
    /// When the run started and when the manifest was committed (RFC 3339, UTC).
    pub started_at: String,
    pub completed_at: String,
    /// `parquet` or `ndjson`.
    pub format: String,
    /// e.g. `zstd(1)`, `gzip`, `none`.
    pub compression: String,
    /// The source, with any password redacted.
    pub source: String,
    pub snapshot: SnapshotEntry,
    pub tables: Vec<TableEntry>,
}

/// The PostgreSQL snapshot every table of the run was read in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotEntry {
    /// `pg_export_snapshot()` id (only meaningful while the run lasted).
    pub id: String,
    /// `txid_current_snapshot()`: `xmin:xmax:xip,…`.
    pub txid_snapshot: String,
    /// Server time of the snapshot.
    pub taken_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    pub name: String,
    /// Source schema and table.
    pub source_table: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The Arrow schema of every file of this table (arrow-schema's JSON form).
    pub arrow_schema: serde_json::Value,
    pub primary_key: Vec<String>,
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path relative to the lake root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IncrementalEntry {
    pub cursor: String,
    /// The lower bound this run read from (inclusive, cursor text), `None` for a full read.
    pub from: Option<String>,
    /// The high-water mark the next run starts from (cursor text).
    pub mark: Option<String>,
}

impl Manifest {
    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.name == name)
    }
}
