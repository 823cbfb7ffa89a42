//! Warehouses: the [`Warehouse`] trait, its DuckDB (embedded default),
//! PostgreSQL and BigQuery adapters, and [`load`], which moves a lake run into
//! a warehouse's raw schema.
//!
//! Loads are atomic: a table's files go into a staging relation
//! (`_weir_stage_<table>`) and are then published in one step (rename, or one
//! transaction of `INSERT`/`DELETE`), so a reader sees the old complete table or
//! the new one. Types follow the Arrow schema the manifest records (see
//! [`types`] for the table per warehouse).
//!
//! Invariants: this crate knows the lake (manifests, files) and warehouses, but
//! nothing of PostgreSQL as a *source*, of dbt or of the command line. The
//! trait is the API the transform engine and dashboards build on.

mod bigquery;
mod duckdb;
mod load;
mod pgcopy;
mod postgres;
mod read;
pub mod sql;
pub mod types;

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use weir_config::{LoadMode, WarehouseConfig, WarehouseTarget};

pub use crate::bigquery::BigQuery;
pub use crate::duckdb::{Access, DuckDb};
pub use crate::postgres::Postgres;
pub use load::{load, name_problems, staging_name, LoadOptions, LoadSummary, TableLoad};
pub use sql::Dialect;

/// Everything that can go wrong talking to a warehouse or loading into it.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("cannot open the warehouse {target}: {message}")]
    Open {
        target: String,
        message: String,
        /// Trying again later can help (the server was unreachable).
        transient: bool,
    },
    /// Another process holds the DuckDB file: one writer, or any number of
    /// readers, at a time. Transient: readers come and go.
    #[error("cannot open the warehouse {target}: the file is in use by {holder} (DuckDB lets one process write it, or any number read it, at a time; it is free again when that process closes it)")]
    Locked { target: String, holder: String },
    /// A statement the warehouse refused.
    #[error("{message}{}\n  in: {sql}", code.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Sql {
        sql: String,
        message: String,
        /// PostgreSQL's SQLSTATE, when the server sent one.
        code: Option<String>,
        /// Trying again can help (a dropped connection, a serialization
        /// failure or deadlock, a write-write conflict).
        transient: bool,
    },
    #[error("{message}")]
    Connection { message: String, transient: bool },
    /// The new data's type would not fit the existing column without loss.
    #[error("table {table}: column {column} is {old} in the warehouse but {new} in the run; loading it would lose data (load with --mode truncate to replace the table)")]
    TypeDrift {
        table: String,
        column: String,
        old: String,
        new: String,
    },
    #[error("table {table}: {message}")]
    Load { table: String, message: String },
    /// Tables that cannot all be loaded under their names (collisions,
    /// Weir's reserved names); nothing was written.
    #[error("{} problem(s) with table names, nothing was loaded:\n  {}", problems.len(), problems.join("\n  "))]
    Names { problems: Vec<String> },
    /// The lake has no committed run for the project.
    #[error("no extract run for project `{project}` in {lake} (run `weir extract` first, or point -p at the project that extracted)")]
    NoRun { project: String, lake: String },
    #[error("no run `{run}` for project `{project}` in {lake} (the latest: {latest})")]
    UnknownRun {
        run: String,
        project: String,
        lake: String,
        latest: String,
    },
    #[error("table {table}: {rejected} bad record(s), more than the {budget} allowed (max_bad_records); the first: {first}; all in {rejects}")]
    BadRecords {
        table: String,
        rejected: u64,
        budget: u64,
        first: String,
        rejects: String,
    },
    #[error("{0}")]
    Lake(#[from] weir_lake::LakeError),
    #[error("BigQuery: {message}")]
    BigQuery {
        message: String,
        /// The HTTP status of the response that failed, if there was one.
        status: Option<u16>,
        /// Trying again can help: HTTP 408, 429 or 5xx, BigQuery's own
        /// `rateLimitExceeded`/`backendError`/`internalError`, or the request
        /// never got an answer (connection, timeout).
        transient: bool,
    },
    /// A bug in Weir, not in the user's data or settings.
    #[error("internal error (a bug in Weir, please report it): {0}")]
    Bug(String),
}

pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;

impl WarehouseError {
    /// Whether trying again later can help: decided from what the error is
    /// (a SQLSTATE, a lock another process holds, an HTTP status), never
    /// from its text, which depends on the server's language.
    pub fn is_transient(&self) -> bool {
        match self {
            WarehouseError::Open { transient, .. }
            | WarehouseError::Sql { transient, .. }
            | WarehouseError::Connection { transient, .. } => *transient,
            WarehouseError::Locked { .. } => true,
            WarehouseError::BigQuery { transient, .. } => *transient,
            _ => false,
        }
    }

    /// PostgreSQL's SQLSTATE, when the error came from the server.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            WarehouseError::Sql { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// A statement PostgreSQL refused, with its SQLSTATE and kind.
    pub(crate) fn pg_sql(sql: &str, e: &tokio_postgres::Error) -> WarehouseError {
        WarehouseError::Sql {
            sql: sql.to_owned(),
            message: weir_pg::message(e),
            code: e.code().map(|c| c.code().to_owned()),
            transient: weir_pg::transient(e),
        }
    }
}

/// A column of a relation as the warehouse describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The warehouse's own spelling of the type, e.g. `DECIMAL(12,2)`.
    pub data_type: String,
}

/// Rows returned by [`Warehouse::query`].
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Rows of text cells (PostgreSQL's simple protocol, BigQuery's REST API) as
/// one Arrow batch: `Int64`, `Float64` and `Boolean` columns are parsed
/// (`true_text` is the warehouse's spelling of true), anything else stays text.
pub(crate) fn text_result(
    columns: &[(String, arrow::datatypes::DataType)],
    rows: &[Vec<Option<String>>],
    true_text: &str,
) -> Result<QueryResult> {
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, (name, dt)) in columns.iter().enumerate() {
        let cells = rows.iter().map(|r| r.get(i).and_then(|c| c.as_deref()));
        let array: ArrayRef = match dt {
            DataType::Int64 => Arc::new(
                cells
                    .map(|c| c.and_then(|v| v.parse().ok()))
                    .collect::<Int64Array>(),
            ),
            DataType::Float64 => Arc::new(
                cells
                    .map(|c| c.and_then(|v| v.parse().ok()))
                    .collect::<Float64Array>(),
            ),
            DataType::Boolean => Arc::new(
                cells
                    .map(|c| c.map(|v| v == true_text))
                    .collect::<BooleanArray>(),
            ),
            _ => Arc::new(cells.collect::<StringArray>()),
        };
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batches = if arrays.is_empty() {
        Vec::new()
    } else {
        vec![RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| WarehouseError::Bug(e.to_string()))?]
    };
    Ok(QueryResult { schema, batches })
}

/// What [`Warehouse::stage`] loads: one table of one run.
#[derive(Debug, Clone)]
pub struct StageRequest<'a> {
    pub lake: &'a weir_lake::Lake,
    pub format: weir_config::LakeFormat,
    pub table: &'a weir_lake::TableEntry,
    /// Arrow schema of the files (from the manifest).
    pub arrow: SchemaRef,
    pub schema: &'a str,
    /// The staging table to create and fill (it does not exist).
    pub staging: &'a str,
    /// Target columns: the files' columns, then lineage columns if asked for.
    pub columns: &'a [Column],
    pub lineage: Option<&'a Lineage>,
    pub max_bad_records: u64,
}

/// Values of the lineage columns for one load.
#[derive(Debug, Clone)]
pub struct Lineage {
    pub run_id: String,
    /// RFC 3339, UTC.
    pub loaded_at: String,
}

/// A record that could not be read, kept for the rejects file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejected {
    /// Lake-relative path of the file.
    pub file: String,
    /// 1-based line in the (decompressed) file, when known.
    pub line: Option<u64>,
    pub reason: String,
    /// The raw record, when the warehouse gives it back.
    pub record: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct StageOutcome {
    pub rows: u64,
    /// Bad records set aside (the first 10,000 are kept).
    pub rejected: Vec<Rejected>,
    /// All bad records.
    pub rejected_count: u64,
}

/// How staged rows become the table.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    pub schema: &'a str,
    pub staging: &'a str,
    pub table: &'a str,
    pub mode: LoadMode,
    /// Whether the target exists (as described before staging).
    pub exists: bool,
    /// Columns of the staged data, in order.
    pub columns: &'a [Column],
    /// Columns to add to an existing table first (append/merge).
    pub add: &'a [Column],
    /// Columns to widen first (name, new type) — lossless changes only.
    pub widen: &'a [Column],
    pub primary_key: &'a [String],
}

/// What a relation in the warehouse is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Table,
    View,
}

/// A warehouse: where loads land and models run.
///
/// Methods are async; the embedded DuckDB runs its work on blocking threads.
#[async_trait]
pub trait Warehouse: Send + Sync {
    fn dialect(&self) -> Dialect;

    /// For people and logs (never carries a password).
    fn describe_target(&self) -> String;

    /// Create a schema (BigQuery: dataset) if it is missing.
    async fn ensure_schema(&self, schema: &str) -> Result<()>;

    /// Run statements that return no rows.
    async fn execute(&self, sql: &str) -> Result<()>;

    /// Run a query and collect its rows as Arrow batches.
    async fn query(&self, sql: &str) -> Result<QueryResult>;

    /// Columns of `schema.name`, or `None` if there is no such table or view.
    async fn describe(&self, schema: &str, name: &str) -> Result<Option<Vec<Column>>>;

    /// Create `req.staging` with `req.columns` and fill it from the run's files.
    async fn stage(&self, req: &StageRequest<'_>) -> Result<StageOutcome>;

    /// Atomically make the staged rows the table's contents (per `mode`) and
    /// drop the staging table.
    async fn publish(&self, p: &Publish<'_>) -> Result<()>;

    /// Run statements so that all or none take effect (one transaction where
    /// the warehouse has them; BigQuery runs them in order).
    async fn execute_atomic(&self, statements: &[String]) -> Result<()> {
        for s in statements {
            self.execute(s).await?;
        }
        Ok(())
    }

    /// Whether `schema.name` is a table or a view, or `None` if it is neither.
    async fn relation_kind(&self, schema: &str, name: &str) -> Result<Option<RelationKind>> {
        let d = self.dialect();
        let sql = format!(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
            d.literal(schema),
            d.literal(name)
        );
        let r = self.query(&sql).await?;
        let Some(b) = r.batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let text = arrow::util::display::ArrayFormatter::try_new(
            b.column(0).as_ref(),
            &Default::default(),
        )
        .map(|f| f.value(0).to_string())
        .unwrap_or_default();
        Ok(Some(if text.eq_ignore_ascii_case("VIEW") {
            RelationKind::View
        } else {
            RelationKind::Table
        }))
    }

    /// Whether work started through this handle is still running: a
    /// statement whose caller stopped waiting may still be finishing. A
    /// handle in use must not be closed and reopened (DuckDB's file lock does
    /// not keep two handles of one process apart).
    fn in_use(&self) -> bool {
        false
    }

    /// Drop a table if it exists.
    async fn drop_table(&self, schema: &str, name: &str) -> Result<()> {
        let d = self.dialect();
        self.execute(&format!(
            "DROP TABLE IF EXISTS {}",
            d.relation(schema, name)
        ))
        .await
    }
}

/// Open the warehouse a project's settings name. Relative DuckDB paths are
/// taken from `project_dir`.
pub async fn open(
    config: &WarehouseConfig,
    project_dir: &Path,
    lake_url: &str,
) -> Result<Box<dyn Warehouse>> {
    open_with(config, project_dir, lake_url, Access::ReadWrite).await
}

/// [`open`], read-only when `access` says so: DuckDB opens the file in its
/// read-only mode (which also lets several readers share it), PostgreSQL
/// runs every query in a read-only transaction. BigQuery has no such mode:
/// its access is whatever the credentials allow.
pub async fn open_with(
    config: &WarehouseConfig,
    project_dir: &Path,
    lake_url: &str,
    access: Access,
) -> Result<Box<dyn Warehouse>> {
    Ok(match &config.target {
        WarehouseTarget::DuckDb { path } => {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                project_dir.join(path)
            };
            // Opening may wait for another process's lock: not on the runtime.
            let db = tokio::task::spawn_blocking(move || DuckDb::open_with(&path, access))
                .await
                .map_err(|e| WarehouseError::Bug(format!("opening DuckDB: {e}")))??;
            Box::new(db)
        }
        WarehouseTarget::Postgres { url } => {
            Box::new(Postgres::connect_with(url, access == Access::ReadOnly).await?)
        }
        WarehouseTarget::BigQuery(bq) => Box::new(BigQuery::new(bq, lake_url).await?),
    })
}

/// Parse a `--warehouse` argument: a `postgres://` URL, or a DuckDB file path
/// (`duckdb:` prefix optional).
pub fn target_from_arg(arg: &str) -> WarehouseTarget {
    if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
        WarehouseTarget::Postgres {
            url: weir_config::SecretUrl::new(arg.to_owned()),
        }
    } else {
        let path = arg.strip_prefix("duckdb://").unwrap_or(arg);
        let path = path.strip_prefix("duckdb:").unwrap_or(path);
        WarehouseTarget::DuckDb { path: path.into() }
    }
}
