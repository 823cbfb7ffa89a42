//! The column types a load creates, per warehouse, from the run's Arrow schema.
//!
//! | Arrow (PostgreSQL source) | DuckDB | PostgreSQL | BigQuery |
//! |---|---|---|---|
//! | Boolean | BOOLEAN | boolean | BOOL |
//! | Int16 / Int32 / Int64 | SMALLINT / INTEGER / BIGINT | smallint / integer / bigint | INT64 |
//! | Float32 / Float64 | FLOAT / DOUBLE | real / double precision | FLOAT64 |
//! | Decimal128(p, s) | DECIMAL(p,s) | numeric(p,s) | NUMERIC(p,s) if p−s ≤ 29 and s ≤ 9, else BIGNUMERIC(p,s) |
//! | Utf8 from `numeric` without typmod | VARCHAR (exact text, `NaN` kept) | numeric | STRING (exact text) |
//! | Utf8 from `uuid` | UUID | uuid | STRING |
//! | Utf8 tagged JSON (json/jsonb) | JSON | json / jsonb | JSON |
//! | Utf8 from `interval` (ISO 8601) | INTERVAL | interval | STRING (ISO 8601) |
//! | other Utf8 (text, varchar, char, enums) | VARCHAR | text | STRING |
//! | Date32 | DATE | date | DATE |
//! | Time64(µs) | TIME | time without time zone | TIME |
//! | Timestamp(µs) | TIMESTAMP | timestamp without time zone | DATETIME |
//! | Timestamp(µs, +00:00) | TIMESTAMP WITH TIME ZONE | timestamp with time zone | TIMESTAMP |
//! | Binary | BLOB | bytea | BYTES |
//! | List(T) | T[] | T[] | ARRAY&lt;T&gt; |
//!
//! Lineage columns: `_weir_run_id` (text) and `_weir_loaded_at` (timestamp with
//! time zone).

use arrow::datatypes::{DataType, Field, TimeUnit};

use crate::{Column, Dialect, WarehouseError};

/// Field metadata holding the source's declared PostgreSQL type.
pub const PG_TYPE_KEY: &str = "weir.pg_type";
const EXTENSION_KEY: &str = "ARROW:extension:name";

pub const LINEAGE_RUN_ID: &str = "_weir_run_id";
pub const LINEAGE_LOADED_AT: &str = "_weir_loaded_at";

/// What a Utf8 column really holds, from the field's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    Plain,
    Uuid,
    Json { binary: bool },
    Interval,
    Numeric,
}

fn text_kind(field: &Field) -> Text {
    let pg = field
        .metadata()
        .get(PG_TYPE_KEY)
        .map(|t| t.trim_end_matches("[]"))
        .unwrap_or("");
    if field.metadata().get(EXTENSION_KEY).map(String::as_str) == Some("arrow.json")
        || pg == "json"
        || pg == "jsonb"
    {
        return Text::Json {
            binary: pg == "jsonb",
        };
    }
    match pg {
        "uuid" => Text::Uuid,
        "interval" => Text::Interval,
        "numeric" => Text::Numeric,
        _ => Text::Plain,
    }
}

/// The warehouse type for an Arrow field (the field's own metadata refines Utf8).
pub fn column_type(dialect: Dialect, field: &Field) -> Result<String, WarehouseError> {
    type_of(dialect, field, field.data_type())
}

fn type_of(dialect: Dialect, field: &Field, dt: &DataType) -> Result<String, WarehouseError> {
    use Dialect::*;
    let t = match (dialect, dt) {
        (DuckDb, DataType::Boolean) => "BOOLEAN".to_owned(),
        (Postgres, DataType::Boolean) => "boolean".to_owned(),
        (BigQuery, DataType::Boolean) => "BOOL".to_owned(),
        (DuckDb, DataType::Int16) => "SMALLINT".to_owned(),
        (DuckDb, DataType::Int32) => "INTEGER".to_owned(),
        (DuckDb, DataType::Int64) => "BIGINT".to_owned(),
        (Postgres, DataType::Int16) => "smallint".to_owned(),
        (Postgres, DataType::Int32) => "integer".to_owned(),
        (Postgres, DataType::Int64) => "bigint".to_owned(),
        (BigQuery, DataType::Int16 | DataType::Int32 | DataType::Int64) => "INT64".to_owned(),
        (DuckDb, DataType::Float32) => "FLOAT".to_owned(),
        (DuckDb, DataType::Float64) => "DOUBLE".to_owned(),
        (Postgres, DataType::Float32) => "real".to_owned(),
        (Postgres, DataType::Float64) => "double precision".to_owned(),
        (BigQuery, DataType::Float32 | DataType::Float64) => "FLOAT64".to_owned(),
        (DuckDb, DataType::Decimal128(p, s)) => format!("DECIMAL({p},{s})"),
        (Postgres, DataType::Decimal128(p, s)) => format!("numeric({p},{s})"),
        (BigQuery, DataType::Decimal128(p, s)) => {
            let (p, s) = (i16::from(*p), i16::from(*s));
            if p - s <= 29 && s <= 9 {
                format!("NUMERIC({p},{s})")
            } else {
                format!("BIGNUMERIC({p},{s})")
            }
        }
        (_, DataType::Utf8 | DataType::LargeUtf8) => match (dialect, text_kind(field)) {
            (DuckDb, Text::Uuid) => "UUID",
            (DuckDb, Text::Json { .. }) => "JSON",
            (DuckDb, Text::Interval) => "INTERVAL",
            (DuckDb, _) => "VARCHAR",
            (Postgres, Text::Uuid) => "uuid",
            (Postgres, Text::Json { binary: true }) => "jsonb",
            (Postgres, Text::Json { binary: false }) => "json",
            (Postgres, Text::Interval) => "interval",
            (Postgres, Text::Numeric) => "numeric",
            (Postgres, Text::Plain) => "text",
            (BigQuery, Text::Json { .. }) => "JSON",
            (BigQuery, _) => "STRING",
        }
        .to_owned(),
        (DuckDb, DataType::Date32) => "DATE".to_owned(),
        (Postgres, DataType::Date32) => "date".to_owned(),
        (BigQuery, DataType::Date32) => "DATE".to_owned(),
        (DuckDb, DataType::Time64(TimeUnit::Microsecond)) => "TIME".to_owned(),
        (Postgres, DataType::Time64(TimeUnit::Microsecond)) => "time without time zone".to_owned(),
        (BigQuery, DataType::Time64(TimeUnit::Microsecond)) => "TIME".to_owned(),
        (DuckDb, DataType::Timestamp(_, None)) => "TIMESTAMP".to_owned(),
        (DuckDb, DataType::Timestamp(_, Some(_))) => "TIMESTAMP WITH TIME ZONE".to_owned(),
        (Postgres, DataType::Timestamp(_, None)) => "timestamp without time zone".to_owned(),
        (Postgres, DataType::Timestamp(_, Some(_))) => "timestamp with time zone".to_owned(),
        (BigQuery, DataType::Timestamp(_, None)) => "DATETIME".to_owned(),
        (BigQuery, DataType::Timestamp(_, Some(_))) => "TIMESTAMP".to_owned(),
        (DuckDb, DataType::Binary | DataType::LargeBinary) => "BLOB".to_owned(),
        (Postgres, DataType::Binary | DataType::LargeBinary) => "bytea".to_owned(),
        (BigQuery, DataType::Binary | DataType::LargeBinary) => "BYTES".to_owned(),
        (_, DataType::List(inner) | DataType::LargeList(inner)) => {
            // The element inherits the column's metadata (`uuid[]` → uuid elements).
            let elem = type_of(dialect, field, inner.data_type())?;
            match dialect {
                DuckDb | Postgres => format!("{elem}[]"),
                BigQuery => format!("ARRAY<{elem}>"),
            }
        }
        (_, other) => {
            return Err(WarehouseError::Load {
                table: String::new(),
                message: format!(
                    "column {}: Arrow type {other} has no {dialect:?} mapping",
                    field.name()
                ),
            })
        }
    };
    Ok(t)
}

/// Target columns for a run's schema, plus lineage columns when asked.
pub fn columns_for(
    dialect: Dialect,
    table: &str,
    schema: &arrow::datatypes::Schema,
    lineage: bool,
) -> Result<Vec<Column>, WarehouseError> {
    let mut out = Vec::with_capacity(schema.fields().len() + 2);
    for f in schema.fields() {
        let data_type = column_type(dialect, f).map_err(|e| match e {
            WarehouseError::Load { message, .. } => WarehouseError::Load {
                table: table.to_owned(),
                message,
            },
            e => e,
        })?;
        out.push(Column {
            name: f.name().clone(),
            data_type,
        });
    }
    if lineage {
        let (text, ts) = match dialect {
            Dialect::DuckDb => ("VARCHAR", "TIMESTAMP WITH TIME ZONE"),
            Dialect::Postgres => ("text", "timestamp with time zone"),
            Dialect::BigQuery => ("STRING", "TIMESTAMP"),
        };
        out.push(Column {
            name: LINEAGE_RUN_ID.to_owned(),
            data_type: text.to_owned(),
        });
        out.push(Column {
            name: LINEAGE_LOADED_AT.to_owned(),
            data_type: ts.to_owned(),
        });
    }
    Ok(out)
}

/// A type spelling reduced for comparison: upper case, single spaces, common aliases.
pub fn canonical(t: &str) -> String {
    let t = t.trim().to_ascii_uppercase().replace(", ", ",");
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let alias = |s: &str| -> String {
        match s {
            "INT2" | "SMALLINT" => "SMALLINT".into(),
            "INT" | "INT4" | "INTEGER" => "INTEGER".into(),
            "INT8" | "BIGINT" => "BIGINT".into(),
            "FLOAT4" | "REAL" | "FLOAT" => "REAL".into(),
            "FLOAT8" | "DOUBLE" | "DOUBLE PRECISION" => "DOUBLE".into(),
            "BOOL" | "BOOLEAN" => "BOOLEAN".into(),
            "TEXT" | "VARCHAR" | "STRING" | "CHARACTER VARYING" => "VARCHAR".into(),
            "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => "TIMESTAMPTZ".into(),
            "TIMESTAMP WITHOUT TIME ZONE" => "TIMESTAMP".into(),
            "TIME WITHOUT TIME ZONE" => "TIME".into(),
            "BYTEA" | "BLOB" => "BLOB".into(),
            "NUMERIC" | "DECIMAL" => "NUMERIC".into(),
            other => other.replace("DECIMAL(", "NUMERIC("),
        }
    };
    if let Some(elem) = t.strip_suffix("[]") {
        return format!("{}[]", alias(elem));
    }
    if let Some(elem) = t.strip_prefix("ARRAY<").and_then(|s| s.strip_suffix('>')) {
        return format!("{}[]", alias(elem));
    }
    alias(&t)
}

/// How an existing column of type `old` takes data of type `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// Same type, or `new` fits `old` without loss (a narrower integer, say).
    AsIs,
    /// `old` must first be widened to `new` (lossless for the rows already there).
    Widen,
    /// Loading would lose data.
    Lossy,
}

fn int_rank(t: &str) -> Option<u8> {
    match t {
        "SMALLINT" => Some(1),
        "INTEGER" => Some(2),
        "BIGINT" | "INT64" => Some(3),
        _ => None,
    }
}

fn decimal(t: &str) -> Option<(u32, u32)> {
    let inner = t
        .strip_prefix("NUMERIC(")
        .or_else(|| t.strip_prefix("BIGNUMERIC("))?
        .strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

pub fn fit(old: &str, new: &str) -> Fit {
    let (old, new) = (canonical(old), canonical(new));
    if old == new {
        return Fit::AsIs;
    }
    if let (Some(o), Some(n)) = (int_rank(&old), int_rank(&new)) {
        return if n <= o { Fit::AsIs } else { Fit::Widen };
    }
    if old == "DOUBLE" && (new == "REAL" || int_rank(&new).is_some_and(|r| r <= 2)) {
        return Fit::AsIs;
    }
    if old == "REAL" && new == "DOUBLE" {
        return Fit::Widen;
    }
    if let (Some((op, os)), Some((np, ns))) = (decimal(&old), decimal(&new)) {
        // Integer digits and scale must both fit.
        if ns <= os && np - ns <= op - os {
            return Fit::AsIs;
        }
        if ns >= os && np - ns >= op - os {
            return Fit::Widen;
        }
        return Fit::Lossy;
    }
    if old == "NUMERIC" && (decimal(&new).is_some() || int_rank(&new).is_some()) {
        return Fit::AsIs;
    }
    if old == "VARCHAR" && matches!(new.as_str(), "UUID" | "JSON" | "JSONB" | "INTERVAL") {
        return Fit::AsIs;
    }
    Fit::Lossy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_allowed_narrowing_is_not() {
        let cases = [
            ("INTEGER", "SMALLINT", Fit::AsIs),
            ("integer", "bigint", Fit::Widen),
            ("BIGINT", "VARCHAR", Fit::Lossy),
            ("DECIMAL(12,2)", "DECIMAL(10,2)", Fit::AsIs),
            ("numeric(10,2)", "numeric(12,4)", Fit::Widen),
            ("DECIMAL(12,4)", "DECIMAL(12,2)", Fit::Lossy),
            ("DOUBLE", "INTEGER", Fit::AsIs),
            ("REAL", "DOUBLE", Fit::Widen),
            ("DOUBLE", "BIGINT", Fit::Lossy),
            (
                "timestamp with time zone",
                "TIMESTAMP WITH TIME ZONE",
                Fit::AsIs,
            ),
            ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", Fit::Lossy),
            ("INTEGER[]", "integer[]", Fit::AsIs),
            ("ARRAY<INT64>", "INT64[]", Fit::AsIs),
        ];
        for (old, new, want) in cases {
            assert_eq!(fit(old, new), want, "{old} <- {new}");
        }
    }
}
