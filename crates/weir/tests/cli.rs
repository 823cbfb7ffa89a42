//! End-to-end tests that drive the real `weir` binary against a real server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_testkit::{project, temp_dir, TestDb};

mod common;
use common::*;

#[test]
fn config_errors_name_file_line_and_key_all_at_once_and_exit_2() {
    let dir = project("name: shop\nsource:\n  postgres:\n    url: postgres://localhost/db\n  tabels: [a]\nlake:\n  format: csv\n");
    let out = weir(&["extract"], dir.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("weir.yml:5:3: source.tabels: unknown key `tabels`"),
        "{all}"
    );
    assert!(
        all.contains("weir.yml:7:11: lake.format: `csv` is not one of: parquet, ndjson"),
        "{all}"
    );
    assert!(all.contains("2 problem(s)"), "{all}");
}

#[tokio::test]
async fn generate_then_extract_json_summary_and_no_password_anywhere() {
    let db = TestDb::new().await;
    let dir = temp_dir();
    let secret = "Zz-hunter2-secret";
    let url = db
        .url()
        .replace("postgres@", &format!("postgres:{secret}@"));
    let out = weir(
        &["source", "generate", "--url", &url, "--scale", "0.02"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(secret));
    // Refuses to overwrite without --replace (a usage error).
    let again = weir(
        &["source", "generate", "--url", &url, "--scale", "0.02"],
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("--replace"));

    std::fs::write(
        dir.path().join("weir.yml"),
        "name: shop\nsource:\n  postgres:\n    url: ${SHOP_DB}\n  tables: [\"*\"]\n  exclude: [olist_geolocation]\nlake:\n  format: ndjson\n  ndjson: { gzip: true }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["extract", "--json", "--log", "debug", "--jobs", "3"])
        .current_dir(dir.path())
        .env("SHOP_DB", &url)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(secret), "the password leaked into output");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = summary["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 8, "{summary}");
    let orders = tables.iter().find(|t| t["name"] == "olist_orders").unwrap();
    assert_eq!(orders["rows"], 1991, "{summary}");
    let manifest_url = summary["manifest_url"].as_str().unwrap();
    assert!(
        manifest_url.starts_with(&format!(
            "file://{}/lake/shop/_manifests/",
            dir.path().canonicalize().unwrap().display()
        )),
        "{manifest_url}"
    );
    let run_id = summary["run_id"].as_str().unwrap();
    let manifest_path = dir
        .path()
        .join("lake/shop/_manifests")
        .join(format!("{run_id}.json"));
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    assert!(!manifest.contains(secret));
    assert!(manifest.contains("\"compression\": \"gzip\""));
    for f in files_under(&dir.path().join("lake")) {
        let content = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&content).contains(secret),
            "{}",
            f.display()
        );
    }
    // --tables restricts the run; an unknown table is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["extract", "--tables", "olist_sellers,nope"])
        .current_dir(dir.path())
        .env("SHOP_DB", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("`nope`"));
}

fn is_final_part(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with("part-")
        && name.ends_with(".parquet")
        && name.len() == "part-00000.parquet".len()
}

#[tokio::test]
async fn a_killed_extraction_leaves_nothing_that_looks_complete() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE wide (id int8 PRIMARY KEY, payload text);
             INSERT INTO wide SELECT g, repeat(md5(g::text) || md5((g * 31)::text), 6) FROM generate_series(1, 250000) g;",
        )
        .await
        .unwrap();
    let dir = project(&format!(
            "name: k\nsource:\n  postgres: {{ url: \"{}\" }}\n  tables: [wide]\n  jobs: 2\n  chunk_size_mb: 6\nlake:\n  parquet: {{ compression: none }}\n",
            db.url()
        ));
    let lake = dir.path().join("lake");
    let mut killed = 0;
    for delay_ms in [0u64, 150, 400] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("extract")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the run has started writing, then kill it without warning.
        let start = Instant::now();
        while files_under(&lake.join("k/wide")).is_empty()
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            continue; // finished before the kill: nothing to check for this delay
        }
        killed += 1;
        assert!(
            files_under(&lake.join("k/_manifests")).is_empty(),
            "a killed run committed a manifest"
        );
        for f in files_under(&lake) {
            if is_final_part(&f) {
                // Anything under a final name must be a whole, readable file.
                let file = std::fs::File::open(&f).unwrap();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .unwrap_or_else(|e| {
                            panic!("{} is not a complete Parquet file: {e}", f.display())
                        });
                for b in reader.build().unwrap() {
                    b.unwrap();
                }
            }
        }
    }
    assert!(
        killed >= 2,
        "only {killed} run(s) were killed mid-way; the table is too small to test this"
    );
    // A clean run afterwards commits a manifest that lists only its own files.
    let out = weir(&["extract", "--json"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows"], 250000);
    let run_id = summary["run_id"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lake.join("k/_manifests").join(format!("{run_id}.json"))).unwrap(),
    )
    .unwrap();
    let files = manifest["tables"][0]["files"].as_array().unwrap();
    assert!(files.len() > 3);
    for f in files {
        assert!(f["path"].as_str().unwrap().contains(run_id));
    }
}

#[tokio::test]
async fn source_commands_read_the_project_file() {
    let db = TestDb::new().await;
    let dir = project(&format!(
        "name: p\nsource:\n  postgres: {{ url: \"{}\", schema: shop }}\n",
        db.url()
    ));
    let out = weir(&["source", "generate", "--scale", "0.01"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema shop"), "{}", text(&out));
    let csv = dir.path().join("csv");
    let out = weir(
        &[
            "source",
            "generate",
            "--scale",
            "0.01",
            "--csv-out",
            csv.to_str().unwrap(),
            "--schema",
            "other",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = weir(
        &[
            "source",
            "load-csv",
            csv.to_str().unwrap(),
            "--schema",
            "again",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let n: i64 = db
        .client()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM shop.olist_orders) + (SELECT count(*) FROM other.olist_orders)
                  - 2 * (SELECT count(*) FROM again.olist_orders)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the three schemas hold the same orders");
    // Without a URL or a project, the error says what to give.
    let empty = temp_dir();
    let out = weir(&["source", "load-csv", csv.to_str().unwrap()], empty.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--url"), "{}", text(&out));
}

#[tokio::test]
async fn extract_load_query_into_the_embedded_duckdb() {
    let db = TestDb::new().await;
    let dir = temp_dir();
    let out = weir(
        &["source", "generate", "--url", &db.url(), "--scale", "0.02"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(
        dir.path().join("weir.yml"),
        "name: shop\nsource:\n  postgres: { url: \"${SHOP_DB}\" }\n  tables: [olist_orders, olist_customers]\n\
         lake:\n  format: ndjson\n  ndjson: { gzip: true }\nwarehouse:\n  schema: landing\n  lineage: true\n",
    )
    .unwrap();
    let env = [("SHOP_DB", db.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = weir_env(&["extract"], dir.path(), &env);
    assert!(out.status.success(), "{}", text(&out));
    let out = weir_env(&["load", "--json"], dir.path(), &env);
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let orders = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "olist_orders")
        .unwrap();
    assert_eq!(orders["rows_loaded"], 1991, "{summary}");
    assert_eq!(orders["rows_rejected"], 0);
    assert!(orders["seconds"].as_f64().unwrap() >= 0.0);
    assert!(dir.path().join("warehouse.duckdb").exists());

    let sql =
        "SELECT count(*) AS orders, count(DISTINCT _weir_run_id) AS runs FROM landing.olist_orders";
    let out = weir_env(&["query", sql, "--format", "csv"], dir.path(), &env);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "orders,runs\n1991,1\n"
    );
    let out = weir_env(&["query", sql, "--format", "json"], dir.path(), &env);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows, serde_json::json!([{"orders": 1991, "runs": 1}]));
    let out = weir_env(&["query", sql, "--format", "table"], dir.path(), &env);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("| orders | runs |") && shown.contains("(1 rows)"),
        "{shown}"
    );

    // A bad query fails with DuckDB's message; an unknown table is a usage error.
    let out = weir_env(
        &["query", "SELECT nope FROM landing.olist_orders"],
        dir.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("nope"), "{}", text(&out));
    let out = weir_env(&["load", "--tables", "olist_sellers"], dir.path(), &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("olist_sellers"), "{}", text(&out));
    let out = weir_env(
        &["load", "--run", "19990101T000000Z-000000"],
        dir.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no run `19990101T000000Z-000000` for project `shop`"),
        "{}",
        text(&out)
    );
    // Another project's lake has no run of this one: said so, not a stack of errors.
    let other = temp_dir();
    let out = weir_env(
        &[
            "load",
            "--lake",
            &dir.path().join("lake").display().to_string(),
        ],
        other.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no extract run for project"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn load_into_postgres_never_shows_the_password() {
    let src = TestDb::new().await;
    let wh = TestDb::new().await;
    let dir = temp_dir();
    let out = weir(
        &["source", "generate", "--url", &src.url(), "--scale", "0.01"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let secret = "Qq-warehouse-pw-7";
    let wh_url = wh
        .url()
        .replace("postgres@", &format!("postgres:{secret}@"));
    std::fs::write(
        dir.path().join("weir.yml"),
        "name: shop\nsource:\n  postgres: { url: \"${SHOP_DB}\" }\n  tables: [olist_sellers]\n\
         warehouse:\n  postgres: { url: \"${WH_URL}\" }\n  mode: merge\n",
    )
    .unwrap();
    let env = [("SHOP_DB", src.url()), ("WH_URL", wh_url.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(weir_env(&["extract"], dir.path(), &env).status.success());
    let out = weir_env(&["load", "--log", "debug"], dir.path(), &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("postgres:***@"), "{all}");
    assert!(!all.contains(secret), "the password leaked: {all}");
    let out = weir_env(
        &[
            "query",
            "SELECT count(*) FROM raw.olist_sellers",
            "--format",
            "csv",
        ],
        dir.path(),
        &env,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "count\n45\n",
        "{}",
        text(&out)
    );
    // A wrong password-free host is an error that names the redacted target, not the secret.
    let bad = wh_url.replace(&wh.name, "no_such_db");
    let out = weir_env(&["load", "--warehouse", &bad], dir.path(), &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains(secret), "{}", text(&out));
    for f in files_under(dir.path()) {
        let content = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&content).contains(secret),
            "{}",
            f.display()
        );
    }
}

#[test]
fn a_warehouse_file_held_by_another_process_is_a_clear_error() {
    let dir = project("name: shop\n");
    // This test process holds the DuckDB file, as a running `weir up` would.
    let held = weir_warehouse::DuckDb::open(&dir.path().join("warehouse.duckdb")).unwrap();
    let out = weir(&["query", "SELECT 1"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Who holds it: this test process.
    assert!(
        text(&out).contains(&format!("is in use by PID {}", std::process::id())),
        "{}",
        text(&out)
    );
    drop(held);
    let out = weir(&["query", "SELECT 1 AS one", "--format", "csv"], dir.path());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "one\n1\n",
        "{}",
        text(&out)
    );
}

/// The Olist models, on a small generated dataset, give the same answers as
/// plain SQL over the raw tables — on DuckDB and on PostgreSQL.
async fn olist_answers(warehouse_yml: &str) {
    let src = TestDb::new().await;
    let dir = temp_dir();
    let out = weir(
        &["source", "generate", "--url", &src.url(), "--scale", "0.05"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/olist/transform");
    copy_dir(&example, &dir.path().join("transform"));
    std::fs::write(
        dir.path().join("weir.yml"),
        format!("name: olist\nsource:\n  postgres: {{ url: \"{}\" }}\n{warehouse_yml}transform:\n  project: ./transform\n", src.url()),
    )
    .unwrap();
    for args in [&["extract"][..], &["load"], &["transform", "build"]] {
        let out = weir(args, dir.path());
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let q = |sql: &str| -> String {
        let out = weir(&["query", sql, "--format", "csv"], dir.path());
        assert!(out.status.success(), "{sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Orders per state: the model against the raw tables, one row per order.
    assert_eq!(
        q("SELECT state, orders FROM \"final\".fct_orders_by_state ORDER BY state"),
        q(
            "SELECT c.customer_state AS state, count(*) AS orders FROM raw.olist_orders o \
           JOIN raw.olist_customers c ON c.customer_id = o.customer_id GROUP BY 1 ORDER BY 1"
        )
    );
    // Sales by category, with the English name when there is one.
    assert_eq!(
        q("SELECT category, sales FROM \"final\".fct_sales_by_category ORDER BY category"),
        q("SELECT coalesce(t.product_category_name_english, p.product_category_name, 'unknown') AS category, \
           sum(i.price) AS sales FROM raw.olist_order_items i JOIN raw.olist_products p ON p.product_id = i.product_id \
           LEFT JOIN raw.product_category_name_translation t ON t.product_category_name = p.product_category_name \
           GROUP BY 1 ORDER BY 1")
    );
    // Delivery times: one row per delivered order, minutes = hours * 60 within rounding.
    assert_eq!(
        q("SELECT count(*) AS n FROM \"final\".fct_delivery_times"),
        q("SELECT count(*) AS n FROM raw.olist_orders WHERE order_delivered_customer_date IS NOT NULL")
    );
    assert_eq!(
        q("SELECT count(*) AS bad FROM \"final\".fct_delivery_times \
           WHERE abs(delivery_minutes - delivery_hours * 60) > 1 OR delivery_minutes < 0"),
        "bad\n0\n"
    );
    // The schemas are named exactly as the project's generate_schema_name says.
    for schema in ["transform", "staging", "intermediate", "final"] {
        let n = q(&format!(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = '{schema}'"
        ));
        assert_ne!(n, "n\n0\n", "schema {schema} is empty");
    }
}

#[tokio::test]
async fn olist_models_answer_like_plain_sql_on_duckdb() {
    olist_answers("").await;
}

#[tokio::test]
async fn olist_models_answer_like_plain_sql_on_postgres() {
    let wh = TestDb::new().await;
    olist_answers(&format!(
        "warehouse:\n  postgres: {{ url: \"{}\" }}\n",
        wh.url()
    ))
    .await;
}

#[test]
fn a_dbt_project_runs_from_profiles_yml_with_dbt_like_output() {
    let dir = temp_dir();
    let files: &[(&str, &str)] = &[
        ("dbt_project.yml", "name: p\nprofile: p\n"),
        (
            "profiles.yml",
            "p:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: \"{{ env_var('WEIR_TEST_DUCK') }}\"\n      schema: main\n      threads: 2\n",
        ),
        ("models/a.sql", "select 1 as id"),
        ("models/b.sql", "select id from {{ ref('a') }} where id > {{ var('min', 0) }}"),
        ("models/schema.yml", "version: 2\nmodels:\n  - name: b\n    columns:\n      - name: id\n        tests: [unique]\n"),
    ];
    for (p, t) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, t).unwrap();
    }
    let duck = dir.path().join("out.duckdb").display().to_string();
    let env = [("WEIR_TEST_DUCK", duck.as_str())];
    let args = [
        "transform",
        "build",
        "--project-dir",
        ".",
        "--profiles-dir",
        ".",
    ];
    let out = weir_env(&args, dir.path(), &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("OK table model main.a") || all.contains("OK view model main.a"),
        "{all}"
    );
    assert!(all.contains("PASS test unique_b_id"), "{all}");
    assert!(
        all.contains("Done. PASS=3 WARN=0 ERROR=0 SKIP=0 TOTAL=3"),
        "{all}"
    );
    assert!(std::path::Path::new(&duck).exists());
    // A model that fails: exit 1, the model named with its file.
    std::fs::write(dir.path().join("models/a.sql"), "select nope from nowhere").unwrap();
    let out = weir_env(&args, dir.path(), &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("a (models/a.sql)"), "{}", text(&out));
    assert!(
        text(&out).contains("SKIP view model main.b"),
        "{}",
        text(&out)
    );
    // A Jinja error is a project error, before anything runs: exit 2 with file and line.
    std::fs::write(dir.path().join("models/a.sql"), "select 1\n{{ ref( }}").unwrap();
    let out = weir_env(&args, dir.path(), &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("models/a.sql:2"), "{}", text(&out));
}
