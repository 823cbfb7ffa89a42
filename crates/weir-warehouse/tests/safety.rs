//! What a load must never do, whatever it is given: lose a table to a name
//! collision, publish files that are not the run's, read outside the lake,
//! load an older run as the latest, or fail on a name that needs encoding.
//! Each test is the regression test of a defect a careful user hit.

mod common;

use common::{extract_to, load_ok, open, opts, rows, scalar, Kind};
use weir_config::{LakeFormat, LoadMode};
use weir_testkit::{temp_dir, TestDb};
use weir_warehouse::{LoadOptions, WarehouseError};

async fn source(sql: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client().await.batch_execute(sql).await.unwrap();
    db
}

fn latest() -> LoadOptions {
    LoadOptions {
        run: None,
        ..LoadOptions::default()
    }
}

/// Regression: DuckDB compares names without case, so `MixedCase` and
/// `mixedcase` both reported "loaded" and only one survived; a source table
/// named `_weir_stage_x` was loaded and then dropped as `x`'s leftover.
async fn name_collisions(kind: Kind) {
    let src = source(
        r#"CREATE TABLE "MixedCase" (id int); INSERT INTO "MixedCase" VALUES (1);
           CREATE TABLE mixedcase (id int); INSERT INTO mixedcase VALUES (2), (3);
           CREATE TABLE x (id int); INSERT INTO x VALUES (4);
           CREATE TABLE _weir_stage_x (id int); INSERT INTO _weir_stage_x VALUES (5);"#,
    )
    .await;
    let dir = temp_dir();
    let w = open(&kind, dir.path()).await;
    let (m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    let err = weir_warehouse::load(w.wh.as_ref(), &lake, &opts(&m.run_id, LoadMode::Truncate))
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, WarehouseError::Names { .. }), "{shown}");
    assert!(
        shown.contains("`_weir_stage_x`: names beginning with `_weir_` are Weir's own"),
        "{shown}"
    );
    match kind {
        Kind::DuckDb => assert!(
            shown.contains("tables `MixedCase` and `mixedcase` would be one table"),
            "{shown}"
        ),
        // PostgreSQL keeps case: those two are two tables there.
        Kind::Postgres => assert!(!shown.contains("MixedCase"), "{shown}"),
    }
    assert!(
        w.wh.describe("raw", "x").await.unwrap().is_none(),
        "nothing is loaded"
    );
    // Without the reserved name, PostgreSQL loads both spellings.
    if let Kind::Postgres = kind {
        let only = LoadOptions {
            tables: Some(vec!["MixedCase".into(), "mixedcase".into(), "x".into()]),
            ..opts(&m.run_id, LoadMode::Truncate)
        };
        load_ok(w.wh.as_ref(), &lake, &only).await;
        assert_eq!(
            scalar(w.wh.as_ref(), r#"SELECT count(*) FROM raw."MixedCase""#).await,
            "1"
        );
        assert_eq!(
            scalar(w.wh.as_ref(), "SELECT count(*) FROM raw.mixedcase").await,
            "2"
        );
    }
}

#[tokio::test]
async fn colliding_and_reserved_names_fail_before_anything_is_loaded_on_duckdb() {
    name_collisions(Kind::DuckDb).await;
}

#[tokio::test]
async fn colliding_and_reserved_names_fail_before_anything_is_loaded_on_postgres() {
    name_collisions(Kind::Postgres).await;
}

/// Regression: `_weir_stage_` + 51 bytes fill PostgreSQL's 63, so two tables
/// sharing their first 51 bytes shared a staging table.
#[tokio::test]
async fn long_table_names_get_staging_tables_of_their_own_on_postgres() {
    let (a, b) = (
        format!("{}_alpha", "t".repeat(54)),
        format!("{}_omega", "t".repeat(54)),
    );
    let src = source(&format!(
        "CREATE TABLE {a} (id int); INSERT INTO {a} VALUES (1);
         CREATE TABLE {b} (id int); INSERT INTO {b} SELECT generate_series(1, 5);"
    ))
    .await;
    let dir = temp_dir();
    let w = open(&Kind::Postgres, dir.path()).await;
    let (m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    let mut o = opts(&m.run_id, LoadMode::Truncate);
    o.jobs = 2;
    load_ok(w.wh.as_ref(), &lake, &o).await;
    assert_eq!(
        scalar(w.wh.as_ref(), &format!("SELECT count(*) FROM raw.{a}")).await,
        "1"
    );
    assert_eq!(
        scalar(w.wh.as_ref(), &format!("SELECT count(*) FROM raw.{b}")).await,
        "5"
    );
}

/// Regression: a part file replaced by a valid Parquet file with fewer rows
/// shrank the table, exit 0. Sizes and rows are checked against the manifest;
/// a mismatch fails the table and leaves it as it was.
async fn changed_files(kind: Kind, format: LakeFormat) {
    let src = source(
        "CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 9949) g;
         CREATE TABLE small (id int PRIMARY KEY);
         INSERT INTO small SELECT generate_series(1, 100);",
    )
    .await;
    let dir = temp_dir();
    let w = open(&kind, dir.path()).await;
    let (m1, lake) = extract_to(&src.url(), dir.path(), format).await;
    load_ok(w.wh.as_ref(), &lake, &opts(&m1.run_id, LoadMode::Truncate)).await;
    let (m2, _) = extract_to(&src.url(), dir.path(), format).await;
    // The second run's file of `big` becomes the (valid) file of `small`.
    let big = &m2.table("big").unwrap().files[0].path;
    let small = &m2.table("small").unwrap().files[0].path;
    std::fs::copy(
        lake.local_file(small).unwrap(),
        lake.local_file(big).unwrap(),
    )
    .unwrap();
    let s = weir_warehouse::load(w.wh.as_ref(), &lake, &opts(&m2.run_id, LoadMode::Truncate))
        .await
        .unwrap();
    let t = s.tables.iter().find(|t| t.name == "big").unwrap();
    let err = t
        .error
        .as_ref()
        .expect("a changed file must fail its table")
        .to_string();
    assert!(err.contains("the manifest says"), "{err}");
    assert!(err.contains("left as it was"), "{err}");
    assert_eq!(
        scalar(w.wh.as_ref(), "SELECT count(*) FROM raw.big").await,
        "9949"
    );
    // The other table of the run loads.
    assert!(s
        .tables
        .iter()
        .find(|t| t.name == "small")
        .unwrap()
        .error
        .is_none());
}

#[tokio::test]
async fn a_changed_parquet_file_fails_its_table_on_duckdb() {
    changed_files(Kind::DuckDb, LakeFormat::Parquet).await;
}

#[tokio::test]
async fn a_changed_ndjson_file_fails_its_table_on_postgres() {
    changed_files(Kind::Postgres, LakeFormat::Ndjson).await;
}

/// A file of the right size with other rows (same length, fewer lines) is
/// caught by the row count after staging.
#[tokio::test]
async fn an_ndjson_file_with_other_rows_of_the_same_size_fails_on_duckdb() {
    let src = source("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3);").await;
    let dir = temp_dir();
    let w = open(&Kind::DuckDb, dir.path()).await;
    let (m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Ndjson).await;
    let f = lake
        .local_file(&m.table("t").unwrap().files[0].path)
        .unwrap();
    let text = std::fs::read_to_string(&f).unwrap();
    // Three 9-byte lines become one 27-byte line of the same length.
    assert_eq!(text, "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n");
    let pad = " ".repeat(text.len() - "{\"id\":1}\n\n\n".len());
    std::fs::write(&f, format!("{{\"id\":1{pad}}}\n\n\n")).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().len(), text.len() as u64);
    let s = weir_warehouse::load(w.wh.as_ref(), &lake, &opts(&m.run_id, LoadMode::Truncate))
        .await
        .unwrap();
    let err = s.tables[0].error.as_ref().expect("must fail").to_string();
    assert!(
        err.contains("hold 1 row(s)") && err.contains("manifest says 3"),
        "{err}"
    );
    assert!(w.wh.describe("raw", "t").await.unwrap().is_none());
}

/// Regression: Parquet tables whose names object_store percent-encodes on
/// disk (non-ASCII, `"`, `..`, a newline) were extracted but DuckDB found no
/// files to load.
#[tokio::test]
async fn tables_whose_names_need_encoding_load_into_duckdb() {
    let names = ["preço_ção", "a\"b", "..", "new\nline", "100%", "st*r"];
    let mut sql = String::new();
    for (i, n) in names.iter().enumerate() {
        let q = format!("\"{}\"", n.replace('"', "\"\""));
        sql.push_str(&format!(
            "CREATE TABLE {q} (id int); INSERT INTO {q} SELECT generate_series(1, {});",
            i + 1
        ));
    }
    let src = source(&sql).await;
    let dir = temp_dir();
    let w = open(&Kind::DuckDb, dir.path()).await;
    let (m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    load_ok(w.wh.as_ref(), &lake, &opts(&m.run_id, LoadMode::Truncate)).await;
    for (i, n) in names.iter().enumerate() {
        let q = format!("raw.\"{}\"", n.replace('"', "\"\""));
        assert_eq!(
            scalar(w.wh.as_ref(), &format!("SELECT count(*) FROM {q}")).await,
            (i + 1).to_string(),
            "{n:?}"
        );
    }
}

/// Regression: a manifest naming `../../../../etc/passwd` made DuckDB open it.
#[tokio::test]
async fn a_manifest_cannot_name_files_outside_its_run() {
    let src = source("CREATE TABLE t (id int); INSERT INTO t VALUES (1);").await;
    let dir = temp_dir();
    let w = open(&Kind::DuckDb, dir.path()).await;
    let (mut m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Ndjson).await;
    for evil in [
        "../../../../etc/passwd".to_owned(),
        format!("test/t/run={}/../../../../../../etc/passwd", m.run_id),
        "test/other/run=x/part-00000.json".to_owned(),
    ] {
        m.tables[0].files[0].path = evil.clone();
        lake.write_manifest(&m).await.unwrap();
        let s = weir_warehouse::load(w.wh.as_ref(), &lake, &opts(&m.run_id, LoadMode::Truncate))
            .await
            .unwrap();
        let err = s.tables[0].error.as_ref().expect("must fail").to_string();
        assert!(
            err.contains("is not inside the run's folder"),
            "{evil}: {err}"
        );
        assert!(!err.contains("root:"), "{err}");
    }
    assert!(w.wh.describe("raw", "t").await.unwrap().is_none());
}

/// Regression: run ids sorted by the second plus random hex, so of two
/// extracts in the same second `weir load` (latest) took either (the older
/// 5 times in 8). The latest is the run that started last.
#[tokio::test]
async fn latest_is_the_newest_run_also_within_a_second() {
    let src = source("CREATE TABLE t (v int); INSERT INTO t VALUES (0);").await;
    let dir = temp_dir();
    let w = open(&Kind::DuckDb, dir.path()).await;
    let c = src.client().await;
    for v in 1..=8 {
        extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
        c.batch_execute(&format!("UPDATE t SET v = {v}"))
            .await
            .unwrap();
        let (m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
        let s = load_ok(w.wh.as_ref(), &lake, &latest()).await;
        assert_eq!(s.run_id, m.run_id, "round {v}");
        assert_eq!(
            rows(w.wh.as_ref(), "SELECT v FROM raw.t").await,
            vec![vec![v.to_string()]]
        );
    }
}

/// New run ids sort by start time to the microsecond and never repeat.
#[test]
fn run_ids_are_unique_and_ordered_within_a_second() {
    let ids: Vec<String> = (0..2000).map(|_| weir_lake::new_run_id()).collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    let starts: Vec<&str> = ids.iter().map(|i| &i[..22]).collect();
    let mut s2 = starts.clone();
    s2.sort();
    assert_eq!(starts, s2, "ids sort by their start time");
}
