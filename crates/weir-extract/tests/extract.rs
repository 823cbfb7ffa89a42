//! Chunking, snapshot consistency and incremental extraction against a real server.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use common::{chunked, read_parquet, run, table, Setup};
use weir_config::{ChunkBy, TableConfig};
use weir_testkit::{temp_dir, TestDb};

/// (count, sum of ids, sum of a text checksum) straight from PostgreSQL.
async fn pg_checksum(db: &TestDb, table: &str) -> (i64, i64, i64) {
    let row = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(id), 0)::int8,
                        coalesce(sum(('x' || substr(md5(coalesce(payload, '~')), 1, 8))::bit(32)::int8), 0)::int8
                 FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The same checksum over the lake's rows, computed by PostgreSQL on the values read back.
async fn lake_checksum(db: &TestDb, ids: &Int64Array, payloads: &StringArray) -> (i64, i64, i64) {
    let ids_v: Vec<i64> = ids.iter().map(|v| v.unwrap()).collect();
    let pay_v: Vec<Option<String>> = payloads.iter().map(|v| v.map(str::to_owned)).collect();
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*), coalesce(sum(i), 0)::int8,
                    coalesce(sum(('x' || substr(md5(coalesce(p, '~')), 1, 8))::bit(32)::int8), 0)::int8
             FROM unnest($1::int8[], $2::text[]) AS u(i, p)",
            &[&ids_v, &pay_v],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn big_table(db: &TestDb) {
    // 120k rows with gaps (deleted ranges), NULL payloads and a nullable key column.
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE big (id int8 PRIMARY KEY, k int4, payload text);
             INSERT INTO big SELECT g, CASE WHEN g % 97 = 0 THEN NULL ELSE g % 5000 END,
                    CASE WHEN g % 13 = 0 THEN NULL ELSE repeat(md5(g::text), 3) END
             FROM generate_series(1, 120000) g;
             DELETE FROM big WHERE id BETWEEN 30000 AND 40000 OR id % 1000 = 7;",
        )
        .await
        .unwrap();
    db.client()
        .await
        .batch_execute("VACUUM ANALYZE big")
        .await
        .unwrap();
}

#[tokio::test]
async fn chunking_never_duplicates_or_drops_a_row() {
    let db = TestDb::new().await;
    big_table(&db).await;
    let expected = pg_checksum(&db, "big").await;
    for by in [
        ChunkBy::Ctid,
        ChunkBy::Column("id".into()),
        ChunkBy::Column("k".into()),
        ChunkBy::None,
    ] {
        let dir = temp_dir();
        // ~27 MB on disk in 1 MiB chunks: dozens of chunks over 3 connections
        let setup = Setup {
            jobs: 3,
            chunk_bytes: 1 << 20,
            tables: vec![chunked("big", by.clone())],
            ..Setup::default()
        };
        let (summary, manifest, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
        let files = manifest.tables[0].files.len();
        if by == ChunkBy::None {
            assert_eq!(files, 1);
        } else {
            assert!(files > 10, "{by:?}: only {files} chunks");
        }
        let b = read_parquet(dir.path(), &manifest, "big");
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let pays = b
            .column_by_name("payload")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let got = lake_checksum(&db, ids, pays).await;
        assert_eq!(got, expected, "{by:?}");
        assert_eq!(summary.rows as i64, expected.0);
        let per_file: u64 = manifest.tables[0].files.iter().map(|f| f.rows).sum();
        assert_eq!(per_file, summary.rows);
        let mut sorted: Vec<i64> = ids.values().to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len() as i64, expected.0, "{by:?}: duplicate ids");
    }
}

#[tokio::test]
async fn one_snapshot_across_chunks_and_tables_under_concurrent_writes() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE accounts (id int8 PRIMARY KEY, balance int8 NOT NULL, payload text);
             INSERT INTO accounts SELECT g, 0, repeat('x', 200) FROM generate_series(1, 60000) g;
             CREATE TABLE transfers (id bigserial PRIMARY KEY, amount int8, payload text);
             CREATE TABLE counter (id int8 PRIMARY KEY, n int8, payload text);
             INSERT INTO counter VALUES (1, 0, NULL);",
        )
        .await
        .unwrap();
    // A writer moves money between random accounts; every transaction keeps
    // sum(balance) = 0 and count(transfers) = counter.n.
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits) = (stop.clone(), commits.clone());
        let client = db.client().await;
        tokio::spawn(async move {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (a, b) = (1 + (i * 7919) % 60000, 1 + (i * 104_729) % 60000);
                let sql = format!(
                    "BEGIN; UPDATE accounts SET balance = balance - {i} WHERE id = {a};
                     UPDATE accounts SET balance = balance + {i} WHERE id = {b};
                     INSERT INTO transfers (amount) VALUES ({i});
                     UPDATE counter SET n = n + 1 WHERE id = 1; COMMIT;"
                );
                client.batch_execute(&sql).await.unwrap();
                commits.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while commits.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let dir = temp_dir();
    let setup = Setup {
        jobs: 3,
        chunk_bytes: 512 << 10,
        tables: vec![
            chunked("accounts", ChunkBy::Ctid),
            table("transfers"),
            table("counter"),
        ],
        ..Setup::default()
    };
    let before = commits.load(Ordering::Relaxed);
    let (_, manifest, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    let during = commits.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        during > 0,
        "the writer committed nothing while the extraction ran"
    );
    assert!(manifest.table("accounts").unwrap().files.len() > 5);

    let acc = read_parquet(dir.path(), &manifest, "accounts");
    let balances = acc
        .column_by_name("balance")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(acc.num_rows(), 60000);
    assert_eq!(
        balances.iter().map(|v| v.unwrap()).sum::<i64>(),
        0,
        "sum invariant broken: chunks saw different moments"
    );
    let transfers = read_parquet(dir.path(), &manifest, "transfers");
    let counter = read_parquet(dir.path(), &manifest, "counter");
    let n = counter
        .column_by_name("n")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(
        transfers.num_rows() as i64,
        n,
        "tables saw different moments"
    );
    assert!(n >= 50);
    assert!(manifest.snapshot.txid_snapshot.contains(':'));
}

fn ids_of(b: &arrow::array::RecordBatch) -> Vec<i64> {
    let mut v: Vec<i64> = b
        .column_by_name("id")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec();
    v.sort_unstable();
    v
}

fn incremental(name: &str, cursor: &str) -> TableConfig {
    TableConfig {
        name: name.to_owned(),
        cursor: Some(cursor.to_owned()),
        ..TableConfig::default()
    }
}

#[tokio::test]
async fn incremental_extraction_keeps_cursor_ties_and_late_commits() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE events (id int8 PRIMARY KEY, updated_at timestamptz NOT NULL, payload text);
         INSERT INTO events VALUES (1, '2024-01-01 10:00+00', 'a'), (2, '2024-01-01 11:00+00', 'b'),
                                   (3, '2024-01-01 11:00+00', 'c');",
    )
    .await
    .unwrap();
    let dir = temp_dir();
    let setup = Setup {
        tables: vec![incremental("events", "updated_at")],
        ..Setup::default()
    };

    // Run 1: everything, mark = 11:00.
    let (_, m1, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    assert_eq!(
        ids_of(&read_parquet(dir.path(), &m1, "events")),
        vec![1, 2, 3]
    );
    let inc = m1.table("events").unwrap().incremental.clone().unwrap();
    assert_eq!(inc.from, None);
    assert!(
        inc.mark
            .as_deref()
            .unwrap()
            .starts_with("2024-01-01 11:00:00"),
        "{inc:?}"
    );

    // A row that ties with the mark, and a later one.
    c.batch_execute("INSERT INTO events VALUES (4, '2024-01-01 11:00+00', 'tie'), (5, '2024-01-02 00:00+00', 'new')")
        .await
        .unwrap();
    let (_, m2, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    let got = ids_of(&read_parquet(dir.path(), &m2, "events"));
    assert!(
        got.contains(&4) && got.contains(&5),
        "tie or new row lost: {got:?}"
    );
    assert!(
        !got.contains(&1),
        "rows before the mark are not re-read: {got:?}"
    );

    // A transaction that started earlier commits after the next extraction:
    // its row carries a cursor value older than rows that run saw.
    let late = db.client().await;
    late.batch_execute("BEGIN; INSERT INTO events VALUES (6, now(), 'late')")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    c.batch_execute("INSERT INTO events VALUES (7, now(), 'early')")
        .await
        .unwrap();
    let (_, m3, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    let got3 = ids_of(&read_parquet(dir.path(), &m3, "events"));
    assert!(got3.contains(&7) && !got3.contains(&6), "{got3:?}");
    late.batch_execute("COMMIT").await.unwrap();
    let (_, m4, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    let got4 = ids_of(&read_parquet(dir.path(), &m4, "events"));
    assert!(
        got4.contains(&6),
        "the late-committed row was lost: {got4:?}"
    );

    // Across all runs, every row was extracted at least once.
    let mut all: Vec<i64> = [got, got3, got4].concat();
    all.extend([1, 2, 3]);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, vec![1, 2, 3, 4, 5, 6, 7]);
    let ts = read_parquet(dir.path(), &m4, "events");
    assert!(ts
        .column_by_name("updated_at")
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .is_some());
}

#[tokio::test]
async fn integer_cursor_with_lookback() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE log (id int8 PRIMARY KEY, seq int8 NOT NULL, payload text);
         INSERT INTO log SELECT g, g, 'x' FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let dir = temp_dir();
    let mut t = incremental("log", "seq");
    t.cursor_lookback = Some("10".to_owned());
    let setup = Setup {
        tables: vec![t],
        ..Setup::default()
    };
    let (_, m1, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    assert_eq!(read_parquet(dir.path(), &m1, "log").num_rows(), 100);
    c.batch_execute("INSERT INTO log VALUES (101, 95, 'late sequence'), (102, 150, 'new')")
        .await
        .unwrap();
    let (_, m2, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
    let got = ids_of(&read_parquet(dir.path(), &m2, "log"));
    assert!(got.contains(&101) && got.contains(&102), "{got:?}");
    assert_eq!(
        got.len(),
        13,
        "rows 90..=100 re-read, plus two new: {got:?}"
    );
}

#[tokio::test]
async fn wrong_password_or_missing_database_never_shows_the_password() {
    let dir = temp_dir();
    let url = weir_testkit::admin_url().replace("postgres@", "postgres:pa55-s3cret@");
    let url = format!("{}_does_not_exist", url);
    let err = run(&url, dir.path(), &Setup::default()).await.unwrap_err();
    assert!(!err.contains("pa55-s3cret"), "{err}");
    assert!(
        err.contains("***") || err.contains("does_not_exist"),
        "{err}"
    );
}

#[tokio::test]
async fn separate_extractions_in_one_exported_snapshot_see_the_same_moment() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE a (id int8 PRIMARY KEY); CREATE TABLE b (id int8 PRIMARY KEY);
         INSERT INTO a SELECT generate_series(1, 100); INSERT INTO b SELECT generate_series(1, 100);",
    )
    .await
    .unwrap();
    let url = weir_config::SecretUrl::new(db.url());
    let held = weir_source::Snapshot::export(&url).await.unwrap();
    let r = held.reference();
    // Writes after the snapshot: neither extraction may see them.
    c.batch_execute("INSERT INTO a SELECT generate_series(101, 150); DELETE FROM b WHERE id <= 10")
        .await
        .unwrap();
    // One extraction per table, as the pipeline's extract tasks run.
    for t in ["a", "b"] {
        let dir = temp_dir();
        let setup = Setup {
            tables: vec![table(t)],
            snapshot: Some(r.clone()),
            ..Setup::default()
        };
        let (summary, manifest, _) = run(&db.url(), dir.path(), &setup).await.unwrap();
        assert_eq!(summary.rows, 100, "{t}");
        assert_eq!(manifest.snapshot.txid_snapshot, r.txid_snapshot, "{t}");
    }
    held.release().await;
    // Once the exporting transaction is over, importing it says so.
    let dir = temp_dir();
    let setup = Setup {
        tables: vec![table("a")],
        snapshot: Some(r),
        ..Setup::default()
    };
    let err = run(&db.url(), dir.path(), &setup).await.unwrap_err();
    assert!(err.contains("is gone"), "{err}");
}
