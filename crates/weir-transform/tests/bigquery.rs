//! A dbt project built on BigQuery's API (bqemulator, from PyPI, started
//! here): seeds, views, tables, an incremental merge and generic tests in
//! BigQuery's SQL dialect.

use std::path::Path;
use std::sync::Arc;

use serde_json::Map;
use weir_config::BigQueryConfig;
use weir_testkit::{start_bqemulator, temp_dir};
use weir_transform::{
    execute, load_project, Command, ProjectOptions, RunOptions, RunSummary, Selector, Target,
};
use weir_warehouse::{BigQuery, Warehouse};

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

async fn build(dir: &Path, wh: &Arc<dyn Warehouse>, vars: &str) -> RunSummary {
    let vars = weir_transform::parse_yaml(Path::new("--vars"), vars).unwrap();
    let opts = ProjectOptions {
        target: Target {
            name: "test".into(),
            kind: "bigquery".into(),
            schema: "analytics".into(),
            database: "test".into(),
            threads: 2,
        },
        vars: vars.as_object().cloned().unwrap_or_else(Map::new),
        full_refresh: false,
    };
    let project = load_project(dir, &opts).unwrap_or_else(|p| panic!("{p}"));
    let run = RunOptions {
        command: Command::Build,
        selector: Selector {
            select: vec![],
            exclude: vec![],
        },
        threads: 2,
        fail_fast: false,
    };
    execute(Arc::new(project), wh.clone(), &run, &|_, _, _| {})
        .await
        .unwrap()
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

fn statuses(s: &RunSummary) -> Vec<String> {
    let mut v: Vec<String> = s
        .results
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.status.as_str(), r.message))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_builds_on_bigquery() {
    let root = temp_dir();
    let emu = start_bqemulator(root.path());
    let cfg = BigQueryConfig {
        project: "test".to_owned(),
        location: None,
        credentials: None,
        endpoint: Some(format!("http://127.0.0.1:{}", emu.port)),
        lake_uri: None,
    };
    let wh: Arc<dyn Warehouse> = Arc::new(
        BigQuery::new(&cfg, &format!("file://{}", root.path().display()))
            .await
            .unwrap(),
    );
    let dir = root.path().join("project");
    write(
        &dir,
        &[
            ("dbt_project.yml", "name: bq\nmodels:\n  bq:\n    +materialized: view\n"),
            ("seeds/people.csv", "id,name,score\n1,Ana,10\n2,Bo,20\n3,Cy,30\n"),
            ("models/stg_people.sql", "select id, name, score from {{ ref('people') }}\n"),
            (
                "models/top.sql",
                "{{ config(materialized=var('top_as', 'table')) }}\nselect name, score from {{ ref('stg_people') }} where score >= 20\n",
            ),
            (
                "models/scores.sql",
                "{{ config(materialized='incremental', unique_key='id') }}\nselect id, score + {{ var('bump', 0) }} as score from {{ ref('stg_people') }}\n{% if is_incremental() %}where id >= 2{% endif %}\n",
            ),
            (
                "models/schema.yml",
                "version: 2\nmodels:\n  - name: stg_people\n    columns:\n      - name: id\n        tests: [unique, not_null]\n      - name: name\n        tests:\n          - accepted_values: {values: [Ana, Bo, Cy]}\n  - name: scores\n    columns:\n      - name: id\n        tests:\n          - relationships: {to: ref('people'), field: id}\n",
            ),
        ],
    );

    let s = build(&dir, &wh, "{}").await;
    assert!(!s.failed(), "{:#?}", statuses(&s));
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM `analytics`.`top`").await,
        "2"
    );
    assert_eq!(
        scalar(&wh, "SELECT SUM(score) FROM `analytics`.`scores`").await,
        "60"
    );
    // The incremental model merges on its key (BigQuery's default strategy):
    // ids 2 and 3 are updated, id 1 keeps its score; `top` becomes a view.
    let s = build(&dir, &wh, "{bump: 5, top_as: view}").await;
    assert!(!s.failed(), "{:#?}", statuses(&s));
    assert!(
        statuses(&s).contains(&"scores success INSERT (merge)".to_owned()),
        "{:#?}",
        statuses(&s)
    );
    assert_eq!(
        scalar(&wh, "SELECT SUM(score) FROM `analytics`.`scores`").await,
        "70"
    );
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM `analytics`.`scores`").await,
        "3"
    );
    assert_eq!(
        wh.relation_kind("analytics", "top").await.unwrap(),
        Some(weir_warehouse::RelationKind::View)
    );
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM `analytics`.`top`").await,
        "2"
    );
}
