//! PostgreSQL column types and the Arrow types they become.
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | int2 / int4 / int8 | Int16 / Int32 / Int64 |
//! | float4 / float8 | Float32 / Float64 |
//! | numeric(p,s), p ≤ 38, s ≥ 0 | Decimal128(p, s) |
//! | numeric without typmod (or p > 38, s < 0) | Utf8, the exact decimal text (`NaN`, `Infinity` kept) |
//! | bool | Boolean |
//! | text, varchar, bpchar, name, enums | Utf8 |
//! | uuid | Utf8 (canonical `8-4-4-4-12` lower-case) |
//! | date | Date32 |
//! | time | Time64(µs) |
//! | timestamp / timestamptz | Timestamp(µs) / Timestamp(µs, "+00:00") |
//! | interval | Utf8, ISO 8601 duration (`P1Y2M3DT4H5M6.789S`), exact to the microsecond (Parquet has no lossless interval type) |
//! | json / jsonb | Utf8 tagged `ARROW:extension:name = arrow.json` |
//! | bytea | Binary |
//! | one-dimensional arrays of the above | List of the element type |
//!
//! Domains map as their base type. Every field carries `weir.pg_type` metadata
//! with the column's declared type. Anything else is refused with
//! [`crate::SourceError::UnsupportedType`] unless listed in `cast_to_text`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};

/// Field metadata key holding the declared PostgreSQL type.
pub const PG_TYPE_KEY: &str = "weir.pg_type";
/// Arrow's canonical extension name key, used to tag JSON text columns.
pub const EXTENSION_KEY: &str = "ARROW:extension:name";
/// The time zone string timestamptz columns carry (UTC, as an offset so every
/// Arrow consumer accepts it without a time-zone database).
pub const UTC: &str = "+00:00";

/// How one column's binary COPY values are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Decimal { precision: u8, scale: i8 },
    NumericText,
    Text,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
    Bytea,
    Array(Box<PgKind>),
}

/// A column as the catalog describes it.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type()` of the column, e.g. `numeric(10,2)` or `character varying(40)`.
    pub declared: String,
    pub kind: PgKind,
    pub not_null: bool,
    /// Read as `::text` because the user asked for it.
    pub cast_to_text: bool,
    /// Share of distinct values from the planner's statistics (`pg_stats.n_distinct`),
    /// when the table has been analyzed.
    pub distinct_fraction: Option<f64>,
}

impl PgKind {
    /// Map a (domain-resolved) type. `typname` is the base type's name,
    /// `typtype` its kind (`b` base, `e` enum, …), `elem` the element type of an array.
    pub fn from_catalog(
        typname: &str,
        typtype: &str,
        typmod: i32,
        elem: Option<(&str, &str)>,
    ) -> Option<PgKind> {
        if let Some((ename, etype)) = elem {
            let inner = PgKind::from_catalog(ename, etype, typmod, None)?;
            return Some(PgKind::Array(Box::new(inner)));
        }
        if typtype == "e" {
            return Some(PgKind::Text);
        }
        Some(match typname {
            "bool" => PgKind::Bool,
            "int2" => PgKind::Int2,
            "int4" => PgKind::Int4,
            "int8" => PgKind::Int8,
            "float4" => PgKind::Float4,
            "float8" => PgKind::Float8,
            "numeric" => numeric_kind(typmod),
            "text" | "varchar" | "bpchar" | "name" => PgKind::Text,
            "uuid" => PgKind::Uuid,
            "date" => PgKind::Date,
            "time" => PgKind::Time,
            "timestamp" => PgKind::Timestamp,
            "timestamptz" => PgKind::Timestamptz,
            "interval" => PgKind::Interval,
            "json" => PgKind::Json,
            "jsonb" => PgKind::Jsonb,
            "bytea" => PgKind::Bytea,
            _ => return None,
        })
    }

    pub fn data_type(&self) -> DataType {
        match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 => DataType::Float64,
            PgKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgKind::NumericText
            | PgKind::Text
            | PgKind::Uuid
            | PgKind::Json
            | PgKind::Jsonb
            | PgKind::Interval => DataType::Utf8,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC))),
            PgKind::Bytea => DataType::Binary,
            PgKind::Array(inner) => DataType::List(Arc::new(inner.element_field())),
        }
    }

    fn element_field(&self) -> Field {
        let f = Field::new("item", self.data_type(), true);
        match self.extension() {
            Some(ext) => {
                f.with_metadata(HashMap::from([(EXTENSION_KEY.to_owned(), ext.to_owned())]))
            }
            None => f,
        }
    }

    fn extension(&self) -> Option<&'static str> {
        matches!(self, PgKind::Json | PgKind::Jsonb).then_some("arrow.json")
    }
}

/// numeric's typmod packs precision and scale as `((p << 16) | s) + 4`; -1 means unconstrained.
/// PostgreSQL 15 allows a negative scale, stored as an 11-bit signed number.
fn numeric_kind(typmod: i32) -> PgKind {
    if typmod < 4 {
        return PgKind::NumericText;
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 0x400) - 0x400;
    if (1..=38).contains(&precision) && (0..=precision).contains(&scale) {
        PgKind::Decimal {
            precision: precision as u8,
            scale: scale as i8,
        }
    } else {
        PgKind::NumericText
    }
}

impl ColumnInfo {
    /// The Arrow field this column becomes.
    pub fn field(&self) -> Field {
        let kind = self.effective_kind();
        let mut meta = HashMap::from([(PG_TYPE_KEY.to_owned(), self.declared.clone())]);
        if let Some(ext) = kind.extension() {
            meta.insert(EXTENSION_KEY.to_owned(), ext.to_owned());
        }
        Field::new(&self.name, kind.data_type(), !self.not_null).with_metadata(meta)
    }

    /// Whether most values are distinct (or the type is a float): a dictionary
    /// encoding would cost time and save nothing.
    pub fn mostly_distinct(&self) -> bool {
        matches!(self.effective_kind(), PgKind::Float4 | PgKind::Float8)
            || self.distinct_fraction.is_some_and(|f| f > 0.1)
    }

    /// What is actually decoded: text when the column is cast.
    pub fn effective_kind(&self) -> PgKind {
        if self.cast_to_text {
            PgKind::Text
        } else {
            self.kind.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmods() {
        let tm = |p: i32, s: i32| ((p << 16) | (s & 0x7ff)) + 4;
        assert_eq!(numeric_kind(-1), PgKind::NumericText);
        assert_eq!(
            numeric_kind(tm(10, 2)),
            PgKind::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            numeric_kind(tm(38, 0)),
            PgKind::Decimal {
                precision: 38,
                scale: 0
            }
        );
        assert_eq!(numeric_kind(tm(39, 2)), PgKind::NumericText);
        assert_eq!(numeric_kind(tm(5, -2)), PgKind::NumericText);
    }
}
