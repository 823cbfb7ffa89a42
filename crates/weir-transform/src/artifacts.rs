//! dbt's artifacts: `target/manifest.json` (schema v12) and
//! `target/run_results.json` (schema v6), so tools that read dbt's read ours.

use serde_json::{json, Value};

use crate::graph::children;
use crate::project::{Project, ResourceType};
use crate::run::{dialect, target_file, write_file, Command, RunSummary};

/// `target/run_results.json` in dbt's shape (schema v6).
pub(crate) fn write_run_results(project: &Project, s: &RunSummary, command: Command) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let results: Vec<Value> = s
        .results
        .iter()
        .map(|r| {
            json!({
                "unique_id": r.unique_id,
                "status": r.status.as_str(),
                "timing": [],
                "thread_id": "Thread-1",
                "execution_time": r.seconds,
                "adapter_response": {},
                "message": r.message,
                "failures": r.failures,
                // Quoted, as dbt writes it; tests and ephemerals have none.
                "relation_name": project
                    .nodes
                    .get(&r.unique_id)
                    .filter(|n| n.resource_type != ResourceType::Test && n.materialized() != "ephemeral")
                    .map(|n| dialect(project).relation(&n.schema, &n.alias)),
                "compiled": true,
            })
        })
        .collect();
    let doc = json!({
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
            "dbt_version": "1.10.0",
            "generated_at": now,
            "invocation_id": format!("weir-{now}"),
            "env": {},
        },
        "results": results,
        "elapsed_time": s.seconds,
        "args": { "which": format!("{command:?}").to_lowercase() },
    });
    write_file(
        &project.target_path.join("run_results.json"),
        &serde_json::to_string_pretty(&doc).unwrap_or_default(),
    );
}

/// Where the node's compiled SQL is written, from the project folder (dbt's
/// `compiled_path`).
fn compiled_path(project: &Project, n: &crate::project::Node) -> String {
    let f = target_file(project, "compiled", n);
    f.strip_prefix(&project.dir)
        .unwrap_or(&f)
        .display()
        .to_string()
}

/// A node's config with dbt's `materialized` for seeds and tests, which
/// projects rarely set.
fn config_with_defaults(n: &crate::project::Node) -> Value {
    let mut c = n.config.clone();
    if !c.contains_key("materialized") {
        let m = match n.resource_type {
            ResourceType::Seed => "seed",
            ResourceType::Test => "test",
            ResourceType::Model => "view",
        };
        c.insert("materialized".into(), Value::String(m.into()));
    }
    Value::Object(c)
}

/// `target/manifest.json` in dbt's shape (schema v12): nodes, sources, parent
/// and child maps — what tools that read dbt artifacts look at first.
pub fn write_manifest(project: &Project) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let d = dialect(project);
    let mut nodes = serde_json::Map::new();
    let mut parent_map = serde_json::Map::new();
    let kids = children(&project.nodes);
    let mut child_map = serde_json::Map::new();
    for n in project.nodes.values() {
        let relation = match n.resource_type {
            ResourceType::Test => Value::Null,
            _ if n.materialized() == "ephemeral" => Value::Null,
            _ => Value::String(d.relation(&n.schema, &n.alias)),
        };
        nodes.insert(
            n.unique_id.clone(),
            json!({
                "unique_id": n.unique_id,
                "name": n.name,
                "resource_type": n.resource_type.as_str(),
                "package_name": project.name,
                "path": n.path,
                "original_file_path": n.path,
                "fqn": n.fqn,
                "database": project.target.database,
                "schema": n.schema,
                "alias": n.alias,
                "relation_name": relation,
                "config": config_with_defaults(n),
                "tags": n.tags(),
                "raw_code": n.raw_sql,
                "description": n.description,
                "columns": n.columns.iter().map(|c| (c.name.clone(), json!({
                    "name": c.name,
                    "description": c.description,
                    "data_type": c.data_type,
                    "meta": {},
                    "tags": [],
                    "constraints": [],
                    "quote": null,
                }))).collect::<serde_json::Map<String, Value>>(),
                "compiled_path": (n.resource_type != ResourceType::Seed).then(|| compiled_path(project, n)),
                "language": "sql",
                "depends_on": { "nodes": n.depends_on, "macros": [] },
                "test_metadata": n.generic.as_ref().map(|g| json!({
                    "name": g.name,
                    "kwargs": { "column_name": g.column, "model": g.attached, "args": g.args },
                })),
            }),
        );
        parent_map.insert(n.unique_id.clone(), json!(n.depends_on));
        child_map.insert(
            n.unique_id.clone(),
            json!(kids.get(&n.unique_id).cloned().unwrap_or_default()),
        );
    }
    let mut sources = serde_json::Map::new();
    for s in project.sources.values() {
        sources.insert(
            s.unique_id.clone(),
            json!({
                "unique_id": s.unique_id,
                "name": s.name,
                "source_name": s.source_name,
                "resource_type": "source",
                "package_name": project.name,
                "schema": s.schema,
                "identifier": s.identifier,
                "relation_name": d.relation(&s.schema, &s.identifier),
                "path": s.path,
                "original_file_path": s.path,
                "fqn": [project.name.clone(), s.source_name.clone(), s.name.clone()],
            }),
        );
        child_map.insert(
            s.unique_id.clone(),
            json!(kids.get(&s.unique_id).cloned().unwrap_or_default()),
        );
        parent_map.insert(s.unique_id.clone(), json!([]));
    }
    let doc = json!({
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
            "dbt_version": "1.10.0",
            "generated_at": now,
            "invocation_id": format!("weir-{now}"),
            "project_name": project.name,
            "adapter_type": project.target.kind,
            "env": {},
        },
        "nodes": nodes,
        "sources": sources,
        "macros": {},
        "docs": {},
        "exposures": {},
        "metrics": {},
        "groups": {},
        "selectors": {},
        "disabled": {},
        "parent_map": parent_map,
        "child_map": child_map,
        "group_map": {},
        "saved_queries": {},
        "semantic_models": {},
        "unit_tests": {},
    });
    write_file(
        &project.target_path.join("manifest.json"),
        &serde_json::to_string_pretty(&doc).unwrap_or_default(),
    );
}
