//! The pipeline's DAG as built from weir.yml: the seed's shape for the Olist
//! project (golden file), group and per-task settings, and the errors a
//! broken DAG gives before anything runs.

use std::path::Path;

use weir_config::Project;
use weir_orchestrate::dag::{RunParams, TaskKind};
use weir_orchestrate::pipeline::Pipeline;

const TABLES: &str = "[olist_customers, olist_geolocation, olist_order_items, olist_order_payments, olist_order_reviews, olist_orders, olist_products, olist_sellers, product_category_name_translation]";

fn olist_yml(orchestrate: &str) -> String {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/olist/transform");
    format!(
        "name: olist\nsource:\n  postgres: {{ url: postgres://nobody@127.0.0.1:1/olist }}\n  tables: {TABLES}\n  jobs: 3\ntransform:\n  project: {}\n{orchestrate}",
        models.canonicalize().unwrap().display()
    )
}

async fn pipeline(yml: &str) -> Result<Pipeline, String> {
    let dir = weir_testkit::project(yml);
    let project = Project::load(dir.path()).map_err(|e| e.to_string())?;
    Pipeline::load(project).await.map_err(|e| e.to_string())
}

async fn error(yml: &str) -> String {
    match pipeline(yml).await {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn the_olist_dag_has_the_seed_shape() {
    let p = pipeline(&olist_yml(
        "orchestrate:\n  defaults: { retries: 3, retry_delay: 10s, timeout: 30m }\n  load: { retries: 1 }\n  overrides:\n    extract.olist_geolocation: { timeout: 2h }\n    \"test.*\": { retries: 0 }\n  tasks:\n    - name: refresh_dashboards\n      shell: echo refreshed\n      depends_on: [transform]\n",
    ))
    .await
    .unwrap();
    let mut out = String::new();
    for t in &p.dag.tasks {
        let mut deps = t.depends_on.clone();
        deps.sort();
        let shown = if deps.len() > 4 {
            format!("{} tasks", deps.len())
        } else {
            deps.join(", ")
        };
        out.push_str(&format!(
            "{} <- [{}] retries={} timeout={:?} pool={}\n",
            t.id,
            shown,
            t.retry.retries,
            t.retry.timeout,
            t.pool.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!("pools: {:?}\n", p.dag.pools));
    weir_testkit::check_golden(env!("CARGO_MANIFEST_DIR"), "olist_dag.txt", &out);
    // Every model and test is a task; sources wait for their own table's load.
    let nodes = p
        .dag
        .tasks
        .iter()
        .filter(|t| matches!(t.kind, TaskKind::Node { .. }))
        .count();
    assert_eq!(nodes, 78);
    let stg = &p.dag.tasks[p
        .dag
        .get("test.olist.source_unique_raw_olist_orders_order_id")
        .unwrap()];
    assert!(
        stg.depends_on.contains(&"load.olist_orders".to_owned()),
        "{:?}",
        stg.depends_on
    );
}

#[tokio::test]
async fn a_single_transform_task_when_asked() {
    let p = pipeline(&olist_yml("orchestrate:\n  transform_tasks: single\n"))
        .await
        .unwrap();
    let ids: Vec<&str> = p.dag.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 1 + 9 * 2 + 1 + 1);
    let t = &p.dag.tasks[p.dag.get("transform").unwrap()];
    assert_eq!(t.depends_on.len(), 9, "the transform waits for every load");
}

#[tokio::test]
async fn a_broken_dag_is_reported_before_anything_runs() {
    let err = error(&olist_yml(
        "orchestrate:\n  overrides:\n    extract.olist_geolocaton: { retries: 9 }\n  tasks:\n    - { name: a, empty: true, depends_on: [b] }\n    - { name: b, empty: true, depends_on: [a] }\n    - { name: c, empty: true, depends_on: [nope] }\n",
    ))
    .await;
    assert!(
        err.contains("weir.yml:10:31: orchestrate.overrides.extract.olist_geolocaton: names no task of the pipeline"),
        "{err}"
    );
    let err = error(&olist_yml(
        "orchestrate:\n  tasks:\n    - { name: a, empty: true, depends_on: [b] }\n    - { name: b, empty: true, depends_on: [a] }\n    - { name: c, empty: true, depends_on: [nope] }\n",
    ))
    .await;
    assert!(
        err.contains("task `c` depends on `nope`, which is not a task"),
        "{err}"
    );
    let err = error(&olist_yml(
        "orchestrate:\n  tasks:\n    - { name: a, empty: true, depends_on: [b] }\n    - { name: b, empty: true, depends_on: [a] }\n",
    ))
    .await;
    assert!(err.contains("dependency cycle: "), "{err}");
}

#[tokio::test]
async fn a_run_with_parameters_works_on_part_of_the_dag() {
    let p = pipeline(&olist_yml("")).await.unwrap();
    let whole = p.dag_for(&RunParams::default()).unwrap();
    assert_eq!(whole.tasks.len(), p.dag.tasks.len());

    // Two tables and the models under one final model, with their tests.
    let params = RunParams::new(
        true,
        ["olist_orders,olist_customers"],
        Some("+fct_orders_by_state"),
    );
    let part = p.dag_for(&params).unwrap();
    assert_eq!(part.params, params);
    let ids: Vec<&str> = part.tasks.iter().map(|t| t.id.as_str()).collect();
    for id in [
        "start",
        "extract.olist_orders",
        "load.olist_customers",
        "model.olist.stg_orders",
        "model.olist.int_orders_by_state",
        "model.olist.fct_orders_by_state",
        "test.olist.unique_fct_orders_by_state_state",
        "transform",
        "end",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    for id in [
        "extract.olist_products",
        "load.olist_sellers",
        "model.olist.fct_sales_by_category",
        "model.olist.int_delivery_times",
    ] {
        assert!(!ids.contains(&id), "{id} should not run: {ids:?}");
    }
    // A model whose upstream load was left out still waits for `start`'s
    // successors it kept; one whose load was kept waits for it.
    let stg = &part.tasks[part.get("model.olist.stg_orders").unwrap()];
    assert!(
        part.tasks
            .iter()
            .filter(|t| t.depends_on.is_empty())
            .all(|t| t.id == "start"),
        "only `start` is a root"
    );
    assert!(
        stg.depends_on.iter().all(|d| part.get(d).is_some()),
        "{:?}",
        stg.depends_on
    );
    // The part survives the store's round trip with its parameters.
    let back = weir_orchestrate::dag::Dag::from_json(&part.to_json()).unwrap();
    assert_eq!(back.params, params);
    let sorted = |d: &weir_orchestrate::dag::Dag| {
        let mut t = d.tasks.clone();
        t.sort_by(|a, b| a.id.cmp(&b.id));
        t
    };
    assert_eq!(sorted(&back), sorted(&part));

    // Mistakes are refused before any run exists.
    let err = p
        .dag_for(&RunParams::new(false, ["olist_order"], None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no source table olist_order in the pipeline"),
        "{err}"
    );
    let err = p
        .dag_for(&RunParams::new(false, [], Some("nothing_like_this")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing_like_this"), "{err}");
}
