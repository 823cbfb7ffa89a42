//! dbt's Jinja context beyond `ref`/`source`/`config`: `run_query`,
//! `statement` and `load_result`, `return`, `adapter.*`, `api.Relation`, and
//! the project-macro wrappers that make `return(…)` give a value.
//!
//! What touches the warehouse runs only at compile time (dbt's `execute` is
//! true then); at parse time it returns `none` or an empty list, as dbt does.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::{from_args, Enumerator, Kwargs, Object, ObjectRepr};
use minijinja::{Error, ErrorKind, State, Value};

use crate::render::{ctx, Ctx, Mode, Relation};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn poisoned<T>(_: T) -> Error {
    invalid("render state poisoned")
}

/// The name a project macro is defined under in the macros template; the
/// plain name is a [`MacroFn`] global that calls it. (minijinja refuses to
/// import names that start with `_`.)
pub(crate) fn mangled(name: &str) -> String {
    format!("weir_macro__{name}")
}

/// Names that stay dbt's built-ins even if a project defines a macro so named.
pub(crate) const RESERVED: &[&str] = &[
    "ref",
    "source",
    "config",
    "var",
    "env_var",
    "is_incremental",
    "log",
    "run_query",
    "statement",
    "load_result",
    "return",
    "exceptions",
    "adapter",
    "api",
    "modules",
    "this",
    "target",
    "execute",
    "model",
];

/// A project macro as templates call it. minijinja macros always give their
/// output as a string and have no early return, so the wrapper gives each
/// call a return slot: `return(x)` fills it (the first one wins, as dbt stops
/// there) and the call's value is then `x` with its type, not the output.
#[derive(Debug)]
pub(crate) struct MacroFn {
    pub(crate) name: String,
}

impl Object for MacroFn {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "name").then(|| Value::from(self.name.clone()))
    }

    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let real = state.lookup(&mangled(&self.name)).ok_or_else(|| {
            invalid(format!(
                "macro `{}` cannot be called here (macros are available in models, tests and property values)",
                self.name
            ))
        })?;
        let c = ctx(state)?;
        c.returns.lock().map_err(poisoned)?.push(None);
        let out = real.call(state, args);
        let returned = c.returns.lock().map_err(poisoned)?.pop().flatten();
        let out = out?;
        Ok(returned.unwrap_or(out))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<macro {}>", self.name)
    }
}

/// `return(value)`: sets the innermost macro call's value.
pub(crate) fn return_fn(state: &State, value: Value) -> Result<Value, Error> {
    let c = ctx(state)?;
    let mut r = c.returns.lock().map_err(poisoned)?;
    if let Some(slot @ None) = r.last_mut() {
        *slot = Some(value);
    }
    Ok(Value::from(""))
}

/// Run a warehouse call from inside a render (which is synchronous).
fn block_on<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, weir_warehouse::WarehouseError>>,
) -> Result<T, Error> {
    let handle =
        tokio::runtime::Handle::try_current().map_err(|e| invalid(format!("{what}: {e}")))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(invalid(format!(
            "{what} needs Tokio's multi-threaded runtime"
        )));
    }
    tokio::task::block_in_place(|| handle.block_on(fut))
        .map_err(|e| invalid(format!("{what}: {e}")))
}

/// The warehouse, when the render may use it (compile time).
fn live_warehouse(c: &Ctx) -> Option<Arc<dyn weir_warehouse::Warehouse>> {
    c.warehouse.clone().filter(|_| c.mode == Mode::Compile)
}

/// The result of `run_query` and `load_result(…).table`: `rows`, `columns`
/// (each with `name` and `values()`), `column_names`, and iteration over
/// rows, like dbt's agate table. A row is indexed by position or by name.
#[derive(Debug)]
struct Table {
    names: Arc<Vec<String>>,
    rows: Vec<Value>,
    columns: Vec<Value>,
}

#[derive(Debug)]
struct TableColumn {
    name: String,
    values: Vec<Value>,
}

#[derive(Debug)]
struct Row {
    names: Arc<Vec<String>>,
    cells: Vec<Value>,
}

impl Object for Row {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(name) = key.as_str() {
            let i = self.names.iter().position(|n| n == name)?;
            return self.cells.get(i).cloned();
        }
        let i = key.as_i64()?;
        let i = if i < 0 {
            self.cells.len() as i64 + i
        } else {
            i
        };
        self.cells.get(usize::try_from(i).ok()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.cells.len())
    }
}

impl Object for TableColumn {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "name").then(|| Value::from(self.name.clone()))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "values" => Ok(Value::from(self.values.clone())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

impl Object for Table {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "rows" => Some(Value::from(self.rows.clone())),
            "columns" => Some(Value::from(self.columns.clone())),
            "column_names" => Some(Value::from(self.names.as_ref().clone())),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.rows.clone())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.rows.len())
    }
}

fn cell(array: &dyn arrow::array::Array, i: usize) -> Value {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
    if array.is_null(i) {
        return Value::from(());
    }
    match array.data_type() {
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Float64 => Value::from(array.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => Value::from(array.as_boolean().value(i)),
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(i).to_owned()),
        _ => Value::from(
            arrow::util::display::ArrayFormatter::try_new(array, &Default::default())
                .map(|f| f.value(i).to_string())
                .unwrap_or_default(),
        ),
    }
}

fn table(result: &weir_warehouse::QueryResult) -> Table {
    let names: Arc<Vec<String>> = Arc::new(
        result
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    );
    let mut cols: Vec<Vec<Value>> = vec![Vec::new(); names.len()];
    let mut rows = Vec::new();
    for b in &result.batches {
        for i in 0..b.num_rows() {
            let cells: Vec<Value> = b.columns().iter().map(|c| cell(c.as_ref(), i)).collect();
            for (j, v) in cells.iter().enumerate() {
                cols[j].push(v.clone());
            }
            rows.push(Value::from_object(Row {
                names: names.clone(),
                cells,
            }));
        }
    }
    let columns = names
        .iter()
        .zip(cols)
        .map(|(n, values)| {
            Value::from_object(TableColumn {
                name: n.clone(),
                values,
            })
        })
        .collect();
    Table {
        names,
        rows,
        columns,
    }
}

/// `run_query(sql)`: at parse time `none` (as dbt, where `execute` is false);
/// at compile time the query runs on the warehouse.
pub(crate) fn run_query_fn(state: &State, sql: String) -> Result<Value, Error> {
    let c = ctx(state)?;
    let Some(wh) = live_warehouse(&c) else {
        return Ok(Value::from(()));
    };
    if c.has_returned() {
        return Ok(Value::from(()));
    }
    let result = block_on("run_query", wh.query(&sql))?;
    Ok(Value::from_object(table(&result)))
}

/// `{% call statement('name', fetch_result=True) %}SQL{% endcall %}`: runs
/// the block's SQL at compile time and keeps the result for `load_result`.
#[derive(Debug)]
pub(crate) struct StatementFn;

impl Object for StatementFn {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (name, kwargs): (Option<String>, Kwargs) = from_args(args)?;
        let name = match name {
            Some(n) => Some(n),
            None => kwargs.get::<Option<String>>("name")?,
        };
        let fetch = kwargs.get::<Option<bool>>("fetch_result")?.unwrap_or(false);
        let _: Option<Value> = kwargs.get("auto_begin")?;
        let language = kwargs
            .get::<Option<String>>("language")?
            .unwrap_or_else(|| "sql".into());
        let caller: Value = kwargs.get("caller").map_err(|_| {
            invalid(
                "statement() is used as a call block: {% call statement('name') %}…{% endcall %}",
            )
        })?;
        kwargs.assert_all_used()?;
        if language != "sql" {
            return Err(invalid(format!(
                "statement(language='{language}'): only SQL runs here"
            )));
        }
        let sql = caller.call(state, &[])?.to_string();
        let c = ctx(state)?;
        let Some(wh) = live_warehouse(&c) else {
            return Ok(Value::from(""));
        };
        if c.has_returned() {
            return Ok(Value::from(""));
        }
        let mut response = BTreeMap::new();
        response.insert("_message", Value::from("OK"));
        response.insert("code", Value::from("OK"));
        let mut result = BTreeMap::new();
        if fetch {
            let r = block_on("statement", wh.query(&sql))?;
            let t = table(&r);
            response.insert("rows_affected", Value::from(t.rows.len()));
            let data: Vec<Value> = t.rows.clone();
            result.insert("data", Value::from(data));
            result.insert("table", Value::from_object(t));
        } else {
            block_on("statement", wh.execute(&sql))?;
            result.insert("data", Value::from(Vec::<Value>::new()));
            result.insert("table", Value::from(()));
        }
        result.insert("response", Value::from(response));
        if let Some(n) = name {
            c.results
                .lock()
                .map_err(poisoned)?
                .insert(n, Value::from(result));
        }
        Ok(Value::from(""))
    }
}

/// `load_result('name')`: what the named `statement` gave, or `none`.
pub(crate) fn load_result_fn(state: &State, name: String) -> Result<Value, Error> {
    let c = ctx(state)?;
    let r = c.results.lock().map_err(poisoned)?;
    Ok(r.get(&name).cloned().unwrap_or_default())
}

fn relation(c: &Ctx, schema: &str, identifier: &str) -> Value {
    Value::from_object(Relation {
        schema: schema.to_owned(),
        identifier: identifier.to_owned(),
        rendered: if schema.is_empty() {
            (c.quote)(identifier)
        } else {
            format!("{}.{}", (c.quote)(schema), (c.quote)(identifier))
        },
    })
}

/// A relation's schema and name, from a relation object or a string pair.
fn schema_and_name(rel: &Value) -> Result<(String, String), Error> {
    let get = |k: &str| {
        rel.get_attr(k)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    match (get("schema"), get("identifier")) {
        (Some(s), Some(i)) => Ok((s, i)),
        _ => Err(invalid(format!("{rel} is not a relation"))),
    }
}

/// A column as `adapter.get_columns_in_relation` gives it.
#[derive(Debug)]
struct ColumnObj {
    name: String,
    data_type: String,
    quoted: String,
}

impl Object for ColumnObj {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Value::from(match key.as_str()? {
            "name" | "column" => self.name.clone(),
            "data_type" | "dtype" => self.data_type.clone(),
            "quoted" => self.quoted.clone(),
            _ => return None,
        }))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// `adapter.quote`, `adapter.dispatch`, `adapter.get_relation`,
/// `adapter.get_columns_in_relation`, `adapter.type()`.
#[derive(Debug)]
pub(crate) struct Adapter;

impl Object for Adapter {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let c = ctx(state)?;
        match method {
            "quote" => {
                let (s,): (String,) = from_args(args)?;
                Ok(Value::from((c.quote)(&s)))
            }
            "type" => Ok(Value::from(c.kind.clone())),
            "dispatch" => {
                let (name, kwargs): (String, Kwargs) = from_args(args)?;
                let _: Option<Value> = kwargs.get("macro_namespace")?;
                kwargs.assert_all_used()?;
                // dbt's search order: the adapter's own, then the default.
                let found = [format!("{}__{name}", c.kind), format!("default__{name}")]
                    .into_iter()
                    .find(|m| c.macros.contains(m))
                    .ok_or_else(|| {
                        invalid(format!(
                            "adapter.dispatch('{name}'): no macro `{}__{name}` or `default__{name}` in the project",
                            c.kind
                        ))
                    })?;
                Ok(Value::from_object(MacroFn { name: found }))
            }
            "get_relation" => {
                // get_relation(database, schema, identifier), positionally or by name.
                let (pos, kw) = crate::modules::split_kwargs(args)?;
                let arg = |i: usize, name: &str| -> Result<Option<String>, Error> {
                    match (pos.get(i), &kw) {
                        (Some(v), _) => Ok(v.as_str().map(str::to_owned)),
                        (None, Some(kw)) => kw.get::<Option<String>>(name),
                        (None, None) => Ok(None),
                    }
                };
                let _database = arg(0, "database")?;
                let (Some(schema), Some(identifier)) = (arg(1, "schema")?, arg(2, "identifier")?)
                else {
                    return Err(invalid("adapter.get_relation needs schema and identifier"));
                };
                if let Some(kw) = &kw {
                    kw.assert_all_used()?;
                }
                let Some(wh) = live_warehouse(&c) else {
                    return Ok(Value::from(()));
                };
                let found = block_on("adapter.get_relation", wh.describe(&schema, &identifier))?;
                Ok(match found {
                    Some(_) => relation(&c, &schema, &identifier),
                    None => Value::from(()),
                })
            }
            "get_columns_in_relation" => {
                let (rel,): (Value,) = from_args(args)?;
                let (schema, name) = schema_and_name(&rel)?;
                let Some(wh) = live_warehouse(&c) else {
                    return Ok(Value::from(Vec::<Value>::new()));
                };
                let cols = block_on(
                    "adapter.get_columns_in_relation",
                    wh.describe(&schema, &name),
                )?
                .unwrap_or_default();
                Ok(Value::from(
                    cols.into_iter()
                        .map(|col| {
                            Value::from_object(ColumnObj {
                                quoted: (c.quote)(&col.name),
                                name: col.name,
                                data_type: col.data_type,
                            })
                        })
                        .collect::<Vec<_>>(),
                ))
            }
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("adapter.{method} is not supported"),
            )),
        }
    }
}

/// `api.Relation.create(database=…, schema=…, identifier=…)`.
#[derive(Debug)]
pub(crate) struct Api;

#[derive(Debug)]
struct RelationApi;

impl Object for Api {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "Relation").then(|| Value::from_object(RelationApi))
    }
}

impl Object for RelationApi {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        if method != "create" {
            return Err(Error::from(ErrorKind::UnknownMethod));
        }
        let (kw,): (Kwargs,) = from_args(args)?;
        let _: Option<Value> = kw.get("database")?;
        let _: Option<Value> = kw.get("type")?;
        let schema: Option<String> = kw.get("schema")?;
        let identifier: String = kw.get("identifier")?;
        kw.assert_all_used()?;
        let c = ctx(state)?;
        Ok(relation(&c, schema.as_deref().unwrap_or(""), &identifier))
    }
}
