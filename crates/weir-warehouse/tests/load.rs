//! Load modes, atomicity, schema drift and the bad-record budget, against a
//! real DuckDB file and a real PostgreSQL warehouse.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{extract_to, leftovers, load_ok, open, opts, recommit, rows, scalar, Kind};
use weir_config::{LakeFormat, LoadMode};
use weir_testkit::{temp_dir, TestDb};
use weir_warehouse::LoadOptions;

async fn modes(kind: Kind) {
    let src = TestDb::new().await;
    let c = src.client().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'v1' FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let dir = temp_dir();
    let w = open(&kind, dir.path()).await;
    let wh = w.wh.as_ref();
    let (m1, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    load_ok(wh, &lake, &opts(&m1.run_id, LoadMode::Truncate)).await;
    assert_eq!(scalar(wh, "SELECT count(*) FROM raw.items").await, "100");

    // The source changes: 10 rows updated, 20 new.
    c.batch_execute(
        "UPDATE items SET v = 'v2' WHERE id <= 10;
         INSERT INTO items SELECT g, 'new' FROM generate_series(101, 120) g;",
    )
    .await
    .unwrap();
    let (m2, _) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;

    // append adds every row of the run
    load_ok(wh, &lake, &opts(&m2.run_id, LoadMode::Append)).await;
    assert_eq!(scalar(wh, "SELECT count(*) FROM raw.items").await, "220");

    // truncate replaces the table with the run
    load_ok(wh, &lake, &opts(&m1.run_id, LoadMode::Truncate)).await;
    assert_eq!(scalar(wh, "SELECT count(*) FROM raw.items").await, "100");

    // merge updates changed rows and inserts new ones, with no duplicate keys
    load_ok(wh, &lake, &opts(&m2.run_id, LoadMode::Merge)).await;
    assert_eq!(
        rows(
            wh,
            "SELECT count(*), count(DISTINCT id), sum(CASE WHEN v = 'v2' THEN 1 ELSE 0 END), \
             sum(CASE WHEN v = 'new' THEN 1 ELSE 0 END) FROM raw.items"
        )
        .await,
        vec![vec!["120", "120", "10", "20"]]
    );
    // merging the same run again changes nothing
    load_ok(wh, &lake, &opts(&m2.run_id, LoadMode::Merge)).await;
    assert_eq!(scalar(wh, "SELECT count(*) FROM raw.items").await, "120");
    assert!(leftovers(wh).await.is_empty());
}

#[tokio::test]
async fn truncate_append_and_merge_on_duckdb() {
    modes(Kind::DuckDb).await;
}

#[tokio::test]
async fn truncate_append_and_merge_on_postgres() {
    modes(Kind::Postgres).await;
}

/// A reader querying in a loop during loads only ever sees a whole old or a
/// whole new table; a load that fails half-way leaves the old table.
async fn atomicity(kind: Kind) {
    let src = TestDb::new().await;
    let c = src.client().await;
    c.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, gen int, pad text);
         INSERT INTO big SELECT g, 1, repeat('x', 50) FROM generate_series(1, 200000) g;",
    )
    .await
    .unwrap();
    let dir = temp_dir();
    let w = open(&kind, dir.path()).await;
    let (m1, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Ndjson).await;
    load_ok(w.wh.as_ref(), &lake, &opts(&m1.run_id, LoadMode::Truncate)).await;
    c.batch_execute(
        "UPDATE big SET gen = 2; INSERT INTO big SELECT g, 2, 'y' FROM generate_series(200001, 250000) g;",
    )
    .await
    .unwrap();
    let (m2, _) = extract_to(&src.url(), dir.path(), LakeFormat::Ndjson).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (wh, stop) = (w.wh.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = rows(
                    wh.as_ref(),
                    "SELECT count(*), min(gen), max(gen) FROM raw.big",
                )
                .await;
                seen.push(r[0].join(","));
            }
            seen
        })
    };
    for _ in 0..2 {
        load_ok(w.wh.as_ref(), &lake, &opts(&m2.run_id, LoadMode::Truncate)).await;
        load_ok(w.wh.as_ref(), &lake, &opts(&m1.run_id, LoadMode::Truncate)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert!(seen.len() > 3, "the reader ran only {} times", seen.len());
    for s in &seen {
        assert!(s == "200000,1,1" || s == "250000,2,2", "a reader saw {s}");
    }

    // Injected failure: the second run's file is cut short, after the manifest was written.
    let file = dir.path().join(&m2.table("big").unwrap().files[0].path);
    let text = std::fs::read(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    // As if written so: the size check would stop it before staging.
    recommit(&lake, &m2).await;
    let s = weir_warehouse::load(
        w.wh.as_ref(),
        &lake,
        &LoadOptions {
            max_bad_records: 0,
            ..opts(&m2.run_id, LoadMode::Truncate)
        },
    )
    .await
    .unwrap();
    assert!(
        s.tables[0].error.is_some(),
        "a cut file loaded: {:?}",
        s.tables[0]
    );
    assert_eq!(
        rows(
            w.wh.as_ref(),
            "SELECT count(*), min(gen), max(gen) FROM raw.big"
        )
        .await,
        vec![vec!["200000", "1", "1"]]
    );
    assert!(leftovers(w.wh.as_ref()).await.is_empty());
    // and the next load is not hindered
    std::fs::write(&file, &text).unwrap();
    recommit(&lake, &m2).await;
    load_ok(w.wh.as_ref(), &lake, &opts(&m2.run_id, LoadMode::Truncate)).await;
    assert_eq!(
        scalar(w.wh.as_ref(), "SELECT count(*) FROM raw.big").await,
        "250000"
    );
}

#[tokio::test]
async fn readers_see_old_or_new_never_half_on_duckdb() {
    atomicity(Kind::DuckDb).await;
}

#[tokio::test]
async fn readers_see_old_or_new_never_half_on_postgres() {
    atomicity(Kind::Postgres).await;
}

async fn drift(kind: Kind) {
    let src = TestDb::new().await;
    let c = src.client().await;
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, small int, amount numeric(10,2));
         INSERT INTO t VALUES (1, 1, 1.50);",
    )
    .await
    .unwrap();
    let dir = temp_dir();
    let w = open(&kind, dir.path()).await;
    let wh = w.wh.as_ref();
    let (m1, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    load_ok(wh, &lake, &opts(&m1.run_id, LoadMode::Truncate)).await;

    // A new column and a lossless widening are taken on append.
    c.batch_execute(
        "ALTER TABLE t ADD COLUMN note text; ALTER TABLE t ALTER COLUMN small TYPE bigint;
         INSERT INTO t VALUES (2, 9000000000, 2.25, 'hi');",
    )
    .await
    .unwrap();
    let (m2, _) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    load_ok(
        wh,
        &lake,
        &LoadOptions {
            tables: Some(vec!["t".to_owned()]),
            ..opts(&m2.run_id, LoadMode::Merge)
        },
    )
    .await;
    assert_eq!(
        rows(wh, "SELECT id, small, amount, note FROM raw.t ORDER BY id").await,
        vec![
            vec!["1", "1", "1.50", "NULL"],
            vec!["2", "9000000000", "2.25", "hi"]
        ]
    );

    // A change that would lose data fails before any write, naming everything.
    c.batch_execute(
        "ALTER TABLE t ALTER COLUMN amount TYPE numeric(10,1); INSERT INTO t VALUES (3, 3, 3.5, 'x');",
    )
    .await
    .unwrap();
    let (m3, _) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    let s = weir_warehouse::load(wh, &lake, &opts(&m3.run_id, LoadMode::Append))
        .await
        .unwrap();
    let err = s.tables[0]
        .error
        .as_ref()
        .expect("a lossy change must fail")
        .to_string();
    for word in ["table t", "column amount", "(10,2)", "(10,1)"] {
        assert!(
            err.to_lowercase().contains(&word.to_lowercase()),
            "{word} not in: {err}"
        );
    }
    assert_eq!(scalar(wh, "SELECT count(*) FROM raw.t").await, "2");
    // truncate replaces the table, so the new type is fine there
    load_ok(wh, &lake, &opts(&m3.run_id, LoadMode::Truncate)).await;
    assert_eq!(scalar(wh, "SELECT count(*) FROM raw.t").await, "3");
}

#[tokio::test]
async fn schema_drift_on_duckdb() {
    drift(Kind::DuckDb).await;
}

#[tokio::test]
async fn schema_drift_on_postgres() {
    drift(Kind::Postgres).await;
}

async fn bad_records(kind: Kind) {
    let src = TestDb::new().await;
    src.client()
        .await
        .batch_execute(
            "CREATE TABLE ev (id int PRIMARY KEY, n int2, at date);
             INSERT INTO ev SELECT g, g % 100, date '2024-01-01' + g FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    let dir = temp_dir();
    let w = open(&kind, dir.path()).await;
    let wh = w.wh.as_ref();
    let (m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Ndjson).await;
    // Spoil three lines: broken JSON, a value out of range, a wrong type.
    let file = dir.path().join(&m.table("ev").unwrap().files[0].path);
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[4] = "{\"id\": 5, \"n\": ".to_owned();
    lines[9] = "{\"id\": 10, \"n\": 70000, \"at\": \"2024-01-11\"}".to_owned();
    lines[19] = "{\"id\": 20, \"n\": 1, \"at\": \"not a date\"}".to_owned();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    recommit(&lake, &m).await;

    let over = weir_warehouse::load(
        wh,
        &lake,
        &LoadOptions {
            max_bad_records: 2,
            ..opts(&m.run_id, LoadMode::Truncate)
        },
    )
    .await
    .unwrap();
    let t = &over.tables[0];
    assert_eq!(t.rejected, 3);
    let err = t.error.as_ref().expect("over budget must fail").to_string();
    assert!(
        err.contains("3 bad record(s)") && err.contains("2 allowed"),
        "{err}"
    );
    assert!(
        wh.describe("raw", "ev").await.unwrap().is_none(),
        "nothing may be loaded"
    );

    let ok = load_ok(
        wh,
        &lake,
        &LoadOptions {
            max_bad_records: 3,
            ..opts(&m.run_id, LoadMode::Truncate)
        },
    )
    .await;
    assert_eq!((ok.tables[0].rows, ok.tables[0].rejected), (47, 3));
    assert_eq!(scalar(wh, "SELECT count(*) FROM raw.ev").await, "47");
    // The rejects file sits beside the manifest: line numbers, reasons, the records.
    let rejects = dir
        .path()
        .join(format!("test/_manifests/{}.rejects/ev.ndjson", m.run_id));
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(u64, &str)> = rejects
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["record"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (5, lines[4].as_str()),
            (10, lines[9].as_str()),
            (20, lines[19].as_str())
        ]
    );
    assert!(rejects
        .iter()
        .all(|r| !r["reason"].as_str().unwrap().is_empty()));
    // a rejects folder is not mistaken for a run
    assert_eq!(lake.list_runs().await.unwrap(), vec![m.run_id.clone()]);
}

#[tokio::test]
async fn bad_records_are_counted_set_aside_and_budgeted_on_duckdb() {
    bad_records(Kind::DuckDb).await;
}

#[tokio::test]
async fn bad_records_are_counted_set_aside_and_budgeted_on_postgres() {
    bad_records(Kind::Postgres).await;
}

async fn lineage(kind: Kind) {
    let src = TestDb::new().await;
    src.client()
        .await
        .batch_execute("CREATE TABLE l (id int PRIMARY KEY); INSERT INTO l VALUES (1), (2);")
        .await
        .unwrap();
    let dir = temp_dir();
    let w = open(&kind, dir.path()).await;
    let (m, lake) = extract_to(&src.url(), dir.path(), LakeFormat::Parquet).await;
    load_ok(
        w.wh.as_ref(),
        &lake,
        &LoadOptions {
            lineage: true,
            ..opts(&m.run_id, LoadMode::Truncate)
        },
    )
    .await;
    let r = rows(
        w.wh.as_ref(),
        "SELECT count(*), min(_weir_run_id), count(DISTINCT _weir_loaded_at), \
         count(_weir_loaded_at) FROM raw.l",
    )
    .await;
    assert_eq!(
        r,
        vec![vec![
            "2".to_owned(),
            m.run_id.clone(),
            "1".to_owned(),
            "2".to_owned()
        ]]
    );
}

#[tokio::test]
async fn lineage_columns_on_duckdb() {
    lineage(Kind::DuckDb).await;
}

#[tokio::test]
async fn lineage_columns_on_postgres() {
    lineage(Kind::Postgres).await;
}
