//! The node graph: cycle detection, graph order, and dbt's node selection
//! (`name`, `+name`, `name+`, `2+name`, `@name`, `tag:`, `path:`, `source:`,
//! `resource_type:`, unions by space, intersections by comma, `--exclude`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use weir_select::{Atom, Depth, Method};

use crate::project::{Node, Project, ResourceType};
use crate::TransformError;

/// Report a cycle with its path (`a -> b -> a`).
pub(crate) fn check_cycles(nodes: &BTreeMap<String, Node>) -> Result<(), TransformError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        id: &str,
        nodes: &BTreeMap<String, Node>,
        marks: &mut HashMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Result<(), TransformError> {
        match marks.get(id) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|s| s == id).unwrap_or(0);
                let mut path: Vec<String> = stack[start..]
                    .iter()
                    .map(|s| nodes.get(s).map_or(s.clone(), |n| n.name.clone()))
                    .collect();
                path.push(nodes.get(id).map_or(id.to_owned(), |n| n.name.clone()));
                return Err(TransformError::Cycle { path });
            }
            None => {}
        }
        let Some(node) = nodes.get(id) else {
            return Ok(());
        };
        marks.insert(id.to_owned(), Mark::Visiting);
        stack.push(id.to_owned());
        for dep in &node.depends_on {
            visit(dep, nodes, marks, stack)?;
        }
        stack.pop();
        marks.insert(id.to_owned(), Mark::Done);
        Ok(())
    }
    let mut marks = HashMap::new();
    for id in nodes.keys() {
        visit(id, nodes, &mut marks, &mut Vec::new())?;
    }
    Ok(())
}

/// Children of every node (sources included as parents).
pub(crate) fn children(nodes: &BTreeMap<String, Node>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for n in nodes.values() {
        for d in &n.depends_on {
            out.entry(d.clone()).or_default().push(n.unique_id.clone());
        }
    }
    out
}

/// A parsed `--select`/`--exclude` value.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub select: Vec<String>,
    pub exclude: Vec<String>,
}

fn walk(
    start: &str,
    next: &dyn Fn(&str) -> Vec<String>,
    depth: Option<usize>,
    out: &mut BTreeSet<String>,
) {
    let mut frontier = vec![start.to_owned()];
    let mut level = 0;
    while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
        let mut nf = Vec::new();
        for id in frontier {
            for n in next(&id) {
                if out.insert(n.clone()) {
                    nf.push(n);
                }
            }
        }
        frontier = nf;
        level += 1;
    }
}

/// Nodes one atom selects (e.g. `2+stg_orders+`, `tag:nightly`, `@orders`).
fn atom(project: &Project, kids: &HashMap<String, Vec<String>>, a: &Atom) -> BTreeSet<String> {
    let nodes = &project.nodes;
    let value = a.value.as_str();
    let mut base = BTreeSet::new();
    match a.method {
        Method::Tag => base.extend(
            nodes
                .values()
                .filter(|n| n.tags().iter().any(|t| t == value))
                .map(|n| n.unique_id.clone()),
        ),
        Method::Path => {
            let v = value.trim_end_matches('/');
            base.extend(
                nodes
                    .values()
                    .filter(|n| {
                        let p = n.path.to_string_lossy();
                        p == v
                            || p.starts_with(&format!("{v}/"))
                            || n.path.file_name().is_some_and(|f| f.to_string_lossy() == v)
                    })
                    .map(|n| n.unique_id.clone()),
            )
        }
        Method::Source => {
            let (src, table) = value.split_once('.').unwrap_or((value, "*"));
            base.extend(
                project
                    .sources
                    .values()
                    .filter(|s| s.source_name == src && (table == "*" || s.name == table))
                    .map(|s| s.unique_id.clone()),
            )
        }
        Method::ResourceType => base.extend(
            nodes
                .values()
                .filter(|n| n.resource_type.as_str() == value)
                .map(|n| n.unique_id.clone()),
        ),
        Method::Fqn => {
            let wanted: Vec<&str> = value.split('.').collect();
            for n in nodes.values() {
                let fqn: Vec<&str> = n.fqn.iter().map(String::as_str).collect();
                let matches = n.name == value
                    || fqn
                        .windows(wanted.len())
                        .enumerate()
                        .any(|(i, w)| (i == 0 || i == 1) && w == wanted.as_slice());
                if matches {
                    base.insert(n.unique_id.clone());
                }
            }
        }
    }
    if base.is_empty() {
        return base;
    }
    let levels = |d: Depth| match d {
        Depth::All => None,
        Depth::Levels(n) => Some(n),
    };
    let parents = |id: &str| -> Vec<String> {
        nodes
            .get(id)
            .map(|n| n.depends_on.clone())
            .unwrap_or_default()
    };
    let childs = |id: &str| -> Vec<String> { kids.get(id).cloned().unwrap_or_default() };
    let mut out = base.clone();
    for id in &base {
        if let Some(d) = a.parents {
            walk(id, &parents, levels(d), &mut out);
        }
        if a.at || a.children.is_some() {
            walk(id, &childs, a.children.and_then(levels), &mut out);
        }
    }
    if a.at {
        let below: Vec<String> = out.iter().cloned().collect();
        for id in below {
            walk(&id, &parents, None, &mut out);
        }
    }
    out
}

fn expression(
    project: &Project,
    kids: &HashMap<String, Vec<String>>,
    terms: &[String],
) -> Result<BTreeSet<String>, TransformError> {
    let parsed = weir_select::parse(terms).map_err(|e| TransformError::Selection {
        message: e.to_string(),
    })?;
    let mut union = BTreeSet::new();
    for intersection in &parsed.union {
        let mut inter: Option<BTreeSet<String>> = None;
        for a in intersection {
            let set = atom(project, kids, a);
            inter = Some(match inter {
                None => set,
                Some(prev) => prev.intersection(&set).cloned().collect(),
            });
        }
        union.extend(inter.unwrap_or_default());
    }
    Ok(union)
}

/// The nodes a command acts on, in no particular order: models, seeds and
/// tests matching `--select` (everything when empty) minus `--exclude`, with
/// the tests of selected nodes added as dbt does ("eager" indirect selection).
pub fn select(
    project: &Project,
    sel: &Selector,
    types: &[ResourceType],
) -> Result<BTreeSet<String>, TransformError> {
    let kids = children(&project.nodes);
    let mut chosen: BTreeSet<String> = if sel.select.is_empty() {
        project.nodes.keys().cloned().collect()
    } else {
        expression(project, &kids, &sel.select)?
    };
    if !sel.select.is_empty() {
        let tests: Vec<String> = project
            .nodes
            .values()
            .filter(|n| {
                n.resource_type == ResourceType::Test
                    && n.depends_on.iter().any(|d| chosen.contains(d))
            })
            .map(|n| n.unique_id.clone())
            .collect();
        chosen.extend(tests);
    }
    if !sel.exclude.is_empty() {
        let excluded = expression(project, &kids, &sel.exclude)?;
        chosen.retain(|id| !excluded.contains(id));
    }
    chosen.retain(|id| {
        project
            .nodes
            .get(id)
            .is_some_and(|n| types.contains(&n.resource_type))
    });
    Ok(chosen)
}
