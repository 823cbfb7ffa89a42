//! The two databases the metadata store runs on, behind one small interface:
//! an embedded SQLite file (the default, one process) and PostgreSQL (several
//! `weir worker` processes on one or many machines).
//!
//! The store's logic is written once against [`DbTx`]: SQL text with
//! `$1`-style parameters and `{FOR_UPDATE}`/`{SKIP_LOCKED}` markers, and values
//! that are only integers, text or NULL (times are milliseconds since the
//! epoch), so the same statements run on both. SQLite serialises writers
//! itself (`BEGIN IMMEDIATE`); on PostgreSQL the markers become row locks.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_postgres::types::{IsNull, ToSql, Type};
use weir_config::SecretUrl;

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `params![a, b, …]`: a statement's parameters as [`Value`]s.
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::db::Value::from($v)),*] as &[$crate::db::Value] };
}
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, i: usize) -> i64 {
        self.opt_int(i).unwrap_or(0)
    }

    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match &self.0[i] {
            Value::Int(v) => Some(*v),
            Value::Text(t) => t.parse().ok(),
            Value::Null => None,
        }
    }

    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }

    pub fn opt_text(&self, i: usize) -> Option<String> {
        match &self.0[i] {
            Value::Text(t) => Some(t.clone()),
            Value::Int(v) => Some(v.to_string()),
            Value::Null => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", weir_pg::message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Connecting to the metadata database failed.
    #[error("{0}")]
    Connect(#[from] weir_pg::PgError),
    #[error("{0}")]
    Other(String),
}

impl DbError {
    /// Worth running the transaction again: a lost connection, a deadlock, a
    /// serialization failure, a busy SQLite file.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Postgres(e) => {
                // No SQLSTATE and no server error: the socket failed.
                weir_pg::transient(e) || (e.code().is_none() && e.as_db_error().is_none())
            }
            DbError::Connect(e) => e.is_transient(),
            DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// Run `once` again after a transient failure (a few times, with a short wait).
pub async fn retrying<R, F, Fut>(mut once: F) -> Result<R, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, DbError>>,
{
    let mut tries: u64 = 0;
    loop {
        tries += 1;
        match once().await {
            Err(e) if e.is_transient() && tries < 8 => {
                tracing::debug!("metadata transaction retried after: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            }
            r => return r,
        }
    }
}

/// Schema versions per database, applied in order.
pub struct Migrations {
    pub sqlite: &'static [&'static str],
    pub postgres: &'static [&'static str],
}

/// Where the store lives.
pub enum Db {
    Sqlite {
        path: PathBuf,
        conn: Arc<Mutex<rusqlite::Connection>>,
    },
    Postgres {
        url: SecretUrl,
        conn: Arc<Mutex<Option<PgConn>>>,
    },
}

pub struct PgConn {
    client: tokio_postgres::Client,
    statements: HashMap<String, tokio_postgres::Statement>,
}

const MIGRATION_LOCK: i64 = 7_305_847_123;

impl Db {
    /// What to call the store in messages (a PostgreSQL URL without its password).
    pub fn describe(&self) -> String {
        match self {
            Db::Sqlite { path, .. } => path.display().to_string(),
            Db::Postgres { url, .. } => url.redacted().to_owned(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }

    pub fn open_sqlite(path: &Path, migrations: &Migrations) -> Result<Db, DbError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Other(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL with NORMAL syncs at checkpoints: a power cut may lose the last
        // commits but never corrupts the file; a killed process loses nothing.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        for (i, sql) in migrations.sqlite.iter().enumerate() {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Read under the write lock: another process may have migrated.
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            check_version(version, migrations.sqlite.len())?;
            if version as usize > i {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        check_version(version, migrations.sqlite.len())?;
        Ok(Db::Sqlite {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub async fn open_postgres(url: &SecretUrl, migrations: &Migrations) -> Result<Db, DbError> {
        let conn = Arc::new(Mutex::new(None));
        {
            let mut guard = conn.clone().lock_owned().await;
            let c = pg_connect(url, &mut guard).await?;
            let client = &mut c.client;
            // One migrator at a time across all workers (creating the schema
            // too: two `CREATE SCHEMA IF NOT EXISTS` at once can collide).
            client
                .batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .await?;
            let result = async {
                client.batch_execute("CREATE SCHEMA IF NOT EXISTS weir").await?;
                client
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
                         INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT FROM schema_version)",
                    )
                    .await?;
                let version: i64 = client
                    .query_one("SELECT version FROM schema_version", &[])
                    .await?
                    .get(0);
                check_version(version, migrations.postgres.len())?;
                for (i, sql) in migrations.postgres.iter().enumerate().skip(version as usize) {
                    let tx = client.transaction().await?;
                    tx.batch_execute(sql).await?;
                    tx.execute("UPDATE schema_version SET version = $1", &[&((i + 1) as i64)])
                        .await?;
                    tx.commit().await?;
                }
                Ok::<(), DbError>(())
            }
            .await;
            let _ = client
                .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .await;
            result?;
        }
        Ok(Db::Postgres {
            url: url.clone(),
            conn,
        })
    }

    /// Start a transaction. It rolls back unless [`DbTx::commit`] is called.
    pub async fn begin(&self) -> Result<DbTx, DbError> {
        self.begin_as(false).await
    }

    /// Start a transaction that only reads (SQLite: no write lock, so
    /// `weir runs` never waits for a running pipeline).
    pub async fn begin_read(&self) -> Result<DbTx, DbError> {
        self.begin_as(true).await
    }

    async fn begin_as(&self, read_only: bool) -> Result<DbTx, DbError> {
        match self {
            Db::Sqlite { conn, .. } => {
                let guard = conn.clone().lock_owned().await;
                // IMMEDIATE takes the write lock now, so two processes never
                // deadlock upgrading a read lock (WAL readers are never blocked).
                guard.execute_batch(if read_only {
                    "BEGIN"
                } else {
                    "BEGIN IMMEDIATE"
                })?;
                Ok(DbTx::Sqlite { conn: Some(guard) })
            }
            Db::Postgres { url, conn } => {
                let mut guard = conn.clone().lock_owned().await;
                pg_connect(url, &mut guard).await?;
                let c = guard.as_mut().expect("connected");
                if let Err(e) = c.client.batch_execute("BEGIN").await {
                    *guard = None;
                    return Err(e.into());
                }
                Ok(DbTx::Postgres { conn: Some(guard) })
            }
        }
    }
}

fn check_version(version: i64, known: usize) -> Result<(), DbError> {
    if version < 0 || version as usize > known {
        return Err(DbError::Other(format!(
            "its schema version {version} is newer than this weir knows ({known}); upgrade weir"
        )));
    }
    Ok(())
}

async fn pg_connect<'g>(
    url: &SecretUrl,
    guard: &'g mut Option<PgConn>,
) -> Result<&'g mut PgConn, DbError> {
    if guard.as_ref().is_some_and(|c| c.client.is_closed()) {
        *guard = None;
    }
    if guard.is_none() {
        let client = weir_pg::connect(url, "the metadata database").await?;
        client.batch_execute("SET search_path TO weir").await?;
        *guard = Some(PgConn {
            client,
            statements: HashMap::new(),
        });
    }
    Ok(guard.as_mut().expect("connected above"))
}

/// `$1` → `?1`, markers removed: the SQLite form of a statement.
fn sqlite_sql(sql: &str) -> String {
    sql.replace("{FOR_UPDATE}", "")
        .replace("{SKIP_LOCKED}", "")
        .replace('$', "?")
}

fn pg_sql(sql: &str) -> String {
    sql.replace("{FOR_UPDATE}", "FOR UPDATE")
        .replace("{SKIP_LOCKED}", "FOR UPDATE SKIP LOCKED")
}

/// An open transaction on either database.
pub enum DbTx {
    Sqlite {
        conn: Option<OwnedMutexGuard<rusqlite::Connection>>,
    },
    Postgres {
        conn: Option<OwnedMutexGuard<Option<PgConn>>>,
    },
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Text(t) => t.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
        )
    }

    tokio_postgres::types::to_sql_checked!();
}

fn pg_row(r: &tokio_postgres::Row) -> Row {
    let mut vals = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        vals.push(match *c.type_() {
            Type::INT8 => r.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int),
            Type::INT4 => r
                .get::<_, Option<i32>>(i)
                .map_or(Value::Null, |v| Value::Int(v.into())),
            Type::INT2 => r
                .get::<_, Option<i16>>(i)
                .map_or(Value::Null, |v| Value::Int(v.into())),
            Type::BOOL => r
                .get::<_, Option<bool>>(i)
                .map_or(Value::Null, |v| Value::Int(v.into())),
            _ => r
                .get::<_, Option<String>>(i)
                .map_or(Value::Null, Value::Text),
        });
    }
    Row(vals)
}

impl DbTx {
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        match self {
            DbTx::Sqlite { conn } => {
                let conn = conn.as_mut().expect("open transaction");
                let mut stmt = conn.prepare_cached(&sqlite_sql(sql))?;
                let n = stmt.column_count();
                let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    use rusqlite::types::ValueRef;
                    let mut out = Vec::with_capacity(n);
                    for i in 0..n {
                        out.push(match r.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(v) => Value::Int(v),
                            ValueRef::Real(v) => Value::Int(v as i64),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                        });
                    }
                    Ok(Row(out))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<Row>>>()?)
            }
            DbTx::Postgres { conn } => {
                let c = conn
                    .as_mut()
                    .and_then(|g| g.as_mut())
                    .expect("open transaction");
                let stmt = pg_statement(c, sql).await?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                let rows = c.client.query(&stmt, &refs).await?;
                Ok(rows.iter().map(pg_row).collect())
            }
        }
    }

    pub async fn one(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    pub async fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match self {
            DbTx::Sqlite { conn } => {
                let conn = conn.as_mut().expect("open transaction");
                let mut stmt = conn.prepare_cached(&sqlite_sql(sql))?;
                Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
            }
            DbTx::Postgres { conn } => {
                let c = conn
                    .as_mut()
                    .and_then(|g| g.as_mut())
                    .expect("open transaction");
                let stmt = pg_statement(c, sql).await?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                Ok(c.client.execute(&stmt, &refs).await?)
            }
        }
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        match &mut self {
            DbTx::Sqlite { conn } => {
                let guard = conn.take().expect("open transaction");
                if let Err(e) = guard.execute_batch("COMMIT") {
                    let _ = guard.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                Ok(())
            }
            DbTx::Postgres { conn } => {
                let mut guard = conn.take().expect("open transaction");
                let c = guard.as_mut().expect("connected");
                if let Err(e) = c.client.batch_execute("COMMIT").await {
                    // The connection's state is unknown: start afresh next time.
                    *guard = None;
                    return Err(e.into());
                }
                Ok(())
            }
        }
    }
}

async fn pg_statement(c: &mut PgConn, sql: &str) -> Result<tokio_postgres::Statement, DbError> {
    if let Some(s) = c.statements.get(sql) {
        return Ok(s.clone());
    }
    let s = c.client.prepare(&pg_sql(sql)).await?;
    c.statements.insert(sql.to_owned(), s.clone());
    Ok(s)
}

impl Drop for DbTx {
    /// A transaction dropped without `commit` (an error, or a cancelled
    /// future) rolls back. SQLite does it now; a PostgreSQL connection is
    /// dropped instead, which makes the server roll back, since Drop cannot
    /// wait for a reply.
    fn drop(&mut self) {
        match self {
            DbTx::Sqlite { conn } => {
                if let Some(guard) = conn.take() {
                    let _ = guard.execute_batch("ROLLBACK");
                }
            }
            DbTx::Postgres { conn } => {
                if let Some(mut guard) = conn.take() {
                    *guard = None;
                }
            }
        }
    }
}
