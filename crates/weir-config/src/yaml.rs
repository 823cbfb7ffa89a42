//! A thin reader over saphyr's position-carrying YAML nodes that collects
//! every problem it meets (with file, line and key path) instead of stopping
//! at the first one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

use crate::ConfigError;

/// Where a value sits: file, 1-based line and column, and the key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

pub(crate) struct Reader<'a> {
    pub file: &'a Path,
    pub errors: Vec<ConfigError>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Leave a value that names an unset or empty variable as written,
    /// except under `orchestrate`: for the commands that only read the run
    /// history (`weir runs`, `weir logs`), which must work without the
    /// source's credentials.
    pub lenient_env: bool,
}

/// A node and the key path that led to it.
#[derive(Clone, Copy)]
pub(crate) struct At<'n> {
    pub node: &'n MarkedYamlOwned,
    pub path: &'n str,
}

pub(crate) fn parse(text: &str) -> Result<Option<MarkedYamlOwned>, (usize, usize, String)> {
    match MarkedYamlOwned::load_from_str(text) {
        Ok(mut docs) => Ok(if docs.is_empty() {
            None
        } else {
            Some(docs.swap_remove(0))
        }),
        Err(e) => Err((e.marker().line(), e.marker().col() + 1, e.info().to_owned())),
    }
}

fn kind(node: &MarkedYamlOwned) -> &'static str {
    match &node.data {
        YamlDataOwned::Value(ScalarOwned::Null) => "null",
        YamlDataOwned::Value(ScalarOwned::Boolean(_)) => "a boolean",
        YamlDataOwned::Value(ScalarOwned::Integer(_)) => "an integer",
        YamlDataOwned::Value(ScalarOwned::FloatingPoint(_)) => "a number",
        YamlDataOwned::Value(ScalarOwned::String(_)) => "a string",
        YamlDataOwned::Sequence(_) => "a list",
        YamlDataOwned::Mapping(_) => "a mapping",
        _ => "an unsupported YAML node",
    }
}

impl<'a> Reader<'a> {
    pub fn error(&mut self, node: &MarkedYamlOwned, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            location: Location {
                file: self.file.to_path_buf(),
                line: node.span.start.line(),
                column: node.span.start.col() + 1,
            },
            key: path.to_owned(),
            message: message.into(),
        });
    }

    /// The entries of a mapping, reporting keys not in `known`.
    pub fn mapping<'n>(
        &mut self,
        at: At<'n>,
        known: &[&str],
    ) -> BTreeMap<String, (&'n MarkedYamlOwned, String)> {
        self.mapping_with_hint(at, known, &|_| None)
    }

    /// [`Reader::mapping`], with `hint` saying where an unknown key belongs.
    pub fn mapping_with_hint<'n>(
        &mut self,
        at: At<'n>,
        known: &[&str],
        hint: &dyn Fn(&str) -> Option<String>,
    ) -> BTreeMap<String, (&'n MarkedYamlOwned, String)> {
        let mut out = BTreeMap::new();
        let YamlDataOwned::Mapping(map) = &at.node.data else {
            if !matches!(at.node.data, YamlDataOwned::Value(ScalarOwned::Null)) {
                self.error(
                    at.node,
                    at.path,
                    format!("expected a mapping, found {}", kind(at.node)),
                );
            }
            return out;
        };
        for (k, v) in map {
            let Some(key) = k.data.as_str() else {
                self.error(k, at.path, "keys must be strings");
                continue;
            };
            let path = if at.path.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", at.path)
            };
            if !known.is_empty() && !known.contains(&key) {
                let message = match hint(key) {
                    Some(h) => format!("unknown key `{key}`: {h}"),
                    None => format!(
                        "unknown key `{key}` (expected one of: {})",
                        known.join(", ")
                    ),
                };
                self.error(k, &path, message);
                continue;
            }
            out.insert(key.to_owned(), (v, path));
        }
        out
    }

    /// A string scalar with `${VAR}` / `${VAR:-default}` interpolated.
    pub fn string(&mut self, at: At<'_>) -> Option<String> {
        let raw = match &at.node.data {
            YamlDataOwned::Value(ScalarOwned::String(s)) => s.clone(),
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => i.to_string(),
            _ => {
                self.error(
                    at.node,
                    at.path,
                    format!("expected a string, found {}", kind(at.node)),
                );
                return None;
            }
        };
        match interpolate(&raw, self.env) {
            Ok(s) => Some(s),
            Err(_) if self.lenient_env && !at.path.starts_with("orchestrate") => Some(raw),
            Err(msg) => {
                self.error(at.node, at.path, msg);
                None
            }
        }
    }

    pub fn bool(&mut self, at: At<'_>) -> Option<bool> {
        match &at.node.data {
            YamlDataOwned::Value(ScalarOwned::Boolean(b)) => Some(*b),
            _ => {
                self.error(
                    at.node,
                    at.path,
                    format!("expected true or false, found {}", kind(at.node)),
                );
                None
            }
        }
    }

    pub fn uint(&mut self, at: At<'_>, min: u64, max: u64) -> Option<u64> {
        let value = match &at.node.data {
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => Some(*i),
            YamlDataOwned::Value(ScalarOwned::String(_)) => {
                self.string(at).and_then(|s| s.trim().parse::<i64>().ok())
            }
            _ => None,
        };
        match value {
            Some(v) if v >= 0 && (v as u64) >= min && (v as u64) <= max => Some(v as u64),
            Some(v) => {
                self.error(
                    at.node,
                    at.path,
                    format!("{v} is out of range ({min} to {max})"),
                );
                None
            }
            None => {
                self.error(
                    at.node,
                    at.path,
                    format!("expected a whole number, found {}", kind(at.node)),
                );
                None
            }
        }
    }

    /// A list of strings, or one string standing for a list of one.
    pub fn strings(&mut self, at: At<'_>) -> Option<Vec<String>> {
        match &at.node.data {
            YamlDataOwned::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", at.path);
                    out.extend(self.string(At {
                        node: item,
                        path: &path,
                    }));
                }
                Some(out)
            }
            _ => self.string(at).map(|s| vec![s]),
        }
    }

    pub fn choice(&mut self, at: At<'_>, choices: &[&str]) -> Option<String> {
        let s = self.string(at)?;
        if choices.contains(&s.as_str()) {
            Some(s)
        } else {
            self.error(
                at.node,
                at.path,
                format!("`{s}` is not one of: {}", choices.join(", ")),
            );
            None
        }
    }
}

/// Replace `${VAR}` and `${VAR:-default}` with values from `env`; `$$` is a literal `$`.
pub fn interpolate(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("unclosed `${` in value".to_owned());
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            // As in a shell, `${VAR:-default}` takes the default when VAR is
            // unset or empty. Without a default an empty value is an error:
            // it almost always is a variable exported by mistake, and an
            // empty URL or name only fails later, far from its cause.
            // `${VAR:-}` says that empty is fine.
            match (env(name), default) {
                (Some(v), _) if !v.is_empty() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable `{name}` is not set")),
                (Some(_), None) => {
                    return Err(format!(
                        "environment variable `{name}` is set but empty (write `${{{name}:-}}` if empty is meant)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::interpolate;

    #[test]
    fn interpolation_reads_env_defaults_and_escapes() {
        let env = |k: &str| match k {
            "HOST" => Some("db".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            interpolate("pg://${HOST}:5432", &env).unwrap(),
            "pg://db:5432"
        );
        assert_eq!(
            interpolate("${MISSING:-x}/${EMPTY:-y}", &env).unwrap(),
            "x/y"
        );
        assert_eq!(
            interpolate("cost $$5 and $HOME", &env).unwrap(),
            "cost $5 and $HOME"
        );
        assert!(interpolate("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING"));
        // Regression: an empty variable became an empty URL, reported much
        // later as `cannot connect to : invalid configuration`.
        assert!(interpolate("${EMPTY}", &env)
            .unwrap_err()
            .contains("`EMPTY` is set but empty"));
        assert_eq!(interpolate("a${EMPTY:-}b", &env).unwrap(), "ab");
        assert!(interpolate("${HOST", &env).is_err());
    }
}
