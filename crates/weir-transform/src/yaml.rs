//! dbt's YAML files (`dbt_project.yml`, `profiles.yml`, `schema.yml`, …) as
//! plain JSON values: their shapes are open-ended (config trees keyed by folder
//! names), so they are read generically and checked where used.

use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};
use serde_json::{Map, Number, Value};

use crate::TransformError;

/// Parse `text` (the contents of `file`); an empty document is `null`.
pub fn parse(file: &Path, text: &str) -> Result<Value, TransformError> {
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| TransformError::Yaml {
        file: file.to_path_buf(),
        line: e.marker().line(),
        message: e.info().to_owned(),
    })?;
    Ok(docs.first().map_or(Value::Null, convert))
}

pub fn read(file: &Path) -> Result<Value, TransformError> {
    let text = std::fs::read_to_string(file).map_err(|e| TransformError::Io {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    parse(file, &text)
}

fn convert(node: &MarkedYamlOwned) -> Value {
    match &node.data {
        YamlDataOwned::Value(ScalarOwned::Null) => Value::Null,
        YamlDataOwned::Value(ScalarOwned::Boolean(b)) => Value::Bool(*b),
        YamlDataOwned::Value(ScalarOwned::Integer(i)) => Value::Number((*i).into()),
        YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => {
            Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
        }
        YamlDataOwned::Value(ScalarOwned::String(s)) => Value::String(s.clone()),
        YamlDataOwned::Sequence(items) => Value::Array(items.iter().map(convert).collect()),
        YamlDataOwned::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match convert(k) {
                    Value::String(s) => s,
                    Value::Null => "null".to_owned(),
                    other => other.to_string(),
                };
                out.insert(key, convert(v));
            }
            Value::Object(out)
        }
        YamlDataOwned::Tagged(_, inner) => convert(inner),
        _ => Value::Null,
    }
}
