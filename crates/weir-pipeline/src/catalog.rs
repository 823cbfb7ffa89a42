//! What the pipeline builds and what it reads, for people to browse: the
//! dbt nodes with their SQL, columns, tests, lineage and latest states
//! ([`models`], [`model`]), and the source tables with their extracts, lake
//! runs and the loads that read them ([`sources`]).
//!
//! Node definitions come from the dbt project as this process loaded it
//! (what `target/manifest.json` holds), compiled SQL from the artifacts the
//! last build wrote (`target/compiled/…`), states from the run history (a
//! task per node), else from `target/run_results.json` (a pipeline that runs
//! dbt as one task). Every read is bounded: the last [`RECENT_RUNS`] runs of
//! the DAG, the last [`LAKE_RUNS`] lake manifests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use weir_lake::{Lake, Manifest};
use weir_orchestrate::pipeline::Pipeline;
use weir_orchestrate::store::{ts, Store, TaskHistory};
use weir_transform::{Project, ResourceType};

use crate::{LifecycleError, Workspace};

/// How many of the DAG's latest runs the latest states are looked for in.
pub const RECENT_RUNS: usize = 20;
/// How many of the lake's latest runs the Sources page reads.
pub const LAKE_RUNS: usize = 200;
/// Compiled SQL shown at most (a generated model can be huge).
const MAX_SQL_BYTES: u64 = 512 * 1024;

/// The latest state of a node or a table's task.
#[derive(Debug, Clone, Serialize)]
pub struct Latest {
    /// A task state (`success`, `failed`, …) or a dbt status (`pass`, `error`).
    pub state: String,
    /// The run it was in (none when read from `run_results.json`).
    pub run_id: Option<i64>,
    pub try_number: u32,
    pub at: Option<String>,
    pub seconds: Option<f64>,
    /// First line of the error, when it failed.
    pub error: Option<String>,
}

fn latest_of(t: &TaskHistory) -> Latest {
    Latest {
        state: t.state.as_str().to_owned(),
        run_id: Some(t.run_id),
        try_number: t.tries,
        at: t.ended_at.or(t.started_at).map(ts),
        seconds: t
            .started_at
            .zip(t.ended_at)
            .map(|(a, b)| (b - a).num_milliseconds() as f64 / 1000.0),
        error: t
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .map(|l| weir_config::scrub(l).into_owned()),
    }
}

/// One node in the Models list.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub unique_id: String,
    pub name: String,
    pub resource_type: String,
    pub materialized: String,
    pub relation: String,
    pub path: String,
    pub tests: usize,
    /// Tests whose latest state is a failure.
    pub failing_tests: usize,
    pub latest: Option<Latest>,
}

/// A test of a node, with its latest result.
#[derive(Debug, Clone, Serialize)]
pub struct TestView {
    pub unique_id: String,
    pub name: String,
    pub column: Option<String>,
    pub latest: Option<Latest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnView {
    pub name: String,
    pub data_type: Option<String>,
    pub description: String,
    pub tests: Vec<TestView>,
}

/// A node of a lineage graph.
#[derive(Debug, Clone, Serialize)]
pub struct LineageNode {
    pub unique_id: String,
    pub label: String,
    /// `source`, `seed`, `model`.
    pub kind: String,
    /// Longest path from the graph's roots.
    pub rank: usize,
    pub state: Option<String>,
    /// For a source the pipeline loads: its table.
    pub table: Option<String>,
}

/// A node's lineage: everything it reads from, back to the source tables,
/// and everything that reads from it, to the final models (tests aside).
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub nodes: Vec<LineageNode>,
    /// Indexes into `nodes`: upstream, downstream.
    pub edges: Vec<(usize, usize)>,
}

/// One node, in full.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    #[serde(flatten)]
    pub row: ModelRow,
    pub description: String,
    pub columns: Vec<ColumnView>,
    /// Tests on the node as a whole (and singular tests that read it).
    pub tests: Vec<TestView>,
    pub sql: String,
    /// What the last build compiled and ran, from `target/compiled`.
    pub compiled: Option<String>,
    pub compiled_truncated: bool,
    pub compiled_at: Option<String>,
    pub lineage: Lineage,
}

/// Latest states of the pipeline's dbt nodes: from the run history when
/// dbt runs a task per node, and for the rest from the artifacts the last
/// build wrote.
async fn node_states(
    store: &Store,
    pipeline: &Pipeline,
    dbt: &Project,
) -> Result<HashMap<String, Latest>, LifecycleError> {
    let mut out: HashMap<String, Latest> = HashMap::new();
    let recent = store
        .recent_tasks(
            &pipeline.dag.name,
            &["model.", "seed.", "test.", "snapshot.", "load."],
            RECENT_RUNS,
        )
        .await?;
    // Newest run first: the first that ended is the latest result (a run
    // just created must not hide the last one behind `pending`).
    for t in recent.iter().filter(|t| t.state.is_done() && t.tries > 0) {
        out.entry(t.task_id.clone()).or_insert_with(|| latest_of(t));
    }
    if dbt.nodes.keys().all(|k| out.contains_key(k)) {
        return Ok(out);
    }
    for (id, l) in run_results(dbt).await {
        out.entry(id).or_insert(l);
    }
    Ok(out)
}

/// `run_results.json` read at most (a 10,000-node project writes a few MB).
const MAX_RUN_RESULTS_BYTES: u64 = 64 * 1024 * 1024;

/// `target/run_results.json`, as node id → status.
async fn run_results(dbt: &Project) -> Vec<(String, Latest)> {
    let path = dbt.target_path.join("run_results.json");
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.len() <= MAX_RUN_RESULTS_BYTES => {}
        _ => return Vec::new(),
    }
    let Ok(text) = tokio::fs::read_to_string(&path).await else {
        return Vec::new();
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let at = doc["metadata"]["generated_at"].as_str().map(str::to_owned);
    doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let id = r["unique_id"].as_str()?.to_owned();
            let state = r["status"].as_str()?.to_owned();
            let failed = matches!(state.as_str(), "error" | "fail");
            Some((
                id,
                Latest {
                    state,
                    run_id: None,
                    try_number: 0,
                    at: at.clone(),
                    seconds: r["execution_time"].as_f64(),
                    error: failed
                        .then(|| r["message"].as_str())
                        .flatten()
                        .and_then(|m| m.lines().next())
                        .map(|l| weir_config::scrub(l).into_owned()),
                },
            ))
        })
        .collect()
}

/// A test that ran and failed (one held back by a failure upstream did not run).
fn is_failure(l: &Latest) -> bool {
    matches!(l.state.as_str(), "failed" | "error" | "fail")
}

fn row(
    n: &weir_transform::Node,
    tests: &[&weir_transform::Node],
    states: &HashMap<String, Latest>,
) -> ModelRow {
    let relation = if n.materialized() == "ephemeral" {
        "(ephemeral)".to_owned()
    } else {
        format!("{}.{}", n.schema, n.alias)
    };
    ModelRow {
        unique_id: n.unique_id.clone(),
        name: n.name.clone(),
        resource_type: n.resource_type.as_str().to_owned(),
        materialized: n.materialized().to_owned(),
        relation,
        path: n.path.display().to_string(),
        tests: tests.len(),
        failing_tests: tests
            .iter()
            .filter(|t| states.get(&t.unique_id).is_some_and(is_failure))
            .count(),
        latest: states.get(&n.unique_id).cloned(),
    }
}

/// The tests of each node: generic tests attached to it and singular tests
/// that read it.
fn tests_by_node(dbt: &Project) -> HashMap<&str, Vec<&weir_transform::Node>> {
    let mut out: HashMap<&str, Vec<&weir_transform::Node>> = HashMap::new();
    for t in dbt
        .nodes
        .values()
        .filter(|n| n.resource_type == ResourceType::Test)
    {
        match &t.generic {
            Some(g) => out.entry(g.attached.as_str()).or_default().push(t),
            None => {
                for d in &t.depends_on {
                    out.entry(d.as_str()).or_default().push(t);
                }
            }
        }
    }
    out
}

fn no_dbt() -> LifecycleError {
    LifecycleError::NotFound("the project has no `transform:` section, so no dbt models".into())
}

/// Every model and seed of the pipeline's dbt project, in the project's
/// order, with its latest state and its tests' results.
pub async fn models(store: &Store, pipeline: &Pipeline) -> Result<Vec<ModelRow>, LifecycleError> {
    let dbt = pipeline.dbt().ok_or_else(no_dbt)?;
    let states = node_states(store, pipeline, dbt).await?;
    let tests = tests_by_node(dbt);
    Ok(dbt
        .nodes
        .values()
        .filter(|n| n.resource_type != ResourceType::Test)
        .map(|n| {
            row(
                n,
                tests
                    .get(n.unique_id.as_str())
                    .map_or(&[][..], Vec::as_slice),
                &states,
            )
        })
        .collect())
}

/// One model or seed, in full: SQL, compiled SQL, columns, tests, lineage.
pub async fn model(
    store: &Store,
    pipeline: &Pipeline,
    unique_id: &str,
) -> Result<ModelView, LifecycleError> {
    let dbt = pipeline.dbt().ok_or_else(no_dbt)?;
    let node = dbt
        .nodes
        .get(unique_id)
        .filter(|n| n.resource_type != ResourceType::Test)
        .ok_or_else(|| LifecycleError::NotFound(format!("no model or seed {unique_id}")))?;
    let states = node_states(store, pipeline, dbt).await?;
    let by_node = tests_by_node(dbt);
    let tests: &[&weir_transform::Node] = by_node.get(unique_id).map_or(&[][..], Vec::as_slice);
    let test_view = |t: &weir_transform::Node| TestView {
        unique_id: t.unique_id.clone(),
        name: t
            .generic
            .as_ref()
            .map_or_else(|| t.name.clone(), |g| g.name.clone()),
        column: t.generic.as_ref().and_then(|g| g.column.clone()),
        latest: states.get(&t.unique_id).cloned(),
    };
    let mut columns: Vec<ColumnView> = node
        .columns
        .iter()
        .map(|c| ColumnView {
            name: c.name.clone(),
            data_type: c.data_type.clone(),
            description: c.description.clone(),
            tests: Vec::new(),
        })
        .collect();
    let mut node_tests = Vec::new();
    for t in tests {
        let v = test_view(t);
        match v.column.clone() {
            Some(col) => match columns.iter_mut().find(|c| c.name == col) {
                Some(c) => c.tests.push(v),
                // A test on a column the property file does not describe.
                None => columns.push(ColumnView {
                    name: col,
                    data_type: None,
                    description: String::new(),
                    tests: vec![v],
                }),
            },
            None => node_tests.push(v),
        }
    }
    let (compiled, compiled_truncated, compiled_at) = compiled_sql(dbt, node);
    Ok(ModelView {
        row: row(node, tests, &states),
        description: node.description.clone(),
        columns,
        tests: node_tests,
        sql: weir_config::scrub(&node.raw_sql).into_owned(),
        compiled,
        compiled_truncated,
        compiled_at,
        lineage: lineage(dbt, pipeline, unique_id, &states),
    })
}

/// The compiled SQL the last build of `node` wrote, at most
/// [`MAX_SQL_BYTES`] of it, and when it was written.
fn compiled_sql(
    dbt: &Project,
    node: &weir_transform::Node,
) -> (Option<String>, bool, Option<String>) {
    if node.resource_type == ResourceType::Seed {
        return (None, false, None);
    }
    let path = weir_transform::target_file(dbt, "compiled", node);
    let Ok(f) = std::fs::File::open(&path) else {
        return (None, false, None);
    };
    let meta = f.metadata().ok();
    let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
    let at = meta
        .and_then(|m| m.modified().ok())
        .map(|t| ts(DateTime::<Utc>::from(t)));
    let mut buf = Vec::new();
    let _ = f.take(MAX_SQL_BYTES).read_to_end(&mut buf);
    // Rendered SQL may hold what `env_var()` read: the project's known
    // secrets are hidden as everywhere else.
    (
        Some(weir_config::scrub(&String::from_utf8_lossy(&buf)).into_owned()),
        size > MAX_SQL_BYTES,
        at,
    )
}

/// Ancestors of `id` back to the sources and descendants to the final
/// models, tests left out, each ranked by its longest path from the roots.
fn lineage(
    dbt: &Project,
    pipeline: &Pipeline,
    id: &str,
    states: &HashMap<String, Latest>,
) -> Lineage {
    let parents = |n: &str| -> Vec<String> {
        dbt.nodes
            .get(n)
            .map(|n| {
                n.depends_on
                    .iter()
                    .filter(|d| dbt.nodes.contains_key(*d) || dbt.sources.contains_key(*d))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut kids: HashMap<&str, Vec<&str>> = HashMap::new();
    for n in dbt
        .nodes
        .values()
        .filter(|n| n.resource_type != ResourceType::Test)
    {
        for d in &n.depends_on {
            kids.entry(d.as_str()).or_default().push(&n.unique_id);
        }
    }
    let mut keep: BTreeSet<String> = BTreeSet::from([id.to_owned()]);
    let mut stack = vec![id.to_owned()];
    while let Some(n) = stack.pop() {
        for p in parents(&n) {
            if keep.insert(p.clone()) {
                stack.push(p);
            }
        }
    }
    let mut stack = vec![id.to_owned()];
    while let Some(n) = stack.pop() {
        for &k in kids.get(n.as_str()).into_iter().flatten() {
            if keep.insert(k.to_owned()) {
                stack.push(k.to_owned());
            }
        }
    }
    // Longest path from the roots, over the kept nodes only.
    let mut rank: BTreeMap<String, usize> = BTreeMap::new();
    fn rank_of(
        n: &str,
        keep: &BTreeSet<String>,
        parents: &dyn Fn(&str) -> Vec<String>,
        memo: &mut BTreeMap<String, usize>,
    ) -> usize {
        if let Some(&r) = memo.get(n) {
            return r;
        }
        let r = parents(n)
            .iter()
            .filter(|p| keep.contains(*p))
            .map(|p| rank_of(p, keep, parents, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(n.to_owned(), r);
        r
    }
    for n in &keep {
        rank_of(n, &keep, &parents, &mut rank);
    }
    let raw = &pipeline.project.warehouse.schema;
    let mut nodes: Vec<LineageNode> = keep
        .iter()
        .map(|n| match dbt.sources.get(n) {
            Some(s) => {
                // A source the pipeline loads shows its load's state.
                let table = (s.schema == *raw && pipeline.tables.contains(&s.identifier))
                    .then(|| s.identifier.clone());
                LineageNode {
                    unique_id: n.clone(),
                    label: format!("{}.{}", s.source_name, s.name),
                    kind: "source".into(),
                    rank: rank[n],
                    state: table
                        .as_ref()
                        .and_then(|t| states.get(&format!("load.{t}")))
                        .map(|l| l.state.clone()),
                    table,
                }
            }
            None => {
                let node = &dbt.nodes[n];
                LineageNode {
                    unique_id: n.clone(),
                    label: node.name.clone(),
                    kind: node.resource_type.as_str().to_owned(),
                    rank: rank[n],
                    state: states.get(n).map(|l| l.state.clone()),
                    table: None,
                }
            }
        })
        .collect();
    nodes.sort_by(|a, b| (a.rank, &a.label).cmp(&(b.rank, &b.label)));
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.unique_id.as_str(), i))
        .collect();
    let mut edges = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for p in parents(&n.unique_id) {
            if let Some(&u) = index.get(p.as_str()) {
                edges.push((u, i));
            }
        }
    }
    Lineage { nodes, edges }
}

/// One extract of a table, from the run history.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractView {
    pub run_id: i64,
    pub latest: Latest,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub lake_run: Option<String>,
    pub snapshot: Option<String>,
}

/// A load that read a lake run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadView {
    pub run_id: i64,
    pub latest: Latest,
    pub rows: Option<u64>,
    pub rejected: Option<u64>,
}

/// A lake run holding a table, from its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct LakeRunView {
    pub run_id: String,
    pub completed_at: String,
    pub snapshot_taken_at: String,
    pub txid_snapshot: String,
    pub format: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub files: Vec<weir_lake::FileEntry>,
    /// For an incremental table: the cursor and the range read.
    pub incremental: Option<String>,
    /// The pipeline's loads that read this lake run.
    pub loads: Vec<LoadView>,
}

/// A source table of the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct SourceTable {
    pub table: String,
    pub schema: String,
    /// The last extract that succeeded (none in the recent runs: none).
    pub last_extract: Option<ExtractView>,
    pub extracts: Vec<ExtractView>,
    pub lake_runs: Vec<LakeRunView>,
    /// dbt sources that read the loaded table.
    pub read_by: Vec<String>,
}

/// What the Sources page shows: every table, and whether the lake could be read.
#[derive(Debug, Clone, Serialize)]
pub struct Sources {
    pub lake: String,
    pub tables: Vec<SourceTable>,
    /// Why the lake's manifests could not be read (the history still shows).
    pub lake_error: Option<String>,
}

/// Committed lake manifests by run id: a committed manifest never changes,
/// so each is read from the lake once.
#[derive(Default)]
pub struct ManifestCache {
    manifests: Mutex<HashMap<String, Arc<Manifest>>>,
}

/// Entries kept at most (a few KB each).
const CACHED_MANIFESTS: usize = 2 * LAKE_RUNS;

impl ManifestCache {
    /// The committed manifest of lake run `id`.
    pub async fn get(&self, lake: &Lake, id: &str) -> Result<Arc<Manifest>, weir_lake::LakeError> {
        let hit = self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        if let Some(m) = hit {
            return Ok(m);
        }
        let m = Arc::new(lake.read_manifest(id).await?);
        let mut cache = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED_MANIFESTS {
            cache.clear();
        }
        cache.insert(id.to_owned(), m.clone());
        Ok(m)
    }

    /// The newest [`LAKE_RUNS`] manifests, newest first, read a few at a
    /// time; those that cannot be read are counted, not fatal.
    async fn recent(
        &self,
        lake: &Lake,
    ) -> Result<(Vec<Arc<Manifest>>, usize), weir_lake::LakeError> {
        use futures::StreamExt as _;
        let ids = lake.list_runs().await?;
        let ids: Vec<String> = ids.into_iter().rev().take(LAKE_RUNS).collect();
        // Collected first: a stream over a borrowing closure is not `Send`
        // to the compiler's liking inside an axum handler.
        let reads: Vec<_> = ids.iter().map(|id| self.get(lake, id)).collect();
        let read: Vec<_> = futures::stream::iter(reads).buffered(8).collect().await;
        let unreadable = read.iter().filter(|r| r.is_err()).count();
        Ok((
            read.into_iter().filter_map(Result::ok).collect(),
            unreadable,
        ))
    }
}

/// What an attempt's page shows beside its log: for a dbt node the SQL its
/// last build compiled, for an extract the files and snapshot of the lake
/// run it wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskDetail {
    pub compiled: Option<String>,
    pub compiled_truncated: bool,
    pub compiled_at: Option<String>,
    pub lake_run: Option<String>,
    pub snapshot: Option<weir_lake::SnapshotEntry>,
    pub files: Vec<weir_lake::FileEntry>,
    pub lake_error: Option<String>,
}

pub async fn task_detail(
    ws: &Workspace,
    pipeline: &Pipeline,
    cache: &ManifestCache,
    task_id: &str,
    output: Option<&serde_json::Value>,
) -> TaskDetail {
    let mut d = TaskDetail::default();
    if let Some(node) = pipeline
        .dbt()
        .and_then(|dbt| dbt.nodes.get(task_id).map(|n| (dbt, n)))
    {
        (d.compiled, d.compiled_truncated, d.compiled_at) = compiled_sql(node.0, node.1);
        return d;
    }
    let (Some(table), Some(run)) = (
        task_id.strip_prefix("extract."),
        output
            .and_then(|o| o.get("lake_run"))
            .and_then(|r| r.as_str()),
    ) else {
        return d;
    };
    d.lake_run = Some(run.to_owned());
    let m = match Lake::open(&ws.project.lake.url, &ws.project.dir, &ws.project.name) {
        Ok(lake) => cache.get(&lake, run).await,
        Err(e) => Err(e),
    };
    match m {
        Ok(m) => {
            d.snapshot = Some(m.snapshot.clone());
            d.files = m.table(table).map(|t| t.files.clone()).unwrap_or_default();
        }
        Err(e) => d.lake_error = Some(weir_config::scrub(&e.to_string()).into_owned()),
    }
    d
}

/// Every source table of the pipeline: its extracts in the recent runs,
/// the lake runs that hold it (newest first) and the loads that read each.
pub async fn sources(
    ws: &Workspace,
    store: &Store,
    pipeline: &Pipeline,
    cache: &ManifestCache,
) -> Result<Sources, LifecycleError> {
    let recent = store
        .recent_tasks(&pipeline.dag.name, &["extract.", "load."], RECENT_RUNS)
        .await?;
    let lake = Lake::open(&ws.project.lake.url, &ws.project.dir, &ws.project.name);
    let (manifests, lake_error) = match lake {
        Ok(l) => match cache.recent(&l).await {
            Ok((m, 0)) => (m, None),
            Ok((m, n)) => (
                m,
                Some(format!("{n} of its newest manifests could not be read")),
            ),
            Err(e) => (
                Vec::new(),
                Some(weir_config::scrub(&e.to_string()).into_owned()),
            ),
        },
        Err(e) => (
            Vec::new(),
            Some(weir_config::scrub(&e.to_string()).into_owned()),
        ),
    };
    let schema = pipeline
        .project
        .source
        .as_ref()
        .map(|s| s.schema.clone())
        .unwrap_or_default();
    let raw = &pipeline.project.warehouse.schema;
    let mut tables = Vec::new();
    for table in &pipeline.tables {
        let extract_id = format!("extract.{table}");
        let load_id = format!("load.{table}");
        let text = |t: &TaskHistory, key: &str| {
            t.output
                .as_ref()
                .and_then(|o| o.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        // Only tasks that ran: a run just created has nothing to show yet.
        let extracts: Vec<ExtractView> = recent
            .iter()
            .filter(|t| t.task_id == extract_id && t.tries > 0)
            .map(|t| ExtractView {
                run_id: t.run_id,
                latest: latest_of(t),
                rows: t.rows,
                bytes: t.bytes,
                lake_run: text(t, "lake_run"),
                snapshot: text(t, "snapshot"),
            })
            .collect();
        let loads: Vec<(&TaskHistory, Option<String>)> = recent
            .iter()
            .filter(|t| t.task_id == load_id && t.tries > 0)
            .map(|t| (t, text(t, "lake_run")))
            .collect();
        let lake_runs = manifests
            .iter()
            .filter_map(|m| m.table(table).map(|e| (m, e)))
            .map(|(m, e)| LakeRunView {
                run_id: m.run_id.clone(),
                completed_at: m.completed_at.clone(),
                snapshot_taken_at: m.snapshot.taken_at.clone(),
                txid_snapshot: m.snapshot.txid_snapshot.clone(),
                format: m.format.clone(),
                rows: e.rows,
                bytes: e.bytes,
                seconds: e.seconds,
                files: e.files.clone(),
                incremental: e.incremental.as_ref().map(|i| {
                    format!(
                        "cursor {} from {} to {}",
                        i.cursor,
                        i.from.as_deref().unwrap_or("the start"),
                        i.mark.as_deref().unwrap_or("—")
                    )
                }),
                loads: loads
                    .iter()
                    .filter(|(_, r)| r.as_deref() == Some(m.run_id.as_str()))
                    .map(|(t, _)| LoadView {
                        run_id: t.run_id,
                        latest: latest_of(t),
                        rows: t.rows,
                        rejected: t
                            .output
                            .as_ref()
                            .and_then(|o| o.get("rejected"))
                            .and_then(serde_json::Value::as_u64),
                    })
                    .collect(),
            })
            .collect();
        let read_by = pipeline
            .dbt()
            .map(|d| {
                d.sources
                    .values()
                    .filter(|s| s.schema == *raw && s.identifier == *table)
                    .map(|s| s.unique_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        tables.push(SourceTable {
            table: table.clone(),
            schema: schema.clone(),
            last_extract: extracts
                .iter()
                .find(|e| e.latest.state == "success")
                .cloned(),
            extracts,
            lake_runs,
            read_by,
        });
    }
    Ok(Sources {
        lake: weir_config::scrub(&ws.project.lake.url).into_owned(),
        tables,
        lake_error,
    })
}
