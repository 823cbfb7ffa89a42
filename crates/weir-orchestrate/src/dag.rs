//! The DAG: tasks, what each waits for and how each is retried. A DAG is
//! checked once when it is built (unknown dependencies, duplicate ids and
//! cycles are all reported together) and stored with every run, so a run is
//! resumed or retried with the DAG it started with even after weir.yml changed.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

pub use weir_config::TriggerRule;

use crate::retry::RetryPolicy;

/// What a task does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// Creates the lake location and the warehouse's raw schema.
    Start,
    /// One source table to the lake, under a new run-scoped prefix.
    Extract {
        table: String,
    },
    /// The lake files the table's extract wrote, into the warehouse.
    Load {
        table: String,
    },
    /// Writes the dbt manifest and creates the models' schemas.
    TransformSetup,
    /// One dbt node (seed, model or test).
    Node {
        unique_id: String,
    },
    /// The whole dbt project's `build`, as one task.
    Transform,
    Sql {
        on: SqlOn,
        sql: String,
    },
    Shell {
        command: String,
    },
    /// Groups dependencies; `end` is one.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlOn {
    Warehouse,
    Source,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique in the DAG: `start`, `extract.orders`, `model.shop.orders`, …
    pub id: String,
    #[serde(flatten)]
    pub kind: TaskKind,
    pub depends_on: Vec<String>,
    pub retry: RetryPolicy,
    #[serde(with = "trigger_rule")]
    pub trigger_rule: TriggerRule,
    pub pool: Option<String>,
}

mod trigger_rule {
    use serde::{Deserialize, Deserializer, Serializer};
    use weir_config::TriggerRule;

    pub fn serialize<S: Serializer>(r: &TriggerRule, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TriggerRule, D::Error> {
        let s = String::deserialize(d)?;
        TriggerRule::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("trigger rule {s}")))
    }
}

impl Task {
    pub fn new(id: impl Into<String>, kind: TaskKind) -> Self {
        Task {
            id: id.into(),
            kind,
            depends_on: Vec::new(),
            retry: RetryPolicy::default(),
            trigger_rule: TriggerRule::AllSuccess,
            pool: None,
        }
    }

    pub fn after(mut self, deps: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.depends_on.extend(deps.into_iter().map(Into::into));
        self
    }
}

/// What a run was asked to do beyond the DAG's defaults (the UI's Trigger,
/// the API, `weir run --full-refresh --tables T --select S`). The tables and
/// the selector have already shaped the run's DAG; they are kept to show
/// them, and `full_refresh` (and, for a one-task transform, `select`) is read
/// by the tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParams {
    /// Loads replace their tables, incremental dbt models are rebuilt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_refresh: bool,
    /// Only these source tables are extracted and loaded (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Only the dbt nodes this selector picks are built (dbt's `--select`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
}

impl RunParams {
    /// Parameters as a person types them: tables separated by commas or
    /// spaces (each named once, sorted, so `b,a` asks what `a,b` asks), a
    /// selector with its spaces tidied, blank fields meaning "all".
    pub fn new<'a>(
        full_refresh: bool,
        tables: impl IntoIterator<Item = &'a str>,
        select: Option<&str>,
    ) -> RunParams {
        let mut names: Vec<String> = Vec::new();
        for t in tables
            .into_iter()
            .flat_map(|t| t.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|t| !t.is_empty())
        {
            if !names.iter().any(|n| n == t) {
                names.push(t.to_owned());
            }
        }
        names.sort();
        let select = select
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|s| !s.is_empty());
        RunParams {
            full_refresh,
            tables: names,
            select,
        }
    }

    pub fn is_default(&self) -> bool {
        self == &RunParams::default()
    }

    /// `full refresh, tables customers orders, select +fct_orders`, or `""`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.full_refresh {
            parts.push("full refresh".to_owned());
        }
        if !self.tables.is_empty() {
            parts.push(format!("tables {}", self.tables.join(" ")));
        }
        if let Some(s) = &self.select {
            parts.push(format!("select {s}"));
        }
        parts.join(", ")
    }

    /// The `weir run` flags that ask for these parameters.
    pub fn flags(&self) -> String {
        let mut out = String::new();
        if self.full_refresh {
            out.push_str(" --full-refresh");
        }
        if !self.tables.is_empty() {
            out.push_str(&format!(" --tables {}", self.tables.join(",")));
        }
        if let Some(s) = &self.select {
            out.push_str(&format!(" -s '{s}'"));
        }
        out
    }
}

/// A checked DAG: tasks in a topological order, with index-based edges.
#[derive(Debug, Clone)]
pub struct Dag {
    pub name: String,
    pub tasks: Vec<Task>,
    pub pools: Vec<(String, usize)>,
    /// What the run this DAG belongs to was asked for.
    pub params: RunParams,
    index: HashMap<String, usize>,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    tasks: Vec<Task>,
    pools: Vec<(String, usize)>,
    #[serde(default, skip_serializing_if = "RunParams::is_default")]
    params: RunParams,
}

impl Dag {
    /// Check `tasks` and order them so every task comes after what it waits for.
    pub fn new(
        name: impl Into<String>,
        tasks: Vec<Task>,
        pools: Vec<(String, usize)>,
    ) -> Result<Dag, Vec<String>> {
        let mut problems = Vec::new();
        let mut index = HashMap::new();
        for (i, t) in tasks.iter().enumerate() {
            if index.insert(t.id.clone(), i).is_some() {
                problems.push(format!("task `{}` is defined twice", t.id));
            }
        }
        for t in &tasks {
            for d in &t.depends_on {
                if !index.contains_key(d) {
                    problems.push(format!(
                        "task `{}` depends on `{d}`, which is not a task",
                        t.id
                    ));
                }
            }
            if let Some(p) = &t.pool {
                if !pools.iter().any(|(n, _)| n == p) {
                    problems.push(format!(
                        "task `{}` uses pool `{p}`, which is not defined",
                        t.id
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Kahn's algorithm, keeping the given order among ready tasks.
        let n = tasks.len();
        let ups: Vec<Vec<usize>> = tasks
            .iter()
            .map(|t| t.depends_on.iter().map(|d| index[d]).collect())
            .collect();
        let mut remaining: Vec<usize> = ups.iter().map(Vec::len).collect();
        let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, u) in ups.iter().enumerate() {
            for &d in u {
                downs[d].push(i);
            }
        }
        let mut order = Vec::with_capacity(n);
        let mut ready: std::collections::VecDeque<usize> =
            (0..n).filter(|&i| remaining[i] == 0).collect();
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for &c in &downs[i] {
                remaining[c] -= 1;
                if remaining[c] == 0 {
                    ready.push_back(c);
                }
            }
        }
        if order.len() < n {
            let stuck: Vec<usize> = (0..n).filter(|&i| remaining[i] > 0).collect();
            return Err(vec![format!(
                "dependency cycle: {}",
                cycle_path(&tasks, &ups, &stuck)
            )]);
        }
        let mut tasks_by_order: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        let sorted: Vec<Task> = order
            .iter()
            .map(|&i| tasks_by_order[i].take().expect("once"))
            .collect();
        Ok(Self::indexed(name.into(), sorted, pools))
    }

    fn indexed(name: String, tasks: Vec<Task>, pools: Vec<(String, usize)>) -> Dag {
        let index: HashMap<String, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let upstream: Vec<Vec<usize>> = tasks
            .iter()
            .map(|t| t.depends_on.iter().map(|d| index[d]).collect())
            .collect();
        let mut downstream = vec![Vec::new(); tasks.len()];
        for (i, u) in upstream.iter().enumerate() {
            for &d in u {
                downstream[d].push(i);
            }
        }
        Dag {
            name,
            tasks,
            pools,
            params: RunParams::default(),
            index,
            upstream,
            downstream,
        }
    }

    pub fn get(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn upstream(&self, i: usize) -> &[usize] {
        &self.upstream[i]
    }

    pub fn downstream(&self, i: usize) -> &[usize] {
        &self.downstream[i]
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&Stored {
            name: self.name.clone(),
            tasks: self.tasks.clone(),
            pools: self.pools.clone(),
            params: self.params.clone(),
        })
        .expect("a DAG serialises")
    }

    pub fn from_json(text: &str) -> Result<Dag, String> {
        let s: Stored = serde_json::from_str(text).map_err(|e| format!("stored DAG: {e}"))?;
        let mut dag = Dag::new(s.name, s.tasks, s.pools).map_err(|p| p.join("; "))?;
        dag.params = s.params;
        Ok(dag)
    }

    /// This DAG less the tasks in `drop`, for a run of part of the
    /// pipeline. A kept task that waited on a dropped one waits instead on
    /// what the dropped one waited for, so the order of what is kept holds
    /// (`load.orders -> stg_orders -> fct_orders` without `stg_orders` still
    /// runs `fct_orders` after `load.orders`).
    pub fn without(&self, drop: &BTreeSet<String>) -> Dag {
        // Tasks are in topological order: a task's upstream is settled first.
        let mut kept_ups: Vec<BTreeSet<usize>> = Vec::with_capacity(self.tasks.len());
        for i in 0..self.tasks.len() {
            let mut ups = BTreeSet::new();
            for &u in &self.upstream[i] {
                if drop.contains(&self.tasks[u].id) {
                    ups.extend(kept_ups[u].iter().copied());
                } else {
                    ups.insert(u);
                }
            }
            kept_ups.push(ups);
        }
        let tasks: Vec<Task> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| !drop.contains(&t.id))
            .map(|(i, t)| {
                let mut t = t.clone();
                t.depends_on = kept_ups[i]
                    .iter()
                    .map(|&u| self.tasks[u].id.clone())
                    .collect();
                t
            })
            .collect();
        let mut dag = Self::indexed(self.name.clone(), tasks, self.pools.clone());
        dag.params = self.params.clone();
        dag
    }
}

/// One cycle among `stuck` tasks, as `a -> b -> a`.
fn cycle_path(tasks: &[Task], ups: &[Vec<usize>], stuck: &[usize]) -> String {
    let in_stuck: std::collections::HashSet<usize> = stuck.iter().copied().collect();
    let mut path = vec![stuck[0]];
    let mut seen = HashMap::new();
    seen.insert(stuck[0], 0usize);
    loop {
        let cur = *path.last().expect("non-empty");
        let next = ups[cur]
            .iter()
            .copied()
            .find(|u| in_stuck.contains(u))
            .expect("a stuck task waits on another stuck task");
        if let Some(&at) = seen.get(&next) {
            let mut cyc: Vec<&str> = path[at..]
                .iter()
                .rev()
                .map(|&i| tasks[i].id.as_str())
                .collect();
            cyc.push(tasks[next].id.as_str());
            // Written in the direction work flows: upstream first.
            cyc.rotate_left(0);
            return cyc.join(" -> ");
        }
        seen.insert(next, path.len());
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dag_orders_tasks_and_reports_every_problem() {
        let dag = Dag::new(
            "d",
            vec![
                Task::new("end", TaskKind::Empty).after(["b", "c"]),
                Task::new("b", TaskKind::Empty).after(["a"]),
                Task::new("c", TaskKind::Empty).after(["a"]),
                Task::new("a", TaskKind::Empty),
            ],
            vec![],
        )
        .unwrap();
        let ids: Vec<&str> = dag.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "end"]);
        assert_eq!(dag.downstream(0).len(), 2);
        let back = Dag::from_json(&dag.to_json()).unwrap();
        assert_eq!(back.tasks, dag.tasks);

        let err = Dag::new(
            "d",
            vec![
                Task::new("a", TaskKind::Empty).after(["nope"]),
                Task::new("a", TaskKind::Empty),
                Task {
                    pool: Some("db".into()),
                    ..Task::new("b", TaskKind::Empty)
                },
            ],
            vec![],
        )
        .unwrap_err();
        assert_eq!(
            err,
            [
                "task `a` is defined twice",
                "task `a` depends on `nope`, which is not a task",
                "task `b` uses pool `db`, which is not defined",
            ]
        );
        let err = Dag::new(
            "d",
            vec![
                Task::new("x", TaskKind::Empty),
                Task::new("a", TaskKind::Empty).after(["x", "c"]),
                Task::new("b", TaskKind::Empty).after(["a"]),
                Task::new("c", TaskKind::Empty).after(["b"]),
            ],
            vec![],
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("dependency cycle: "), "{}", err[0]);
        for id in ["a", "b", "c"] {
            assert!(err[0].contains(id), "{}", err[0]);
        }
        assert!(!err[0].contains('x'), "{}", err[0]);
    }

    #[test]
    fn a_dag_without_some_tasks_keeps_the_order_of_the_rest() {
        let mut dag = Dag::new(
            "d",
            vec![
                Task::new("load", TaskKind::Empty),
                Task::new("stg", TaskKind::Empty).after(["load"]),
                Task::new("other", TaskKind::Empty),
                Task::new("fct", TaskKind::Empty).after(["stg", "other"]),
                Task::new("end", TaskKind::Empty).after(["fct"]),
            ],
            vec![],
        )
        .unwrap();
        dag.params.full_refresh = true;
        let drop: BTreeSet<String> = ["stg".to_owned(), "other".to_owned()].into();
        let part = dag.without(&drop);
        let deps = |id: &str| part.tasks[part.get(id).unwrap()].depends_on.clone();
        assert_eq!(part.tasks.len(), 3);
        assert_eq!(deps("fct"), ["load"]);
        assert_eq!(deps("end"), ["fct"]);
        assert!(part.params.full_refresh);
        let back = Dag::from_json(&part.to_json()).unwrap();
        assert_eq!(back.params, part.params);
        assert_eq!(back.tasks, part.tasks);
        assert_eq!(RunParams::default().describe(), "");
        let p = RunParams::new(
            true,
            ["orders, customers", "orders"],
            Some("  +fct  tag:x "),
        );
        assert_eq!(p.tables, ["customers", "orders"]);
        assert_eq!(p.select.as_deref(), Some("+fct tag:x"));
        assert_eq!(
            p.describe(),
            "full refresh, tables customers orders, select +fct tag:x"
        );
        assert!(RunParams::new(false, [" ", ""], Some("  ")).is_default());
    }
}
