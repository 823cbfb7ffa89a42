//! Jinja rendering with dbt's context, on minijinja.
//!
//! Every node is rendered twice, as dbt does: once at parse time, where
//! `ref`, `source` and `config` record what they are given, and once at
//! compile time, where they return relations. Project macros are global in
//! dbt; here each template starts with `{% from … import … %}` lines for every
//! macro file, written on the template's first line so that line numbers in
//! errors stay those of the file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::{from_args, Kwargs, Object, Rest};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use serde_json::Map;

use crate::builtins;
use crate::project::{Node, ResourceType, Source, Target};
use crate::TransformError;

/// What a parse-time render recorded.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    pub refs: Vec<String>,
    pub sources: Vec<(String, String)>,
    pub config: Map<String, serde_json::Value>,
}

/// A relation as templates see it: renders as the quoted name.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    pub schema: String,
    pub identifier: String,
    /// How it renders (a quoted `schema.identifier`, or an ephemeral CTE's name).
    pub rendered: String,
}

impl Object for Relation {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "schema" => Some(Value::from(self.schema.clone())),
            "identifier" | "name" | "table" => Some(Value::from(self.identifier.clone())),
            "database" => Some(Value::from(())),
            _ => None,
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Parse,
    Compile,
}

/// Per-render state, reached by the context functions through `__weir`.
pub(crate) struct Ctx {
    pub(crate) mode: Mode,
    captured: Mutex<Captured>,
    ephemerals: Mutex<Vec<String>>,
    is_incremental: bool,
    relations: Arc<HashMap<String, (Relation, bool)>>,
    sources: Arc<HashMap<(String, String), Relation>>,
    vars: Arc<Map<String, serde_json::Value>>,
    pub(crate) quote: fn(&str) -> String,
    /// For `run_query`, `statement` and `adapter.*` at compile time (dbt's
    /// `execute` is true then).
    pub(crate) warehouse: Option<Arc<dyn weir_warehouse::Warehouse>>,
    /// One slot per project macro being called, innermost last: what its
    /// `return(…)` gave.
    pub(crate) returns: Mutex<Vec<Option<Value>>>,
    /// `statement` results by name, for `load_result`.
    pub(crate) results: Mutex<HashMap<String, Value>>,
    /// The project's macros (unmangled names), for `adapter.dispatch`.
    pub(crate) macros: Arc<HashSet<String>>,
    /// The target's adapter type (`duckdb`, `postgres`, `bigquery`).
    pub(crate) kind: String,
}

impl Ctx {
    /// Whether the innermost macro call has already returned a value: what
    /// follows a `return` does not run in dbt, so it must not raise here.
    pub(crate) fn has_returned(&self) -> bool {
        self.returns
            .lock()
            .map(|r| matches!(r.last(), Some(Some(_))))
            .unwrap_or(false)
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ctx({:?})", self.mode)
    }
}

impl Object for Ctx {}

pub(crate) fn ctx(state: &State) -> Result<Arc<Ctx>, Error> {
    state
        .lookup("__weir")
        .and_then(|v| v.downcast_object::<Ctx>())
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "dbt context missing"))
}

fn ref_fn(state: &State, args: Rest<String>) -> Result<Value, Error> {
    let c = ctx(state)?;
    // ref('model') or ref('package', 'model'): the last argument is the name.
    let name = args
        .last()
        .ok_or_else(|| Error::new(ErrorKind::MissingArgument, "ref() needs a model name"))?
        .clone();
    if c.mode == Mode::Parse {
        c.captured.lock().map_err(poisoned)?.refs.push(name.clone());
        return Ok(Value::from_object(Relation {
            schema: String::new(),
            identifier: name.clone(),
            rendered: (c.quote)(&name),
        }));
    }
    match c.relations.get(&name) {
        Some((rel, ephemeral)) => {
            if *ephemeral {
                let mut e = c.ephemerals.lock().map_err(poisoned)?;
                if !e.contains(&name) {
                    e.push(name.clone());
                }
            }
            Ok(Value::from_object(rel.clone()))
        }
        None => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("ref('{name}') names no model or seed"),
        )),
    }
}

fn source_fn(state: &State, source: String, table: String) -> Result<Value, Error> {
    let c = ctx(state)?;
    if c.mode == Mode::Parse {
        c.captured
            .lock()
            .map_err(poisoned)?
            .sources
            .push((source.clone(), table.clone()));
        return Ok(Value::from_object(Relation {
            schema: source.clone(),
            identifier: table.clone(),
            rendered: format!("{}.{}", (c.quote)(&source), (c.quote)(&table)),
        }));
    }
    match c.sources.get(&(source.clone(), table.clone())) {
        Some(rel) => Ok(Value::from_object(rel.clone())),
        None => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("source('{source}', '{table}') is not declared"),
        )),
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::new(ErrorKind::InvalidOperation, "render state poisoned")
}

/// `config(...)` records settings; `config.get(key, default)` reads them.
#[derive(Debug)]
struct ConfigObj;

impl Object for ConfigObj {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let c = ctx(state)?;
        let (kwargs,): (Kwargs,) = from_args(args)?;
        if c.mode == Mode::Parse {
            let mut captured = c.captured.lock().map_err(poisoned)?;
            let mut set = Map::new();
            for key in kwargs.args() {
                let v: Value = kwargs.get(key)?;
                let json = serde_json::to_value(&v).map_err(|e| {
                    Error::new(ErrorKind::InvalidOperation, format!("config({key}=…): {e}"))
                })?;
                set.insert(key.to_owned(), json);
            }
            crate::project::merge_config(&mut captured.config, &set);
        }
        Ok(Value::from(""))
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "get" | "require" => {
                let (key, default): (String, Option<Value>) = from_args(args)?;
                let node_cfg = state.lookup("__config").unwrap_or_default();
                let v = node_cfg.get_attr(&key).unwrap_or_default();
                if v.is_undefined() || v.is_none() {
                    if method == "require" {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!("config `{key}` is required"),
                        ));
                    }
                    Ok(default.unwrap_or_default())
                } else {
                    Ok(v)
                }
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(v))
}

fn var_fn(state: &State, name: String, default: Option<Value>) -> Result<Value, Error> {
    let c = ctx(state)?;
    match c.vars.get(&name) {
        Some(v) => Ok(json_to_value(v)),
        None => default.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("Required var '{name}' not found in config: set it in dbt_project.yml `vars:` or with --vars"),
            )
        }),
    }
}

fn env_var_fn(name: String, default: Option<Value>) -> Result<Value, Error> {
    match std::env::var(&name) {
        Ok(v) => Ok(Value::from(v)),
        Err(_) => default.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("Env var required but not provided: '{name}'"),
            )
        }),
    }
}

fn is_incremental_fn(state: &State) -> Result<bool, Error> {
    Ok(ctx(state)?.is_incremental)
}

fn log_fn(msg: Value, _info: Option<bool>) -> Result<String, Error> {
    tracing::info!(target: "weir::transform::log", "{msg}");
    Ok(String::new())
}

/// `exceptions.raise_compiler_error(msg)` and `exceptions.warn(msg)`.
#[derive(Debug)]
struct Exceptions;

impl Object for Exceptions {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (msg,): (String,) = from_args(args)?;
        match method {
            // Past a `return` nothing runs in dbt.
            "raise_compiler_error" if ctx(state)?.has_returned() => Ok(Value::from("")),
            "raise_compiler_error" => Err(Error::new(ErrorKind::InvalidOperation, msg)),
            "warn" => {
                tracing::warn!("{msg}");
                Ok(Value::from(""))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// dbt's `{% test name(model, column_name) %}` is a macro named `test_name`.
fn test_blocks_to_macros(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find("%}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let tag = &rest[i..i + end + 2];
        let inner = tag[2..tag.len() - 2].trim_matches(|c: char| c == '-' || c.is_whitespace());
        if let Some(def) = inner.strip_prefix("test ") {
            out.push_str(&tag.replacen(
                &format!("test {def}"),
                &format!("macro test_{}", def.trim_start()),
                1,
            ));
        } else if inner == "endtest" {
            out.push_str(&tag.replacen("endtest", "endmacro", 1));
        } else {
            out.push_str(tag);
        }
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    out
}

/// The file with each `{% macro name(` renamed to its mangled name, so that
/// calls by the plain name reach the [`builtins::MacroFn`] wrapper.
fn mangle_macro_defs(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i + 2]);
        rest = &rest[i + 2..];
        let lead = rest.len() - rest.trim_start_matches(['-', '+']).trim_start().len();
        let after = &rest[lead..];
        if let Some(def) = after.strip_prefix("macro ") {
            let ws = def.len() - def.trim_start().len();
            let name: String = def[ws..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !builtins::RESERVED.contains(&name.as_str()) {
                out.push_str(&rest[..lead + "macro ".len() + ws]);
                out.push_str(&builtins::mangled(&name));
                rest = &def[ws + name.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Names of the macros a file defines (after `test` blocks became macros).
fn macro_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{%") {
        let after = rest[i + 2..].trim_start_matches(['-', '+']).trim_start();
        if let Some(def) = after.strip_prefix("macro ") {
            let name: String = def
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = &rest[i + 2..];
    }
    out
}

#[derive(Clone)]
pub struct Renderer {
    env: Arc<Environment<'static>>,
    /// `{% from "__macros__" import … %}`, on one line.
    imports: String,
    macro_lines: Arc<Vec<(usize, String)>>,
    macros: Arc<HashSet<String>>,
    target: Target,
    vars: Arc<Map<String, serde_json::Value>>,
    relations: Arc<HashMap<String, (Relation, bool)>>,
    sources: Arc<HashMap<(String, String), Relation>>,
    quote: fn(&str) -> String,
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Renderer({} macros)", self.macros.len())
    }
}

fn quote_double(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_backtick(s: &str) -> String {
    format!("`{}`", s.replace('`', "\\`"))
}

/// Where each macro file starts in the one template that holds them all.
type MacroLines = [(usize, String)];

/// A line of the combined macro template as (file, line).
fn macro_location(lines: &MacroLines, line: usize) -> (PathBuf, usize) {
    let (start, file) = lines
        .iter()
        .rev()
        .find(|(start, _)| *start <= line)
        .cloned()
        .unwrap_or((1, MACROS.to_owned()));
    (PathBuf::from(file), line + 1 - start)
}

/// The template that holds every project macro, so that macros can call each other.
const MACROS: &str = "__macros__";

fn render_error(node: &str, file: &Path, e: &Error, lines: &MacroLines) -> TransformError {
    let mut message = e.kind().to_string();
    if let Some(d) = e.detail() {
        message = format!("{message}: {d}");
    }
    // Errors inside imported macro files arrive as the import's cause.
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(inner) = c.downcast_ref::<Error>() {
            let at = match (inner.name(), inner.line()) {
                (Some(n), Some(l)) => format!(" ({n}:{l})"),
                _ => String::new(),
            };
            let at = match (inner.name(), inner.line()) {
                (Some(MACROS), Some(l)) => {
                    let (f, l) = macro_location(lines, l);
                    format!(" ({}:{l})", f.display())
                }
                _ => at,
            };
            message = format!(
                "{message}: {}{at}",
                inner.detail().unwrap_or(&inner.kind().to_string())
            );
        } else {
            message = format!("{message}: {c}");
        }
        cause = c.source();
    }
    // An error raised inside a macro names the macro's file.
    let (file, line) = match (e.name(), e.line()) {
        (Some(MACROS), Some(line)) => macro_location(lines, line),
        (Some(name), Some(line)) if !name.starts_with("__") => (PathBuf::from(name), line),
        (_, line) => (file.to_path_buf(), line.unwrap_or(0)),
    };
    TransformError::Render {
        node: node.to_owned(),
        file,
        line,
        message,
    }
}

impl Renderer {
    pub fn new(
        macro_files: &[(PathBuf, String)],
        target: Target,
        vars: Map<String, serde_json::Value>,
    ) -> Result<Renderer, Vec<TransformError>> {
        let mut env = Environment::new();
        env.add_function("ref", ref_fn);
        env.add_function("source", source_fn);
        env.add_function("var", var_fn);
        env.add_function("env_var", env_var_fn);
        env.add_function("is_incremental", is_incremental_fn);
        env.add_function("log", log_fn);
        env.add_function("run_query", builtins::run_query_fn);
        env.add_function("return", builtins::return_fn);
        env.add_function("load_result", builtins::load_result_fn);
        env.add_global("statement", Value::from_object(builtins::StatementFn));
        env.add_global("adapter", Value::from_object(builtins::Adapter));
        env.add_global("api", Value::from_object(builtins::Api));
        env.add_global("modules", Value::from_object(crate::modules::Modules));
        env.add_global("config", Value::from_object(ConfigObj));
        env.add_global("exceptions", Value::from_object(Exceptions));
        let quote: fn(&str) -> String = if target.kind == "bigquery" {
            quote_backtick
        } else {
            quote_double
        };
        // All macro files become one template, so macros can call each other
        // without importing (as in dbt, where every macro is global).
        let mut combined = String::new();
        let mut macro_lines = Vec::new();
        let mut macros = HashSet::new();
        let mut names = Vec::new();
        for (path, text) in macro_files {
            let text = test_blocks_to_macros(text);
            for n in macro_names(&text) {
                if builtins::RESERVED.contains(&n.as_str()) {
                    continue;
                }
                if macros.insert(n.clone()) {
                    env.add_global(
                        n.clone(),
                        Value::from_object(builtins::MacroFn { name: n.clone() }),
                    );
                    names.push(builtins::mangled(&n));
                }
            }
            let text = mangle_macro_defs(&text);
            macro_lines.push((
                combined.lines().count() + 1,
                path.to_string_lossy().into_owned(),
            ));
            combined.push_str(&text);
            if !text.ends_with('\n') {
                combined.push('\n');
            }
        }
        if let Err(e) = env.add_template_owned(MACROS, combined) {
            return Err(vec![render_error(
                MACROS,
                Path::new(MACROS),
                &e,
                &macro_lines,
            )]);
        }
        let imports = if names.is_empty() {
            String::new()
        } else {
            format!("{{% from {MACROS:?} import {} %}}", names.join(", "))
        };
        Ok(Renderer {
            env: Arc::new(env),
            imports,
            macro_lines: Arc::new(macro_lines),
            macros: Arc::new(macros),
            target,
            vars: Arc::new(vars),
            relations: Arc::new(HashMap::new()),
            sources: Arc::new(HashMap::new()),
            quote,
        })
    }

    pub fn quote(&self, s: &str) -> String {
        (self.quote)(s)
    }

    fn target_value(&self) -> Value {
        Value::from(minijinja::value::Serde(serde_json::json!({
            "name": self.target.name,
            "schema": self.target.schema,
            "dataset": self.target.schema,
            "type": self.target.kind,
            "database": self.target.database,
            "project": self.target.database,
            "threads": self.target.threads,
            "profile_name": "weir",
        })))
    }

    fn ctx(
        &self,
        mode: Mode,
        is_incremental: bool,
        warehouse: Option<Arc<dyn weir_warehouse::Warehouse>>,
    ) -> Arc<Ctx> {
        Arc::new(Ctx {
            warehouse,
            mode,
            captured: Mutex::new(Captured::default()),
            ephemerals: Mutex::new(Vec::new()),
            is_incremental,
            relations: self.relations.clone(),
            sources: self.sources.clone(),
            vars: self.vars.clone(),
            quote: self.quote,
            returns: Mutex::new(Vec::new()),
            results: Mutex::new(HashMap::new()),
            macros: self.macros.clone(),
            kind: self.target.kind.clone(),
        })
    }

    fn context(&self, c: &Arc<Ctx>, node: &Node, this: Value) -> Value {
        let mut m: BTreeMap<&str, Value> = BTreeMap::new();
        m.insert("__weir", Value::from_dyn_object(c.clone()));
        m.insert("execute", Value::from(c.mode == Mode::Compile));
        m.insert(
            "__config",
            json_to_value(&serde_json::Value::Object(node.config.clone())),
        );
        m.insert("target", self.target_value());
        m.insert("this", this);
        m.insert(
            "model",
            Value::from(minijinja::value::Serde(serde_json::json!({
                "name": node.name,
                "unique_id": node.unique_id,
                "resource_type": node.resource_type.as_str(),
                "fqn": node.fqn,
                "config": node.config,
                "path": node.path,
            }))),
        );
        let m: BTreeMap<String, Value> = m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Value::from(m)
    }

    fn render_node(
        &self,
        node: &Node,
        c: &Arc<Ctx>,
        this: Value,
    ) -> Result<String, TransformError> {
        let name = node.path.to_string_lossy().into_owned();
        let source = format!("{}{}", self.imports, node.raw_sql);
        let tmpl = self
            .env
            .template_from_named_str(&name, &source)
            .map_err(|e| render_error(&node.name, &node.path, &e, &self.macro_lines))?;
        tmpl.render(self.context(c, node, this))
            .map_err(|e| render_error(&node.name, &node.path, &e, &self.macro_lines))
    }

    /// Render a value from a property file (`var`, `env_var`, `target` work).
    pub fn render_text(&self, file: &Path, text: &str) -> Result<String, TransformError> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_owned());
        }
        let c = self.ctx(Mode::Parse, false, None);
        let mut m: BTreeMap<String, Value> = BTreeMap::new();
        m.insert("__weir".into(), Value::from_dyn_object(c));
        m.insert("target".into(), self.target_value());
        m.insert("execute".into(), Value::from(false));
        let source = format!("{}{text}", self.imports);
        // Not the file's own name: minijinja would JSON-escape output for `.yml`.
        self.env
            .render_named_str(
                &format!("{} (value)", file.display()),
                &source,
                Value::from(m),
            )
            .map(|s| s.trim().to_owned())
            .map_err(|e| render_error(&file.to_string_lossy(), file, &e, &self.macro_lines))
    }

    /// Parse-time render: what the node refs, which sources it reads, its `config()`.
    pub fn parse_node(&self, node: &Node) -> Result<Captured, TransformError> {
        let c = self.ctx(Mode::Parse, false, None);
        let this = Value::from_object(Relation {
            schema: String::new(),
            identifier: node.name.clone(),
            rendered: self.quote(&node.name),
        });
        self.render_node(node, &c, this)?;
        let captured = c.captured.lock().map(|g| g.clone()).unwrap_or_default();
        Ok(captured)
    }

    /// Call a project macro (e.g. `generate_schema_name`) with positional arguments.
    fn call_macro(
        &self,
        node: &Node,
        name: &str,
        args: &[(&str, Value)],
    ) -> Result<String, TransformError> {
        let call_args: Vec<&str> = args.iter().map(|(k, _)| *k).collect();
        let source = format!("{}{{{{ {name}({}) }}}}", self.imports, call_args.join(", "));
        let c = self.ctx(Mode::Parse, false, None);
        let mut m: BTreeMap<String, Value> = BTreeMap::new();
        m.insert("__weir".into(), Value::from_dyn_object(c));
        m.insert("target".into(), self.target_value());
        for (k, v) in args {
            m.insert((*k).to_owned(), v.clone());
        }
        self.env
            .render_named_str(&format!("__{name}__"), &source, Value::from(m))
            .map(|s| s.trim().to_owned())
            .map_err(|e| render_error(&node.name, &node.path, &e, &self.macro_lines))
    }

    /// Schema and relation name, through the project's `generate_schema_name`
    /// and `generate_alias_name` when it has them (dbt's defaults otherwise).
    pub fn relation_names(&self, node: &Node) -> Result<(String, String), TransformError> {
        let custom = node
            .config
            .get("schema")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let node_value = Value::from(minijinja::value::Serde(serde_json::json!({
            "name": node.name,
            "unique_id": node.unique_id,
            "resource_type": node.resource_type.as_str(),
            "fqn": node.fqn,
            "config": node.config,
            "path": node.path,
            "original_file_path": node.path,
        })));
        let schema = if self.macros.contains("generate_schema_name") {
            self.call_macro(
                node,
                "generate_schema_name",
                &[
                    (
                        "custom_schema_name",
                        custom.clone().map_or(Value::from(()), Value::from),
                    ),
                    ("node", node_value.clone()),
                ],
            )?
        } else {
            match &custom {
                None => self.target.schema.clone(),
                Some(c) => format!("{}_{}", self.target.schema, c.trim()),
            }
        };
        let alias_cfg = node
            .config
            .get("alias")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let alias = if self.macros.contains("generate_alias_name") {
            self.call_macro(
                node,
                "generate_alias_name",
                &[
                    (
                        "custom_alias_name",
                        alias_cfg.map_or(Value::from(()), Value::from),
                    ),
                    ("node", node_value),
                ],
            )?
        } else {
            alias_cfg.unwrap_or_else(|| node.name.clone())
        };
        Ok((schema, alias))
    }

    /// After parsing: how every model, seed and source renders.
    pub fn set_relations(
        &mut self,
        nodes: &BTreeMap<String, Node>,
        sources: &BTreeMap<String, Source>,
    ) {
        let mut rel = HashMap::new();
        for n in nodes
            .values()
            .filter(|n| n.resource_type != ResourceType::Test)
        {
            let ephemeral = n.materialized() == "ephemeral";
            let rendered = if ephemeral {
                format!("__dbt__cte__{}", n.name)
            } else {
                format!("{}.{}", self.quote(&n.schema), self.quote(&n.alias))
            };
            rel.insert(
                n.name.clone(),
                (
                    Relation {
                        schema: n.schema.clone(),
                        identifier: n.alias.clone(),
                        rendered,
                    },
                    ephemeral,
                ),
            );
        }
        let mut src = HashMap::new();
        for s in sources.values() {
            src.insert(
                (s.source_name.clone(), s.name.clone()),
                Relation {
                    schema: s.schema.clone(),
                    identifier: s.identifier.clone(),
                    rendered: format!("{}.{}", self.quote(&s.schema), self.quote(&s.identifier)),
                },
            );
        }
        self.relations = Arc::new(rel);
        self.sources = Arc::new(src);
    }

    pub(crate) fn relation_of(&self, name: &str) -> Option<String> {
        self.relations.get(name).map(|(r, _)| r.rendered.clone())
    }

    pub(crate) fn source_relation(&self, source: &str, table: &str) -> Option<String> {
        self.sources
            .get(&(source.to_owned(), table.to_owned()))
            .map(|r| r.rendered.clone())
    }

    /// Compile-time render, with ephemeral models this one uses inlined as CTEs.
    pub fn compile(
        &self,
        node: &Node,
        nodes: &BTreeMap<String, Node>,
        is_incremental: bool,
        warehouse: Option<&Arc<dyn weir_warehouse::Warehouse>>,
    ) -> Result<String, TransformError> {
        let c = self.ctx(Mode::Compile, is_incremental, warehouse.cloned());
        let this = Value::from_object(Relation {
            schema: node.schema.clone(),
            identifier: node.alias.clone(),
            rendered: format!("{}.{}", self.quote(&node.schema), self.quote(&node.alias)),
        });
        let sql = self.render_node(node, &c, this)?;
        let used = c.ephemerals.lock().map(|e| e.clone()).unwrap_or_default();
        if used.is_empty() {
            return Ok(sql);
        }
        let mut ctes = Vec::new();
        for name in used {
            let Some(eph) = nodes.values().find(|n| n.name == name) else {
                continue;
            };
            // An ephemeral model may use other ephemerals: they come first.
            let inner = self.compile(eph, nodes, false, warehouse)?;
            let (inner_ctes, body) = split_with(&inner);
            for cte in inner_ctes {
                if !ctes.contains(&cte) {
                    ctes.push(cte);
                }
            }
            let cte = format!("__dbt__cte__{name} as (\n{body}\n)");
            if !ctes.contains(&cte) {
                ctes.push(cte);
            }
        }
        Ok(inject_ctes(&sql, &ctes))
    }

    /// The SQL of a custom generic test (`{% test name(model, column_name, …) %}`).
    pub fn custom_test_sql(
        &self,
        node: &Node,
        test: &str,
        model: &str,
        column: Option<&str>,
        args: &Map<String, serde_json::Value>,
    ) -> Result<String, TransformError> {
        let macro_name = format!("test_{test}");
        if !self.macros.contains(&macro_name) {
            return Err(TransformError::Graph {
                node: node.name.clone(),
                file: node.path.clone(),
                message: format!(
                    "unknown test `{test}` (no built-in test and no `{{% test {test} %}}` block)"
                ),
            });
        }
        let mut call = vec![(
            "model",
            Value::from_object(Relation {
                schema: String::new(),
                identifier: String::new(),
                rendered: model.to_owned(),
            }),
        )];
        if let Some(c) = column {
            call.push(("column_name", Value::from(c.to_owned())));
        }
        let arg_values: Vec<(String, Value)> = args
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect();
        let mut named: Vec<(&str, Value)> = call;
        for (k, v) in &arg_values {
            named.push((k.as_str(), v.clone()));
        }
        let kw: Vec<String> = named.iter().map(|(k, _)| format!("{k}={k}")).collect();
        let source = format!("{}{{{{ {macro_name}({}) }}}}", self.imports, kw.join(", "));
        let c = self.ctx(Mode::Compile, false, None);
        let mut m: BTreeMap<String, Value> = BTreeMap::new();
        m.insert("__weir".into(), Value::from_dyn_object(c));
        m.insert("target".into(), self.target_value());
        for (k, v) in named {
            m.insert(k.to_owned(), v);
        }
        self.env
            .render_named_str(&format!("__{macro_name}__"), &source, Value::from(m))
            .map_err(|e| render_error(&node.name, &node.path, &e, &self.macro_lines))
    }
}

/// Split `WITH a AS (...), b AS (...) SELECT …` into its CTEs and the rest.
fn split_with(sql: &str) -> (Vec<String>, String) {
    let trimmed = sql.trim_start();
    if !trimmed
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("with"))
    {
        return (Vec::new(), sql.to_owned());
    }
    // Walk the CTE list at parenthesis depth 0, splitting on commas, until the main query.
    let bytes = trimmed.as_bytes();
    let mut i = 4;
    let mut ctes = Vec::new();
    let mut start = 4;
    let mut depth = 0i32;
    let mut in_str = false;
    while i < bytes.len() {
        let ch = bytes[i];
        if in_str {
            if ch == b'\'' {
                in_str = false;
            }
        } else if ch == b'\'' {
            in_str = true;
        } else if ch == b'(' {
            depth += 1;
        } else if ch == b')' {
            depth -= 1;
            if depth == 0 {
                // After a CTE body: a comma continues the list, anything else ends it.
                let rest = trimmed[i + 1..].trim_start();
                ctes.push(trimmed[start..=i].trim().to_owned());
                if let Some(r) = rest.strip_prefix(',') {
                    start = trimmed.len() - r.len();
                    i = start;
                    continue;
                }
                return (ctes, rest.to_owned());
            }
        }
        i += 1;
    }
    (Vec::new(), sql.to_owned())
}

/// Put `ctes` in front of a query, merging with its own `WITH` if it has one.
fn inject_ctes(sql: &str, ctes: &[String]) -> String {
    let (own, body) = split_with(sql);
    let all: Vec<String> = ctes.iter().cloned().chain(own).collect();
    format!("with {}\n{}", all.join(",\n"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_blocks_become_macros() {
        let t = "{% test is_even(model, column_name) %}select 1{% endtest %}";
        assert_eq!(
            test_blocks_to_macros(t),
            "{% macro test_is_even(model, column_name) %}select 1{% endmacro %}"
        );
        assert_eq!(macro_names(&test_blocks_to_macros(t)), vec!["test_is_even"]);
    }

    #[test]
    fn ctes_merge_with_a_query_that_has_its_own() {
        let ctes = vec!["__dbt__cte__e as (\nselect 1 as x\n)".to_owned()];
        assert_eq!(
            inject_ctes("with a as (select (1) as y), b as (select 2) select * from a", &ctes),
            "with __dbt__cte__e as (\nselect 1 as x\n),\na as (select (1) as y),\nb as (select 2)\nselect * from a"
        );
        assert_eq!(
            inject_ctes("select * from __dbt__cte__e", &ctes),
            "with __dbt__cte__e as (\nselect 1 as x\n)\nselect * from __dbt__cte__e"
        );
    }
}
