//! Reading a run's lake files back as Arrow batches, for warehouses that take
//! batches (PostgreSQL, and DuckDB when the files are not local Parquet).
//!
//! NDJSON is decoded in batches of lines; when a batch fails, its lines are
//! decoded one by one so the bad ones are set aside with their reason and line
//! number and the good ones still load. Parquet files are typed, so they have
//! no bad records. Everything streams: at most one batch is in flight.

use std::io::Write;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_config::LakeFormat;
use weir_lake::{FileEntry, Lake};

use crate::{Rejected, Result, WarehouseError};

/// Lines (or Parquet rows) per batch.
const BATCH_ROWS: usize = 32 * 1024;
/// Keep at most this many rejected records in memory (all are counted).
const MAX_KEPT_REJECTS: usize = 10_000;

/// What the reader reports when it is done.
#[derive(Debug, Default)]
pub(crate) struct ReadReport {
    pub rejected: Vec<Rejected>,
    /// All bad records, including those not kept.
    pub rejected_count: u64,
}

/// Start reading `files` on a blocking thread; batches arrive on the receiver.
/// Once more than `max_bad` records were rejected no more batches are sent
/// (the load will fail), but the files are still read to count them all.
pub(crate) fn spawn(
    table: String,
    lake: Lake,
    format: LakeFormat,
    files: Vec<FileEntry>,
    schema: SchemaRef,
    max_bad: u64,
) -> (mpsc::Receiver<RecordBatch>, JoinHandle<Result<ReadReport>>) {
    let (tx, rx) = mpsc::channel(1);
    let handle = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let mut report = ReadReport::default();
        for file in &files {
            match format {
                LakeFormat::Parquet => read_parquet(&handle, &lake, file, &schema, &tx, &table)?,
                LakeFormat::Ndjson => read_ndjson(
                    &handle,
                    &lake,
                    file,
                    &schema,
                    &tx,
                    &mut report,
                    max_bad,
                    &table,
                )?,
            }
        }
        Ok(report)
    });
    (rx, task)
}

fn load_err(table: &str, file: &str, message: impl std::fmt::Display) -> WarehouseError {
    WarehouseError::Load {
        table: table.to_owned(),
        message: format!("{file}: {message}"),
    }
}

fn read_parquet(
    handle: &tokio::runtime::Handle,
    lake: &Lake,
    file: &FileEntry,
    schema: &SchemaRef,
    tx: &mpsc::Sender<RecordBatch>,
    table: &str,
) -> Result<()> {
    let reader = ObjectReader {
        store: lake.store.clone(),
        path: lake.object_path(&file.path),
        size: file.bytes,
    };
    handle.block_on(async {
        let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| load_err(table, &file.path, e))?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| load_err(table, &file.path, e))?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| load_err(table, &file.path, e))?;
            // The file's schema may lack the manifest's field metadata; the
            // manifest's schema is the one warehouses map types from.
            let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                .map_err(|e| load_err(table, &file.path, e))?;
            if tx.send(batch).await.is_err() {
                return Ok(()); // the consumer failed and will report why
            }
        }
        Ok(())
    })
}

/// Ranges of one Parquet object, fetched through `object_store` (the file's
/// size comes from the manifest, so the footer is one ranged read).
struct ObjectReader {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
    size: u64,
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<std::sync::Arc<ParquetMetaData>>>
    {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(std::sync::Arc::new(metadata))
        })
    }
}

/// Lines of one NDJSON batch, with where each came from.
struct Lines {
    buf: Vec<u8>,
    /// (start offset in `buf`, 1-based line number in the file)
    starts: Vec<(usize, u64)>,
}

impl Lines {
    fn line(&self, i: usize) -> &[u8] {
        let start = self.starts[i].0;
        let end = self.starts.get(i + 1).map_or(self.buf.len(), |s| s.0);
        &self.buf[start..end]
    }
}

#[allow(clippy::too_many_arguments)]
fn read_ndjson(
    handle: &tokio::runtime::Handle,
    lake: &Lake,
    file: &FileEntry,
    schema: &SchemaRef,
    tx: &mpsc::Sender<RecordBatch>,
    report: &mut ReadReport,
    max_bad: u64,
    table: &str,
) -> Result<()> {
    // A schema the JSON reader cannot take is the run's fault, not a bad record.
    decoder(&wire_schema(schema), 1).map_err(|e| load_err(table, &file.path, e))?;
    let mut stream = handle.block_on(async {
        lake.store
            .get(&lake.object_path(&file.path))
            .await
            .map(|r| r.into_stream())
            .map_err(|e| load_err(table, &file.path, e))
    })?;
    let gz = file.path.ends_with(".gz");
    let mut gunzip = gz.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let mut pending: Vec<u8> = Vec::new();
    let mut lines = Lines {
        buf: Vec::new(),
        starts: Vec::new(),
    };
    let mut line_no = 0u64;
    let flush = |lines: &mut Lines, report: &mut ReadReport| -> Result<bool> {
        if lines.starts.is_empty() {
            return Ok(true);
        }
        let batch = decode_lines(lines, schema, &file.path, report);
        lines.buf.clear();
        lines.starts.clear();
        if report.rejected_count > max_bad {
            return Ok(true); // keep counting, stop loading
        }
        match batch {
            Some(b) => Ok(tx.blocking_send(b).is_ok()),
            None => Ok(true),
        }
    };
    loop {
        let chunk = handle.block_on(stream.next());
        let done = chunk.is_none();
        if let Some(chunk) = chunk {
            let chunk = chunk.map_err(|e| load_err(table, &file.path, e))?;
            match &mut gunzip {
                Some(d) => {
                    d.write_all(&chunk)
                        .map_err(|e| load_err(table, &file.path, format!("gzip: {e}")))?;
                    pending.append(d.get_mut());
                }
                None => pending.extend_from_slice(&chunk),
            }
        } else if let Some(d) = gunzip.take() {
            let rest = d
                .finish()
                .map_err(|e| load_err(table, &file.path, format!("gzip: {e}")))?;
            pending.extend_from_slice(&rest);
        }
        // Move every complete line (or, at the end, the unterminated last one) into the batch.
        let mut consumed = 0;
        while let Some(nl) = pending[consumed..].iter().position(|&b| b == b'\n') {
            let line = &pending[consumed..consumed + nl + 1];
            line_no += 1;
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.starts.push((lines.buf.len(), line_no));
                lines.buf.extend_from_slice(line);
            }
            consumed += nl + 1;
            if lines.starts.len() >= BATCH_ROWS && !flush(&mut lines, report)? {
                return Ok(());
            }
        }
        pending.drain(..consumed);
        if done {
            if !pending.iter().all(u8::is_ascii_whitespace) {
                line_no += 1;
                lines.starts.push((lines.buf.len(), line_no));
                pending.push(b'\n');
                lines.buf.extend_from_slice(&pending);
            }
            flush(&mut lines, report)?;
            return Ok(());
        }
    }
}

fn decoder(
    schema: &SchemaRef,
    rows: usize,
) -> Result<arrow::json::reader::Decoder, arrow::error::ArrowError> {
    arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.max(1))
        .with_strict_mode(true)
        .build_decoder()
}

/// Timestamps travel as text: arrow-json's parser rejects the years before 1
/// AD (`-4712-11-24T00:00:00`) that its own writer produces, so Weir parses them.
fn wire_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Timestamp(TimeUnit::Microsecond, _) => DataType::Utf8,
        DataType::List(f) => DataType::List(Arc::new(
            f.as_ref().clone().with_data_type(wire_type(f.data_type())),
        )),
        other => other.clone(),
    }
}

fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(wire_type(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Microseconds since the epoch of a timestamp as arrow-json writes it
/// (`2000-01-01T00:00:00.5`, with `+00:00` or `Z` for zoned ones; years may be negative).
fn parse_timestamp(s: &str) -> Option<i64> {
    parse_timestamp_fast(s.as_bytes()).or_else(|| parse_timestamp_slow(s))
}

/// The exact shape the writer produces, without format-string parsing:
/// `[-]YYYY-MM-DDTHH:MM:SS[.ffffff][Z|±HH:MM]`.
fn parse_timestamp_fast(b: &[u8]) -> Option<i64> {
    let (neg, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let year = num(0..4)? * if neg { -1 } else { 1 };
    let (month, day) = (num(5..7)?, num(8..10)?);
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 6 {
            return None;
        }
        micros = num(start..i)? * 10i64.pow((6 - digits) as u32);
    }
    let offset = match &b[i..] {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    let days = i64::from(chrono::Datelike::num_days_from_ce(&date)) - 719_163;
    Some((days * 86_400 + h * 3600 + m * 60 + sec - offset) * 1_000_000 + micros)
}

fn parse_timestamp_slow(s: &str) -> Option<i64> {
    let s = s.trim();
    let zoned = s
        .strip_suffix('Z')
        .map(|b| format!("{b}+00:00"))
        .unwrap_or_else(|| s.to_owned());
    chrono::DateTime::parse_from_str(&zoned, "%Y-%m-%dT%H:%M:%S%.f%:z")
        .map(|t| t.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc().timestamp_micros())
        })
        .ok()
}

/// Turn a wire column back into the manifest's type.
fn to_target(array: &ArrayRef, target: &DataType, name: &str) -> Result<ArrayRef, String> {
    match target {
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let text = array.as_string::<i32>();
            let mut out = TimestampMicrosecondBuilder::with_capacity(text.len());
            for v in text.iter() {
                match v {
                    None => out.append_null(),
                    Some(v) => out.append_value(
                        parse_timestamp(v)
                            .ok_or_else(|| format!("field '{name}': `{v}` is not a timestamp"))?,
                    ),
                }
            }
            Ok(Arc::new(out.finish().with_timezone_opt(tz.clone())))
        }
        DataType::List(f) if wire_type(target) != *target => {
            let list = array.as_list::<i32>();
            let values = to_target(list.values(), f.data_type(), name)?;
            Ok(Arc::new(
                ListArray::try_new(
                    f.clone(),
                    list.offsets().clone(),
                    values,
                    list.nulls().cloned(),
                )
                .map_err(|e| e.to_string())?,
            ))
        }
        _ => Ok(array.clone()),
    }
}

fn decode_all(buf: &[u8], schema: &SchemaRef, rows: usize) -> Result<Option<RecordBatch>, String> {
    let Some(wire) = decode_wire(buf, &wire_schema(schema), rows)? else {
        return Ok(None);
    };
    let columns = wire
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| to_target(c, f.data_type(), f.name()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn decode_wire(buf: &[u8], schema: &SchemaRef, rows: usize) -> Result<Option<RecordBatch>, String> {
    let mut d = decoder(schema, rows + 1).map_err(|e| e.to_string())?;
    let used = d.decode(buf).map_err(|e| e.to_string())?;
    if used != buf.len() {
        return Err("trailing data after the record".to_owned());
    }
    if d.has_partial_record() {
        return Err("the record is incomplete".to_owned());
    }
    d.flush().map_err(|e| e.to_string())
}

/// Decode a batch of lines; on failure find the bad lines one by one.
fn decode_lines(
    lines: &Lines,
    schema: &SchemaRef,
    file: &str,
    report: &mut ReadReport,
) -> Option<RecordBatch> {
    if let Ok(batch) = decode_all(&lines.buf, schema, lines.starts.len()) {
        return batch;
    }
    let mut clean = Vec::with_capacity(lines.buf.len());
    let mut good = 0;
    for i in 0..lines.starts.len() {
        let line = lines.line(i);
        match decode_all(line, schema, 1) {
            Ok(Some(b)) if b.num_rows() == 1 => {
                clean.extend_from_slice(line);
                good += 1;
            }
            Ok(_) => reject(
                report,
                file,
                lines.starts[i].1,
                "not one record".into(),
                line,
            ),
            Err(reason) => reject(report, file, lines.starts[i].1, reason, line),
        }
    }
    if good == 0 {
        return None;
    }
    // Lines that decode alone decode together.
    decode_all(&clean, schema, good).ok().flatten()
}

fn reject(report: &mut ReadReport, file: &str, line: u64, reason: String, raw: &[u8]) {
    report.rejected_count += 1;
    if report.rejected.len() < MAX_KEPT_REJECTS {
        report.rejected.push(Rejected {
            file: file.to_owned(),
            line: Some(line),
            reason,
            record: Some(
                String::from_utf8_lossy(raw)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
        });
    }
}

/// The number of rows a Parquet file of `size` bytes says it holds.
pub(crate) async fn parquet_rows(lake: &Lake, rel: &str, size: u64) -> Result<u64, String> {
    let mut reader = ObjectReader {
        store: lake.store.clone(),
        path: lake.object_path(rel),
        size,
    };
    let meta = reader.get_metadata(None).await.map_err(|e| e.to_string())?;
    Ok(meta.file_metadata().num_rows().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_fast_and_agree_with_chrono() {
        for s in [
            "2000-01-01T00:00:00",
            "2024-06-30T23:59:59.5",
            "9999-12-31T23:59:59.999999",
            "-4712-11-24T00:00:00",
            "1970-01-01T00:00:00.000001+00:00",
            "2024-07-01T02:59:59.5Z",
            "2024-06-30T23:59:59-03:00",
        ] {
            let fast = parse_timestamp_fast(s.as_bytes());
            assert!(fast.is_some(), "{s}");
            assert_eq!(fast, parse_timestamp_slow(s), "{s}");
        }
        assert_eq!(parse_timestamp("1970-01-01T00:00:01"), Some(1_000_000));
        for bad in [
            "2024-13-01T00:00:00",
            "2024-02-30T00:00:00",
            "2024-01-01 00:00",
            "x",
            "2024-01-01T24:00:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
