//! Planning and reading: chunks of a table, incremental bounds, and the binary
//! COPY stream of one chunk turned into bounded batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::{pin_mut, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use weir_config::ChunkBy;

use crate::decode::BatchDecoder;
use crate::pg::{query_err, quote_ident, quote_literal, TableInfo};
use crate::types::PgKind;
use crate::SourceError;

/// Rows per Arrow batch handed to a writer.
pub const BATCH_ROWS: usize = 32_768;
/// A batch is also cut when its decoded payload passes this many bytes, so
/// wide rows do not make large batches.
pub const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// One independently readable piece of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub index: usize,
    /// A SQL condition selecting this chunk's rows, `None` for the whole table.
    pub filter: Option<String>,
}

/// The Arrow schema of a table as it will be extracted.
pub fn arrow_schema(table: &TableInfo) -> SchemaRef {
    Arc::new(Schema::new(
        table.columns.iter().map(|c| c.field()).collect::<Vec<_>>(),
    ))
}

/// Split a table into chunks of about `chunk_bytes`, by physical block
/// (`ctid`) ranges or ranges of an integer column. Runs on the snapshot's
/// connection so min/max and size agree with what the chunks will read.
pub async fn plan_chunks(
    client: &Client,
    table: &TableInfo,
    chunk_by: Option<&ChunkBy>,
    chunk_bytes: u64,
    server_version_num: i32,
) -> Result<Vec<Chunk>, SourceError> {
    let whole = vec![Chunk {
        index: 0,
        filter: None,
    }];
    let n = table.size_bytes.div_ceil(chunk_bytes.max(1)).min(256) as usize;
    if n <= 1 {
        return Ok(whole);
    }
    // TID range scans arrived in PostgreSQL 14; before that each ctid chunk
    // would scan the whole table, so fall back to an integer key.
    let int_pk = match table.primary_key.as_slice() {
        [pk] => table
            .columns
            .iter()
            .find(|c| &c.name == pk && matches!(c.kind, PgKind::Int2 | PgKind::Int4 | PgKind::Int8))
            .map(|c| c.name.clone()),
        _ => None,
    };
    let by = match chunk_by {
        Some(ChunkBy::None) => return Ok(whole),
        Some(ChunkBy::Column(c)) => ChunkBy::Column(c.clone()),
        Some(ChunkBy::Ctid) => ChunkBy::Ctid,
        None if server_version_num >= 140_000 => ChunkBy::Ctid,
        None => match int_pk {
            Some(c) => ChunkBy::Column(c),
            None => return Ok(whole),
        },
    };
    match by {
        ChunkBy::Ctid => {
            let block_size: i64 = client
                .query_one("SELECT current_setting('block_size')::int8", &[])
                .await
                .map_err(query_err("reading block_size"))?
                .get(0);
            let blocks = (table.size_bytes as i64 / block_size.max(1)).max(1);
            let bounds: Vec<i64> = (0..=n as i64).map(|i| i * blocks / n as i64).collect();
            Ok((0..n)
                .map(|i| {
                    let lo = format!("ctid >= '({},0)'::tid", bounds[i]);
                    // The last chunk is open-ended: the table may have grown
                    // since its size was read, and those rows are still ours.
                    let filter = if i + 1 == n {
                        lo
                    } else {
                        format!("{lo} AND ctid < '({},0)'::tid", bounds[i + 1])
                    };
                    Chunk {
                        index: i,
                        filter: Some(filter),
                    }
                })
                .collect())
        }
        ChunkBy::Column(col) => {
            let column = table.column(&col, "chunk_by")?;
            if !matches!(column.kind, PgKind::Int2 | PgKind::Int4 | PgKind::Int8) {
                return Err(SourceError::Config(format!(
                    "table {}.{}: chunk_by column `{col}` must be an integer column (it is {})",
                    table.schema, table.name, column.declared
                )));
            }
            let q = quote_ident(&col);
            let row = client
                .query_one(
                    &format!(
                        "SELECT min({q})::int8, max({q})::int8 FROM {}",
                        table.qualified()
                    ),
                    &[],
                )
                .await
                .map_err(query_err(format!(
                    "finding the range of {}.{col}",
                    table.name
                )))?;
            let (Some(lo), Some(hi)): (Option<i64>, Option<i64>) = (row.get(0), row.get(1)) else {
                return Ok(vec![Chunk {
                    index: 0,
                    filter: None,
                }]);
            };
            let span = (hi as i128 - lo as i128 + 1).max(1);
            let mut chunks: Vec<Chunk> = (0..n)
                .map(|i| {
                    let a = lo as i128 + span * i as i128 / n as i128;
                    let b = lo as i128 + span * (i as i128 + 1) / n as i128;
                    let filter = if i == 0 && i + 1 == n {
                        format!("{q} IS NOT NULL")
                    } else if i == 0 {
                        format!("{q} < {b}")
                    } else if i + 1 == n {
                        format!("{q} >= {a}")
                    } else {
                        format!("{q} >= {a} AND {q} < {b}")
                    };
                    Chunk {
                        index: i,
                        filter: Some(filter),
                    }
                })
                .collect();
            if !column.not_null {
                chunks.push(Chunk {
                    index: n,
                    filter: Some(format!("{q} IS NULL")),
                });
            }
            Ok(chunks)
        }
        ChunkBy::None => Ok(whole),
    }
}

/// Where an incremental table starts and what mark it leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalBounds {
    /// Condition for the rows to read (`None`: no earlier mark, read everything).
    pub filter: Option<String>,
    /// The new high-water mark, as the cursor's text; `None` when the table has no rows.
    pub mark: Option<String>,
}

/// Compute the incremental window of `table` on the snapshot's connection.
///
/// Rows are read from `cursor >= previous mark - lookback`: the bound is
/// inclusive so rows that tie with the mark are never lost (rows read twice
/// are de-duplicated by primary key on load). For time cursors the new mark is
/// held back to the start of the oldest transaction that was writing when the
/// snapshot was taken, so a row that such a transaction commits later, with a
/// cursor value older than the rows this run saw, is read by the next run.
pub async fn incremental_bounds(
    client: &Client,
    table: &TableInfo,
    cursor: &str,
    previous_mark: Option<&str>,
    lookback: Option<&str>,
    oldest_open_write_start: Option<&str>,
) -> Result<IncrementalBounds, SourceError> {
    let column = table.column(cursor, "cursor")?;
    let q = quote_ident(cursor);
    let ty = &column.declared;
    let filter = previous_mark.map(|m| match lookback {
        Some(lb) => format!("{q} >= ({}::{ty} - ({lb}))", quote_literal(m)),
        None => format!("{q} >= {}::{ty}", quote_literal(m)),
    });
    let is_time = matches!(
        column.kind,
        PgKind::Timestamp | PgKind::Timestamptz | PgKind::Date
    );
    let max_expr = match (is_time, oldest_open_write_start) {
        (true, Some(start)) => format!(
            "LEAST(max({q}), {}::timestamptz::{ty})",
            quote_literal(start)
        ),
        _ => format!("max({q})"),
    };
    let sql = format!(
        "SELECT ({max_expr})::text FROM {}{}",
        table.qualified(),
        filter
            .as_ref()
            .map(|f| format!(" WHERE {f}"))
            .unwrap_or_default()
    );
    let mark: Option<String> = client
        .query_one(&sql, &[])
        .await
        .map_err(query_err(format!(
            "finding the high-water mark of {}.{cursor}",
            table.name
        )))?
        .get(0);
    Ok(IncrementalBounds {
        filter,
        mark: mark.or_else(|| previous_mark.map(str::to_owned)),
    })
}

/// The COPY statement for a table and an optional row condition.
pub fn copy_sql(table: &TableInfo, filter: Option<&str>) -> String {
    let cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let q = quote_ident(&c.name);
            if c.cast_to_text {
                format!("{q}::text AS {q}")
            } else {
                q
            }
        })
        .collect();
    let cols = if cols.is_empty() {
        "NULL".to_owned()
    } else {
        cols.join(", ")
    };
    let mut select = format!("SELECT {cols} FROM {}", table.qualified());
    if let Some(f) = filter {
        select.push_str(" WHERE ");
        select.push_str(f);
    }
    format!("COPY ({select}) TO STDOUT (FORMAT binary)")
}

/// Counters a chunk reader updates as it goes (for progress bars).
#[derive(Debug, Default)]
pub struct ReadProgress {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
}

/// Stream one chunk into `tx` as record batches. Memory is bounded by the
/// channel's capacity times the batch size. Returns the number of rows read.
pub async fn read_chunk(
    client: &Client,
    table: &TableInfo,
    schema: SchemaRef,
    filter: Option<&str>,
    tx: &mpsc::Sender<RecordBatch>,
    progress: &ReadProgress,
) -> Result<u64, SourceError> {
    let kinds: Vec<PgKind> = table.columns.iter().map(|c| c.effective_kind()).collect();
    let mut decoder = BatchDecoder::new(schema, &kinds);
    let sql = copy_sql(table, filter);
    let stream = client
        .copy_out(sql.as_str())
        .await
        .map_err(query_err(format!(
            "reading table {}.{}",
            table.schema, table.name
        )))?;
    pin_mut!(stream);
    let mut total = 0u64;
    let name = table.display_name();
    let decode_err = |e: crate::decode::DecodeError| SourceError::Decode {
        table: name.clone(),
        column: e
            .column
            .and_then(|i| table.columns.get(i))
            .map(|c| c.name.clone()),
        type_name: e
            .column
            .and_then(|i| table.columns.get(i))
            .map(|c| c.declared.clone()),
        message: e.message,
    };
    // Messages arrive one row at a time: nothing here may allocate or touch
    // shared counters per message; progress is published once per batch.
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return Err(query_err(format!("reading table {name}"))(e)),
        };
        bytes += chunk.len() as u64;
        decoder.feed(&chunk).map_err(decode_err)?;
        if decoder.buffered_rows() >= BATCH_ROWS || decoder.buffered_bytes() >= BATCH_BYTES {
            progress
                .bytes
                .fetch_add(std::mem::take(&mut bytes), Ordering::Relaxed);
            total += send(&mut decoder, tx, progress).await?;
        }
    }
    progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    decoder.finish().map_err(decode_err)?;
    total += send(&mut decoder, tx, progress).await?;
    Ok(total)
}

async fn send(
    decoder: &mut BatchDecoder,
    tx: &mpsc::Sender<RecordBatch>,
    progress: &ReadProgress,
) -> Result<u64, SourceError> {
    let batch = decoder
        .take_batch()
        .map_err(|e| SourceError::Bug(e.message))?;
    let Some(batch) = batch else {
        return Ok(0);
    };
    let n = batch.num_rows() as u64;
    tx.send(batch).await.map_err(|_| SourceError::Cancelled)?;
    progress.rows.fetch_add(n, Ordering::Relaxed);
    Ok(n)
}
