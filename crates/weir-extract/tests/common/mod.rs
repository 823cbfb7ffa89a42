//! Shared helpers for extraction tests: run an extraction of a test database
//! into a temporary lake and read the files back.

#![allow(dead_code)]

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weir_config::{ChunkBy, Compression, LakeFormat, SecretUrl, TableConfig, TableSelection};
use weir_extract::{extract, ExtractOptions, ExtractSummary, Quiet};
use weir_lake::{Lake, Manifest, WriteOptions};

pub struct Setup {
    pub format: LakeFormat,
    pub jobs: usize,
    pub chunk_bytes: u64,
    pub tables: Vec<TableConfig>,
    /// Read in this exported snapshot instead of taking one.
    pub snapshot: Option<weir_source::SnapshotRef>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            format: LakeFormat::Parquet,
            jobs: 2,
            chunk_bytes: 256 << 20,
            tables: Vec::new(),
            snapshot: None,
        }
    }
}

pub fn table(name: &str) -> TableConfig {
    TableConfig {
        name: name.to_owned(),
        ..TableConfig::default()
    }
}

pub fn chunked(name: &str, by: ChunkBy) -> TableConfig {
    TableConfig {
        name: name.to_owned(),
        chunk_by: Some(by),
        ..TableConfig::default()
    }
}

pub async fn run(
    url: &str,
    lake_dir: &Path,
    setup: &Setup,
) -> Result<(ExtractSummary, Manifest, Lake), String> {
    let lake =
        Lake::open(&lake_dir.display().to_string(), lake_dir, "test").map_err(|e| e.to_string())?;
    let opts = ExtractOptions {
        project: "test".to_owned(),
        source_url: SecretUrl::new(url),
        schema: "public".to_owned(),
        tables: TableSelection {
            all: setup.tables.is_empty(),
            tables: setup.tables.clone(),
            exclude: vec![],
        },
        only: None,
        jobs: setup.jobs,
        chunk_bytes: setup.chunk_bytes,
        write: WriteOptions {
            format: setup.format,
            parquet_compression: Compression::Zstd(3),
            parquet_row_group_rows: 8192,
            ndjson_gzip: false,
        },
        snapshot: setup.snapshot.clone(),
        full_refresh: false,
    };
    let summary = extract(&lake, &opts, &Quiet)
        .await
        .map_err(|e| e.to_string())?;
    let manifest = lake
        .read_manifest(&summary.run_id)
        .await
        .map_err(|e| e.to_string())?;
    Ok((summary, manifest, lake))
}

/// Every Parquet file of `table` in the manifest, as one batch (in file order).
pub fn read_parquet(lake_dir: &Path, manifest: &Manifest, table: &str) -> RecordBatch {
    let entry = manifest
        .table(table)
        .unwrap_or_else(|| panic!("{table} not in manifest"));
    let mut batches = Vec::new();
    let mut schema = None;
    for f in &entry.files {
        let file = File::open(lake_dir.join(&f.path)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            schema.get_or_insert(b.schema());
            batches.push(b);
        }
    }
    let schema = schema.unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
    concat_batches(&schema, &batches).unwrap()
}

/// Every NDJSON line of `table`, parsed.
pub fn read_ndjson(lake_dir: &Path, manifest: &Manifest, table: &str) -> Vec<serde_json::Value> {
    let entry = manifest.table(table).unwrap();
    let mut rows = Vec::new();
    for f in &entry.files {
        let text = std::fs::read_to_string(lake_dir.join(&f.path)).unwrap();
        rows.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    rows
}
