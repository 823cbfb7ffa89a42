//! The BigQuery adapter against bqemulator (from PyPI, started here), with the
//! lake's files served to it as `gs://bucket/lake/…`.

mod common;

use common::{extract_to, load_ok, opts, rows, scalar};
use weir_config::{BigQueryConfig, LakeFormat, LoadMode};
use weir_testkit::{start_bqemulator as start_emulator, temp_dir, TestDb};
use weir_warehouse::{BigQuery, Warehouse};

#[tokio::test]
async fn bigquery_loads_merges_and_budgets_bad_records() {
    let src = TestDb::new().await;
    let c = src.client().await;
    c.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, state text, amount numeric(10,2), paid bool,
                              placed date, at timestamptz);
         INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'SP' ELSE 'RJ' END, g * 1.25,
                g % 2 = 0, date '2024-01-01' + g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour'
         FROM generate_series(1, 30) g;",
    )
    .await
    .unwrap();
    let root = temp_dir();
    let emu = start_emulator(root.path());
    let lake_dir = root.path().join("bucket/lake");
    std::fs::create_dir_all(&lake_dir).unwrap();
    let cfg = BigQueryConfig {
        project: "test".to_owned(),
        location: None,
        credentials: None,
        endpoint: Some(format!("http://127.0.0.1:{}", emu.port)),
        lake_uri: Some("gs://bucket/lake".to_owned()),
    };
    let wh = BigQuery::new(&cfg, &format!("file://{}", lake_dir.display()))
        .await
        .unwrap();

    // Query results come back page by page (10,000 rows a page).
    let big = rows(
        &wh,
        "SELECT x FROM UNNEST(GENERATE_ARRAY(1, 25000)) AS x ORDER BY x",
    )
    .await;
    assert_eq!(big.len(), 25000);
    assert_eq!((big[0][0].as_str(), big[24999][0].as_str()), ("1", "25000"));

    // Parquet, full replace.
    let (m1, lake) = extract_to(&src.url(), &lake_dir, LakeFormat::Parquet).await;
    let s = load_ok(&wh, &lake, &opts(&m1.run_id, LoadMode::Truncate)).await;
    assert_eq!(s.tables[0].rows, 30);
    assert_eq!(
        rows(
            &wh,
            "SELECT state, count(*), CAST(sum(amount) * 100 AS INT64) FROM raw.orders \
             GROUP BY state ORDER BY state"
        )
        .await,
        vec![vec!["RJ", "20", "37500"], vec!["SP", "10", "20625"]]
    );
    let cols = wh.describe("raw", "orders").await.unwrap().unwrap();
    let types: Vec<String> = cols
        .iter()
        .map(|c| format!("{} {}", c.name, c.data_type))
        .collect();
    assert_eq!(
        types,
        [
            "id INT64",
            "state STRING",
            "amount NUMERIC",
            "paid BOOL",
            "placed DATE",
            "at TIMESTAMP"
        ]
    );

    // Merge: updated rows replace old ones, new rows are added.
    c.batch_execute(
        "UPDATE orders SET state = 'MG' WHERE id <= 5;
         INSERT INTO orders VALUES (31, 'BA', 1.00, true, '2024-03-01', now());",
    )
    .await
    .unwrap();
    let (m2, _) = extract_to(&src.url(), &lake_dir, LakeFormat::Parquet).await;
    load_ok(&wh, &lake, &opts(&m2.run_id, LoadMode::Merge)).await;
    assert_eq!(
        rows(
            &wh,
            "SELECT count(*), count(DISTINCT id), countif(state = 'MG') FROM raw.orders"
        )
        .await,
        vec![vec!["31", "31", "5"]]
    );

    // NDJSON with a bad record: over budget fails, within budget loads the rest.
    let (m3, _) = extract_to(&src.url(), &lake_dir, LakeFormat::Ndjson).await;
    let file = lake_dir.join(&m3.table("orders").unwrap().files[0].path);
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"id\": \"not a number\"}";
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    common::recommit(&lake, &m3).await;
    let over = weir_warehouse::load(&wh, &lake, &opts(&m3.run_id, LoadMode::Truncate))
        .await
        .unwrap();
    let err = over.tables[0]
        .error
        .as_ref()
        .expect("a bad record over budget fails")
        .to_string();
    assert!(err.contains("bad record"), "{err}");
    assert_eq!(over.tables[0].rows, 0);
    // the table keeps the merged contents, and no staging table is left behind
    assert_eq!(scalar(&wh, "SELECT count(*) FROM raw.orders").await, "31");
    assert!(wh
        .describe("raw", "_weir_stage_orders")
        .await
        .unwrap()
        .is_none());
    // (bqemulator has no maxBadRecords, so loading within a budget is checked
    // against BigQuery's documented job responses in the adapter's unit tests.)

    // NDJSON without bad records, full replace, with lineage columns.
    std::fs::write(&file, text).unwrap();
    common::recommit(&lake, &m3).await;
    let s = load_ok(
        &wh,
        &lake,
        &weir_warehouse::LoadOptions {
            lineage: true,
            ..opts(&m3.run_id, LoadMode::Truncate)
        },
    )
    .await;
    assert_eq!(s.tables[0].rows, 31);
    assert_eq!(
        rows(
            &wh,
            "SELECT count(*), min(_weir_run_id), count(_weir_loaded_at) FROM raw.orders"
        )
        .await,
        vec![vec!["31".to_owned(), m3.run_id.clone(), "31".to_owned()]]
    );
    assert_eq!(
        scalar(&wh, "SELECT countif(state = 'MG') FROM raw.orders").await,
        "5"
    );
}
