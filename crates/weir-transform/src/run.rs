//! Running a project: compile, materialise (view, table, incremental,
//! ephemeral), seed, test — in graph order, `threads` at a time, skipping the
//! descendants of whatever fails, as dbt does.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::task::JoinSet;
use weir_warehouse::{Dialect, Warehouse};

use crate::graph::{children, select, Selector};
use crate::project::{parse_ref_call, Node, Project, ResourceType};
use crate::TransformError;

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

fn dialect(project: &Project) -> Dialect {
    match project.target.kind.as_str() {
        "postgres" => Dialect::Postgres,
        "bigquery" => Dialect::BigQuery,
        _ => Dialect::DuckDb,
    }
}

fn write_file(path: &Path, text: &str) {
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

async fn relation_type(
    wh: &dyn Warehouse,
    d: Dialect,
    schema: &str,
    name: &str,
) -> Result<Option<String>, String> {
    let sql = format!(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
        d.literal(schema),
        d.literal(name)
    );
    let r = wh.query(&sql).await.map_err(|e| e.to_string())?;
    for b in &r.batches {
        if b.num_rows() > 0 {
            let f = arrow_text(b.column(0).as_ref(), 0);
            return Ok(Some(f));
        }
    }
    Ok(None)
}

fn arrow_text(a: &dyn arrow::array::Array, row: usize) -> String {
    arrow::util::display::ArrayFormatter::try_new(a, &Default::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

fn drop_stmt(d: Dialect, kind: Option<&str>, rel: &str) -> Option<String> {
    let cascade = if d == Dialect::Postgres {
        " CASCADE"
    } else {
        ""
    };
    match kind {
        Some("VIEW") => Some(format!("DROP VIEW IF EXISTS {rel}{cascade}")),
        Some(_) => Some(format!("DROP TABLE IF EXISTS {rel}{cascade}")),
        None => None,
    }
}

/// Build one model; returns a message like `CREATE VIEW`.
async fn materialise(
    project: &Project,
    wh_arc: &Arc<dyn Warehouse>,
    node: &Node,
    sql: &str,
) -> Result<String, String> {
    let wh = wh_arc.as_ref();
    let d = dialect(project);
    let rel = d.relation(&node.schema, &node.alias);
    let kind = relation_type(wh, d, &node.schema, &node.alias).await?;
    let err = |e: weir_warehouse::WarehouseError| e.to_string();
    match node.materialized() {
        "view" => {
            if kind.as_deref() == Some("VIEW") || kind.is_none() {
                let replace = format!("CREATE OR REPLACE VIEW {rel} AS (\n{sql}\n)");
                match wh.execute(&replace).await {
                    Ok(()) => return Ok("CREATE VIEW".into()),
                    // PostgreSQL refuses to change a view's columns in place.
                    Err(_) if kind.is_some() => {}
                    Err(e) => return Err(err(e)),
                }
            }
            let mut stmts: Vec<String> = drop_stmt(d, kind.as_deref(), &rel).into_iter().collect();
            stmts.push(format!("CREATE VIEW {rel} AS (\n{sql}\n)"));
            wh.execute_atomic(&stmts).await.map_err(err)?;
            Ok("CREATE VIEW".into())
        }
        "table" => {
            let tmp_name = format!("{}__weir_tmp", node.alias);
            let tmp = d.relation(&node.schema, &tmp_name);
            let mut stmts = vec![
                format!("DROP TABLE IF EXISTS {tmp}"),
                format!("CREATE TABLE {tmp} AS (\n{sql}\n)"),
            ];
            stmts.extend(drop_stmt(d, kind.as_deref(), &rel));
            stmts.push(format!(
                "ALTER TABLE {tmp} RENAME TO {}",
                d.quote(&node.alias)
            ));
            wh.execute_atomic(&stmts).await.map_err(err)?;
            Ok("CREATE TABLE".into())
        }
        "incremental" => incremental(project, wh_arc, node, &rel, kind.as_deref()).await,
        "ephemeral" => Ok("EPHEMERAL".into()),
        other => Err(format!("unknown materialization `{other}`")),
    }
}

async fn incremental(
    project: &Project,
    wh_arc: &Arc<dyn Warehouse>,
    node: &Node,
    rel: &str,
    kind: Option<&str>,
) -> Result<String, String> {
    let wh = wh_arc.as_ref();
    let d = dialect(project);
    let full = project.full_refresh
        || node.config.get("full_refresh").and_then(Value::as_bool) == Some(true);
    let err = |e: weir_warehouse::WarehouseError| e.to_string();
    if kind.is_none() || full || kind == Some("VIEW") {
        let sql = project
            .renderer
            .compile(node, &project.nodes, false, Some(wh_arc))
            .map_err(|e| e.to_string())?;
        let tmp = d.relation(&node.schema, &format!("{}__weir_tmp", node.alias));
        let mut stmts = vec![
            format!("DROP TABLE IF EXISTS {tmp}"),
            format!("CREATE TABLE {tmp} AS (\n{sql}\n)"),
        ];
        stmts.extend(drop_stmt(d, kind, rel));
        stmts.push(format!(
            "ALTER TABLE {tmp} RENAME TO {}",
            d.quote(&node.alias)
        ));
        wh.execute_atomic(&stmts).await.map_err(err)?;
        return Ok("CREATE TABLE".into());
    }
    let sql = project
        .renderer
        .compile(node, &project.nodes, true, Some(wh_arc))
        .map_err(|e| e.to_string())?;
    let tmp_name = format!("{}__weir_incr", node.alias);
    let tmp = d.relation(&node.schema, &tmp_name);
    wh.execute_atomic(&[
        format!("DROP TABLE IF EXISTS {tmp}"),
        format!("CREATE TABLE {tmp} AS (\n{sql}\n)"),
    ])
    .await
    .map_err(err)?;
    let result = async {
        let new_cols = wh
            .describe(&node.schema, &tmp_name)
            .await
            .map_err(err)?
            .unwrap_or_default();
        let old_cols = wh
            .describe(&node.schema, &node.alias)
            .await
            .map_err(err)?
            .unwrap_or_default();
        let added: Vec<_> = new_cols
            .iter()
            .filter(|c| !old_cols.iter().any(|o| o.name == c.name))
            .collect();
        let on_change = node
            .config
            .get("on_schema_change")
            .and_then(Value::as_str)
            .unwrap_or("ignore");
        let mut stmts = Vec::new();
        let mut cols: Vec<&str> = new_cols
            .iter()
            .filter(|c| old_cols.iter().any(|o| o.name == c.name))
            .map(|c| c.name.as_str())
            .collect();
        if !added.is_empty() {
            match on_change {
                "fail" => {
                    return Err(format!(
                        "the model has new columns ({}) and on_schema_change is `fail`",
                        added
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                "append_new_columns" | "sync_all_columns" => {
                    for c in &added {
                        stmts.push(format!(
                            "ALTER TABLE {rel} ADD COLUMN {} {}",
                            d.quote(&c.name),
                            c.data_type
                        ));
                        cols.push(&c.name);
                    }
                }
                _ => {}
            }
        }
        let list = cols
            .iter()
            .map(|c| d.quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let keys: Vec<String> = match node.config.get("unique_key") {
            Some(Value::String(k)) => vec![k.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let strategy = node
            .config
            .get("incremental_strategy")
            .and_then(Value::as_str)
            .unwrap_or(if keys.is_empty() {
                "append"
            } else {
                "delete+insert"
            });
        if !keys.is_empty() && strategy != "append" {
            let on = keys
                .iter()
                .map(|k| format!("t.{q} = s.{q}", q = d.quote(k)))
                .collect::<Vec<_>>()
                .join(" AND ");
            stmts.push(format!(
                "DELETE FROM {rel} AS t USING {tmp} AS s WHERE {on}"
            ));
        }
        stmts.push(format!(
            "INSERT INTO {rel} ({list}) SELECT {list} FROM {tmp}"
        ));
        stmts.push(format!("DROP TABLE {tmp}"));
        wh.execute_atomic(&stmts).await.map_err(err)?;
        Ok(format!("INSERT ({strategy})"))
    }
    .await;
    if result.is_err() {
        let _ = wh.execute(&format!("DROP TABLE IF EXISTS {tmp}")).await;
    }
    result
}

/// dbt-core's seed type inference: integers, floats, booleans, dates, timestamps, else text.
fn infer_type(d: Dialect, values: &[&str]) -> &'static str {
    let present: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    let all = |f: &dyn Fn(&str) -> bool| !present.is_empty() && present.iter().all(|v| f(v));
    let (int, float, boolean, date, ts, text) = match d {
        Dialect::Postgres => (
            "integer",
            "double precision",
            "boolean",
            "date",
            "timestamp without time zone",
            "text",
        ),
        Dialect::BigQuery => ("INT64", "FLOAT64", "BOOL", "DATE", "DATETIME", "STRING"),
        Dialect::DuckDb => (
            "INTEGER",
            "DOUBLE",
            "BOOLEAN",
            "DATE",
            "TIMESTAMP",
            "VARCHAR",
        ),
    };
    if all(&|v| v.parse::<i32>().is_ok()) {
        int
    } else if all(&|v| v.parse::<i64>().is_ok()) {
        match d {
            Dialect::Postgres => "bigint",
            Dialect::BigQuery => "INT64",
            Dialect::DuckDb => "BIGINT",
        }
    } else if all(&|v| {
        v.parse::<f64>().is_ok() && !v.eq_ignore_ascii_case("nan") && !v.eq_ignore_ascii_case("inf")
    }) {
        float
    } else if all(&|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "false")) {
        boolean
    } else if all(&|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()) {
        date
    } else if all(&|v| {
        chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f").is_ok()
            || chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
    }) {
        ts
    } else {
        text
    }
}

async fn seed(project: &Project, wh: &dyn Warehouse, node: &Node) -> Result<String, String> {
    let d = dialect(project);
    let path = project.dir.join(&node.path);
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (i, r) in rdr.records().enumerate() {
        let r = r.map_err(|e| format!("{} line {}: {e}", path.display(), i + 2))?;
        rows.push(r.iter().map(str::to_owned).collect());
    }
    let overrides = node
        .config
        .get("column_types")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let types: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| match overrides.get(h).and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => {
                let col: Vec<&str> = rows
                    .iter()
                    .map(|r| r.get(i).map_or("", String::as_str))
                    .collect();
                infer_type(d, &col).to_owned()
            }
        })
        .collect();
    let rel = d.relation(&node.schema, &node.alias);
    let kind = relation_type(wh, d, &node.schema, &node.alias).await?;
    let tmp = d.relation(&node.schema, &format!("{}__weir_tmp", node.alias));
    let defs: Vec<String> = headers
        .iter()
        .zip(&types)
        .map(|(h, t)| format!("{} {t}", d.quote(h)))
        .collect();
    let mut stmts = vec![
        format!("DROP TABLE IF EXISTS {tmp}"),
        format!("CREATE TABLE {tmp} ({})", defs.join(", ")),
    ];
    for chunk in rows.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|r| {
                let cells: Vec<String> = r
                    .iter()
                    .zip(&types)
                    .map(|(v, t)| {
                        if v.is_empty()
                            && !t.to_ascii_lowercase().contains("char")
                            && !t.eq_ignore_ascii_case("text")
                            && !t.eq_ignore_ascii_case("string")
                        {
                            "NULL".to_owned()
                        } else {
                            format!("CAST({} AS {t})", d.literal(v))
                        }
                    })
                    .collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        stmts.push(format!("INSERT INTO {tmp} VALUES {}", values.join(",\n")));
    }
    stmts.extend(drop_stmt(d, kind.as_deref(), &rel));
    stmts.push(format!(
        "ALTER TABLE {tmp} RENAME TO {}",
        d.quote(&node.alias)
    ));
    wh.execute_atomic(&stmts).await.map_err(|e| e.to_string())?;
    Ok(format!("INSERT {}", rows.len()))
}

fn target_file(project: &Project, kind: &str, node: &Node) -> std::path::PathBuf {
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
    };
    let outcome: Result<(Status, String, Option<u64>), String> = async {
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
                let sql = project
                    .renderer
                    .compile(node, &project.nodes, false, Some(&wh))
                    .map_err(|e| e.to_string())?;
                write_file(&target_file(&project, "compiled", node), &sql);
                if command == Command::Compile {
                    return Ok((Status::Success, "compiled".into(), None));
                }
                write_file(&target_file(&project, "run", node), &sql);
                materialise(&project, &wh, node, &sql)
                    .await
                    .map(|m| (Status::Success, m, None))
            }
            ResourceType::Test => {
                let sql = if node.generic.is_some() {
                    generic_test_sql(&project, node).map_err(|e| e.to_string())?
                } else {
                    project
                        .renderer
                        .compile(node, &project.nodes, false, Some(&wh))
                        .map_err(|e| e.to_string())?
                };
                write_file(&target_file(&project, "compiled", node), &sql);
                if command == Command::Compile {
                    return Ok((Status::Success, "compiled".into(), None));
                }
                let count_sql =
                    format!("select count(*) as failures from (\n{sql}\n) dbt_internal_test");
                write_file(&target_file(&project, "run", node), &count_sql);
                let r = wh.query(&count_sql).await.map_err(|e| e.to_string())?;
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
        }
    }
    res.seconds = t0.elapsed().as_secs_f64();
    res
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
    // Edges among the chosen nodes; in `build`, a node's children also wait for its tests.
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
    if opts.command == Command::Build {
        let kids = children(&project.nodes);
        for id in &chosen {
            let n = &project.nodes[id];
            if n.resource_type != ResourceType::Test {
                continue;
            }
            if let Some(parent) = n.depends_on.first() {
                for child in kids.get(parent).into_iter().flatten() {
                    if chosen.contains(child)
                        && project.nodes[child].resource_type != ResourceType::Test
                    {
                        deps.entry(child.clone()).or_default().insert(id.clone());
                    }
                }
            }
        }
    }
    let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
    for (id, ds) in &deps {
        for d in ds {
            dependents.entry(d.clone()).or_default().push(id.clone());
        }
    }
    // Schemas first, one at a time: creating the same schema from two
    // connections at once is a conflict in DuckDB.
    if opts.command != Command::Compile {
        let schemas: BTreeSet<&str> = chosen
            .iter()
            .map(|id| &project.nodes[id])
            .filter(|n| n.resource_type != ResourceType::Test && n.materialized() != "ephemeral")
            .map(|n| n.schema.as_str())
            .collect();
        for schema in schemas {
            wh.ensure_schema(schema)
                .await
                .map_err(|e| TransformError::Selection {
                    message: format!("cannot create schema {schema}: {e}"),
                })?;
        }
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
    let summary = RunSummary {
        results,
        seconds: t0.elapsed().as_secs_f64(),
    };
    write_run_results(&project, &summary, opts.command);
    Ok(summary)
}

/// `target/run_results.json` in dbt's shape (schema v6).
fn write_run_results(project: &Project, s: &RunSummary, command: Command) {
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
                "relation_name": r.relation,
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
                "config": n.config,
                "tags": n.tags(),
                "raw_code": n.raw_sql,
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
