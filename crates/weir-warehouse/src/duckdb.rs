//! The embedded warehouse: a DuckDB file in the project.
//!
//! DuckDB is synchronous, so every call runs on a blocking thread with its own
//! connection cloned from the one opened at start (same database, separate
//! transactions). Local Parquet files are read by DuckDB itself
//! (`read_parquet`, in parallel); anything else (NDJSON, `gs://`/`s3://` lakes)
//! is streamed through `object_store` as Arrow batches and inserted through
//! DuckDB's Arrow table function — no extension is ever downloaded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use duckdb::vtab::arrow::ArrowVTab;
use duckdb::vtab::ArrowBatchRegistration;
use duckdb::{Config, Connection};
use weir_config::LakeFormat;

use crate::read;
use crate::types::{LINEAGE_LOADED_AT, LINEAGE_RUN_ID};
use crate::{
    Column, Dialect, Publish, QueryResult, Result, StageOutcome, StageRequest, Warehouse,
    WarehouseError,
};

pub struct DuckDb {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Connections cloned for work that has not ended yet (a statement whose
    /// caller stopped waiting runs on until its interrupt lands).
    live: Arc<std::sync::atomic::AtomicUsize>,
}

/// A connection cloned for one piece of work, counted while it lives.
struct Live {
    conn: Connection,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::ops::Deref for Live {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn sql_err(sql: &str, e: impl std::fmt::Display) -> WarehouseError {
    let message = e.to_string();
    WarehouseError::Sql {
        sql: sql.to_owned(),
        // Two connections changing the same catalog entry at once: DuckDB
        // aborts one transaction, and running it again succeeds.
        transient: message.contains("write-write conflict")
            || message.contains("Conflict on tuple deletion"),
        message,
        code: None,
    }
}

/// Who holds the file, from DuckDB's "Conflicting lock is held in PROGRAM
/// (PID N)" (DuckDB's messages are not translated).
fn lock_holder(message: &str) -> Option<String> {
    let rest = message.split("Conflicting lock is held in ").nth(1)?;
    let end = rest
        .find(" by user")
        .or_else(|| rest.find(". See"))
        .unwrap_or(rest.len());
    let held = rest[..end].trim();
    Some(match held.rfind(" (PID ") {
        Some(i) => format!(
            "PID {} ({})",
            held[i + 6..].trim_end_matches(')'),
            &held[..i]
        ),
        None => held.to_owned(),
    })
}

/// How long opening waits for another process to let go of the file
/// before it reports [`WarehouseError::Locked`] (which the orchestrator
/// retries with its back-off).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Open `path`, waiting up to `wait` (with doubling pauses) while another
/// process holds its lock.
fn open_waiting(
    path: &Path,
    config: &dyn Fn() -> duckdb::Result<Config>,
    wait: std::time::Duration,
) -> Result<Connection> {
    let t0 = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        // A `Config` is consumed by each try.
        let attempt = config().and_then(|c| Connection::open_with_flags(path, c));
        let e = match attempt {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        let m = e.to_string();
        let locked = lock_holder(&m).or_else(|| {
            m.contains("Could not set lock")
                .then(|| "another process".to_owned())
        });
        match locked {
            Some(_) if t0.elapsed() + pause < wait => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            Some(holder) => {
                return Err(WarehouseError::Locked {
                    target: path.display().to_string(),
                    holder,
                })
            }
            None => {
                return Err(WarehouseError::Open {
                    target: path.display().to_string(),
                    message: m,
                    transient: false,
                })
            }
        }
    }
}

/// How the embedded warehouse is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write; the file is created when missing. One process at a time.
    ReadWrite,
    /// Reads only: DuckDB refuses every change. The file must exist (a
    /// mistyped path is an error, not a new empty database).
    ReadOnly,
}

impl DuckDb {
    /// Open (creating if needed) a DuckDB file for reading and writing.
    /// Extensions are never auto-installed: Parquet, JSON and ICU (time
    /// zones) are linked in.
    pub fn open(path: &Path) -> Result<DuckDb> {
        Self::open_with(path, Access::ReadWrite)
    }

    pub fn open_with(path: &Path, access: Access) -> Result<DuckDb> {
        let open_err = |message: String| WarehouseError::Open {
            target: path.display().to_string(),
            message,
            transient: false,
        };
        match access {
            Access::ReadWrite => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
                }
            }
            Access::ReadOnly => {
                if !path.is_file() {
                    return Err(open_err(
                        "no such file (give the path of an existing DuckDB file; `weir load` or `weir run` creates it)".to_owned(),
                    ));
                }
            }
        }
        let mode = || match access {
            Access::ReadWrite => duckdb::AccessMode::ReadWrite,
            Access::ReadOnly => duckdb::AccessMode::ReadOnly,
        };
        let config = || {
            Config::default()
                .access_mode(mode())
                .and_then(|c| c.enable_autoload_extension(false))
                .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        };
        let conn = open_waiting(path, &config, LOCK_WAIT)?;
        conn.register_table_function::<ArrowVTab>("arrow")
            .map_err(|e| open_err(e.to_string()))?;
        Ok(DuckDb {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            live: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection to the same database (its own transactions),
    /// counted until it is dropped.
    fn connection(&self) -> Result<Live> {
        let base = self.conn.lock().map_err(|_| {
            WarehouseError::Bug("a DuckDB call panicked while holding the connection".into())
        })?;
        let conn = base.try_clone().map_err(|e| WarehouseError::Connection {
            message: e.to_string(),
            transient: false,
        })?;
        self.live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Live {
            conn,
            count: self.live.clone(),
        })
    }

    /// Run `f` on a blocking thread with a fresh connection to the database.
    /// If the caller stops waiting (a task timed out or was cancelled), the
    /// statement is interrupted: dropping the future alone would leave it
    /// running on the blocking thread.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.connection()?;
        let mut guard = InterruptOnDrop(Some(conn.interrupt_handle()));
        let r = tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(|e| WarehouseError::Bug(format!("DuckDB task failed: {e}")))?;
        guard.0 = None;
        r
    }
}

/// Interrupts the connection's running statement when dropped while armed.
struct InterruptOnDrop(Option<Arc<duckdb::InterruptHandle>>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.interrupt();
        }
    }
}

/// Run `statements` in one transaction; a write-write conflict with another
/// connection's concurrent catalog change is retried a few times.
fn transaction(conn: &Connection, statements: &[String]) -> Result<()> {
    let mut attempt = 0;
    loop {
        match transaction_once(conn, statements) {
            Err(WarehouseError::Sql { message, .. })
                if message.contains("write-write conflict") && attempt < 5 =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
            }
            other => return other,
        }
    }
}

/// Run `statements` in one transaction, rolling back on the first error.
fn transaction_once(conn: &Connection, statements: &[String]) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(|e| sql_err("BEGIN TRANSACTION", e))?;
    for s in statements {
        if let Err(e) = conn.execute_batch(s) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sql_err(s, e));
        }
    }
    conn.execute_batch("COMMIT")
        .map_err(|e| sql_err("COMMIT", e))
}

/// The SELECT list that fills the staging table: the files' columns (ISO 8601
/// interval text parsed; with `hex_blobs`, hex text decoded, as DuckDB's JSON
/// reader leaves it), then lineage values.
fn select_list(req: &StageRequest<'_>, hex_blobs: bool) -> String {
    let d = Dialect::DuckDb;
    let mut out: Vec<String> = req
        .arrow
        .fields()
        .iter()
        .zip(req.columns)
        .map(|(f, c)| {
            let q = d.quote(f.name());
            match c.data_type.as_str() {
                "INTERVAL" => format!("{} AS {q}", iso_interval(&q)),
                "INTERVAL[]" => format!("list_transform({q}, x -> {}) AS {q}", iso_interval("x")),
                "BLOB" if hex_blobs => format!("unhex({q}) AS {q}"),
                "BLOB[]" if hex_blobs => format!("list_transform({q}, x -> unhex(x)) AS {q}"),
                _ => q,
            }
        })
        .collect();
    if let Some(l) = req.lineage {
        out.push(format!(
            "{} AS {}",
            d.literal(&l.run_id),
            d.quote(LINEAGE_RUN_ID)
        ));
        out.push(format!(
            "CAST({} AS TIMESTAMP WITH TIME ZONE) AS {}",
            d.literal(&l.loaded_at),
            d.quote(LINEAGE_LOADED_AT)
        ));
    }
    out.join(", ")
}

/// The type DuckDB's JSON reader reads a column as: the column's own type, but
/// text for what the NDJSON holds as text of another type (hex for BLOB, JSON
/// documents as strings, ISO 8601 intervals).
fn json_read_type(target: &str) -> &str {
    match target {
        "BLOB" | "JSON" | "INTERVAL" => "VARCHAR",
        "BLOB[]" | "JSON[]" | "INTERVAL[]" => "VARCHAR[]",
        other => other,
    }
}

fn json_columns(req: &StageRequest<'_>) -> String {
    let d = Dialect::DuckDb;
    req.arrow
        .fields()
        .iter()
        .zip(req.columns)
        .map(|(f, c)| {
            format!(
                "{}: {}",
                d.literal(f.name()),
                d.literal(json_read_type(&c.data_type))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// DuckDB SQL turning the extractor's ISO 8601 durations (`P1Y-2M3DT4H5M6.789S`,
/// each part signed) into an INTERVAL with the same months, days and
/// microseconds (DuckDB's own cast does not read ISO 8601). Interval addition in
/// DuckDB keeps the three parts apart, so nothing is normalised away.
fn iso_interval(v: &str) -> String {
    let part = |re: &str, ty: &str| {
        format!("CAST(coalesce(nullif(regexp_extract({v}, '{re}', 1), ''), '0') AS {ty})")
    };
    format!(
        "CASE WHEN {v} IS NULL THEN NULL ELSE \
         to_months({years} * 12 + {months}) + to_days({days}) + \
         to_microseconds(CAST({hours} * 3600000000 + {minutes} * 60000000 + {seconds} * 1000000 AS BIGINT)) END",
        years = part(r"^P[^T]*?(-?\d+)Y", "INTEGER"),
        months = part(r"^P[^T]*?(-?\d+)M", "INTEGER"),
        days = part(r"^P[^T]*?(-?\d+)D", "INTEGER"),
        hours = part(r"T.*?(-?\d+)H", "BIGINT"),
        minutes = part(r"T.*?(-?\d+)M", "BIGINT"),
        seconds = part(r"T.*?(-?[\d.]+)S", "DECIMAL(18,6)"),
    )
}

#[async_trait]
impl Warehouse for DuckDb {
    fn dialect(&self) -> Dialect {
        Dialect::DuckDb
    }

    fn describe_target(&self) -> String {
        format!("duckdb:{}", self.path.display())
    }

    async fn ensure_schema(&self, schema: &str) -> Result<()> {
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            Dialect::DuckDb.quote(schema)
        );
        self.execute(&sql).await
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        let sql = sql.to_owned();
        self.with_conn(move |c| c.execute_batch(&sql).map_err(|e| sql_err(&sql, e)))
            .await
    }

    async fn query(&self, sql: &str) -> Result<QueryResult> {
        let sql = sql.to_owned();
        self.with_conn(move |c| {
            let mut stmt = c.prepare(&sql).map_err(|e| sql_err(&sql, e))?;
            let arrow = stmt.query_arrow([]).map_err(|e| sql_err(&sql, e))?;
            let schema = arrow.get_schema();
            let batches: Vec<RecordBatch> = arrow.collect();
            Ok(QueryResult { schema, batches })
        })
        .await
    }

    async fn describe(&self, schema: &str, name: &str) -> Result<Option<Vec<Column>>> {
        let (schema, name) = (schema.to_owned(), name.to_owned());
        self.with_conn(move |c| {
            let sql = "SELECT column_name, data_type FROM information_schema.columns \
                       WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position";
            let mut stmt = c.prepare(sql).map_err(|e| sql_err(sql, e))?;
            let cols: Vec<Column> = stmt
                .query_map([&schema, &name], |r| {
                    Ok(Column {
                        name: r.get(0)?,
                        data_type: r.get(1)?,
                    })
                })
                .and_then(|rows| rows.collect())
                .map_err(|e| sql_err(sql, e))?;
            Ok((!cols.is_empty()).then_some(cols))
        })
        .await
    }

    async fn stage(&self, req: &StageRequest<'_>) -> Result<StageOutcome> {
        let d = Dialect::DuckDb;
        let staging = d.relation(req.schema, req.staging);
        self.execute(&format!(
            "CREATE TABLE {staging} ({})",
            d.column_defs(req.columns)
        ))
        .await?;
        let select = select_list(req, false);
        // DuckDB reads a local lake's files itself, by their paths on disk
        // (object_store percent-encodes some names there). A path DuckDB
        // would take for a glob pattern goes through the streamed reader.
        let local: Option<Vec<String>> = req
            .table
            .files
            .iter()
            .map(|f| {
                req.lake
                    .local_file(&f.path)
                    .map(|p| p.to_string_lossy().into_owned())
                    .filter(|p| !p.contains(['*', '?', '[', '{']))
            })
            .collect();
        if let Some(paths) = local {
            let files: Vec<String> = paths.iter().map(|p| d.literal(p)).collect();
            if files.is_empty() {
                return Ok(StageOutcome::default());
            }
            let files = files.join(", ");
            match req.format {
                LakeFormat::Parquet => {
                    // DuckDB reads local Parquet itself, in parallel.
                    let sql = format!(
                        "INSERT INTO {staging} SELECT {select} FROM read_parquet([{files}])"
                    );
                    let rows = self
                        .with_conn(move |c| c.execute(&sql, []).map_err(|e| sql_err(&sql, e)))
                        .await?;
                    return Ok(StageOutcome {
                        rows: rows as u64,
                        ..StageOutcome::default()
                    });
                }
                LakeFormat::Ndjson => {
                    // Clean NDJSON goes through DuckDB's own reader with every
                    // column's type given. Any bad record fails that one statement
                    // (which then leaves nothing), and the files are read again
                    // below, line by line, to set the bad records aside.
                    let sql = format!(
                        "INSERT INTO {staging} SELECT {} FROM read_json([{files}], \
                         format = 'newline_delimited', records = true, columns = {{{}}})",
                        select_list(req, true),
                        json_columns(req)
                    );
                    let fast = self
                        .with_conn(move |c| c.execute(&sql, []).map_err(|e| sql_err(&sql, e)))
                        .await;
                    match fast {
                        Ok(rows) => {
                            return Ok(StageOutcome {
                                rows: rows as u64,
                                ..StageOutcome::default()
                            })
                        }
                        Err(e) => tracing::debug!(
                            "table {}: DuckDB's JSON reader refused the files ({e}); reading them line by line",
                            req.table.name
                        ),
                    }
                }
            }
        }
        let (mut rx, reader) = read::spawn(
            req.table.name.clone(),
            req.lake.clone(),
            req.format,
            req.table.files.clone(),
            req.arrow.clone(),
            req.max_bad_records,
        );
        let sql = format!("INSERT INTO {staging} SELECT {select} FROM arrow(?)");
        let conn = self.connection()?;
        let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
            // One transaction for all batches: a commit per batch would write
            // the WAL and recompress the table's segments again and again.
            conn.execute_batch("BEGIN TRANSACTION")
                .map_err(|e| sql_err("BEGIN TRANSACTION", e))?;
            let mut rows = 0u64;
            let result = (|| {
                let mut stmt = conn.prepare(&sql).map_err(|e| sql_err(&sql, e))?;
                while let Some(batch) = rx.blocking_recv() {
                    let reg = ArrowBatchRegistration::new(batch);
                    rows += stmt.execute([&reg]).map_err(|e| sql_err(&sql, e))? as u64;
                }
                Ok(())
            })();
            match result {
                Ok(()) => conn
                    .execute_batch("COMMIT")
                    .map_err(|e| sql_err("COMMIT", e))?,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
            Ok(rows)
        });
        let written = writer
            .await
            .map_err(|e| WarehouseError::Bug(format!("DuckDB writer failed: {e}")));
        let report = reader
            .await
            .map_err(|e| WarehouseError::Bug(format!("lake reader failed: {e}")))??;
        let rows = written??;
        Ok(StageOutcome {
            rows,
            rejected: report.rejected,
            rejected_count: report.rejected_count,
        })
    }

    fn in_use(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    async fn execute_atomic(&self, statements: &[String]) -> Result<()> {
        let statements = statements.to_vec();
        self.with_conn(move |c| transaction(c, &statements)).await
    }

    async fn publish(&self, p: &Publish<'_>) -> Result<()> {
        let statements = Dialect::DuckDb.publish_statements(p);
        self.with_conn(move |c| transaction(c, &statements)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_read_from_duckdbs_message() {
        let m = "IO Error: Could not set lock on file \"/p/w.duckdb\": Conflicting lock is held in /usr/bin/python3.11 (PID 4242) by user root. See also https://duckdb.org/docs/stable/connect/concurrency";
        assert_eq!(
            lock_holder(m).as_deref(),
            Some("PID 4242 (/usr/bin/python3.11)")
        );
        assert_eq!(lock_holder("IO Error: disk full"), None);
    }
}
