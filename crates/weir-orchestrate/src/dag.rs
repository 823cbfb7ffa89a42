//! The DAG: tasks, what each waits for and how each is retried. A DAG is
//! checked once when it is built (unknown dependencies, duplicate ids and
//! cycles are all reported together) and stored with every run, so a run is
//! resumed or retried with the DAG it started with even after weir.yml changed.

use std::collections::HashMap;

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

/// A checked DAG: tasks in a topological order, with index-based edges.
#[derive(Debug, Clone)]
pub struct Dag {
    pub name: String,
    pub tasks: Vec<Task>,
    pub pools: Vec<(String, usize)>,
    index: HashMap<String, usize>,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    tasks: Vec<Task>,
    pools: Vec<(String, usize)>,
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
        })
        .expect("a DAG serialises")
    }

    pub fn from_json(text: &str) -> Result<Dag, String> {
        let s: Stored = serde_json::from_str(text).map_err(|e| format!("stored DAG: {e}"))?;
        Dag::new(s.name, s.tasks, s.pools).map_err(|p| p.join("; "))
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
}
