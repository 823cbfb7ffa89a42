//! The run's DAG and its timeline, drawn on the server as SVG: no script
//! and no library in the browser. The graph is layered by longest path
//! from the roots; a collapsed group is one node standing for its tasks, so
//! a 500-task DAG stays readable with its tests folded away.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use weir_orchestrate::dag::Dag;
use weir_orchestrate::store::AttemptRow;

use crate::error::html_escape as esc;
use crate::views::group_of;

const NODE_W: usize = 210;
const NODE_H: usize = 22;
const COL_GAP: usize = 60;
const ROW_GAP: usize = 8;

struct Node {
    label: String,
    /// A task id, or `None` for a collapsed group.
    task: Option<String>,
    state: String,
    rank: usize,
}

/// The DAG of a run with each task's state, groups in `collapsed` folded
/// into one node; `link` gives a task's page.
pub fn graph(
    dag: &Dag,
    states: &BTreeMap<String, String>,
    collapsed: &BTreeSet<String>,
    link: &dyn Fn(&str) -> String,
) -> String {
    // Node of each task: its own, or its group's.
    let mut nodes: Vec<Node> = Vec::new();
    let mut group_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut node_of = vec![0usize; dag.tasks.len()];
    let mut rank = vec![0usize; dag.tasks.len()];
    for (i, t) in dag.tasks.iter().enumerate() {
        rank[i] = dag
            .upstream(i)
            .iter()
            .map(|&u| rank[u] + 1)
            .max()
            .unwrap_or(0);
        let g = group_of(&t.id);
        let state = states
            .get(&t.id)
            .cloned()
            .unwrap_or_else(|| "pending".into());
        if collapsed.contains(g) {
            let n = *group_node.entry(g).or_insert_with(|| {
                nodes.push(Node {
                    label: g.to_owned(),
                    task: None,
                    state: String::new(),
                    rank: rank[i],
                });
                nodes.len() - 1
            });
            node_of[i] = n;
            // A group shows its worst state.
            nodes[n].state = worse(&nodes[n].state, &state).to_owned();
            nodes[n].rank = nodes[n].rank.min(rank[i]);
        } else {
            nodes.push(Node {
                label: t.id.clone(),
                task: Some(t.id.clone()),
                state,
                rank: rank[i],
            });
            node_of[i] = nodes.len() - 1;
        }
    }
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, _) in dag.tasks.iter().enumerate() {
        *counts.entry(node_of[i]).or_default() += 1;
    }
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    for i in 0..dag.tasks.len() {
        for &u in dag.upstream(i) {
            if node_of[u] != node_of[i] {
                edges.insert((node_of[u], node_of[i]));
            }
        }
    }
    let boxes: Vec<Drawn> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Drawn {
            label: match &n.task {
                Some(_) => n.label.clone(),
                None => format!("{} ({} tasks)", n.label, counts.get(&i).unwrap_or(&0)),
            },
            state: n.state.clone(),
            rank: n.rank,
            href: n.task.as_deref().map(link),
            class: if n.task.is_some() { "" } else { "group" },
        })
        .collect();
    draw(&boxes, &edges, "task graph")
}

/// A box of a layered graph.
pub struct Drawn {
    pub label: String,
    /// Its state class (`s-success`); empty for none.
    pub state: String,
    /// Its column: the longest path from the roots.
    pub rank: usize,
    pub href: Option<String>,
    /// An extra class for the box's group (`group`, `self`).
    pub class: &'static str,
}

/// Boxes in columns by rank, stacked in the given order, with an edge from
/// each upstream box to each downstream one.
pub fn draw(boxes: &[Drawn], edges: &BTreeSet<(usize, usize)>, aria: &str) -> String {
    // Positions: a column per rank, nodes stacked in order.
    let mut per_rank: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos = Vec::with_capacity(boxes.len());
    for n in boxes {
        let row = per_rank.entry(n.rank).or_default();
        pos.push((
            n.rank * (NODE_W + COL_GAP) + 10,
            *row * (NODE_H + ROW_GAP) + 10,
        ));
        *row += 1;
    }
    let columns = per_rank.keys().max().map_or(1, |r| r + 1);
    let width = columns * (NODE_W + COL_GAP) + 20;
    let height = per_rank.values().max().copied().unwrap_or(1) * (NODE_H + ROW_GAP) + 20;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{}">"#,
        esc(aria)
    );
    for (a, b) in edges {
        let (x1, y1) = (pos[*a].0 + NODE_W, pos[*a].1 + NODE_H / 2);
        let (x2, y2) = (pos[*b].0, pos[*b].1 + NODE_H / 2);
        let mid = (x1 + x2) / 2;
        let _ = write!(
            s,
            r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>"#
        );
    }
    for (i, n) in boxes.iter().enumerate() {
        let (x, y) = pos[i];
        let label = &n.label;
        let shown: String = if label.chars().count() > 30 {
            let tail: String = label
                .chars()
                .rev()
                .take(29)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("…{tail}")
        } else {
            label.clone()
        };
        let state = if n.state.is_empty() {
            "none"
        } else {
            n.state.as_str()
        };
        let body = format!(
            r#"<rect class="node s-{state}" x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="4"><title>{title} — {state}</title></rect><text x="{tx}" y="{ty}">{text}</text>"#,
            state = esc(state),
            title = esc(label),
            tx = x + 6,
            ty = y + 15,
            text = esc(&shown)
        );
        let class = if n.class.is_empty() {
            String::new()
        } else {
            format!(r#" class="{}""#, n.class)
        };
        match &n.href {
            Some(h) => {
                let _ = write!(s, r#"<a{class} href="{}">{body}</a>"#, esc(h));
            }
            None => {
                let _ = write!(s, r#"<g{class}>{body}</g>"#);
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// The more alarming of two task states, for a collapsed group.
fn worse<'a>(a: &'a str, b: &'a str) -> &'a str {
    let rank = |s: &str| match s {
        "failed" => 7,
        "upstream_failed" => 6,
        "running" => 5,
        "up_for_retry" => 4,
        "queued" => 3,
        "pending" => 2,
        "skipped" => 1,
        "success" => 0,
        _ => -1,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// A bar per attempt from its start to its end (or now), in start order.
pub fn timeline(
    attempts: &[AttemptRow],
    now: DateTime<Utc>,
    link: &dyn Fn(&AttemptRow) -> String,
) -> String {
    const LABEL_W: usize = 300;
    const BAR_W: usize = 700;
    const ROW_H: usize = 16;
    let Some(t0) = attempts.iter().map(|a| a.started_at).min() else {
        return String::new();
    };
    let t1 = attempts
        .iter()
        .map(|a| a.ended_at.unwrap_or(now))
        .max()
        .unwrap_or(now);
    let span = ((t1 - t0).num_milliseconds().max(1)) as f64;
    let x = |t: DateTime<Utc>| {
        LABEL_W as f64 + (t - t0).num_milliseconds() as f64 / span * BAR_W as f64
    };
    let height = attempts.len() * ROW_H + 24;
    let width = LABEL_W + BAR_W + 20;
    let mut s = format!(
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="timeline of attempts">"#
    );
    let _ = write!(
        s,
        r#"<text class="axis" x="{LABEL_W}" y="{y}">0 s</text><text class="axis" x="{}" y="{y}" text-anchor="end">{:.1} s</text>"#,
        LABEL_W + BAR_W,
        span / 1000.0,
        y = height - 6
    );
    for (i, a) in attempts.iter().enumerate() {
        let y = i * ROW_H;
        let (x1, x2) = (x(a.started_at), x(a.ended_at.unwrap_or(now)));
        let w = (x2 - x1).max(1.5);
        let secs = (a.ended_at.unwrap_or(now) - a.started_at).num_milliseconds() as f64 / 1000.0;
        let _ = write!(
            s,
            r#"<a href="{href}"><text x="4" y="{ty}">{label}</text><rect class="bar a-{state}" x="{x1:.1}" y="{by}" width="{w:.1}" height="{bh}"><title>{label}: {state}, {secs:.2} s</title></rect></a>"#,
            href = esc(&link(a)),
            ty = y + 12,
            label = esc(&format!("{} #{}", a.task_id, a.try_number)),
            state = esc(&a.state),
            by = y + 3,
            bh = ROW_H - 5
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_orchestrate::dag::{Task, TaskKind};

    /// A 500-task DAG shaped like a big dbt project: 20 tables extracted and
    /// loaded, 230 models in chains, 230 tests on them.
    fn big_dag() -> Dag {
        let mut tasks = vec![Task::new("start", TaskKind::Empty)];
        for i in 0..20 {
            tasks.push(Task::new(format!("extract.t{i}"), TaskKind::Empty).after(["start"]));
            tasks.push(
                Task::new(format!("load.t{i}"), TaskKind::Empty).after([format!("extract.t{i}")]),
            );
        }
        for i in 0..230 {
            let up = if i < 20 {
                format!("load.t{i}")
            } else {
                format!("model.p.m{}", i - 20)
            };
            tasks.push(Task::new(format!("model.p.m{i}"), TaskKind::Empty).after([up]));
            tasks.push(
                Task::new(format!("test.p.t{i}"), TaskKind::Empty).after([format!("model.p.m{i}")]),
            );
        }
        tasks.push(
            Task::new("end", TaskKind::Empty).after((0..230).map(|i| format!("test.p.t{i}"))),
        );
        Dag::new("big", tasks, Vec::new()).unwrap()
    }

    #[test]
    fn a_500_task_graph_renders_and_folds_its_groups() {
        let dag = big_dag();
        assert_eq!(dag.tasks.len(), 502);
        let states = BTreeMap::from([("test.p.t7".to_owned(), "failed".to_owned())]);
        let link = |t: &str| format!("/t/{t}");
        let t = std::time::Instant::now();
        let full = graph(&dag, &states, &BTreeSet::new(), &link);
        let elapsed = t.elapsed();
        assert_eq!(full.matches("<rect class=\"node").count(), 502);
        let folded = graph(&dag, &states, &BTreeSet::from(["test".to_owned()]), &link);
        assert_eq!(folded.matches("<rect class=\"node").count(), 502 - 230 + 1);
        assert!(folded.contains("test (230 tasks)"));
        // The folded group shows its worst state.
        assert!(folded.contains(r#"class="node s-failed""#));
        assert!(
            folded.len() < full.len() * 2 / 3,
            "{} vs {}",
            folded.len(),
            full.len()
        );
        eprintln!("500-task graph: {} KB in {elapsed:?}", full.len() / 1024);
    }

    #[test]
    fn labels_are_escaped() {
        let dag = Dag::new(
            "x",
            vec![Task::new("model.<script>", TaskKind::Empty)],
            Vec::new(),
        )
        .unwrap();
        let s = graph(&dag, &BTreeMap::new(), &BTreeSet::new(), &|t| {
            format!("/t/{t}\"x")
        });
        assert!(!s.contains("<script>") && s.contains("&lt;script&gt;") && s.contains("&quot;x"));
    }
}
