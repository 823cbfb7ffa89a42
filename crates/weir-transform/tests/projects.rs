//! Fixture dbt projects built on a real DuckDB file and a real PostgreSQL
//! database: materialisations, ephemeral CTEs, incremental merges, seeds,
//! generic/custom/singular tests, vars, macros, selection, failures that skip
//! descendants, and every project error reported at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Map;
use weir_config::SecretUrl;
use weir_testkit::{temp_dir, TestDb};
use weir_transform::{
    execute, load_project, select, Command, ProjectOptions, ResourceType, RunOptions, RunSummary,
    Selector, Status, Target,
};
use weir_warehouse::{DuckDb, Postgres, Warehouse};

/// Write `files` (path → text) under `dir`.
fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

const SHOP: &[(&str, &str)] = &[
    (
        "dbt_project.yml",
        "name: shop\nprofile: shop\nvars:\n  min_amount: 0\nmodels:\n  shop:\n    staging:\n      +materialized: view\n    marts:\n      +materialized: table\n      +schema: marts\n      +tags: [mart]\n",
    ),
    ("macros/cents.sql", "{% macro cents(col) %}({{ col }} * 100){% endmacro %}\n"),
    (
        "tests/generic/is_positive.sql",
        "{% test is_positive(model, column_name) %}\nselect * from {{ model }} where {{ column_name }} <= 0\n{% endtest %}\n",
    ),
    ("seeds/customers.csv", "id,name,signup_date,vip\n1,Ana,2024-01-05,true\n2,Bo,2024-02-10,false\n3,Cy,,false\n"),
    (
        "models/sources.yml",
        "version: 2\nsources:\n  - name: app\n    schema: \"{{ var('app_schema', 'app') }}\"\n    tables:\n      - name: orders\n        columns:\n          - name: id\n            tests: [unique]\n",
    ),
    (
        "models/staging/stg_orders.sql",
        "select id, customer_id, amount, {{ cents('amount') }} as amount_cents\nfrom {{ source('app', 'orders') }}\nwhere amount >= {{ var('min_amount') }}\n",
    ),
    (
        "models/staging/eph_big_orders.sql",
        "{{ config(materialized='ephemeral') }}\nselect * from {{ ref('stg_orders') }} where amount > 100\n",
    ),
    (
        "models/marts/customer_totals.sql",
        "with totals as (\n  select customer_id, sum(amount) as total from {{ ref('stg_orders') }} group by customer_id\n)\nselect c.id, c.name, coalesce(t.total, 0) as total,\n  (select count(*) from {{ ref('eph_big_orders') }} b where b.customer_id = c.id) as big_orders\nfrom {{ ref('customers') }} c left join totals t on t.customer_id = c.id\n",
    ),
    (
        "models/marts/orders_incr.sql",
        "{{ config(materialized='incremental', unique_key='id', tags=['incr']) }}\nselect id, amount from {{ ref('stg_orders') }}\n{% if is_incremental() %}where id >= (select max(id) - 1 from {{ this }}){% endif %}\n",
    ),
    (
        "models/marts/schema.yml",
        "version: 2\nmodels:\n  - name: customer_totals\n    columns:\n      - name: id\n        tests:\n          - unique\n          - not_null\n          - relationships: {to: ref('customers'), field: id}\n      - name: name\n        tests:\n          - accepted_values: {values: [Ana, Bo, Cy]}\n      - name: total\n        tests:\n          - is_positive:\n              config: {severity: warn}\n  - name: orders_incr\n    columns:\n      - name: amount\n        tests: [is_positive]\n",
    ),
    (
        "models/marts/pivot.sql",
        "{% set q %}select distinct customer_id from {{ ref('stg_orders') }} order by 1{% endset %}\n{% set res = run_query(q) %}\n{% if execute %}{% set ids = res.columns[0].values() %}{% else %}{% set ids = [] %}{% endif %}\nselect\n{%- for i in ids %}\n  sum(case when customer_id = {{ i }} then amount else 0 end) as c{{ i }},\n{%- endfor %}\n  count(*) as n\nfrom {{ ref('stg_orders') }}\n",
    ),
    (
        "tests/totals_match.sql",
        "select * from (select (select sum(total) from {{ ref('customer_totals') }}) as a, (select sum(amount) from {{ ref('stg_orders') }}) as b) t where a <> b\n",
    ),
];

fn options(kind: &str) -> ProjectOptions {
    ProjectOptions {
        target: Target {
            name: "test".into(),
            kind: kind.into(),
            schema: "analytics".into(),
            database: String::new(),
            threads: 4,
        },
        vars: Map::new(),
        full_refresh: false,
    }
}

async fn run(
    dir: &Path,
    kind: &str,
    wh: &Arc<dyn Warehouse>,
    command: Command,
    select_: &[&str],
) -> RunSummary {
    let project = load_project(dir, &options(kind)).unwrap_or_else(|p| panic!("{p}"));
    let opts = RunOptions {
        command,
        selector: Selector {
            select: select_.iter().map(|s| (*s).to_owned()).collect(),
            exclude: vec![],
        },
        threads: 4,
        fail_fast: false,
    };
    execute(Arc::new(project), wh.clone(), &opts, &|_, _, _| {})
        .await
        .unwrap()
}

fn statuses(s: &RunSummary) -> BTreeMap<String, &'static str> {
    s.results
        .iter()
        .map(|r| (r.name.clone(), r.status.as_str()))
        .collect()
}

async fn scalar(wh: &Arc<dyn Warehouse>, sql: &str) -> String {
    let r = wh.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let b = &r.batches[0];
    let text =
        arrow::util::display::ArrayFormatter::try_new(b.column(0).as_ref(), &Default::default())
            .unwrap()
            .value(0)
            .to_string();
    text
}

async fn shop(kind: &str, wh: Arc<dyn Warehouse>) {
    let dir = temp_dir();
    write(dir.path(), SHOP);
    wh.execute_atomic(&[
        "CREATE SCHEMA IF NOT EXISTS app".into(),
        "CREATE TABLE app.orders (id integer, customer_id integer, amount integer)".into(),
        "INSERT INTO app.orders VALUES (1, 1, 50), (2, 1, 150), (3, 2, 20)".into(),
    ])
    .await
    .unwrap();

    let s = run(dir.path(), kind, &wh, Command::Build, &[]).await;
    let st = statuses(&s);
    assert!(!s.failed(), "{st:?}");
    assert_eq!(st["customers"], "success");
    assert_eq!(st["stg_orders"], "success");
    assert_eq!(st["customer_totals"], "success");
    assert_eq!(st["totals_match"], "pass");
    // run_query at compile time: one column per customer with orders.
    assert_eq!(
        scalar(&wh, "SELECT c1 + c2 FROM analytics_marts.pivot").await,
        "220"
    );
    // Ephemeral models build nothing; they are reported as done, not skipped.
    assert_eq!(st["eph_big_orders"], "success");
    // Cy has no orders: total 0 is not positive, a warning by config.
    assert_eq!(st["is_positive_customer_totals_total"], "warn");
    assert_eq!(
        s.results
            .iter()
            .filter(|r| r.resource_type == ResourceType::Test)
            .count(),
        8
    );

    // Default schema naming: marts go to `<target schema>_marts`; seeds are typed.
    assert_eq!(
        scalar(&wh, "SELECT count(*) FROM analytics.stg_orders").await,
        "3"
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT big_orders FROM analytics_marts.customer_totals WHERE id = 1"
        )
        .await,
        "1"
    );
    assert_eq!(scalar(&wh, "SELECT count(*) FROM analytics.customers WHERE vip AND signup_date = DATE '2024-01-05'").await, "1");
    // The ephemeral model is inlined as a CTE in front of the model's own.
    let compiled = std::fs::read_to_string(
        dir.path()
            .join("target/compiled/shop/models/marts/customer_totals.sql"),
    )
    .unwrap();
    assert!(
        compiled.starts_with("with __dbt__cte__eph_big_orders as ("),
        "{compiled}"
    );
    assert!(compiled.contains("\ntotals as ("), "{compiled}");
    assert!(
        compiled.contains("\"analytics\".\"customers\""),
        "{compiled}"
    );
    // Every compiled file, and each node's status, against reviewed golden files
    // (`UPDATE_EXPECT=1` rewrites them); DuckDB and PostgreSQL share them.
    let mut compiled_all = String::new();
    let compiled_dir = dir.path().join("target/compiled/shop");
    let mut files = Vec::new();
    let mut stack = vec![compiled_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    for f in files {
        compiled_all.push_str(&format!(
            "-- {}\n{}\n",
            f.strip_prefix(&compiled_dir).unwrap().display(),
            std::fs::read_to_string(&f).unwrap().trim_end()
        ));
    }
    check_golden("shop_compiled.sql", &compiled_all);
    let statuses_text: String = st.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    check_golden("shop_build_statuses.txt", &statuses_text);
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        results["results"].as_array().unwrap().len(),
        s.results.len()
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("target/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["nodes"]["model.shop.customer_totals"]["depends_on"]["nodes"],
        serde_json::json!([
            "model.shop.eph_big_orders",
            "model.shop.stg_orders",
            "seed.shop.customers"
        ])
    );
    assert_eq!(
        manifest["nodes"]["model.shop.customer_totals"]["schema"],
        "analytics_marts"
    );
    assert!(manifest["child_map"]["source.shop.app.orders"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("model.shop.stg_orders")));

    // Incremental: a changed row and a new one; only the recent ids are re-read and merged.
    wh.execute_atomic(&[
        "UPDATE app.orders SET amount = 160 WHERE id = 2".into(),
        "INSERT INTO app.orders VALUES (4, 3, 70)".into(),
    ])
    .await
    .unwrap();
    let s = run(dir.path(), kind, &wh, Command::Run, &["tag:incr"]).await;
    assert_eq!(statuses(&s).keys().collect::<Vec<_>>(), vec!["orders_incr"]);
    assert_eq!(
        scalar(&wh, "SELECT count(*) FROM analytics_marts.orders_incr").await,
        "4"
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT amount FROM analytics_marts.orders_incr WHERE id = 2"
        )
        .await,
        "160"
    );

    // Selection.
    let project = load_project(dir.path(), &options(kind)).unwrap();
    let names = |sel: &[&str], exclude: &[&str]| -> Vec<String> {
        let s = Selector {
            select: sel.iter().map(|s| (*s).to_owned()).collect(),
            exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
        };
        select(&project, &s, &[ResourceType::Model, ResourceType::Seed])
            .unwrap()
            .into_iter()
            .map(|id| id.rsplit('.').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&["+customer_totals"], &[]),
        [
            "customer_totals",
            "eph_big_orders",
            "stg_orders",
            "customers"
        ]
    );
    assert_eq!(
        names(&["stg_orders+"], &["tag:incr"]),
        ["customer_totals", "eph_big_orders", "pivot", "stg_orders"]
    );
    assert_eq!(
        names(&["tag:mart,path:models/marts/orders_incr.sql"], &[]),
        ["orders_incr"]
    );
    assert_eq!(names(&["source:app+1"], &[]), ["stg_orders"]);
    assert_eq!(names(&["resource_type:seed"], &[]), ["customers"]);
}

// run_query blocks on the warehouse from inside a render: a multi-threaded runtime, as the CLI has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_builds_on_duckdb() {
    let dir = temp_dir();
    let wh: Arc<dyn Warehouse> = Arc::new(DuckDb::open(&dir.path().join("w.duckdb")).unwrap());
    shop("duckdb", wh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_builds_on_postgres() {
    let db = TestDb::new().await;
    let wh: Arc<dyn Warehouse> =
        Arc::new(Postgres::connect(&SecretUrl::new(db.url())).await.unwrap());
    shop("postgres", wh).await;
}

#[tokio::test]
async fn a_failing_test_skips_the_models_below_it() {
    let dir = temp_dir();
    write(
        dir.path(),
        &[
            ("dbt_project.yml", "name: f\n"),
            ("models/a.sql", "select 1 as x union all select null"),
            ("models/b.sql", "select * from {{ ref('a') }}"),
            ("models/c.sql", "select 2 as y"),
            ("models/schema.yml", "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: x\n        tests: [not_null]\n"),
        ],
    );
    let wh: Arc<dyn Warehouse> = Arc::new(DuckDb::open(&dir.path().join("w.duckdb")).unwrap());
    let s = run(dir.path(), "duckdb", &wh, Command::Build, &[]).await;
    let st = statuses(&s);
    assert_eq!(st["a"], "success");
    assert_eq!(st["not_null_a_x"], "fail");
    assert_eq!(st["b"], "skipped");
    assert_eq!(st["c"], "success");
    assert!(s.failed());
    let r = s.results.iter().find(|r| r.name == "not_null_a_x").unwrap();
    assert_eq!(r.failures, Some(1));
    assert_eq!(r.status, Status::Fail);
}

#[test]
fn every_project_error_is_reported_at_once() {
    let dir = temp_dir();
    write(
        dir.path(),
        &[
            ("dbt_project.yml", "name: broken\n"),
            ("models/a.sql", "select * from {{ ref('b') }}"),
            ("models/b.sql", "select * from {{ ref('a') }}"),
            ("models/c.sql", "select * from {{ ref('nowhere') }}"),
            ("models/sub/a.sql", "select 1"),
            (
                "models/d.sql",
                "select 1\n-- fine\n{{ undefined_macro(1) }}",
            ),
            ("models/e.sql", "select {{ var('not_set') }}"),
        ],
    );
    let problems = load_project(dir.path(), &options("duckdb"))
        .unwrap_err()
        .to_string();
    for expected in [
        "c (models/c.sql): ref('nowhere') names no model or seed",
        "a (models/sub/a.sql): the name is also used by models/a.sql",
        "d (models/d.sql:3)",
        "e (models/e.sql:1)",
        "Required var 'not_set'",
    ] {
        assert!(
            problems.contains(expected),
            "{expected:?} not in:\n{problems}"
        );
    }
    // The cycle is reported with its path.
    let dir2 = temp_dir();
    write(
        dir2.path(),
        &[
            ("dbt_project.yml", "name: cyc\n"),
            ("models/a.sql", "select * from {{ ref('b') }}"),
            ("models/b.sql", "select * from {{ ref('a') }}"),
        ],
    );
    let problems = load_project(dir2.path(), &options("duckdb"))
        .unwrap_err()
        .to_string();
    assert!(
        problems.contains("dependency cycle: a -> b -> a"),
        "{problems}"
    );
}

fn check_golden(name: &str, got: &str) {
    weir_testkit::check_golden(env!("CARGO_MANIFEST_DIR"), name, got);
}

// Regression: a relationships test from `a` to its child `b` once made `b`
// wait for a test that waits for `b`; build ended with `b` never run.
#[tokio::test]
async fn a_relationships_test_to_a_child_does_not_stall_build() {
    let dir = temp_dir();
    write(
        dir.path(),
        &[
            ("dbt_project.yml", "name: r\n"),
            ("models/a.sql", "select 1 as k"),
            ("models/b.sql", "select k from {{ ref('a') }} union all select 2"),
            ("models/c.sql", "select * from {{ ref('b') }}"),
            (
                "models/schema.yml",
                "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: k\n        tests:\n          - relationships: {to: ref('b'), field: k}\n",
            ),
        ],
    );
    let wh: Arc<dyn Warehouse> = Arc::new(DuckDb::open(&dir.path().join("w.duckdb")).unwrap());
    let s = run(dir.path(), "duckdb", &wh, Command::Build, &[]).await;
    let st = statuses(&s);
    assert_eq!(s.results.len(), 4, "{st:?}");
    assert_eq!(st["b"], "success");
    assert_eq!(st["c"], "success");
    assert_eq!(st["relationships_a_k__k__ref_b_"], "pass");
}

/// Regression (B.10): on PostgreSQL a table model named with exactly 63
/// characters could never build: `{name}__weir_tmp` was cut back to the
/// model's own name. A name past 63 bytes is a clear error, not a table
/// built under another name.
#[tokio::test]
async fn models_with_63_character_names_build_on_postgres() {
    let db = TestDb::new().await;
    let wh: Arc<dyn Warehouse> =
        Arc::new(Postgres::connect(&SecretUrl::new(db.url())).await.unwrap());
    let dir = temp_dir();
    let (m63, m64) = ("m".repeat(63), format!("{}x", "m".repeat(63)));
    write(
        dir.path(),
        &[
            ("dbt_project.yml", "name: long\nprofile: long\nmodels:\n  long:\n    +materialized: table\n"),
            (&format!("models/{m63}.sql"), "select 1 as id"),
            (&format!("models/{m64}.sql"), "select 2 as id"),
            ("models/incr_x.sql", "{{ config(materialized='incremental', alias='i' ~ 'n' * 62, unique_key='id') }}\nselect 3 as id"),
        ],
    );
    for round in 0..2 {
        let s = run(dir.path(), "postgres", &wh, Command::Build, &[]).await;
        let st = statuses(&s);
        assert_eq!(st[&m63], "success", "round {round}: {:?}", s.results);
        assert_eq!(st["incr_x"], "success", "round {round}: {:?}", s.results);
        assert_eq!(st[&m64], "error");
        let err = &s.results.iter().find(|r| r.name == m64).unwrap().message;
        assert!(err.contains("is 64 bytes, longer than the 63"), "{err}");
    }
    assert_eq!(
        scalar(&wh, &format!("SELECT id FROM analytics.{m63}")).await,
        "1"
    );
    assert_eq!(
        scalar(
            &wh,
            &format!("SELECT count(*) FROM analytics.i{}", "n".repeat(62))
        )
        .await,
        "1"
    );
}

/// Regression (C.11): time-zone functions on `TIMESTAMP WITH TIME ZONE` in
/// a model asked DuckDB to download the `icu` extension.
#[tokio::test]
async fn models_use_time_zones_on_duckdb() {
    let dir = temp_dir();
    let wh: Arc<dyn Warehouse> = Arc::new(DuckDb::open(&dir.path().join("w.duckdb")).unwrap());
    write(
        dir.path(),
        &[
            ("dbt_project.yml", "name: tz\nprofile: tz\nmodels:\n  tz:\n    +materialized: table\n"),
            (
                "models/local_days.sql",
                "select date_trunc('day', ts AT TIME ZONE 'America/Sao_Paulo') as day, extract(hour from ts AT TIME ZONE 'America/Sao_Paulo') as hour, cast(ts AT TIME ZONE 'America/Sao_Paulo' as date) as d\nfrom (select TIMESTAMPTZ '2026-03-01 02:30:00+00' as ts) t",
            ),
        ],
    );
    let s = run(dir.path(), "duckdb", &wh, Command::Build, &[]).await;
    assert!(!s.failed(), "{:?}", s.results);
    assert_eq!(
        scalar(
            &wh,
            "SELECT CAST(d AS VARCHAR) || ' ' || CAST(hour AS VARCHAR) FROM analytics.local_days"
        )
        .await,
        "2026-02-28 23"
    );
}
