//! Running a project: compile, materialise (view, table, incremental,
//! ephemeral), seed, test — in graph order, `threads` at a time, skipping the
//! descendants of whatever fails, as dbt does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::task::JoinSet;
use weir_warehouse::{Dialect, Warehouse};

use crate::artifacts::{write_manifest, write_run_results};
use crate::graph::{children, select, Selector};
use crate::materialize::{compile_model, materialise, seed};
use crate::project::{parse_ref_call, Node, Project, ResourceType};
use crate::{NodeError, TransformError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Test,
    Build,
    Compile,
    Seed,
    Ls,
}

impl Command {
    fn types(self) -> &'static [ResourceType] {
        match self {
            Command::Run => &[ResourceType::Model],
            Command::Test => &[ResourceType::Test],
            Command::Seed => &[ResourceType::Seed],
            Command::Compile => &[ResourceType::Model, ResourceType::Test],
            Command::Build | Command::Ls => {
                &[ResourceType::Seed, ResourceType::Model, ResourceType::Test]
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub command: Command,
    pub selector: Selector,
    pub threads: usize,
    pub fail_fast: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
    Pass,
    Fail,
    Warn,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warn",
            Status::Skipped => "skipped",
        }
    }

    fn failed(self) -> bool {
        matches!(self, Status::Error | Status::Fail)
    }
}

#[derive(Debug, Clone)]
pub struct NodeResult {
    pub unique_id: String,
    pub name: String,
    pub resource_type: ResourceType,
    pub materialized: String,
    pub relation: String,
    pub status: Status,
    pub message: String,
    pub seconds: f64,
    pub failures: Option<u64>,
    /// When the node failed on a warehouse call: that error, whole.
    pub error: Option<Arc<weir_warehouse::WarehouseError>>,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub results: Vec<NodeResult>,
    pub seconds: f64,
}

impl RunSummary {
    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| r.status.failed())
    }

    pub fn count(&self, s: Status) -> usize {
        self.results.iter().filter(|r| r.status == s).count()
    }
}

pub(crate) fn dialect(project: &Project) -> Dialect {
    match project.target.kind.as_str() {
        "postgres" => Dialect::Postgres,
        "bigquery" => Dialect::BigQuery,
        _ => Dialect::DuckDb,
    }
}

pub(crate) fn write_file(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// The SQL of a generic test: rows that break the rule.
fn generic_test_sql(project: &Project, node: &Node) -> Result<String, TransformError> {
    let g = node.generic.as_ref().ok_or_else(|| TransformError::Graph {
        node: node.name.clone(),
        file: node.path.clone(),
        message: "not a generic test".into(),
    })?;
    let d = dialect(project);
    let model = if let Some(n) = project.nodes.get(&g.attached) {
        project.renderer.relation_of(&n.name).unwrap_or_default()
    } else if let Some(s) = project.sources.get(&g.attached) {
        project
            .renderer
            .source_relation(&s.source_name, &s.name)
            .unwrap_or_default()
    } else {
        String::new()
    };
    let model = match node.config.get("where").and_then(Value::as_str) {
        Some(w) => format!("(select * from {model} where {w}) dbt_subquery"),
        None => model,
    };
    let col = g.column.as_deref().map(|c| d.quote(c)).unwrap_or_default();
    let lit = |v: &Value| match v {
        Value::String(s) => d.literal(s),
        other => other.to_string(),
    };
    Ok(match g.name.as_str() {
        "not_null" => format!("select {col}\nfrom {model}\nwhere {col} is null"),
        "unique" => format!(
            "select {col} as unique_field, count(*) as n_records\nfrom {model}\nwhere {col} is not null\ngroup by {col}\nhaving count(*) > 1"
        ),
        "accepted_values" => {
            let values: Vec<String> = g
                .args
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(lit).collect())
                .unwrap_or_default();
            let quote = g.args.get("quote").and_then(Value::as_bool).unwrap_or(true);
            let values: Vec<String> = if quote {
                values
            } else {
                g.args
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|v| v.as_str().map_or(v.to_string(), str::to_owned)).collect())
                    .unwrap_or_default()
            };
            format!(
                "with all_values as (\n  select {col} as value_field, count(*) as n_records\n  from {model}\n  group by {col}\n)\nselect *\nfrom all_values\nwhere value_field not in ({})",
                values.join(", ")
            )
        }
        "relationships" => {
            let to = g.args.get("to").and_then(Value::as_str).unwrap_or("");
            let parent = match parse_ref_call(to) {
                Some(r) => project.renderer.relation_of(&r).unwrap_or_default(),
                None => to.to_owned(),
            };
            let field = g.args.get("field").and_then(Value::as_str).map(|f| d.quote(f)).unwrap_or_default();
            format!(
                "with child as (\n  select {col} as from_field\n  from {model}\n  where {col} is not null\n),\nparent as (\n  select {field} as to_field\n  from {parent}\n)\nselect from_field\nfrom child\nleft join parent on child.from_field = parent.to_field\nwhere parent.to_field is null"
            )
        }
        other => project.renderer.custom_test_sql(node, other, &model, g.column.as_deref(), &g.args)?,
    })
}

/// `!= 0`, `>10`, `>= 5`: whether `failures` meets the condition.
fn condition(expr: &str, failures: u64) -> bool {
    let e = expr.trim();
    let (op, num) = ["!=", ">=", "<=", "==", ">", "<", "="]
        .iter()
        .find_map(|op| e.strip_prefix(op).map(|rest| (*op, rest.trim())))
        .unwrap_or(("!=", "0"));
    let Ok(n) = num.parse::<u64>() else {
        return failures != 0;
    };
    match op {
        "!=" => failures != n,
        ">=" => failures >= n,
        "<=" => failures <= n,
        "==" | "=" => failures == n,
        ">" => failures > n,
        "<" => failures < n,
        _ => failures != 0,
    }
}

fn arrow_text(a: &dyn arrow::array::Array, row: usize) -> String {
    arrow::util::display::ArrayFormatter::try_new(a, &Default::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

/// Where a node's SQL of `kind` (`compiled`, `run`) is written, as dbt
/// writes it: `target/compiled/<project>/models/orders.sql`.
pub fn target_file(project: &Project, kind: &str, node: &Node) -> std::path::PathBuf {
    let rel = if node.generic.is_some() {
        std::path::PathBuf::from(format!("{}.sql", node.name))
    } else {
        node.path.clone()
    };
    project.target_path.join(kind).join(&project.name).join(rel)
}

/// Run one node to its result.
async fn run_node(
    project: Arc<Project>,
    wh: Arc<dyn Warehouse>,
    id: String,
    command: Command,
) -> NodeResult {
    let t0 = Instant::now();
    let node = &project.nodes[&id];
    let mut res = NodeResult {
        unique_id: id.clone(),
        name: node.name.clone(),
        resource_type: node.resource_type,
        materialized: node.materialized().to_owned(),
        relation: if node.resource_type == ResourceType::Test {
            String::new()
        } else {
            format!("{}.{}", node.schema, node.alias)
        },
        status: Status::Success,
        message: String::new(),
        seconds: 0.0,
        failures: None,
        error: None,
    };
    let outcome: Result<(Status, String, Option<u64>), NodeError> = async {
        match node.resource_type {
            ResourceType::Seed => {
                if command == Command::Compile {
                    return Ok((Status::Success, "compiled".into(), None));
                }
                seed(&project, wh.as_ref(), node)
                    .await
                    .map(|m| (Status::Success, m, None))
            }
            ResourceType::Model => {
                if command == Command::Compile {
                    let (sql, _) = compile_model(&project, &wh, node, true).await?;
                    write_file(&target_file(&project, "compiled", node), &sql);
                    return Ok((Status::Success, "compiled".into(), None));
                }
                // What was compiled is what ran (for an incremental model, its
                // incremental form when the table exists).
                let (message, sql) = materialise(&project, &wh, node).await?;
                write_file(&target_file(&project, "compiled", node), &sql);
                write_file(&target_file(&project, "run", node), &sql);
                Ok((Status::Success, message, None))
            }
            ResourceType::Test => {
                let sql = if node.generic.is_some() {
                    generic_test_sql(&project, node).map_err(|e| NodeError::Other(e.to_string()))?
                } else {
                    project
                        .renderer
                        .compile(node, &project.nodes, false, Some(&wh))
                        .map_err(|e| NodeError::Other(e.to_string()))?
                };
                write_file(&target_file(&project, "compiled", node), &sql);
                if command == Command::Compile {
                    return Ok((Status::Success, "compiled".into(), None));
                }
                let count_sql =
                    format!("select count(*) as failures from (\n{sql}\n) dbt_internal_test");
                write_file(&target_file(&project, "run", node), &count_sql);
                let r = wh.query(&count_sql).await?;
                let failures: u64 = r
                    .batches
                    .first()
                    .filter(|b| b.num_rows() > 0)
                    .map(|b| arrow_text(b.column(0).as_ref(), 0))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let severity = node
                    .config
                    .get("severity")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_ascii_lowercase();
                let error_if = node
                    .config
                    .get("error_if")
                    .and_then(Value::as_str)
                    .unwrap_or("!= 0");
                let warn_if = node
                    .config
                    .get("warn_if")
                    .and_then(Value::as_str)
                    .unwrap_or("!= 0");
                let status = if severity == "error" && condition(error_if, failures) {
                    Status::Fail
                } else if condition(warn_if, failures) {
                    Status::Warn
                } else {
                    Status::Pass
                };
                let message = match status {
                    Status::Pass => String::new(),
                    _ => format!(
                        "Got {failures} result{}, configured to {} if {}",
                        if failures == 1 { "" } else { "s" },
                        if status == Status::Fail {
                            "fail"
                        } else {
                            "warn"
                        },
                        if status == Status::Fail {
                            error_if
                        } else {
                            warn_if
                        }
                    ),
                };
                Ok((status, message, Some(failures)))
            }
        }
    }
    .await;
    match outcome {
        Ok((status, message, failures)) => {
            res.status = status;
            res.message = message;
            res.failures = failures;
        }
        Err(e) => {
            res.status = Status::Error;
            res.message = format!("{} ({}): {e}", node.name, node.path.display());
            if let NodeError::Warehouse(w) = e {
                res.error = Some(Arc::new(w));
            }
        }
    }
    res.seconds = t0.elapsed().as_secs_f64();
    res
}

/// Every node `id` depends on, directly or not.
fn ancestors<'a>(
    project: &'a Project,
    id: &'a str,
    memo: &mut HashMap<&'a str, BTreeSet<&'a str>>,
) -> BTreeSet<&'a str> {
    if let Some(a) = memo.get(id) {
        return a.clone();
    }
    let mut out = BTreeSet::new();
    if let Some(n) = project.nodes.get(id) {
        for d in &n.depends_on {
            out.insert(d.as_str());
            out.extend(ancestors(project, d, memo));
        }
    }
    memo.insert(id, out.clone());
    out
}

/// In `build`, a node waits for the tests of what it is built from, as dbt
/// does: a test gates a child of one of its parents when all the test's
/// parents are upstream of that child. (A relationships test from `a` to `b`
/// therefore gates what reads both, and never `b` itself, which would be a
/// cycle.)
fn add_test_edges(
    project: &Project,
    chosen: &BTreeSet<String>,
    deps: &mut HashMap<String, BTreeSet<String>>,
) {
    let kids = children(&project.nodes);
    let mut memo = HashMap::new();
    for id in chosen {
        let test = &project.nodes[id];
        if test.resource_type != ResourceType::Test {
            continue;
        }
        for parent in &test.depends_on {
            for child in kids.get(parent).into_iter().flatten() {
                if !chosen.contains(child)
                    || project.nodes[child].resource_type == ResourceType::Test
                {
                    continue;
                }
                let upstream = ancestors(project, child, &mut memo);
                if test
                    .depends_on
                    .iter()
                    .all(|p| upstream.contains(p.as_str()))
                {
                    deps.entry(child.clone()).or_default().insert(id.clone());
                }
            }
        }
    }
}

/// Edges among the chosen nodes; in `build`, a node's children also wait for its tests.
fn edges(
    project: &Project,
    command: Command,
    chosen: &BTreeSet<String>,
) -> HashMap<String, BTreeSet<String>> {
    let mut deps: HashMap<String, BTreeSet<String>> = chosen
        .iter()
        .map(|id| {
            let d = project.nodes[id]
                .depends_on
                .iter()
                .filter(|d| chosen.contains(*d))
                .cloned()
                .collect();
            (id.clone(), d)
        })
        .collect();
    if command == Command::Build {
        add_test_edges(project, chosen, &mut deps);
    }
    deps
}

/// Create the schemas the chosen nodes build in, one at a time: creating the
/// same schema from two connections at once is a conflict in DuckDB.
async fn create_schemas(
    project: &Project,
    wh: &dyn Warehouse,
    chosen: &BTreeSet<String>,
) -> Result<Vec<String>, TransformError> {
    let schemas: BTreeSet<&str> = chosen
        .iter()
        .map(|id| &project.nodes[id])
        .filter(|n| n.resource_type != ResourceType::Test && n.materialized() != "ephemeral")
        .map(|n| n.schema.as_str())
        .collect();
    for schema in &schemas {
        wh.ensure_schema(schema)
            .await
            .map_err(|e| TransformError::Warehouse {
                context: format!("cannot create schema {schema}"),
                source: std::sync::Arc::new(e),
            })?;
    }
    Ok(schemas.into_iter().map(str::to_owned).collect())
}

/// The nodes a command would run and, for each, the nodes it waits for: the
/// graph an outside scheduler needs to run nodes one by one with [`run_one`]
/// (after [`prepare`]).
pub fn plan(
    project: &Project,
    command: Command,
    selector: &Selector,
) -> Result<BTreeMap<String, BTreeSet<String>>, TransformError> {
    let chosen = select(project, selector, command.types())?;
    Ok(edges(project, command, &chosen).into_iter().collect())
}

/// What `execute` does before the first node: write the manifest and create
/// the schemas. Returns the schemas.
pub async fn prepare(
    project: &Project,
    wh: &dyn Warehouse,
    command: Command,
    selector: &Selector,
) -> Result<Vec<String>, TransformError> {
    let chosen = select(project, selector, command.types())?;
    write_manifest(project);
    create_schemas(project, wh, &chosen).await
}

/// Run one node as `execute` would, without its neighbours.
pub async fn run_one(
    project: Arc<Project>,
    wh: Arc<dyn Warehouse>,
    unique_id: &str,
    command: Command,
) -> NodeResult {
    run_node(project, wh, unique_id.to_owned(), command).await
}

/// Execute a command on the selected nodes. `report` sees each result as it
/// finishes (`index of total`).
pub async fn execute(
    project: Arc<Project>,
    wh: Arc<dyn Warehouse>,
    opts: &RunOptions,
    report: &(dyn Fn(usize, usize, &NodeResult) + Sync),
) -> Result<RunSummary, TransformError> {
    let t0 = Instant::now();
    let chosen: BTreeSet<String> = select(&project, &opts.selector, opts.command.types())?;
    write_manifest(&project);
    if opts.command == Command::Ls {
        return Ok(RunSummary {
            results: Vec::new(),
            seconds: 0.0,
        });
    }
    let deps = edges(&project, opts.command, &chosen);
    let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
    for (id, ds) in &deps {
        for d in ds {
            dependents.entry(d.clone()).or_default().push(id.clone());
        }
    }
    if opts.command != Command::Compile {
        create_schemas(&project, wh.as_ref(), &chosen).await?;
    }
    let total = chosen.len();
    let mut waiting: HashMap<String, usize> =
        deps.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    let mut ready: Vec<String> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| k.clone())
        .collect();
    ready.sort_by(|a, b| b.cmp(a));
    let mut running = JoinSet::new();
    let mut results = Vec::new();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    let mut stop = false;
    let threads = opts.threads.max(1);
    loop {
        while !stop && running.len() < threads {
            let Some(id) = ready.pop() else { break };
            if skipped.contains(&id) {
                continue;
            }
            running.spawn(run_node(project.clone(), wh.clone(), id, opts.command));
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let r = done.map_err(|e| TransformError::Selection {
            message: format!("a node's task failed: {e}"),
        })?;
        let failed = r.status.failed();
        results.push(r.clone());
        report(results.len(), total, &r);
        if failed && opts.fail_fast {
            stop = true;
        }
        // Free the dependents; a failure skips everything downstream.
        let mut stack = vec![(r.unique_id.clone(), failed)];
        while let Some((id, fail)) = stack.pop() {
            for dep in dependents.get(&id).cloned().unwrap_or_default() {
                if fail {
                    if skipped.insert(dep.clone()) {
                        let n = &project.nodes[&dep];
                        let s = NodeResult {
                            unique_id: dep.clone(),
                            name: n.name.clone(),
                            resource_type: n.resource_type,
                            materialized: n.materialized().to_owned(),
                            relation: format!("{}.{}", n.schema, n.alias),
                            status: Status::Skipped,
                            message: format!("skipped: {} failed upstream", r.name),
                            seconds: 0.0,
                            failures: None,
                            error: None,
                        };
                        results.push(s.clone());
                        report(results.len(), total, &s);
                        stack.push((dep, true));
                    }
                } else if let Some(w) = waiting.get_mut(&dep) {
                    *w -= 1;
                    if *w == 0 && !skipped.contains(&dep) {
                        ready.push(dep.clone());
                    }
                }
            }
        }
    }
    // Every chosen node has a result unless the graph had a cycle, which
    // loading rules out: anything left over is Weir's bug, not the project's.
    if !stop && results.len() < total {
        let done: BTreeSet<&str> = results.iter().map(|r| r.unique_id.as_str()).collect();
        let left: Vec<&str> = chosen
            .iter()
            .map(String::as_str)
            .filter(|id| !done.contains(id))
            .collect();
        return Err(TransformError::Bug {
            message: format!(
                "{} node(s) never became ready: {}",
                left.len(),
                left.join(", ")
            ),
        });
    }
    let summary = RunSummary {
        results,
        seconds: t0.elapsed().as_secs_f64(),
    };
    write_run_results(&project, &summary, opts.command);
    Ok(summary)
}
