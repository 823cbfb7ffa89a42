//! Every supported PostgreSQL type survives PostgreSQL → lake with its value,
//! its NULLs (and empty strings that are not NULL) and its extremes.

mod common;

use arrow::array::*;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{NaiveDate, NaiveDateTime};
use common::{read_ndjson, read_parquet, run, table, Setup};
use weir_config::LakeFormat;
use weir_testkit::{temp_dir, TestDb};

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
  ai int4[], at text[], an numeric(10,2)[], ats timestamptz[]
);
INSERT INTO all_types VALUES
 (1, 32767, 2147483647, 9223372036854775807,
  999999999.999, '12345678901234567890.123456789012345', '3.4e38', '1.7976931348623157e308', true,
  '', 'héllo, "x"', 'ab', 'name',
  '123e4567-e89b-12d3-a456-426614174000', '9999-12-31', '23:59:59.999999',
  '9999-12-31 23:59:59.999999', '2000-01-01 00:00:00+00', '1 year 2 mons 3 days 04:05:06.789',
  '{"a": [1, 2]}', '{"b": null}', '\x00ff', 'happy', 7,
  '{1,NULL,3}', '{"a","",NULL}', '{1.50,-2.25}', '{"2020-01-01 00:00:00+00"}'),
 (2, -32768, -2147483648, -9223372036854775808,
  -999999999.999, 'NaN', '-Infinity', '-0', false,
  'x', '', '', '',
  '00000000-0000-0000-0000-000000000000', '4713-11-24 BC', '00:00:00',
  '4713-11-24 00:00:00 BC', '1970-01-01 00:00:00.000001+00', '-1 days -00:00:00.000001',
  '[]', '{}', '', 'sad', 1,
  '{}', '{}', '{}', '{}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| {
            panic!(
                "column {name} has type {}",
                b.column_by_name(name).unwrap().data_type()
            )
        })
}

fn micros(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

#[tokio::test]
async fn every_type_round_trips_to_parquet() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SCHEMA).await.unwrap();
    let dir = temp_dir();
    let setup = Setup {
        tables: vec![table("all_types")],
        ..Setup::default()
    };
    let (summary, manifest, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    assert_eq!(summary.rows, 3);
    let b = read_parquet(dir.path(), &manifest, "all_types");
    assert_eq!(b.num_rows(), 3);

    // integers at their limits
    assert_eq!(col::<Int16Array>(&b, "i2").value(0), i16::MAX);
    assert_eq!(col::<Int16Array>(&b, "i2").value(1), i16::MIN);
    assert_eq!(col::<Int32Array>(&b, "i4").value(1), i32::MIN);
    assert_eq!(col::<Int64Array>(&b, "i8").value(0), i64::MAX);
    assert_eq!(col::<Int64Array>(&b, "i8").value(1), i64::MIN);
    // numeric keeps precision and scale; unconstrained numeric is exact text
    let n = col::<Decimal128Array>(&b, "n");
    assert_eq!(n.data_type(), &DataType::Decimal128(12, 3));
    assert_eq!(n.value(0), 999_999_999_999);
    assert_eq!(n.value(1), -999_999_999_999);
    let nu = col::<StringArray>(&b, "nu");
    assert_eq!(nu.value(0), "12345678901234567890.123456789012345");
    assert_eq!(nu.value(1), "NaN");
    // floats
    assert_eq!(col::<Float32Array>(&b, "f4").value(0), 3.4e38);
    assert_eq!(col::<Float32Array>(&b, "f4").value(1), f32::NEG_INFINITY);
    assert_eq!(col::<Float64Array>(&b, "f8").value(0), f64::MAX);
    assert!(col::<Float64Array>(&b, "f8").value(1).is_sign_negative());
    assert!(col::<BooleanArray>(&b, "b").value(0));
    assert!(!col::<BooleanArray>(&b, "b").value(1));
    // text: empty string is not NULL
    let t = col::<StringArray>(&b, "t");
    assert!(t.is_valid(0) && t.value(0).is_empty());
    assert!(t.is_null(2));
    assert_eq!(col::<StringArray>(&b, "vc").value(0), "héllo, \"x\"");
    assert_eq!(col::<StringArray>(&b, "c").value(0), "ab ");
    assert_eq!(col::<StringArray>(&b, "nm").value(0), "name");
    assert_eq!(
        col::<StringArray>(&b, "u").value(0),
        "123e4567-e89b-12d3-a456-426614174000"
    );
    // dates and times at the extremes PostgreSQL allows
    let d = col::<Date32Array>(&b, "d");
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    assert_eq!(
        d.value(0),
        (NaiveDate::from_ymd_opt(9999, 12, 31).unwrap() - epoch).num_days() as i32
    );
    assert_eq!(
        d.value(1),
        (NaiveDate::from_ymd_opt(-4712, 11, 24).unwrap() - epoch).num_days() as i32
    );
    assert_eq!(
        col::<Time64MicrosecondArray>(&b, "tm").value(0),
        86_399_999_999
    );
    let ts = col::<TimestampMicrosecondArray>(&b, "ts");
    assert_eq!(
        ts.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(ts.value(0), micros("9999-12-31 23:59:59.999999"));
    assert_eq!(ts.value(1), micros("-4712-11-24 00:00:00"));
    let tstz = col::<TimestampMicrosecondArray>(&b, "tstz");
    assert_eq!(
        tstz.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
    );
    assert_eq!(tstz.value(0), 946_684_800_000_000);
    assert_eq!(tstz.value(1), 1);
    // intervals are exact ISO 8601 text that PostgreSQL reads back to the same value
    let iv = col::<StringArray>(&b, "iv");
    assert_eq!(iv.value(0), "P1Y2M3DT4H5M6.789S");
    assert_eq!(iv.value(1), "P-1DT-0.000001S");
    let same: bool = db
        .client()
        .await
        .query_one(
            "SELECT $1::text::interval = '1 year 2 mons 3 days 04:05:06.789' AND $2::text::interval = '-1 days -00:00:00.000001'",
            &[&iv.value(0), &iv.value(1)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same);
    // json stays JSON text, tagged as such
    assert_eq!(col::<StringArray>(&b, "j").value(0), r#"{"a": [1, 2]}"#);
    assert_eq!(col::<StringArray>(&b, "jb").value(0), r#"{"b": null}"#);
    let jfield = b.schema().field_with_name("jb").unwrap().clone();
    assert_eq!(
        jfield
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.json")
    );
    assert_eq!(
        jfield.metadata().get("weir.pg_type").map(String::as_str),
        Some("jsonb")
    );
    let by = col::<BinaryArray>(&b, "by");
    assert_eq!(by.value(0), &[0u8, 255]);
    assert!(by.is_valid(1) && by.value(1).is_empty());
    assert_eq!(col::<StringArray>(&b, "e").value(0), "happy");
    assert_eq!(col::<Int32Array>(&b, "dom").value(0), 7);
    // arrays become lists, with NULL elements and empty lists
    let ai = col::<ListArray>(&b, "ai");
    let first = ai.value(0);
    let first = first.as_any().downcast_ref::<Int32Array>().unwrap();
    assert_eq!(
        first.iter().collect::<Vec<_>>(),
        vec![Some(1), None, Some(3)]
    );
    assert_eq!(ai.value(1).len(), 0);
    assert!(ai.is_valid(1) && ai.is_null(2));
    let at = col::<ListArray>(&b, "at").value(0);
    let at = at.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        at.iter().collect::<Vec<_>>(),
        vec![Some("a"), Some(""), None]
    );
    let an = col::<ListArray>(&b, "an").value(0);
    let an = an.as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!(an.iter().collect::<Vec<_>>(), vec![Some(150), Some(-225)]);
    let ats = col::<ListArray>(&b, "ats").value(0);
    let ats = ats
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(ats.value(0), micros("2020-01-01 00:00:00"));
    // row 3: NULL everywhere
    for c in b.columns().iter().skip(1) {
        assert!(c.is_null(2), "{} should be NULL", c.data_type());
    }
}

#[tokio::test]
async fn every_type_round_trips_to_ndjson() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SCHEMA).await.unwrap();
    let dir = temp_dir();
    let setup = Setup {
        format: LakeFormat::Ndjson,
        tables: vec![table("all_types")],
        ..Setup::default()
    };
    let (_, manifest, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    assert!(manifest.tables[0].files[0].path.ends_with(".json"));
    let rows = read_ndjson(dir.path(), &manifest, "all_types");
    assert_eq!(rows.len(), 3);
    let (r1, r2, r3) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(r1["i8"], serde_json::json!(i64::MAX));
    assert_eq!(r2["i8"], serde_json::json!(i64::MIN));
    assert_eq!(
        r1["t"],
        serde_json::json!(""),
        "empty string stays a string"
    );
    assert!(r3["t"].is_null(), "NULL stays null");
    assert_eq!(
        r1["nu"],
        serde_json::json!("12345678901234567890.123456789012345")
    );
    assert_eq!(r1["vc"], serde_json::json!("héllo, \"x\""));
    assert_eq!(r1["ai"], serde_json::json!([1, null, 3]));
    assert_eq!(r1["at"], serde_json::json!(["a", "", null]));
    assert_eq!(r1["j"], serde_json::json!(r#"{"a": [1, 2]}"#));
    // non-finite floats are not turned into NULL (JSON numbers cannot hold them)
    assert_eq!(r2["f4"], serde_json::json!("-Infinity"));
    assert_eq!(r1["f8"], serde_json::json!(1.7976931348623157e308));
    // decimals are written as exact numbers, not floats
    let raw = std::fs::read_to_string(dir.path().join(&manifest.tables[0].files[0].path)).unwrap();
    assert!(
        raw.lines().next().unwrap().contains(r#""n":999999999.999"#),
        "{raw}"
    );
    for (k, v) in r3.as_object().unwrap() {
        if k != "id" {
            assert!(v.is_null(), "{k} should be null in row 3");
        }
    }
}

#[tokio::test]
async fn unsupported_types_name_table_column_and_type_unless_cast_to_text() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE shapes (id int PRIMARY KEY, p point, m int4[][]); INSERT INTO shapes VALUES (1, '(1,2)', NULL)")
        .await
        .unwrap();
    let dir = temp_dir();
    let setup = Setup {
        tables: vec![table("shapes")],
        ..Setup::default()
    };
    let err = run(&db.url(), dir.path(), &setup).await.unwrap_err();
    assert!(
        err.contains("public.shapes") && err.contains("(p point)"),
        "{err}"
    );
    assert!(err.contains("cast_to_text"), "{err}");

    let mut t = table("shapes");
    t.cast_to_text = vec!["p".to_owned()];
    let setup = Setup {
        tables: vec![t],
        ..Setup::default()
    };
    let (_, manifest, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    let b = read_parquet(dir.path(), &manifest, "shapes");
    assert_eq!(col::<StringArray>(&b, "p").value(0), "(1,2)");

    // a two-dimensional array value is refused with its column named
    db.client()
        .await
        .batch_execute("UPDATE shapes SET m = '{{1,2},{3,4}}'")
        .await
        .unwrap();
    let mut t = table("shapes");
    t.cast_to_text = vec!["p".to_owned()];
    let setup = Setup {
        tables: vec![t],
        ..Setup::default()
    };
    let err = run(&db.url(), dir.path(), &setup).await.unwrap_err();
    assert!(
        err.contains("column m") && err.contains("2-dimensional"),
        "{err}"
    );
}
