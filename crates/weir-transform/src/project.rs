//! Reading a dbt project: `dbt_project.yml`, model/seed/test/macro files,
//! `schema.yml`-style property files, and the config tree.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::render::Renderer;
use crate::{yaml, Problems, TransformError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Seed,
    Model,
    Test,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Seed => "seed",
            ResourceType::Model => "model",
            ResourceType::Test => "test",
        }
    }
}

/// What a generic (schema) test checks.
#[derive(Debug, Clone)]
pub struct GenericTest {
    /// `unique`, `not_null`, `accepted_values`, `relationships`, or a custom test's name.
    pub name: String,
    /// The node (or `source.<src>.<table>`) the test is attached to.
    pub attached: String,
    pub column: Option<String>,
    /// The test's arguments (`values`, `to`, `field`, …).
    pub args: Map<String, Value>,
}

/// A model, seed or test.
#[derive(Debug, Clone)]
pub struct Node {
    /// `model.<project>.<name>`, `seed.…`, `test.…`.
    pub unique_id: String,
    pub resource_type: ResourceType,
    pub name: String,
    /// Path relative to the project folder.
    pub path: PathBuf,
    /// Project name, folders, node name (what `models:` config and `path:` selection follow).
    pub fqn: Vec<String>,
    /// The SQL as written (seeds: empty; generic tests: empty).
    pub raw_sql: String,
    /// Resolved config: project tree, then property files, then `config()` in the file.
    pub config: Map<String, Value>,
    /// Unique ids this node reads from (models, seeds, sources).
    pub depends_on: Vec<String>,
    /// Schema and relation name in the warehouse.
    pub schema: String,
    pub alias: String,
    pub generic: Option<GenericTest>,
    /// `description:` from the node's property file.
    pub description: String,
    /// `columns:` from the node's property file, in its order.
    pub columns: Vec<Column>,
}

/// A column a property file documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub description: String,
    pub data_type: Option<String>,
}

impl Node {
    pub fn materialized(&self) -> &str {
        self.config
            .get("materialized")
            .and_then(Value::as_str)
            .unwrap_or(match self.resource_type {
                ResourceType::Model => "view",
                ResourceType::Seed => "seed",
                ResourceType::Test => "test",
            })
    }

    pub fn tags(&self) -> Vec<String> {
        match self.config.get("tags") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }
}

/// A source table declared in a property file.
#[derive(Debug, Clone)]
pub struct Source {
    pub unique_id: String,
    pub source_name: String,
    pub name: String,
    pub schema: String,
    pub identifier: String,
    pub path: PathBuf,
}

/// Where and how nodes are built (a dbt "target").
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// `duckdb`, `postgres`, `bigquery`.
    pub kind: String,
    /// The default schema models are built in.
    pub schema: String,
    pub database: String,
    pub threads: usize,
}

impl Target {
    /// The target a Weir project's `transform:` section and warehouse give:
    /// the adapter and database of `warehouse:`, the section's schema.
    pub fn for_project(
        project: &weir_config::Project,
        t: &weir_config::TransformConfig,
        name: &str,
        threads: usize,
    ) -> Target {
        Target {
            name: name.to_owned(),
            kind: project.warehouse.target.kind().to_owned(),
            schema: t.schema.clone(),
            database: project.warehouse.target.database(),
            threads,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProjectOptions {
    pub target: Target,
    /// `--vars`, overriding `vars:` in dbt_project.yml.
    pub vars: Map<String, Value>,
    pub full_refresh: bool,
}

/// A parsed, rendered-for-structure project: every node with its config,
/// dependencies and relation.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    pub target_path: PathBuf,
    pub nodes: BTreeMap<String, Node>,
    pub sources: BTreeMap<String, Source>,
    pub(crate) renderer: Renderer,
    pub vars: Map<String, Value>,
    pub target: Target,
    pub full_refresh: bool,
}

fn config_err(file: &Path, key: impl Into<String>, message: impl Into<String>) -> TransformError {
    TransformError::Config {
        file: file.to_path_buf(),
        key: key.into(),
        message: message.into(),
    }
}

fn str_list(v: Option<&Value>, default: &[&str]) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => default.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Files under `dir/sub` with `ext`, sorted, as paths relative to `dir`.
fn files(dir: &Path, sub: &str, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(sub)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|e| e.to_str()) == Some(ext) {
                if let Ok(rel) = p.strip_prefix(dir) {
                    out.push(rel.to_path_buf());
                }
            }
        }
    }
    out.sort();
    out
}

/// Config keys set at one level of the `models:`/`seeds:` tree: `+key`, or a
/// known config name without the `+`.
const CONFIG_KEYS: &[&str] = &[
    "materialized",
    "schema",
    "alias",
    "tags",
    "enabled",
    "unique_key",
    "incremental_strategy",
    "on_schema_change",
    "column_types",
    "severity",
    "warn_if",
    "error_if",
    "where",
    "full_refresh",
    "docs",
    "persist_docs",
    "quote_columns",
    "database",
    "meta",
    "pre-hook",
    "post-hook",
    "grants",
    "contract",
];

/// Merge one config mapping into another the way dbt does: tags add up, the rest replaces.
pub(crate) fn merge_config(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        let k = k.trim_start_matches('+');
        if k == "tags" {
            let mut tags = match into.remove("tags") {
                Some(Value::Array(a)) => a,
                Some(Value::String(s)) => vec![Value::String(s)],
                _ => Vec::new(),
            };
            match v {
                Value::Array(a) => tags.extend(a.iter().cloned()),
                Value::String(_) => tags.push(v.clone()),
                _ => {}
            }
            tags.dedup();
            into.insert("tags".to_owned(), Value::Array(tags));
        } else {
            into.insert(k.to_owned(), v.clone());
        }
    }
}

/// The configs that apply at `fqn` in a `models:`/`seeds:` tree.
fn tree_config(tree: &Value, fqn: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    let mut level = tree;
    let apply = |level: &Value, out: &mut Map<String, Value>| {
        if let Value::Object(m) = level {
            let here: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| k.starts_with('+') || CONFIG_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            merge_config(out, &here);
        }
    };
    apply(level, &mut out);
    // `tree` is already the project's level; the last fqn part is the node
    // itself (configs may also be set per file name).
    for part in fqn.iter().skip(1) {
        match level.get(part) {
            Some(next) => {
                level = next;
                apply(level, &mut out);
            }
            None => break,
        }
    }
    out
}

/// Everything a property file (`schema.yml`) says about one model or seed.
#[derive(Default)]
struct Properties {
    config: Map<String, Value>,
    tests: Vec<(Option<String>, Value, PathBuf)>,
    description: String,
    columns: Vec<Column>,
}

/// Read the project in `dir`: parse every file, render every node once to
/// learn its `ref`s, `source`s and `config()`, resolve schemas and aliases.
pub fn load_project(dir: &Path, opts: &ProjectOptions) -> Result<Project, Problems> {
    let mut problems = Vec::new();
    let project_file = dir.join("dbt_project.yml");
    let cfg = match yaml::read(&project_file) {
        Ok(v) => v,
        Err(e) => return Err(Problems(vec![e])),
    };
    let name = match cfg.get("name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => {
            return Err(Problems(vec![config_err(
                &project_file,
                "name",
                "missing required key `name`",
            )]))
        }
    };
    let model_paths = str_list(
        cfg.get("model-paths").or(cfg.get("source-paths")),
        &["models"],
    );
    let seed_paths = str_list(cfg.get("seed-paths").or(cfg.get("data-paths")), &["seeds"]);
    let test_paths = str_list(cfg.get("test-paths"), &["tests"]);
    let macro_paths = str_list(cfg.get("macro-paths"), &["macros"]);
    let target_path = dir.join(
        cfg.get("target-path")
            .and_then(Value::as_str)
            .unwrap_or("target"),
    );
    // `vars:` holds vars, and vars scoped to a project under its name.
    let mut vars = Map::new();
    if let Some(Value::Object(m)) = cfg.get("vars") {
        for (k, v) in m {
            match v {
                Value::Object(scoped) if k == &name => {
                    vars.extend(scoped.iter().map(|(k, v)| (k.clone(), v.clone())))
                }
                _ => {
                    vars.insert(k.clone(), v.clone());
                }
            }
        }
    }
    vars.extend(opts.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    let models_tree = cfg
        .get("models")
        .and_then(|m| m.get(&name))
        .cloned()
        .unwrap_or(Value::Null);
    let seeds_tree = cfg
        .get("seeds")
        .and_then(|m| m.get(&name))
        .cloned()
        .unwrap_or(Value::Null);
    let tests_tree = cfg
        .get("data_tests")
        .or(cfg.get("tests"))
        .and_then(|m| m.get(&name))
        .cloned()
        .unwrap_or(Value::Null);

    // Macros (and `{% test %}` blocks) first: models may call them.
    let mut macro_files = Vec::new();
    for mp in &macro_paths {
        for f in files(dir, mp, "sql") {
            match std::fs::read_to_string(dir.join(&f)) {
                Ok(text) => macro_files.push((f, text)),
                Err(e) => problems.push(TransformError::Io {
                    path: dir.join(&f),
                    message: e.to_string(),
                }),
            }
        }
    }
    // Custom generic tests may also live in tests/generic.
    for tp in &test_paths {
        for f in files(dir, &format!("{tp}/generic"), "sql") {
            if let Ok(text) = std::fs::read_to_string(dir.join(&f)) {
                macro_files.push((f, text));
            }
        }
    }
    let mut renderer = match Renderer::new(&macro_files, opts.target.clone(), vars.clone()) {
        Ok(r) => r,
        Err(mut e) => {
            problems.append(&mut e);
            return Err(Problems(problems));
        }
    };
    let (mut models_tree, mut seeds_tree, mut tests_tree) = (models_tree, seeds_tree, tests_tree);
    for tree in [&mut models_tree, &mut seeds_tree, &mut tests_tree] {
        render_values(&renderer, &project_file, tree, &mut problems);
    }

    // Property files: sources, and per-model config and tests.
    let mut props: HashMap<String, Properties> = HashMap::new();
    let mut sources = BTreeMap::new();
    let mut source_tests: Vec<(String, Option<String>, Value, PathBuf)> = Vec::new();
    for mp in model_paths.iter().chain(seed_paths.iter()) {
        for ext in ["yml", "yaml"] {
            for f in files(dir, mp, ext) {
                let mut doc = match yaml::read(&dir.join(&f)) {
                    Ok(d) => d,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                // Sources render their `schema`/`identifier` below, where a
                // failure can name the source; everything else renders here.
                for kind in ["models", "seeds"] {
                    if let Some(v) = doc.get_mut(kind) {
                        render_values(&renderer, &f, v, &mut problems);
                    }
                }
                if let Some(Value::Array(srcs)) = doc.get_mut("sources") {
                    for src in srcs {
                        for t in src
                            .get_mut("tables")
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                        {
                            for key in ["tests", "data_tests", "columns", "config"] {
                                if let Some(v) = t.get_mut(key) {
                                    render_values(&renderer, &f, v, &mut problems);
                                }
                            }
                        }
                    }
                }
                for kind in ["models", "seeds"] {
                    for (i, m) in doc
                        .get(kind)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let Some(mname) = m.get("name").and_then(Value::as_str) else {
                            problems.push(config_err(&f, format!("{kind}[{i}]"), "missing `name`"));
                            continue;
                        };
                        let p = props.entry(mname.to_owned()).or_default();
                        if let Some(Value::Object(c)) = m.get("config") {
                            merge_config(&mut p.config, c);
                        }
                        for t in tests_of(m) {
                            p.tests.push((None, t, f.clone()));
                        }
                        let text = |v: &Value, key: &str| {
                            v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
                        };
                        // A model described in two files keeps what either says.
                        let description = text(m, "description");
                        if !description.is_empty() {
                            p.description = description;
                        }
                        for c in m
                            .get("columns")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let col = c.get("name").and_then(Value::as_str).map(str::to_owned);
                            if let Some(n) = col
                                .as_ref()
                                .filter(|n| !p.columns.iter().any(|c| &c.name == *n))
                            {
                                p.columns.push(Column {
                                    name: n.clone(),
                                    description: text(c, "description"),
                                    data_type: c
                                        .get("data_type")
                                        .and_then(Value::as_str)
                                        .map(str::to_owned),
                                });
                            }
                            for t in tests_of(c) {
                                p.tests.push((col.clone(), t, f.clone()));
                            }
                        }
                    }
                }
                for (i, s) in doc
                    .get("sources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let Some(sname) = s.get("name").and_then(Value::as_str) else {
                        problems.push(config_err(&f, format!("sources[{i}]"), "missing `name`"));
                        continue;
                    };
                    // dbt renders Jinja in these values: `schema: "{{ env_var('RAW', 'raw') }}"`.
                    let schema = match renderer
                        .render_text(&f, s.get("schema").and_then(Value::as_str).unwrap_or(sname))
                    {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(e);
                            continue;
                        }
                    };
                    for t in s
                        .get("tables")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let Some(tname) = t.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        let uid = format!("source.{name}.{sname}.{tname}");
                        sources.insert(
                            uid.clone(),
                            Source {
                                unique_id: uid.clone(),
                                source_name: sname.to_owned(),
                                name: tname.to_owned(),
                                schema: schema.clone(),
                                identifier: renderer
                                    .render_text(
                                        &f,
                                        t.get("identifier")
                                            .and_then(Value::as_str)
                                            .unwrap_or(tname),
                                    )
                                    .unwrap_or_else(|e| {
                                        problems.push(e);
                                        tname.to_owned()
                                    }),
                                path: f.clone(),
                            },
                        );
                        for tt in tests_of(t) {
                            source_tests.push((uid.clone(), None, tt, f.clone()));
                        }
                        for c in t
                            .get("columns")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let col = c.get("name").and_then(Value::as_str).map(str::to_owned);
                            for tt in tests_of(c) {
                                source_tests.push((uid.clone(), col.clone(), tt, f.clone()));
                            }
                        }
                    }
                }
            }
        }
    }

    // Models and singular tests: parse-render each once.
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut add =
        |node: Node, problems: &mut Vec<TransformError>, nodes: &mut BTreeMap<String, Node>| {
            if node.resource_type != ResourceType::Test {
                if let Some(other) = seen.get(&node.name) {
                    problems.push(TransformError::Graph {
                        node: node.name.clone(),
                        file: node.path.clone(),
                        message: format!("the name is also used by {}", other.display()),
                    });
                    return;
                }
                seen.insert(node.name.clone(), node.path.clone());
            }
            nodes.insert(node.unique_id.clone(), node);
        };
    let mut parsed: Vec<(Node, crate::render::Captured)> = Vec::new();
    for (paths, rtype, tree) in [
        (&model_paths, ResourceType::Model, &models_tree),
        (&test_paths, ResourceType::Test, &tests_tree),
    ] {
        for mp in paths {
            for f in files(dir, mp, "sql") {
                if rtype == ResourceType::Test && f.components().any(|c| c.as_os_str() == "generic")
                {
                    continue;
                }
                let raw = match std::fs::read_to_string(dir.join(&f)) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(TransformError::Io {
                            path: dir.join(&f),
                            message: e.to_string(),
                        });
                        continue;
                    }
                };
                let (stem, fqn) = name_and_fqn(&name, mp, &f);
                let mut config = tree_config(tree, &fqn);
                let mut documented = (String::new(), Vec::new());
                if let Some(p) = props.get(&stem) {
                    if rtype == ResourceType::Model {
                        merge_config(&mut config, &p.config);
                        documented = (p.description.clone(), p.columns.clone());
                    }
                }
                let node = Node {
                    unique_id: format!("{}.{name}.{stem}", rtype.as_str()),
                    resource_type: rtype,
                    name: stem,
                    path: f.clone(),
                    fqn,
                    raw_sql: raw,
                    config,
                    depends_on: Vec::new(),
                    schema: String::new(),
                    alias: String::new(),
                    generic: None,
                    description: documented.0,
                    columns: documented.1,
                };
                match renderer.parse_node(&node) {
                    Ok(captured) => parsed.push((node, captured)),
                    Err(e) => problems.push(e),
                }
            }
        }
    }
    for sp in &seed_paths {
        for f in files(dir, sp, "csv") {
            let (stem, fqn) = name_and_fqn(&name, sp, &f);
            let mut config = tree_config(&seeds_tree, &fqn);
            let mut documented = (String::new(), Vec::new());
            if let Some(p) = props.get(&stem) {
                merge_config(&mut config, &p.config);
                documented = (p.description.clone(), p.columns.clone());
            }
            parsed.push((
                Node {
                    unique_id: format!("seed.{name}.{stem}"),
                    resource_type: ResourceType::Seed,
                    name: stem,
                    path: f,
                    fqn,
                    raw_sql: String::new(),
                    config,
                    depends_on: Vec::new(),
                    schema: String::new(),
                    alias: String::new(),
                    generic: None,
                    description: documented.0,
                    columns: documented.1,
                },
                crate::render::Captured::default(),
            ));
        }
    }

    // Resolve config(), schemas and aliases, then refs.
    let mut staged = Vec::new();
    for (mut node, captured) in parsed {
        merge_config(&mut node.config, &captured.config);
        if !node.enabled() {
            continue;
        }
        match renderer.relation_names(&node) {
            Ok((schema, alias)) => {
                node.schema = schema;
                node.alias = alias;
            }
            Err(e) => {
                problems.push(e);
                continue;
            }
        }
        staged.push((node, captured));
    }
    let names: HashMap<String, String> = staged
        .iter()
        .filter(|(n, _)| n.resource_type != ResourceType::Test)
        .map(|(n, _)| (n.name.clone(), n.unique_id.clone()))
        .collect();
    for (mut node, captured) in staged {
        for r in &captured.refs {
            match names.get(r) {
                Some(uid) => node.depends_on.push(uid.clone()),
                None => problems.push(TransformError::Graph {
                    node: node.name.clone(),
                    file: node.path.clone(),
                    message: format!("ref('{r}') names no model or seed"),
                }),
            }
        }
        for (s, t) in &captured.sources {
            let uid = format!("source.{name}.{s}.{t}");
            if sources.contains_key(&uid) {
                node.depends_on.push(uid);
            } else {
                problems.push(TransformError::Graph {
                    node: node.name.clone(),
                    file: node.path.clone(),
                    message: format!("source('{s}', '{t}') is not declared in any sources: file"),
                });
            }
        }
        node.depends_on.sort();
        node.depends_on.dedup();
        add(node, &mut problems, &mut nodes);
    }

    // Generic tests, attached to models, seeds and sources.
    let mut generic: Vec<(String, Option<String>, Value, PathBuf)> = Vec::new();
    for (model, p) in &props {
        let Some(uid) = names.get(model) else {
            continue; // properties for a disabled or missing model: dbt ignores them too
        };
        for (col, t, f) in &p.tests {
            generic.push((uid.clone(), col.clone(), t.clone(), f.clone()));
        }
    }
    generic.extend(source_tests);
    generic.sort_by(|a, b| {
        (a.0.as_str(), &a.1, a.2.to_string()).cmp(&(b.0.as_str(), &b.1, b.2.to_string()))
    });
    for (attached, column, spec, file) in generic {
        match generic_test(
            &name,
            &attached,
            column,
            &spec,
            &file,
            &nodes,
            &sources,
            &tests_tree,
        ) {
            Ok(mut node) => {
                if nodes.contains_key(&node.unique_id) {
                    let mut i = 2;
                    while nodes.contains_key(&format!("{}_{i}", node.unique_id)) {
                        i += 1;
                    }
                    node.unique_id = format!("{}_{i}", node.unique_id);
                }
                if let Ok((schema, alias)) = renderer.relation_names(&node) {
                    node.schema = schema;
                    node.alias = alias;
                }
                nodes.insert(node.unique_id.clone(), node);
            }
            Err(e) => problems.push(e),
        }
    }

    if let Err(cycle) = crate::graph::check_cycles(&nodes) {
        problems.push(cycle);
    }
    renderer.set_relations(&nodes, &sources);
    if problems.is_empty() {
        Ok(Project {
            dir: dir.to_path_buf(),
            name,
            target_path,
            nodes,
            sources,
            renderer,
            vars,
            target: opts.target.clone(),
            full_refresh: opts.full_refresh,
        })
    } else {
        Err(Problems(problems))
    }
}

/// A node's name (the file stem) and fqn (project, folders below the
/// resource path, name) from its path relative to the project.
fn name_and_fqn(project: &str, resource_path: &str, file: &Path) -> (String, Vec<String>) {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_owned();
    let below = file.strip_prefix(resource_path).unwrap_or(file);
    let mut fqn = vec![project.to_owned()];
    fqn.extend(
        below
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    fqn.push(stem.clone());
    (stem, fqn)
}

/// Keys whose values dbt leaves as written: descriptions are documentation,
/// and hooks are rendered when they run.
const UNRENDERED_KEYS: &[&str] = &[
    "description",
    "pre-hook",
    "post-hook",
    "pre_hook",
    "post_hook",
    "+pre-hook",
    "+post-hook",
];

/// Render Jinja in every string of a property or project value, as dbt
/// does (`+schema: "{{ env_var('SCHEMA') }}"`, test arguments with `var`).
/// A string that renders to a YAML scalar (`true`, `3`) keeps that type.
fn render_values(
    renderer: &Renderer,
    file: &Path,
    v: &mut Value,
    problems: &mut Vec<TransformError>,
) {
    match v {
        Value::String(s) if s.contains("{{") || s.contains("{%") => {
            match renderer.render_text(file, s) {
                Ok(out) => {
                    *v = match out.as_str() {
                        "True" | "true" => Value::Bool(true),
                        "False" | "false" => Value::Bool(false),
                        "None" | "none" => Value::Null,
                        o => match o.parse::<i64>() {
                            Ok(n) if n.to_string() == o => Value::from(n),
                            _ => Value::String(out),
                        },
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        Value::Array(a) => {
            for item in a {
                render_values(renderer, file, item, problems);
            }
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                if !UNRENDERED_KEYS.contains(&k.as_str()) {
                    render_values(renderer, file, item, problems);
                }
            }
        }
        _ => {}
    }
}

/// `tests:` or `data_tests:` of a model, column or source table.
fn tests_of(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for key in ["tests", "data_tests"] {
        if let Some(Value::Array(a)) = v.get(key) {
            out.extend(a.iter().cloned());
        }
    }
    out
}

/// A generic test node from a `tests:` entry (`unique`, or `{accepted_values: {values: [...]}}`).
#[allow(clippy::too_many_arguments)]
fn generic_test(
    project: &str,
    attached: &str,
    column: Option<String>,
    spec: &Value,
    file: &Path,
    nodes: &BTreeMap<String, Node>,
    sources: &BTreeMap<String, Source>,
    tests_tree: &Value,
) -> Result<Node, TransformError> {
    let (test_name, mut args) = match spec {
        Value::String(s) => (s.clone(), Map::new()),
        Value::Object(m) if m.len() == 1 => {
            let Some((k, v)) = m.iter().next() else {
                return Err(config_err(file, attached, "empty test entry"));
            };
            let mut args = match v {
                Value::Object(a) => a.clone(),
                _ => Map::new(),
            };
            // dbt 1.10 nests them under `arguments:`.
            if let Some(Value::Object(inner)) = args.remove("arguments") {
                args.extend(inner);
            }
            (k.clone(), args)
        }
        other => {
            return Err(config_err(
                file,
                attached,
                format!("cannot read the test {other}"),
            ))
        }
    };
    let test_name = test_name
        .rsplit('.')
        .next()
        .unwrap_or(&test_name)
        .to_owned();
    let mut config = Map::new();
    if let Some(Value::Object(c)) = args.remove("config") {
        merge_config(&mut config, &c);
    }
    for k in [
        "severity", "where", "warn_if", "error_if", "tags", "enabled",
    ] {
        if let Some(v) = args.remove(k) {
            config.insert(k.to_owned(), v);
        }
    }
    let (target_name, mut depends_on) = if let Some(n) = nodes.get(attached) {
        (n.name.clone(), vec![attached.to_owned()])
    } else if let Some(s) = sources.get(attached) {
        (
            format!("{}_{}", s.source_name, s.name),
            vec![attached.to_owned()],
        )
    } else {
        return Err(config_err(
            file,
            attached,
            "test attached to an unknown node",
        ));
    };
    // relationships(to=ref('x')) depends on x as well.
    if let Some(to) = args.get("to").and_then(Value::as_str) {
        if let Some(r) = parse_ref_call(to) {
            if let Some(n) = nodes
                .values()
                .find(|n| n.name == r && n.resource_type != ResourceType::Test)
            {
                depends_on.push(n.unique_id.clone());
            } else {
                return Err(config_err(
                    file,
                    attached,
                    format!("relationships: {to} names no model or seed"),
                ));
            }
        }
    }
    let kind = if sources.contains_key(attached) {
        format!("source_{test_name}")
    } else {
        test_name.clone()
    };
    let id = generic_test_name(&kind, &target_name, column.as_deref(), &args);
    let mut cfg = tree_config(tests_tree, &[project.to_owned()]);
    merge_config(&mut cfg, &config);
    Ok(Node {
        unique_id: format!("test.{project}.{id}"),
        resource_type: ResourceType::Test,
        name: id,
        path: file.to_path_buf(),
        fqn: vec![project.to_owned(), test_name.clone()],
        raw_sql: String::new(),
        config: cfg,
        depends_on,
        schema: String::new(),
        alias: String::new(),
        generic: Some(GenericTest {
            name: test_name,
            attached: attached.to_owned(),
            column,
            args,
        }),
        description: String::new(),
        columns: Vec::new(),
    })
}

/// Python's `str()` of a YAML value, as dbt puts it into a test's name.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| match x {
                    Value::String(s) => format!("'{s}'"),
                    other => py_str(other),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, x)| format!("'{k}': {}", py_str(x)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A generic test's name as dbt-core makes it
/// (`synthesize_generic_test_names`): test, target and the arguments
/// (column included) sorted by name and flattened, non-word runs as `_`,
/// joined with `__`; names of 64 characters or more become the first 30
/// characters of `test_target` and the md5 of the full name. Source tests
/// start with `source_`.
fn generic_test_name(
    test: &str,
    target: &str,
    column: Option<&str>,
    args: &Map<String, Value>,
) -> String {
    let mut all: BTreeMap<&str, Value> =
        args.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    if let Some(c) = column {
        all.insert("column_name", Value::String(c.to_owned()));
    }
    let mut flat = Vec::new();
    for (k, v) in &all {
        if *k == "model" {
            continue;
        }
        match v {
            Value::Object(m) => flat.extend(m.values().map(py_str)),
            Value::Array(a) => flat.extend(a.iter().map(py_str)),
            other => flat.push(py_str(other)),
        }
    }
    let clean: Vec<String> = flat
        .iter()
        .map(|a| {
            let mut out = String::with_capacity(a.len());
            let mut in_run = false;
            for c in a.chars() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    out.push(c);
                    in_run = false;
                } else if !in_run {
                    out.push('_');
                    in_run = true;
                }
            }
            out
        })
        .collect();
    let identifier = format!("{test}_{target}");
    let full = format!("{identifier}_{}", clean.join("__"));
    if full.len() >= 64 {
        use md5::Digest;
        let digest = md5::Md5::digest(full.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}_{hex}", identifier.chars().take(30).collect::<String>())
    } else {
        full
    }
}

/// `ref('x')` or `ref("x")` in a test argument → `x`.
pub(crate) fn parse_ref_call(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix("ref(")?.strip_suffix(')')?;
    let last = inner.split(',').next_back()?.trim();
    Some(last.trim_matches(|c| c == '\'' || c == '"').to_owned())
}
