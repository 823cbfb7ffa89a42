//! The pipeline's DAG from weir.yml and the dbt project, and the part of it
//! a run with parameters (tables, a dbt selector) works on.

use std::collections::BTreeSet;

use weir_config::{OrchestrateConfig, Project, TaskPolicy, UserTaskKind, SOURCE_POOL};
use weir_transform::{Command, Selector};

use super::{PipelineError, DEFAULT_MAX_RETRY_DELAY, DEFAULT_RETRIES, DEFAULT_RETRY_DELAY};
use crate::dag::{Dag, RunParams, SqlOn, Task, TaskKind};
use crate::retry::RetryPolicy;

fn retry_policy(p: &TaskPolicy) -> RetryPolicy {
    RetryPolicy {
        retries: p.retries.unwrap_or(DEFAULT_RETRIES),
        delay: p.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY),
        max_delay: p.max_retry_delay.unwrap_or(DEFAULT_MAX_RETRY_DELAY),
        timeout: match p.timeout {
            None => Some(weir_config::DEFAULT_TIMEOUT),
            Some(weir_config::NO_TIMEOUT) => None,
            Some(d) => Some(d),
        },
    }
}

fn with_policy(mut t: Task, p: &TaskPolicy) -> Task {
    t.retry = retry_policy(p);
    t.trigger_rule = p.trigger_rule.unwrap_or_default();
    t.pool = p.pool.clone();
    t
}

/// Build the DAG: the seed's shape plus the project's tasks.
pub fn build_dag(
    project: &Project,
    cfg: &OrchestrateConfig,
    tables: &[String],
    dbt: Option<&weir_transform::Project>,
) -> Result<Dag, PipelineError> {
    let mut tasks = vec![with_policy(
        Task::new("start", TaskKind::Start),
        &cfg.defaults,
    )];
    let mut pools = cfg.pools.clone();
    let mut extract = cfg.extract.or(&cfg.defaults);
    // Extract tasks share the source: unless told otherwise, at most
    // `source.jobs` of them run at once, in the pool `source`.
    if let (Some(src), false, None) = (&project.source, tables.is_empty(), &extract.pool) {
        if !pools.iter().any(|(n, _)| n == SOURCE_POOL) {
            pools.push((SOURCE_POOL.to_owned(), src.jobs.max(1)));
        }
        extract.pool = Some(SOURCE_POOL.to_owned());
    }
    let load = cfg.load.or(&cfg.defaults);
    let transform = cfg.transform.or(&cfg.defaults);
    let mut loads = Vec::new();
    for t in tables {
        tasks.push(
            with_policy(
                Task::new(
                    format!("extract.{t}"),
                    TaskKind::Extract { table: t.clone() },
                ),
                &extract,
            )
            .after(["start"]),
        );
        tasks.push(
            with_policy(
                Task::new(format!("load.{t}"), TaskKind::Load { table: t.clone() }),
                &load,
            )
            .after([format!("extract.{t}")]),
        );
        loads.push(format!("load.{t}"));
    }
    let all_loads = if loads.is_empty() {
        vec!["start".to_owned()]
    } else {
        loads.clone()
    };
    if let Some(dbt) = dbt {
        if cfg.transform_per_node {
            tasks.push(
                with_policy(
                    Task::new("transform.setup", TaskKind::TransformSetup),
                    &transform,
                )
                .after(["start"]),
            );
            let plan = weir_transform::plan(dbt, Command::Build, &Selector::default())
                .map_err(|e| PipelineError::Config(e.to_string()))?;
            let raw = &project.warehouse.schema;
            let node_ids: Vec<String> = plan.keys().cloned().collect();
            for (id, deps) in plan {
                let node = &dbt.nodes[&id];
                let mut after: BTreeSet<String> = deps.into_iter().collect();
                after.insert("transform.setup".to_owned());
                for d in &node.depends_on {
                    if let Some(src) = dbt.sources.get(d) {
                        // A source the loader writes waits for that table's
                        // load; any other source waits for every load.
                        let load_id = format!("load.{}", src.identifier);
                        if src.schema == *raw && loads.contains(&load_id) {
                            after.insert(load_id);
                        } else {
                            after.extend(all_loads.iter().cloned());
                        }
                    }
                }
                tasks.push(
                    with_policy(
                        Task::new(id.clone(), TaskKind::Node { unique_id: id }),
                        &transform,
                    )
                    .after(after),
                );
            }
            // `transform` names the whole stage, as in single-task mode, so
            // project tasks can depend on it either way.
            tasks.push(
                with_policy(Task::new("transform", TaskKind::Empty), &transform)
                    .after(node_ids.into_iter().chain(["transform.setup".to_owned()])),
            );
        } else {
            tasks.push(
                with_policy(Task::new("transform", TaskKind::Transform), &transform)
                    .after(all_loads.clone()),
            );
        }
    }
    for u in &cfg.tasks {
        let kind = match &u.kind {
            UserTaskKind::Sql { on, sql } => TaskKind::Sql {
                on: match on {
                    weir_config::SqlTarget::Warehouse => SqlOn::Warehouse,
                    weir_config::SqlTarget::Source => SqlOn::Source,
                },
                sql: sql.clone(),
            },
            UserTaskKind::Shell { command } => TaskKind::Shell {
                command: command.clone(),
            },
            UserTaskKind::Empty => TaskKind::Empty,
        };
        let deps = if u.depends_on.is_empty() {
            vec!["start".to_owned()]
        } else {
            u.depends_on.clone()
        };
        tasks.push(
            with_policy(Task::new(u.name.clone(), kind), &u.policy.or(&cfg.defaults)).after(deps),
        );
    }
    // `end` waits for every task nothing else waits for, except the
    // project's tasks that run after `end`.
    let waited: BTreeSet<&str> = tasks
        .iter()
        .flat_map(|t| t.depends_on.iter().map(String::as_str))
        .collect();
    let after_end: BTreeSet<&str> = cfg
        .tasks
        .iter()
        .filter(|u| u.depends_on.iter().any(|d| d == "end"))
        .map(|u| u.name.as_str())
        .collect();
    let sinks: Vec<String> = tasks
        .iter()
        .map(|t| t.id.as_str())
        .filter(|id| !waited.contains(id) && !after_end.contains(id))
        .map(str::to_owned)
        .collect();
    tasks.push(with_policy(Task::new("end", TaskKind::Empty), &cfg.defaults).after(sinks));
    apply_overrides(cfg, &extract, &load, &transform, &mut tasks)?;
    Dag::new(project.name.clone(), tasks, pools).map_err(|problems| {
        PipelineError::Config(format!(
            "the pipeline of {} is not a valid DAG:\n  {}",
            project.dir.join(weir_config::PROJECT_FILE).display(),
            problems.join("\n  ")
        ))
    })
}

/// `orchestrate.overrides`: settings for particular tasks, over their
/// group's (shorter patterns first, so the most specific one wins). A
/// pattern that names no task is an error: it is most likely a typo.
fn apply_overrides(
    cfg: &OrchestrateConfig,
    extract: &TaskPolicy,
    load: &TaskPolicy,
    transform: &TaskPolicy,
    tasks: &mut [Task],
) -> Result<(), PipelineError> {
    if cfg.overrides.is_empty() {
        return Ok(());
    }
    let mut overrides: Vec<&(String, TaskPolicy, weir_config::Location)> =
        cfg.overrides.iter().collect();
    overrides.sort_by_key(|o| o.0.len());
    let mut unused: Vec<String> = Vec::new();
    for (pattern, _, at) in &overrides {
        if !tasks
            .iter()
            .any(|t| weir_config::pattern_matches(pattern, &t.id))
        {
            unused.push(format!(
                "{at}: orchestrate.overrides.{pattern}: names no task of the pipeline"
            ));
        }
    }
    if !unused.is_empty() {
        return Err(PipelineError::Config(unused.join("\n")));
    }
    for t in tasks.iter_mut() {
        let matching: Vec<&TaskPolicy> = overrides
            .iter()
            .filter(|o| weir_config::pattern_matches(&o.0, &t.id))
            .map(|o| &o.1)
            .collect();
        if matching.is_empty() {
            continue;
        }
        let mut policy = match &t.kind {
            TaskKind::Extract { .. } => extract.clone(),
            TaskKind::Load { .. } => load.clone(),
            TaskKind::TransformSetup | TaskKind::Node { .. } | TaskKind::Transform => {
                transform.clone()
            }
            _ => cfg
                .tasks
                .iter()
                .find(|u| u.name == t.id)
                .map_or_else(|| cfg.defaults.clone(), |u| u.policy.or(&cfg.defaults)),
        };
        for m in matching {
            policy = m.or(&policy);
        }
        let deps = std::mem::take(&mut t.depends_on);
        *t = with_policy(t.clone(), &policy).after(deps);
    }
    Ok(())
}

/// The part of `dag` a run with `params` works on: the named tables'
/// extract and load tasks (every table's when none is named) and the dbt
/// nodes the selector picks with their tests (every node when none is
/// given), with everything else the pipeline defines. Unknown tables and
/// selectors that pick nothing are errors, so a typo never starts an
/// empty run.
pub(super) fn part(
    dag: &Dag,
    tables: &[String],
    dbt: Option<&weir_transform::Project>,
    params: &RunParams,
) -> Result<Dag, PipelineError> {
    let mut drop = BTreeSet::new();
    if !params.tables.is_empty() {
        let unknown: Vec<&str> = params
            .tables
            .iter()
            .filter(|t| !tables.contains(t))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(PipelineError::Config(format!(
                "no source table {} in the pipeline (its tables: {})",
                unknown.join(", "),
                tables.join(", ")
            )));
        }
        for t in tables.iter().filter(|t| !params.tables.contains(t)) {
            drop.insert(format!("extract.{t}"));
            drop.insert(format!("load.{t}"));
        }
    }
    if let Some(select) = &params.select {
        let Some(dbt) = dbt else {
            return Err(PipelineError::Config(format!(
                "a dbt selector (`{select}`) is given but the project has no `transform:` section"
            )));
        };
        let sel = super::runner::selector(params);
        if sel.select.is_empty() {
            return Err(PipelineError::Config(
                "the dbt selector is empty; leave it out to build every node".to_owned(),
            ));
        }
        let chosen = weir_transform::plan(dbt, Command::Build, &sel)
            .map_err(|e| PipelineError::Config(format!("dbt selector `{select}`: {e}")))?;
        if chosen.is_empty() {
            return Err(PipelineError::Config(format!(
                "the dbt selector `{select}` picks no node of the project"
            )));
        }
        for t in &dag.tasks {
            if matches!(&t.kind, TaskKind::Node { unique_id } if !chosen.contains_key(unique_id)) {
                drop.insert(t.id.clone());
            }
        }
    }
    // A task of the project's own that waits only on what was dropped (a
    // `refresh_mv` after `load.orders`, in a run of other tables) goes too:
    // kept, it would run at once, on data this run did not touch.
    if !drop.is_empty() {
        for t in &dag.tasks {
            if t.id != "end"
                && !t.depends_on.is_empty()
                && t.depends_on.iter().all(|d| drop.contains(d))
            {
                drop.insert(t.id.clone());
            }
        }
    }
    let mut out = dag.without(&drop);
    out.params = params.clone();
    Ok(out)
}
