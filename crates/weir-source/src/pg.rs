//! Connections, the catalog and exported snapshots.

use tokio_postgres::Client;
use weir_config::SecretUrl;

use crate::types::{ColumnInfo, PgKind};
use crate::SourceError;

/// Open a connection to the source; its driver task runs on the current
/// runtime. Bounded by a connect timeout (see `weir_pg::connect`).
pub async fn connect(url: &SecretUrl) -> Result<Client, SourceError> {
    Ok(weir_pg::connect(url, "the source").await?)
}

/// Quote an identifier for PostgreSQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote a string literal for PostgreSQL.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

pub(crate) fn query_err(
    context: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
    let context = context.into();
    move |e| SourceError::Pg(weir_pg::PgError::new(context, e))
}

/// A table as the catalog describes it, inside the run's snapshot.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    /// Size of the table's main fork in bytes.
    pub size_bytes: u64,
}

impl TableInfo {
    /// The quoted `"schema"."table"` for SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.table` for messages.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The column a setting names, or an error naming table, column and setting.
    pub fn column(&self, name: &str, setting: &'static str) -> Result<&ColumnInfo, SourceError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| SourceError::NoSuchColumn {
                table: self.display_name(),
                column: name.to_owned(),
                setting,
            })
    }
}

/// The ordinary and partitioned tables of a schema, by name.
pub async fn list_tables(client: &Client, schema: &str) -> Result<Vec<String>, SourceError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(query_err(format!("listing tables of schema {schema}")))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Describe a table's columns, primary key and size. Columns whose type has no
/// Arrow mapping are an error unless named in `cast_to_text`.
pub async fn describe(
    client: &Client,
    schema: &str,
    table: &str,
    cast_to_text: &[String],
) -> Result<TableInfo, SourceError> {
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let ctx = || format!("describing table {schema}.{table}");
    let exists = client
        .query_opt("SELECT to_regclass($1::text)::oid::int8", &[&qualified])
        .await
        .map_err(query_err(ctx()))?
        .and_then(|r| r.get::<_, Option<i64>>(0));
    let Some(oid) = exists else {
        return Err(SourceError::NoSuchTable {
            schema: schema.to_owned(),
            table: table.to_owned(),
        });
    };
    let oid = oid as u32;
    // Domains resolve to their base type; arrays report their element type.
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    bt.typname::text, bt.typtype::text, a.atttypmod,
                    et.typname::text, et.typtype::text, bt.typcategory::text
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(query_err(ctx()))?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut unsupported = Vec::new();
    for r in &rows {
        let name: String = r.get(0);
        let declared: String = r.get(1);
        let not_null: bool = r.get(2);
        let typname: String = r.get(3);
        let typtype: String = r.get(4);
        let typmod: i32 = r.get(5);
        let elem: Option<String> = r.get(6);
        let elem_type: Option<String> = r.get(7);
        let elem = elem.as_deref().zip(elem_type.as_deref());
        let cast = cast_to_text.iter().any(|c| c == &name);
        let kind = match PgKind::from_catalog(&typname, &typtype, typmod, elem) {
            Some(k) => k,
            None if cast => PgKind::Text,
            None => {
                unsupported.push((name, declared));
                continue;
            }
        };
        columns.push(ColumnInfo {
            name,
            declared,
            kind,
            not_null,
            cast_to_text: cast,
            distinct_fraction: None,
        });
    }
    if !unsupported.is_empty() {
        return Err(SourceError::UnsupportedType {
            table: format!("{schema}.{table}"),
            columns: unsupported,
        });
    }
    for c in cast_to_text {
        if !columns.iter().any(|col| &col.name == c) {
            return Err(SourceError::NoSuchColumn {
                table: format!("{schema}.{table}"),
                column: c.clone(),
                setting: "cast_to_text",
            });
        }
    }
    let pk = client
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(query_err(ctx()))?;
    // n_distinct < 0 is minus a fraction of the rows; > 0 an absolute count.
    let stats = client
        .query(
            "SELECT s.attname::text, s.n_distinct::float8, greatest(c.reltuples, 1)::float8
             FROM pg_stats s JOIN pg_class c ON c.oid = $3::oid
             WHERE s.schemaname = $1 AND s.tablename = $2",
            &[&schema, &table, &oid],
        )
        .await
        .map_err(query_err(ctx()))?;
    for r in &stats {
        let name: String = r.get(0);
        let (n, rows): (f64, f64) = (r.get(1), r.get(2));
        if let Some(c) = columns.iter_mut().find(|c| c.name == name) {
            c.distinct_fraction = Some(if n < 0.0 { -n } else { (n / rows).min(1.0) });
        }
    }
    let size: i64 = client
        .query_one("SELECT pg_relation_size($1::oid)", &[&oid])
        .await
        .map_err(query_err(ctx()))?
        .get(0);
    Ok(TableInfo {
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns,
        primary_key: pk.iter().map(|r| r.get(0)).collect(),
        size_bytes: size.max(0) as u64,
    })
}

/// What another process needs to read in an exported snapshot: its id and
/// what was recorded when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRef {
    pub id: String,
    pub txid_snapshot: String,
    pub taken_at: String,
    pub oldest_open_write_start: Option<String>,
}

/// The snapshot a run reads from, held open by one connection until the run ends.
pub struct Snapshot {
    client: Client,
    /// `pg_export_snapshot()`: what worker connections import.
    pub id: String,
    /// `txid_current_snapshot()` as text (`xmin:xmax:xip…`), recorded in the manifest.
    pub txid_snapshot: String,
    /// Server time when the snapshot was taken (RFC 3339).
    pub taken_at: String,
    /// Start of the oldest transaction that had written and was still open
    /// when the snapshot was taken: rows it commits later may carry cursor
    /// values older than what this snapshot saw.
    pub oldest_open_write_start: Option<String>,
    pub server_version_num: i32,
}

impl Snapshot {
    /// Open a repeatable-read transaction and export its snapshot (as `pg_dump -j` does).
    pub async fn export(url: &SecretUrl) -> Result<Snapshot, SourceError> {
        let client = connect(url).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(query_err("starting the snapshot transaction"))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), txid_current_snapshot()::text,
                        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        (SELECT to_char(min(xact_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')
                           FROM pg_stat_activity
                          WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()),
                        current_setting('server_version_num')::int4",
                &[],
            )
            .await
            .map_err(query_err("exporting a snapshot"))?;
        Ok(Snapshot {
            id: row.get(0),
            txid_snapshot: row.get(1),
            taken_at: row.get(2),
            oldest_open_write_start: row.get(3),
            server_version_num: row.get(4),
            client,
        })
    }

    /// Read in a snapshot another connection exported (and still holds open),
    /// with what was recorded when it was taken: the pipeline's extract
    /// tasks all read the one snapshot their run's `start` task exported.
    pub async fn import(url: &SecretUrl, r: &SnapshotRef) -> Result<Snapshot, SourceError> {
        let client = connect(url).await?;
        let set = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&r.id)
        );
        if let Err(e) = client.batch_execute(&set).await {
            // 22023: "invalid snapshot identifier", the exporter's transaction ended.
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) {
                return Err(SourceError::SnapshotGone { id: r.id.clone() });
            }
            return Err(query_err("importing the run's snapshot")(e));
        }
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(query_err("reading the server version"))?
            .get(0);
        Ok(Snapshot {
            id: r.id.clone(),
            txid_snapshot: r.txid_snapshot.clone(),
            taken_at: r.taken_at.clone(),
            oldest_open_write_start: r.oldest_open_write_start.clone(),
            server_version_num: version,
            client,
        })
    }

    /// What other connections and processes need to read in this snapshot.
    pub fn reference(&self) -> SnapshotRef {
        SnapshotRef {
            id: self.id.clone(),
            txid_snapshot: self.txid_snapshot.clone(),
            taken_at: self.taken_at.clone(),
            oldest_open_write_start: self.oldest_open_write_start.clone(),
        }
    }

    /// The connection holding the snapshot; catalog queries run here so they see it too.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A new connection inside this snapshot.
    pub async fn join(&self, url: &SecretUrl) -> Result<Client, SourceError> {
        let client = connect(url).await?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(&self.id)
            ))
            .await
            .map_err(query_err("importing the run's snapshot"))?;
        Ok(client)
    }

    /// End the snapshot transaction.
    pub async fn release(self) {
        let _ = self.client.batch_execute("COMMIT").await;
    }
}
