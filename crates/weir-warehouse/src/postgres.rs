//! PostgreSQL as a warehouse: batches go in with binary `COPY FROM STDIN`.
//!
//! Staging happens in one transaction (create + copy), so a failed stage
//! leaves nothing behind. Publishing a full replacement drops the old table and
//! renames the staged one; when views depend on the table (dbt models over raw
//! tables do), PostgreSQL refuses the drop, and the rows are instead swapped
//! with `TRUNCATE` + `INSERT` in one transaction, which keeps the views.

use arrow::datatypes::DataType;
use async_trait::async_trait;
use bytes::BytesMut;
use futures::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use weir_config::{LoadMode, SecretUrl};

use crate::pgcopy::{self, Enc};
use crate::text_result;
use crate::{
    read, Column, Dialect, Publish, QueryResult, Result, StageOutcome, StageRequest, Warehouse,
    WarehouseError,
};

pub struct Postgres {
    url: SecretUrl,
    /// Every statement runs alone (one prepared statement, so never a batch)
    /// in a `READ ONLY` transaction that is rolled back.
    read_only: bool,
    /// Connections between statements (a small pool: statements from
    /// parallel transform nodes each get their own, so they run at once).
    idle: std::sync::Mutex<Vec<Client>>,
}

/// Idle connections kept for reuse.
const IDLE_CONNECTIONS: usize = 8;

/// A connection lent to one statement. If the statement's future is dropped
/// before it finished (a task timed out or was cancelled), the query is
/// cancelled on the server and the connection is closed, so nothing keeps
/// running or holding locks there.
struct Lease<'a> {
    pg: &'a Postgres,
    client: Option<Client>,
    busy: bool,
}

impl Lease<'_> {
    /// The connection, for a statement that is cancelled server-side if its
    /// future is dropped before [`Lease::done`].
    fn start(&mut self) -> &Client {
        self.busy = true;
        self.client.as_ref().expect("leased")
    }

    fn done(&mut self) {
        self.busy = false;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.busy {
            let token = client.cancel_token();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = token.cancel_query(NoTls).await {
                        tracing::warn!("could not cancel a warehouse query: {e}");
                    }
                });
            }
            return;
        }
        if client.is_closed() {
            return;
        }
        let mut idle = self.pg.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(client);
        }
    }
}

fn sql_err(sql: &str, e: &tokio_postgres::Error) -> WarehouseError {
    WarehouseError::pg_sql(sql, e)
}

async fn connect(url: &SecretUrl) -> Result<Client> {
    weir_pg::connect(url, "the warehouse")
        .await
        .map_err(|e| WarehouseError::Open {
            target: url.redacted().to_owned(),
            transient: e.is_transient(),
            message: format!(
                "{}{}",
                e.message,
                e.code
                    .as_ref()
                    .map(|c| format!(" (SQLSTATE {c})"))
                    .unwrap_or_default()
            ),
        })
}

impl Postgres {
    pub async fn connect(url: &SecretUrl) -> Result<Postgres> {
        Self::connect_with(url, false).await
    }

    /// `read_only`: for `weir query` and other readers, which must never change the warehouse.
    pub async fn connect_with(url: &SecretUrl, read_only: bool) -> Result<Postgres> {
        let first = connect(url).await?;
        Ok(Postgres {
            url: url.clone(),
            read_only,
            idle: std::sync::Mutex::new(vec![first]),
        })
    }

    async fn lease(&self) -> Result<Lease<'_>> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.url).await?,
        };
        Ok(Lease {
            pg: self,
            client: Some(client),
            busy: false,
        })
    }
}

/// Microseconds since 2000-01-01 for an RFC 3339 time (lineage values).
fn pg_timestamp(rfc3339: &str) -> Result<Vec<u8>> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map_err(|e| WarehouseError::Bug(format!("lineage time {rfc3339}: {e}")))?;
    Ok((t.timestamp_micros() - 946_684_800_000_000)
        .to_be_bytes()
        .to_vec())
}

async fn run_all(
    client: &mut Client,
    statements: &[String],
) -> Result<(), (String, tokio_postgres::Error)> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| ("BEGIN".to_owned(), e))?;
    for s in statements {
        tx.batch_execute(s).await.map_err(|e| (s.clone(), e))?;
    }
    tx.commit().await.map_err(|e| ("COMMIT".to_owned(), e))
}

#[async_trait]
impl Warehouse for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn describe_target(&self) -> String {
        self.url.redacted().to_owned()
    }

    async fn ensure_schema(&self, schema: &str) -> Result<()> {
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            Dialect::Postgres.quote(schema)
        );
        let mut c = self.lease().await?;
        let r = c.start().batch_execute(&sql).await;
        c.done();
        match r {
            Ok(()) => Ok(()),
            // Two loads creating the schema at once: the other one won.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(()),
            Err(e) => Err(sql_err(&sql, &e)),
        }
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        if self.read_only {
            return self.query(sql).await.map(|_| ());
        }
        let mut c = self.lease().await?;
        let r = c.start().batch_execute(sql).await;
        c.done();
        r.map_err(|e| sql_err(sql, &e))
    }

    /// Rows come back typed for integers, floats and booleans, and as
    /// PostgreSQL's own text for everything else.
    async fn query(&self, sql: &str) -> Result<QueryResult> {
        let mut c = self.lease().await?;
        let prepared = c.start().prepare(sql).await;
        let types: Option<Vec<Type>> = match prepared {
            Ok(s) => Some(s.columns().iter().map(|c| c.type_().clone()).collect()),
            // A read-only query must be one statement: the server refuses to
            // prepare a batch, which could otherwise leave the read-only
            // transaction (`SET TRANSACTION READ WRITE; DROP …`).
            Err(e) if self.read_only => {
                c.done();
                return Err(sql_err(sql, &e));
            }
            Err(_) => None,
        };
        let messages = if self.read_only {
            let client = c.start();
            let r = match client.batch_execute("BEGIN READ ONLY").await {
                Ok(()) => client.simple_query(sql).await,
                Err(e) => Err(e),
            };
            // Nothing a reader ran is kept, whatever it was.
            let rollback = client.batch_execute("ROLLBACK").await;
            match (r, rollback) {
                (Ok(m), Ok(())) => Ok(m),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            }
        } else {
            c.start().simple_query(sql).await
        };
        c.done();
        let messages = messages.map_err(|e| sql_err(sql, &e))?;
        let mut names: Vec<String> = Vec::new();
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    names = cols.iter().map(|c| c.name().to_owned()).collect();
                    rows.clear();
                }
                SimpleQueryMessage::Row(r) => {
                    if names.is_empty() {
                        names = r.columns().iter().map(|c| c.name().to_owned()).collect();
                    }
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
                }
                _ => {}
            }
        }
        let columns: Vec<(String, DataType)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let dt = match types.as_ref().and_then(|t| t.get(i)) {
                    Some(t) if [Type::INT2, Type::INT4, Type::INT8].contains(t) => DataType::Int64,
                    Some(t) if [Type::FLOAT4, Type::FLOAT8].contains(t) => DataType::Float64,
                    Some(&Type::BOOL) => DataType::Boolean,
                    _ => DataType::Utf8,
                };
                (name.clone(), dt)
            })
            .collect();
        text_result(&columns, &rows, "t")
    }

    /// One simple-query message: PostgreSQL runs it as one implicit
    /// transaction and rolls all of it back on an error.
    async fn execute_atomic(&self, statements: &[String]) -> Result<()> {
        let sql = statements.join(";\n");
        let mut c = self.lease().await?;
        let r = c.start().batch_execute(&sql).await;
        c.done();
        r.map_err(|e| sql_err(&sql, &e))
    }

    async fn describe(&self, schema: &str, name: &str) -> Result<Option<Vec<Column>>> {
        let sql = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
                   ORDER BY a.attnum";
        let mut c = self.lease().await?;
        let rows = c.start().query(sql, &[&schema, &name]).await;
        c.done();
        let rows = rows.map_err(|e| sql_err(sql, &e))?;
        let cols: Vec<Column> = rows
            .iter()
            .map(|r| Column {
                name: r.get(0),
                data_type: r.get(1),
            })
            .collect();
        Ok((!cols.is_empty()).then_some(cols))
    }

    async fn stage(&self, req: &StageRequest<'_>) -> Result<StageOutcome> {
        let d = Dialect::Postgres;
        let table = req.table.name.as_str();
        let load_err = |message: String| WarehouseError::Load {
            table: table.to_owned(),
            message,
        };
        let encs: Vec<Enc> = req
            .arrow
            .fields()
            .iter()
            .zip(req.columns)
            .map(|(f, c)| {
                Enc::for_column(f.data_type(), &c.data_type)
                    .map_err(|e| load_err(format!("column {}: {e}", f.name())))
            })
            .collect::<Result<_>>()?;
        let extra = match req.lineage {
            Some(l) => vec![l.run_id.as_bytes().to_vec(), pg_timestamp(&l.loaded_at)?],
            None => Vec::new(),
        };
        let mut client = connect(&self.url).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| sql_err("BEGIN", &e))?;
        let staging = d.relation(req.schema, req.staging);
        let create = format!("CREATE TABLE {staging} ({})", d.column_defs(req.columns));
        tx.batch_execute(&create)
            .await
            .map_err(|e| sql_err(&create, &e))?;
        let copy = format!("COPY {staging} FROM STDIN (FORMAT binary)");
        let sink = tx.copy_in(&copy).await.map_err(|e| sql_err(&copy, &e))?;
        let mut sink = Box::pin(sink);
        let (mut rx, reader) = read::spawn(
            table.to_owned(),
            req.lake.clone(),
            req.format,
            req.table.files.clone(),
            req.arrow.clone(),
            req.max_bad_records,
        );
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.extend_from_slice(pgcopy::HEADER);
        let mut failure = None;
        while let Some(batch) = rx.recv().await {
            if let Err(e) = pgcopy::encode_batch(&batch, &encs, &extra, &mut buf) {
                failure = Some(load_err(e));
                break;
            }
            if let Err(e) = sink.send(buf.split().freeze()).await {
                failure = Some(sql_err(&copy, &e));
                break;
            }
        }
        drop(rx);
        let report = reader
            .await
            .map_err(|e| WarehouseError::Bug(format!("lake reader failed: {e}")))?;
        if let Some(f) = failure {
            return Err(f);
        }
        let report = report?;
        buf.extend_from_slice(pgcopy::TRAILER);
        sink.send(buf.split().freeze())
            .await
            .map_err(|e| sql_err(&copy, &e))?;
        let rows = sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| sql_err(&copy, &e))?;
        tx.commit().await.map_err(|e| sql_err("COMMIT", &e))?;
        Ok(StageOutcome {
            rows,
            rejected: report.rejected,
            rejected_count: report.rejected_count,
        })
    }

    async fn publish(&self, p: &Publish<'_>) -> Result<()> {
        let d = Dialect::Postgres;
        let mut client = connect(&self.url).await?;
        let statements = d.publish_statements(p);
        match run_all(&mut client, &statements).await {
            Ok(()) => Ok(()),
            Err((_, e))
                if p.exists
                    && p.mode == LoadMode::Truncate
                    && e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) =>
            {
                // Views depend on the table: keep the table, swap its rows.
                let mut statements = vec![format!("TRUNCATE {}", d.relation(p.schema, p.table))];
                statements.extend(d.publish_statements(&Publish {
                    mode: LoadMode::Append,
                    ..p.clone()
                }));
                run_all(&mut client, &statements)
                    .await
                    .map_err(|(sql, e)| sql_err(&sql, &e))
            }
            Err((sql, e)) => Err(sql_err(&sql, &e)),
        }
    }
}
