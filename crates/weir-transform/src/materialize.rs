//! Materialisations: view, table, incremental and ephemeral models, and
//! seeds, in each warehouse's SQL. Tables are built under a temporary name
//! and swapped in in one transaction (BigQuery: `CREATE OR REPLACE TABLE`,
//! atomic on its own), so a failed build leaves the old relation and no
//! leftovers.

use std::sync::Arc;

use serde_json::Value;
use weir_warehouse::{Dialect, RelationKind, Warehouse};

use crate::project::{Node, Project};
use crate::run::dialect;
use crate::NodeError;

fn drop_stmt(d: Dialect, kind: Option<RelationKind>, rel: &str) -> Option<String> {
    let cascade = if d == Dialect::Postgres {
        " CASCADE"
    } else {
        ""
    };
    match kind {
        Some(RelationKind::View) => Some(format!("DROP VIEW IF EXISTS {rel}{cascade}")),
        Some(RelationKind::Table) => Some(format!("DROP TABLE IF EXISTS {rel}{cascade}")),
        None => None,
    }
}

/// Statements that make the filled table `tmp` the relation `rel` (named
/// `alias` in its schema), replacing whatever `rel` was.
fn swap_in(
    d: Dialect,
    kind: Option<RelationKind>,
    tmp: &str,
    rel: &str,
    alias: &str,
) -> Vec<String> {
    match d {
        // No DDL transactions in BigQuery: one CREATE OR REPLACE is the atomic
        // step, and only a view in the way is dropped first.
        Dialect::BigQuery => {
            let mut out: Vec<String> = drop_stmt(d, kind.filter(|k| *k == RelationKind::View), rel)
                .into_iter()
                .collect();
            out.push(format!(
                "CREATE OR REPLACE TABLE {rel} AS SELECT * FROM {tmp}"
            ));
            out.push(format!("DROP TABLE IF EXISTS {tmp}"));
            out
        }
        Dialect::DuckDb | Dialect::Postgres => {
            let mut out: Vec<String> = drop_stmt(d, kind, rel).into_iter().collect();
            out.push(format!("ALTER TABLE {tmp} RENAME TO {}", d.quote(alias)));
            out
        }
    }
}

/// Statements that build `rel` as a table from `sql`, atomically.
fn build_table(
    d: Dialect,
    kind: Option<RelationKind>,
    node: &Node,
    rel: &str,
    sql: &str,
) -> Vec<String> {
    match d {
        Dialect::BigQuery => {
            let mut out: Vec<String> = drop_stmt(d, kind.filter(|k| *k == RelationKind::View), rel)
                .into_iter()
                .collect();
            out.push(format!("CREATE OR REPLACE TABLE {rel} AS (\n{sql}\n)"));
            out
        }
        Dialect::DuckDb | Dialect::Postgres => {
            let tmp = d.relation(&node.schema, &d.derived_name(&node.alias, "", "__weir_tmp"));
            let mut out = vec![
                format!("DROP TABLE IF EXISTS {tmp}"),
                format!("CREATE TABLE {tmp} AS (\n{sql}\n)"),
            ];
            out.extend(swap_in(d, kind, &tmp, rel, &node.alias));
            out
        }
    }
}

/// Whether an incremental model builds incrementally: its table exists and
/// no full refresh is asked for.
fn incremental_run(project: &Project, node: &Node, kind: Option<RelationKind>) -> bool {
    let full = project.full_refresh
        || node.config.get("full_refresh").and_then(Value::as_bool) == Some(true);
    node.materialized() == "incremental" && kind == Some(RelationKind::Table) && !full
}

/// A model's SQL as it would run now, and what its relation is (with
/// `compile_only`, known only for incremental models).
pub(crate) async fn compile_model(
    project: &Project,
    wh: &Arc<dyn Warehouse>,
    node: &Node,
    compile_only: bool,
) -> Result<(String, Option<RelationKind>), NodeError> {
    // Only an incremental model's SQL depends on what is there already; the
    // others compile without asking the warehouse (a query per model would be
    // most of `compile`'s time on a large project).
    let kind = if node.materialized() == "ephemeral"
        || (compile_only && node.materialized() != "incremental")
    {
        None
    } else {
        wh.relation_kind(&node.schema, &node.alias).await?
    };
    let sql = project
        .renderer
        .compile(
            node,
            &project.nodes,
            incremental_run(project, node, kind),
            Some(wh),
        )
        .map_err(|e| NodeError::Other(e.to_string()))?;
    Ok((sql, kind))
}

/// A relation name the warehouse would cut short is an error (PostgreSQL
/// silently keeps 63 bytes, so the model would build under another name).
pub(crate) fn check_name_fits(d: Dialect, node: &Node) -> Result<(), NodeError> {
    if node.alias.len() > d.max_identifier_bytes() {
        return Err(NodeError::Other(format!(
            "the relation name `{}` is {} bytes, longer than the {} this warehouse keeps; set a shorter `alias`",
            node.alias,
            node.alias.len(),
            d.max_identifier_bytes()
        )));
    }
    Ok(())
}

/// Build one model; returns a message like `CREATE VIEW`, and the SQL it ran.
pub(crate) async fn materialise(
    project: &Project,
    wh_arc: &Arc<dyn Warehouse>,
    node: &Node,
) -> Result<(String, String), NodeError> {
    let d = dialect(project);
    check_name_fits(d, node)?;
    let (sql, kind) = compile_model(project, wh_arc, node, false).await?;
    let wh = wh_arc.as_ref();
    let rel = d.relation(&node.schema, &node.alias);
    let err = NodeError::Warehouse;
    let message = match node.materialized() {
        "ephemeral" => "EPHEMERAL".to_owned(),
        "view" => {
            let mut done = false;
            if kind != Some(RelationKind::Table) {
                let replace = format!("CREATE OR REPLACE VIEW {rel} AS (\n{sql}\n)");
                match wh.execute(&replace).await {
                    Ok(()) => done = true,
                    // PostgreSQL refuses to change a view's columns in place.
                    Err(_) if kind.is_some() => {}
                    Err(e) => return Err(err(e)),
                }
            }
            if !done {
                let mut stmts: Vec<String> = drop_stmt(d, kind, &rel).into_iter().collect();
                stmts.push(format!("CREATE VIEW {rel} AS (\n{sql}\n)"));
                wh.execute_atomic(&stmts).await.map_err(err)?;
            }
            "CREATE VIEW".to_owned()
        }
        "table" => {
            wh.execute_atomic(&build_table(d, kind, node, &rel, &sql))
                .await
                .map_err(err)?;
            "CREATE TABLE".to_owned()
        }
        "incremental" if !incremental_run(project, node, kind) => {
            wh.execute_atomic(&build_table(d, kind, node, &rel, &sql))
                .await
                .map_err(err)?;
            "CREATE TABLE".to_owned()
        }
        "incremental" => incremental(project, wh, node, &rel, &sql).await?,
        other => return Err(format!("unknown materialization `{other}`").into()),
    };
    Ok((message, sql))
}

fn unique_key(node: &Node) -> Vec<String> {
    match node.config.get("unique_key") {
        Some(Value::String(k)) => k
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The statements that fold the new rows in `tmp` into `rel` on `keys`.
fn incremental_statements(
    d: Dialect,
    strategy: &str,
    rel: &str,
    tmp: &str,
    cols: &[&str],
    keys: &[String],
) -> Result<Vec<String>, String> {
    let list = cols
        .iter()
        .map(|c| d.quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let on = keys
        .iter()
        .map(|k| format!("t.{q} = s.{q}", q = d.quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let insert = format!("INSERT INTO {rel} ({list}) SELECT {list} FROM {tmp}");
    Ok(match strategy {
        "append" => vec![insert],
        _ if keys.is_empty() => {
            return Err(format!(
                "incremental_strategy `{strategy}` needs a unique_key"
            ))
        }
        "delete+insert" => {
            let delete = match d {
                Dialect::BigQuery => format!(
                    "DELETE FROM {rel} AS t WHERE EXISTS (SELECT 1 FROM {tmp} AS s WHERE {on})"
                ),
                Dialect::DuckDb | Dialect::Postgres => {
                    format!("DELETE FROM {rel} AS t USING {tmp} AS s WHERE {on}")
                }
            };
            vec![delete, insert]
        }
        "merge" => {
            let set = cols
                .iter()
                .filter(|c| !keys.iter().any(|k| k == *c))
                .map(|c| format!("{q} = s.{q}", q = d.quote(c)))
                .collect::<Vec<_>>();
            let values = cols
                .iter()
                .map(|c| format!("s.{}", d.quote(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let matched = if set.is_empty() {
                String::new()
            } else {
                format!("\nWHEN MATCHED THEN UPDATE SET {}", set.join(", "))
            };
            vec![format!(
                "MERGE INTO {rel} AS t USING {tmp} AS s ON ({on}){matched}\nWHEN NOT MATCHED THEN INSERT ({list}) VALUES ({values})"
            )]
        }
        other => {
            return Err(format!(
                "unknown incremental_strategy `{other}` (append, delete+insert, merge)"
            ))
        }
    })
}

/// Fold an incremental model's new rows (`sql`, compiled with
/// `is_incremental()` true) into its existing table.
async fn incremental(
    project: &Project,
    wh: &dyn Warehouse,
    node: &Node,
    rel: &str,
    sql: &str,
) -> Result<String, NodeError> {
    let d = dialect(project);
    let err = NodeError::Warehouse;
    let tmp_name = d.derived_name(&node.alias, "", "__weir_incr");
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
                    return Err(NodeError::Other(format!(
                        "the model has new columns ({}) and on_schema_change is `fail`",
                        added
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
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
        let keys = unique_key(node);
        let strategy = node
            .config
            .get("incremental_strategy")
            .and_then(Value::as_str)
            // The adapters' defaults: BigQuery merges, the others delete+insert.
            .unwrap_or(match (keys.is_empty(), d) {
                (true, _) => "append",
                (false, Dialect::BigQuery) => "merge",
                (false, _) => "delete+insert",
            });
        stmts.extend(incremental_statements(
            d, strategy, rel, &tmp, &cols, &keys,
        )?);
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

pub(crate) async fn seed(
    project: &Project,
    wh: &dyn Warehouse,
    node: &Node,
) -> Result<String, NodeError> {
    let d = dialect(project);
    check_name_fits(d, node)?;
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
    let kind = wh.relation_kind(&node.schema, &node.alias).await?;
    let tmp = d.relation(&node.schema, &d.derived_name(&node.alias, "", "__weir_tmp"));
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
                        // An empty cell is NULL, whatever the type (dbt reads
                        // seeds with agate, whose null values include "").
                        if v.is_empty() {
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
    stmts.extend(swap_in(d, kind, &tmp, &rel, &node.alias));
    wh.execute_atomic(&stmts).await?;
    Ok(format!("INSERT {}", rows.len()))
}
