//! dbt's node selection syntax, as `--select` and `--exclude` take it:
//! space-separated unions of comma-separated intersections of atoms, each
//! atom a method and value (`tag:nightly`, `path:models/staging`,
//! `source:app.orders`, a name or fqn) with graph operators around it
//! (`+name`, `name+`, `2+name+1`, `@name`).
//!
//! Parsing is separate from evaluation so that a selector is checked whole
//! before anything runs, and so that the grammar can be fuzzed on its own.
//!
//! Invariants: knows nothing of projects, graphs or warehouses; user input
//! never panics (the crate is fuzzed, see `fuzz/`).

use std::fmt;

/// A selection method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A node's name or a dotted part of its fqn (no method, or `fqn:`).
    Fqn,
    Tag,
    /// `path:` (or `file:`): a file, or every file under a folder.
    Path,
    /// `source:name` or `source:name.table`.
    Source,
    ResourceType,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "" | "fqn" => Method::Fqn,
            "tag" => Method::Tag,
            "path" | "file" => Method::Path,
            "source" => Method::Source,
            "resource_type" => Method::ResourceType,
            _ => return None,
        })
    }

    fn prefix(self) -> &'static str {
        match self {
            Method::Fqn => "",
            Method::Tag => "tag:",
            Method::Path => "path:",
            Method::Source => "source:",
            Method::ResourceType => "resource_type:",
        }
    }
}

/// How far a graph operator walks: `+` alone walks all the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    All,
    Levels(usize),
}

/// One selector atom, e.g. `2+tag:nightly+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atom {
    pub method: Method,
    pub value: String,
    /// `N+` before the atom: its ancestors.
    pub parents: Option<Depth>,
    /// `+N` after the atom: its descendants.
    pub children: Option<Depth>,
    /// `@` before the atom: its descendants and all their ancestors.
    pub at: bool,
}

/// A union of intersections of atoms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expression {
    /// Each element is an intersection (atoms joined by commas).
    pub union: Vec<Vec<Atom>>,
}

impl Expression {
    pub fn is_empty(&self) -> bool {
        self.union.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unknown selector method `{method}:` in `{atom}` (known: tag, path, file, source, resource_type, fqn)")]
    UnknownMethod { atom: String, method: String },
    #[error("`{atom}` selects nothing: it has no value after its method and operators")]
    Empty { atom: String },
    #[error("`{atom}`: `@` selects descendants and their ancestors, it cannot be combined with `+` before it")]
    AtWithParents { atom: String },
    #[error("`{atom}`: the depth {depth} is not a number of levels")]
    BadDepth { atom: String, depth: String },
}

/// Parse one atom.
pub fn parse_atom(raw: &str) -> Result<Atom, SelectorError> {
    let mut s = raw;
    let at = s.starts_with('@');
    if at {
        s = &s[1..];
    }
    let digits_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let parents = if s[digits_len..].starts_with('+') {
        let depth = depth(raw, &s[..digits_len])?;
        s = &s[digits_len + 1..];
        Some(depth)
    } else {
        None
    };
    if at && parents.is_some() {
        return Err(SelectorError::AtWithParents {
            atom: raw.to_owned(),
        });
    }
    let children = match s.rfind('+') {
        Some(i) if s[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            let d = depth(raw, &s[i + 1..])?;
            s = &s[..i];
            Some(d)
        }
        _ => None,
    };
    let (method, value) = match s.split_once(':') {
        Some((m, v)) => (m, v),
        None => ("", s),
    };
    let method = Method::parse(method).ok_or_else(|| SelectorError::UnknownMethod {
        atom: raw.to_owned(),
        method: method.to_owned(),
    })?;
    if value.is_empty() {
        return Err(SelectorError::Empty {
            atom: raw.to_owned(),
        });
    }
    Ok(Atom {
        method,
        value: value.to_owned(),
        parents,
        children,
        at,
    })
}

fn depth(atom: &str, digits: &str) -> Result<Depth, SelectorError> {
    if digits.is_empty() {
        return Ok(Depth::All);
    }
    digits
        .parse()
        .map(Depth::Levels)
        .map_err(|_| SelectorError::BadDepth {
            atom: atom.to_owned(),
            depth: digits.to_owned(),
        })
}

/// Parse `--select`/`--exclude` values: each may hold several
/// space-separated terms (a union); a term's atoms are joined by commas
/// (an intersection). Empty terms are ignored.
pub fn parse(values: &[String]) -> Result<Expression, SelectorError> {
    let mut union = Vec::new();
    for term in values.iter().flat_map(|v| v.split_whitespace()) {
        let atoms = term
            .split(',')
            .filter(|a| !a.is_empty())
            .map(parse_atom)
            .collect::<Result<Vec<_>, _>>()?;
        if !atoms.is_empty() {
            union.push(atoms);
        }
    }
    Ok(Expression { union })
}

impl fmt::Display for Depth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Depth::All => Ok(()),
            Depth::Levels(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at {
            f.write_str("@")?;
        }
        if let Some(d) = self.parents {
            write!(f, "{d}+")?;
        }
        // A bare name that would read back as something else (a method
        // before a `:`, an operator at its start) is written with `fqn:`.
        let ambiguous = self.method == Method::Fqn
            && (self.value.contains(':')
                || self
                    .value
                    .starts_with(|c: char| c == '@' || c == '+' || c.is_ascii_digit()));
        let prefix = if ambiguous {
            "fqn:"
        } else {
            self.method.prefix()
        };
        write!(f, "{prefix}{}", self.value)?;
        if let Some(d) = self.children {
            write!(f, "+{d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .union
            .iter()
            .map(|i| {
                i.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        f.write_str(&terms.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(s: &str) -> Atom {
        parse_atom(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn atoms_read_methods_and_graph_operators() {
        let a = atom("2+tag:nightly+1");
        assert_eq!(a.method, Method::Tag);
        assert_eq!(a.value, "nightly");
        assert_eq!(a.parents, Some(Depth::Levels(2)));
        assert_eq!(a.children, Some(Depth::Levels(1)));
        let a = atom("@stg_orders");
        assert!(a.at && a.parents.is_none() && a.children.is_none());
        assert_eq!(atom("+orders").parents, Some(Depth::All));
        assert_eq!(atom("orders+").children, Some(Depth::All));
        assert_eq!(atom("source:app.orders").method, Method::Source);
        assert_eq!(atom("file:a.sql").method, Method::Path);
        assert_eq!(atom("shop.marts").value, "shop.marts");
        // A `+` inside a value is part of it.
        assert_eq!(atom("a+b").value, "a+b");
    }

    #[test]
    fn bad_atoms_say_why() {
        for (s, want) in [
            ("state:modified", "unknown selector method `state:`"),
            ("tag:", "selects nothing"),
            ("+", "selects nothing"),
            ("@+x", "cannot be combined"),
            ("99999999999999999999999+x", "not a number of levels"),
        ] {
            let e = parse_atom(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn expressions_are_unions_of_intersections_and_print_back() {
        let e = parse(&["tag:a,+b c".to_owned(), "2+d".to_owned()]).unwrap();
        assert_eq!(e.union.len(), 3);
        assert_eq!(e.union[0].len(), 2);
        assert_eq!(e.to_string(), "tag:a,+b c 2+d");
        assert_eq!(parse(&[e.to_string()]).unwrap(), e);
        assert!(parse(&[" ".to_owned()]).unwrap().is_empty());
        // Found by the fuzzer: a name that looks like a method or an
        // operator prints as `fqn:` so that it reads back the same.
        for s in [":a:b", "2+:ta0:x", ":2+b", ":@x"] {
            let e = parse(&[s.to_owned()]).unwrap();
            assert_eq!(parse(&[e.to_string()]).unwrap(), e, "{s} printed as {e}");
        }
    }
}
