//! Reading PostgreSQL: binary `COPY` decoded straight into Arrow batches,
//! exported snapshots shared by parallel connections, chunk planning,
//! incremental cursors; plus the Olist sample-data generator and the CSV
//! bootstrap loader.
//!
//! Invariants: this crate knows nothing of lakes, files formats on disk or
//! warehouses. It hands out Arrow `RecordBatch`es through bounded channels and
//! never holds a whole table in memory. Its API is for `weir-extract` and the CLI.

pub mod cluster;
pub mod csv_load;
pub mod decode;
pub mod olist;
pub mod pg;
pub mod read;
pub mod types;

pub use pg::{
    connect, describe, list_tables, quote_ident, quote_literal, Snapshot, SnapshotRef, TableInfo,
};
pub use read::{
    arrow_schema, copy_sql, incremental_bounds, plan_chunks, read_chunk, Chunk, IncrementalBounds,
    ReadProgress,
};

/// Everything that can go wrong reading from PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// PostgreSQL refused, or could not be reached: the server's message
    /// and SQLSTATE, with the driver's error as the cause.
    #[error("{0}")]
    Pg(#[from] weir_pg::PgError),
    #[error("table {schema}.{table} does not exist")]
    NoSuchTable { schema: String, table: String },
    #[error("table {table} has no column `{column}` (named in `{setting}`)")]
    NoSuchColumn {
        table: String,
        column: String,
        setting: &'static str,
    },
    /// Every column of the table whose type has no Arrow mapping.
    #[error("table {table}: {} without an Arrow mapping ({}); add them to the table's `cast_to_text` in weir.yml to extract them as text", if columns.len() == 1 { "1 column" } else { "columns" }, columns.iter().map(|(c, t)| format!("{c} {t}")).collect::<Vec<_>>().join(", "))]
    UnsupportedType {
        table: String,
        /// (column, declared type)
        columns: Vec<(String, String)>,
    },
    #[error("table {table}{}: {message}", column.as_ref().map(|c| format!(", column {c} ({})", type_name.as_deref().unwrap_or("?"))).unwrap_or_default())]
    Decode {
        table: String,
        column: Option<String>,
        type_name: Option<String>,
        message: String,
    },
    #[error("tables already exist in schema {schema}: {} (use --replace to overwrite them)", tables.join(", "))]
    TablesExist { schema: String, tables: Vec<String> },
    #[error("{file}: {rows} malformed row(s), nothing loaded for this table:\n  {}", problems.join("\n  "))]
    MalformedCsv {
        file: String,
        rows: u64,
        problems: Vec<String>,
    },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Config(String),
    #[error("cancelled")]
    Cancelled,
    /// The transaction that exported a snapshot ended, so it cannot be
    /// imported any more (its process stopped).
    #[error("snapshot {id} is gone: the transaction that exported it has ended")]
    SnapshotGone { id: String },
    #[error("bug in Weir, please report it: {0}")]
    Bug(String),
}
