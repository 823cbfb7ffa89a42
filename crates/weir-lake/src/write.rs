//! Streaming one data file: batches in, an object out.
//!
//! A blocking thread encodes (Parquet or NDJSON, optionally gzip) into 2 MiB
//! chunks; the async side uploads them through `object_store`'s `BufWriter`
//! (one put for a small file, a multipart upload otherwise). Channels on both
//! sides are bounded, so memory stays flat however large the table is. The
//! object exists only once the upload completes; on any error it is aborted.

use std::io::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use weir_config::{Compression, LakeFormat};

use crate::LakeError;

/// Size of the encoded chunks handed to the uploader.
const CHUNK: usize = 2 * 1024 * 1024;
/// Multipart part size (and the largest file written with a single put);
/// S3 and GCS need parts of at least 5 MiB, all but the last.
const UPLOAD_CAPACITY: usize = 6 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub format: LakeFormat,
    pub parquet_compression: Compression,
    pub parquet_row_group_rows: usize,
    pub ndjson_gzip: bool,
}

impl WriteOptions {
    pub fn from_config(lake: &weir_config::LakeConfig) -> Self {
        WriteOptions {
            format: lake.format,
            parquet_compression: lake.parquet_compression,
            parquet_row_group_rows: lake.parquet_row_group_rows,
            ndjson_gzip: lake.ndjson_gzip,
        }
    }

    pub fn extension(&self) -> &'static str {
        match (self.format, self.ndjson_gzip) {
            (LakeFormat::Parquet, _) => "parquet",
            (LakeFormat::Ndjson, false) => "json",
            (LakeFormat::Ndjson, true) => "json.gz",
        }
    }

    pub fn format_name(&self) -> &'static str {
        match self.format {
            LakeFormat::Parquet => "parquet",
            LakeFormat::Ndjson => "ndjson",
        }
    }

    pub fn compression_name(&self) -> String {
        match (self.format, self.parquet_compression) {
            (LakeFormat::Ndjson, _) if self.ndjson_gzip => "gzip".to_owned(),
            (LakeFormat::Ndjson, _) => "none".to_owned(),
            (LakeFormat::Parquet, Compression::Zstd(l)) => format!("zstd({l})"),
            (LakeFormat::Parquet, Compression::Snappy) => "snappy".to_owned(),
            (LakeFormat::Parquet, Compression::None) => "none".to_owned(),
        }
    }
}

/// What one written file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartStats {
    pub rows: u64,
    pub bytes: u64,
}

/// A `Write` that hands full chunks to the uploader.
struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encode(
    opts: WriteOptions,
    plain_columns: Vec<String>,
    schema: SchemaRef,
    mut batches: mpsc::Receiver<RecordBatch>,
    out: ChunkWriter,
) -> Result<u64, String> {
    let mut rows = 0u64;
    match opts.format {
        LakeFormat::Parquet => {
            let compression = match opts.parquet_compression {
                Compression::None => PqCompression::UNCOMPRESSED,
                Compression::Snappy => PqCompression::SNAPPY,
                Compression::Zstd(l) => {
                    PqCompression::ZSTD(ZstdLevel::try_new(l).map_err(|e| e.to_string())?)
                }
            };
            let mut props = WriterProperties::builder()
                .set_compression(compression)
                .set_max_row_group_row_count(Some(opts.parquet_row_group_rows));
            for c in plain_columns {
                props = props.set_column_dictionary_enabled(ColumnPath::from(c), false);
            }
            let props = props.build();
            let mut w =
                ArrowWriter::try_new(out, schema, Some(props)).map_err(|e| e.to_string())?;
            while let Some(batch) = batches.blocking_recv() {
                rows += batch.num_rows() as u64;
                w.write(&batch).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
            w.inner_mut().send().map_err(|e| e.to_string())?;
        }
        LakeFormat::Ndjson => {
            fn lines<W: Write>(
                w: W,
                batches: &mut mpsc::Receiver<RecordBatch>,
                rows: &mut u64,
            ) -> Result<W, String> {
                let mut jw = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(std::sync::Arc::new(FloatsKeepNonFinite))
                    .build::<_, arrow::json::writer::LineDelimited>(w);
                while let Some(batch) = batches.blocking_recv() {
                    *rows += batch.num_rows() as u64;
                    jw.write(&batch).map_err(|e| e.to_string())?;
                }
                jw.finish().map_err(|e| e.to_string())?;
                Ok(jw.into_inner())
            }
            let mut out = if opts.ndjson_gzip {
                let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                lines(gz, &mut batches, &mut rows)?
                    .finish()
                    .map_err(|e| e.to_string())?
            } else {
                lines(out, &mut batches, &mut rows)?
            };
            out.send().map_err(|e| e.to_string())?;
        }
    }
    Ok(rows)
}

/// Write every batch from `batches` into one object at `path`. The object
/// appears only if every batch was written; otherwise the upload is aborted.
/// `plain_columns` are written without a Parquet dictionary (mostly distinct
/// values, where building one costs time and saves nothing).
pub async fn write_part(
    store: Arc<dyn ObjectStore>,
    path: Path,
    schema: SchemaRef,
    opts: WriteOptions,
    plain_columns: Vec<String>,
    batches: mpsc::Receiver<RecordBatch>,
) -> Result<PartStats, LakeError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    let out = ChunkWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    let encoder =
        tokio::task::spawn_blocking(move || encode(opts, plain_columns, schema, batches, out));
    // At most two parts in flight per file: memory stays at a few parts per worker.
    let mut upload =
        BufWriter::with_capacity(store, path.clone(), UPLOAD_CAPACITY).with_max_concurrency(2);
    let mut bytes = 0u64;
    let mut upload_error = None;
    while let Some(chunk) = rx.recv().await {
        bytes += chunk.len() as u64;
        if let Err(e) = upload.write_all(&chunk).await {
            upload_error = Some(LakeError::upload(path.to_string(), &e));
            break;
        }
    }
    drop(rx); // unblocks the encoder if the upload failed
    let encoded = encoder.await;
    let result = match (encoded, upload_error) {
        (_, Some(e)) => Err(e),
        (Err(join), _) => Err(LakeError::Encode {
            path: path.to_string(),
            message: join.to_string(),
        }),
        (Ok(Err(e)), _) => Err(LakeError::Encode {
            path: path.to_string(),
            message: e,
        }),
        (Ok(Ok(rows)), None) => Ok(rows),
    };
    match result {
        Ok(rows) => {
            upload
                .shutdown()
                .await
                .map_err(|e| LakeError::upload(path.to_string(), &e))?;
            Ok(PartStats { rows, bytes })
        }
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

/// JSON numbers cannot be NaN or ±infinity, and arrow-json writes them as
/// `null`, which would turn a value into a NULL. Weir writes them as the
/// strings `"NaN"`, `"Infinity"` and `"-Infinity"` (as BigQuery and most JSON
/// readers accept), and finite values in Rust's shortest round-trip form.
#[derive(Debug)]
struct FloatsKeepNonFinite;

struct FloatEncoder<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    &'a arrow::array::PrimitiveArray<T>,
);

impl<T> arrow::json::writer::Encoder for FloatEncoder<'_, T>
where
    T: arrow::datatypes::ArrowPrimitiveType,
    T::Native: Into<f64> + std::fmt::Debug,
{
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.0.value(idx);
        let f: f64 = v.into();
        if f.is_nan() {
            out.extend_from_slice(b"\"NaN\"");
        } else if f == f64::INFINITY {
            out.extend_from_slice(b"\"Infinity\"");
        } else if f == f64::NEG_INFINITY {
            out.extend_from_slice(b"\"-Infinity\"");
        } else {
            // `{:?}` is exact and uses an exponent for very large or small values.
            let _ = write!(out, "{v:?}");
        }
    }
}

impl arrow::json::writer::EncoderFactory for FloatsKeepNonFinite {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a arrow::datatypes::FieldRef,
        array: &'a dyn arrow::array::Array,
        _options: &'a arrow::json::writer::EncoderOptions,
    ) -> Result<Option<arrow::json::writer::NullableEncoder<'a>>, arrow::error::ArrowError> {
        use arrow::array::AsArray;
        use arrow::datatypes::{DataType, Float32Type, Float64Type};
        let encoder: Box<dyn arrow::json::writer::Encoder + 'a> = match array.data_type() {
            DataType::Float32 => Box::new(FloatEncoder(array.as_primitive::<Float32Type>())),
            DataType::Float64 => Box::new(FloatEncoder(array.as_primitive::<Float64Type>())),
            _ => return Ok(None),
        };
        Ok(Some(arrow::json::writer::NullableEncoder::new(
            encoder,
            array.nulls().cloned(),
        )))
    }
}
