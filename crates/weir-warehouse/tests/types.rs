//! Every type the extractor supports goes PostgreSQL → lake → warehouse with
//! its values, NULLs and types, in both lake formats.

mod common;

use common::{duckdb, extract_into, extract_to, load_ok, opts, postgres, rows};
use weir_config::{LakeFormat, LoadMode};
use weir_testkit::{temp_dir, TestDb};
use weir_warehouse::Warehouse;

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE all_types (
  id int4 PRIMARY KEY,
  i2 int2, i4 int4, i8 int8,
  n numeric(12,3), nu numeric, f4 float4, f8 float8, b bool,
  t text, vc varchar(10), c char(3), nm name,
  u uuid, d date, tm time, ts timestamp, tstz timestamptz, iv interval,
  j json, jb jsonb, by bytea, e mood, dom posint,
  ai int4[], at text[], an numeric(10,2)[], ats timestamptz[], au uuid[]
);
INSERT INTO all_types VALUES
 (1, 32767, 2147483647, 9223372036854775807,
  999999999.999, '12345678901234567890.123456789012345', '3.4e38', '1.7976931348623157e308', true,
  '', 'héllo, "x"', 'ab', 'name',
  '123e4567-e89b-12d3-a456-426614174000', '9999-12-31', '23:59:59.999999',
  '9999-12-31 23:59:59.999999', '2000-01-01 00:00:00+00', '1 year 2 mons 3 days 04:05:06.789',
  '{"a": [1, 2]}', '{"b": null}', '\x00ff', 'happy', 7,
  '{1,NULL,3}', '{"a","",NULL}', '{1.50,-2.25}', '{"2020-01-01 00:00:00+00"}',
  '{123e4567-e89b-12d3-a456-426614174000}'),
 (2, -32768, -2147483648, -9223372036854775808,
  -999999999.999, 'NaN', '-Infinity', '-0', false,
  'x', '', '', '',
  '00000000-0000-0000-0000-000000000000', '4713-11-24 BC', '00:00:00',
  '4713-11-24 00:00:00 BC', '1970-01-01 00:00:00.000001+00', '-1 days -00:00:00.000001',
  '[]', '{}', '', 'sad', 1,
  '{}', '{}', '{}', '{}', '{}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 0.001, '-0.000000000000000000001', 1.5, 0.1, true,
  'multi
line	tab \ backslash', 'x', 'abc', 'n',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '2000-02-29', '12:00:00',
  '2000-02-29 12:00:00', '2024-06-30 23:59:59.5-03', 'P1Y-2M3DT-4H',
  '"scalar"', '[1, "two", {"3": null}]', '\x', 'ok', 2147483647,
  '{NULL}', '{"quote\"d","comma,d"}', '{NULL,0.01}', '{NULL}', '{NULL}');
"#;

/// Source and warehouse rows as PostgreSQL's own text for the whole record.
async fn pg_rows(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    client
        .query(&format!("SELECT r::text FROM {table} r ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn pg_round_trip(format: LakeFormat) {
    let src = TestDb::new().await;
    src.client().await.batch_execute(SCHEMA).await.unwrap();
    let dir = temp_dir();
    let (manifest, lake) = extract_to(&src.url(), dir.path(), format).await;
    let wh_db = TestDb::new().await;
    let wh = postgres(&wh_db).await;
    let s = load_ok(&wh, &lake, &opts(&manifest.run_id, LoadMode::Truncate)).await;
    assert_eq!(s.tables[0].rows, 4);
    let want = pg_rows(&src.client().await, "all_types").await;
    let got = pg_rows(&wh_db.client().await, "raw.all_types").await;
    assert_eq!(got, want);
    let types: Vec<String> = wh_db
        .client()
        .await
        .query(
            "SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = 'raw.all_types'::regclass AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        types,
        [
            "id integer",
            "i2 smallint",
            "i4 integer",
            "i8 bigint",
            "n numeric(12,3)",
            "nu numeric",
            "f4 real",
            "f8 double precision",
            "b boolean",
            "t text",
            "vc text",
            "c text",
            "nm text",
            "u uuid",
            "d date",
            "tm time without time zone",
            "ts timestamp without time zone",
            "tstz timestamp with time zone",
            "iv interval",
            "j json",
            "jb jsonb",
            "by bytea",
            "e text",
            "dom integer",
            "ai integer[]",
            "at text[]",
            "an numeric(10,2)[]",
            "ats timestamp with time zone[]",
            "au uuid[]",
        ]
    );
}

#[tokio::test]
async fn every_type_reaches_postgres_unchanged_from_parquet() {
    pg_round_trip(LakeFormat::Parquet).await;
}

#[tokio::test]
async fn every_type_reaches_postgres_unchanged_from_ndjson() {
    pg_round_trip(LakeFormat::Ndjson).await;
}

/// DuckDB's rendering of every column, checked against a reviewed golden file
/// (`UPDATE_EXPECT=1` rewrites it); both formats must give the same text.
/// With `streamed`, the lake is `memory://`: DuckDB cannot read it itself, so
/// the files are streamed through object_store and inserted as Arrow batches.
async fn duckdb_round_trip(format: LakeFormat, streamed: bool) {
    let src = TestDb::new().await;
    src.client().await.batch_execute(SCHEMA).await.unwrap();
    let dir = temp_dir();
    let (manifest, lake) = if streamed {
        let lake = weir_lake::Lake::open("memory://", dir.path(), "test").unwrap();
        (extract_into(&src.url(), &lake, format).await, lake)
    } else {
        extract_to(&src.url(), dir.path(), format).await
    };
    let wh = duckdb(dir.path());
    let s = load_ok(&wh, &lake, &opts(&manifest.run_id, LoadMode::Truncate)).await;
    assert_eq!(s.tables[0].rows, 4);
    let cols = wh.describe("raw", "all_types").await.unwrap().unwrap();
    let mut text = String::new();
    for c in &cols {
        let values = rows(
            &wh,
            &format!(
                "SELECT CAST(\"{}\" AS VARCHAR) FROM raw.all_types ORDER BY id",
                c.name
            ),
        )
        .await;
        let values: Vec<String> = values.into_iter().map(|mut r| r.remove(0)).collect();
        text.push_str(&format!(
            "{} {}: {}\n",
            c.name,
            c.data_type,
            values.join(" | ")
        ));
    }
    check_golden("duckdb_types.txt", &text);
}

fn check_golden(name: &str, got: &str) {
    weir_testkit::check_golden(env!("CARGO_MANIFEST_DIR"), name, got);
}

#[tokio::test]
async fn every_type_reaches_duckdb_unchanged_from_parquet() {
    duckdb_round_trip(LakeFormat::Parquet, false).await;
}

#[tokio::test]
async fn every_type_reaches_duckdb_unchanged_from_ndjson() {
    duckdb_round_trip(LakeFormat::Ndjson, false).await;
}

#[tokio::test]
async fn every_type_reaches_duckdb_unchanged_from_streamed_parquet() {
    duckdb_round_trip(LakeFormat::Parquet, true).await;
}

#[tokio::test]
async fn every_type_reaches_duckdb_unchanged_from_streamed_ndjson() {
    duckdb_round_trip(LakeFormat::Ndjson, true).await;
}
