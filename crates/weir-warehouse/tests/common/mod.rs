//! Shared helpers for warehouse tests: extract a test database into a
//! temporary lake, open warehouses, load, and read results back as text.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_config::{Compression, LakeFormat, LoadMode, SecretUrl, TableSelection};
use weir_extract::{extract, ExtractOptions, Quiet};
use weir_lake::{Lake, Manifest, WriteOptions};
use weir_testkit::TestDb;
use weir_warehouse::{DuckDb, LoadOptions, LoadSummary, Postgres, Warehouse};

/// Extract every table of `url`'s public schema into `lake_dir` (project `test`).
pub async fn extract_to(url: &str, lake_dir: &Path, format: LakeFormat) -> (Manifest, Lake) {
    let lake = Lake::open(&lake_dir.display().to_string(), lake_dir, "test").unwrap();
    let manifest = extract_into(url, &lake, format).await;
    (manifest, lake)
}

/// Extract into an opened lake (e.g. `memory://`, which loads must stream through object_store).
pub async fn extract_into(url: &str, lake: &Lake, format: LakeFormat) -> Manifest {
    let opts = ExtractOptions {
        project: "test".to_owned(),
        source_url: SecretUrl::new(url),
        schema: "public".to_owned(),
        tables: TableSelection {
            all: true,
            tables: vec![],
            exclude: vec![],
        },
        only: None,
        jobs: 2,
        chunk_bytes: 256 << 20,
        write: WriteOptions {
            format,
            parquet_compression: Compression::Zstd(1),
            parquet_row_group_rows: 8192,
            ndjson_gzip: false,
        },
        snapshot: None,
        full_refresh: false,
    };
    let summary = extract(lake, &opts, &Quiet).await.unwrap();
    lake.read_manifest(&summary.run_id).await.unwrap()
}

/// Commit `m` again with its files' sizes as they are now on disk: for tests
/// that write bad records into a run's files, as a writer other than Weir's
/// extract could have (a load refuses files whose size is not the manifest's).
pub async fn recommit(lake: &Lake, m: &Manifest) {
    let mut m = m.clone();
    for t in &mut m.tables {
        for f in &mut t.files {
            f.bytes = std::fs::metadata(lake.local_file(&f.path).unwrap())
                .unwrap()
                .len();
        }
    }
    lake.write_manifest(&m).await.unwrap();
}

pub fn duckdb(dir: &Path) -> DuckDb {
    DuckDb::open(&dir.join("warehouse.duckdb")).unwrap()
}

pub async fn postgres(db: &TestDb) -> Postgres {
    Postgres::connect(&SecretUrl::new(db.url())).await.unwrap()
}

pub fn opts(run: &str, mode: LoadMode) -> LoadOptions {
    LoadOptions {
        run: Some(run.to_owned()),
        mode: Some(mode),
        ..LoadOptions::default()
    }
}

/// Load and insist every table succeeded.
pub async fn load_ok(wh: &dyn Warehouse, lake: &Lake, opts: &LoadOptions) -> LoadSummary {
    let s = weir_warehouse::load(wh, lake, opts).await.unwrap();
    for t in &s.tables {
        assert!(t.error.is_none(), "table {} failed: {:?}", t.name, t.error);
    }
    s
}

/// A query's rows as display text (`NULL` for nulls).
pub async fn rows(wh: &dyn Warehouse, sql: &str) -> Vec<Vec<String>> {
    let r = wh.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    let opts = FormatOptions::default().with_null("NULL");
    for b in &r.batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    out
}

/// One value (first row, first column) as text.
pub async fn scalar(wh: &dyn Warehouse, sql: &str) -> String {
    rows(wh, sql).await.remove(0).remove(0)
}

/// Tables in a schema whose name starts with `_weir_stage_` (leftovers).
pub async fn leftovers(wh: &dyn Warehouse) -> Vec<Vec<String>> {
    rows(
        wh,
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '\\_weir\\_stage\\_%' ESCAPE '\\'",
    )
    .await
}

/// Which warehouse a test runs against; each test runs on both.
pub enum Kind {
    DuckDb,
    Postgres,
}

pub struct Wh {
    pub wh: Arc<dyn Warehouse>,
    pub _db: Option<TestDb>,
}

pub async fn open(kind: &Kind, dir: &std::path::Path) -> Wh {
    match kind {
        Kind::DuckDb => Wh {
            wh: Arc::new(duckdb(dir)),
            _db: None,
        },
        Kind::Postgres => {
            let db = TestDb::new().await;
            Wh {
                wh: Arc::new(postgres(&db).await),
                _db: Some(db),
            }
        }
    }
}
