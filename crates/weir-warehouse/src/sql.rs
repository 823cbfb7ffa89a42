//! SQL text per warehouse dialect: quoting, and the statements that publish a
//! staged table.

use md5::Digest;
use weir_config::LoadMode;

use crate::{Column, Publish};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    DuckDb,
    Postgres,
    BigQuery,
}

impl Dialect {
    /// The dialect of a configured warehouse.
    pub fn of(target: &weir_config::WarehouseTarget) -> Dialect {
        match target {
            weir_config::WarehouseTarget::DuckDb { .. } => Dialect::DuckDb,
            weir_config::WarehouseTarget::Postgres { .. } => Dialect::Postgres,
            weir_config::WarehouseTarget::BigQuery(_) => Dialect::BigQuery,
        }
    }

    /// Quote an identifier so any name (mixed case, spaces, keywords) is safe.
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::DuckDb | Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
            Dialect::BigQuery => format!("`{}`", ident.replace('\\', "\\\\").replace('`', "\\`")),
        }
    }

    /// The longest identifier the warehouse keeps, in bytes (PostgreSQL
    /// silently cuts longer ones to 63).
    pub fn max_identifier_bytes(self) -> usize {
        match self {
            Dialect::Postgres => 63,
            Dialect::BigQuery => 1024,
            Dialect::DuckDb => usize::MAX,
        }
    }

    /// The form in which the warehouse compares a quoted identifier: two
    /// names with the same key are the same relation there. DuckDB ignores
    /// ASCII case even in quoted names; PostgreSQL keeps case but only the
    /// first 63 bytes; BigQuery table names are case-sensitive.
    pub fn identifier_key(self, name: &str) -> String {
        match self {
            Dialect::DuckDb => name.to_ascii_lowercase(),
            Dialect::Postgres => truncate_bytes(name, 63).to_owned(),
            Dialect::BigQuery => name.to_owned(),
        }
    }

    /// A name Weir derives from `base` for a relation of its own (a staging
    /// or temporary table): `base` + `suffix` when that fits the
    /// warehouse's identifier limit, else `base` cut short + `_` + 8 hex
    /// digits of a hash of the whole `base`, so that two long names with
    /// the same beginning never derive the same name. Deterministic: the
    /// next load finds a killed load's leftover by it.
    pub fn derived_name(self, base: &str, prefix: &str, suffix: &str) -> String {
        let max = self.max_identifier_bytes();
        let whole = format!("{prefix}{base}{suffix}");
        if whole.len() <= max {
            return whole;
        }
        let digest = md5::Md5::digest(base.as_bytes());
        let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let room = max.saturating_sub(prefix.len() + suffix.len() + 1 + tag.len());
        format!("{prefix}{}_{tag}{suffix}", truncate_bytes(base, room))
    }

    /// `schema.name`, quoted.
    pub fn relation(self, schema: &str, name: &str) -> String {
        format!("{}.{}", self.quote(schema), self.quote(name))
    }

    /// A string literal.
    pub fn literal(self, s: &str) -> String {
        match self {
            Dialect::DuckDb | Dialect::Postgres => format!("'{}'", s.replace('\'', "''")),
            Dialect::BigQuery => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }

    pub fn column_defs(self, columns: &[Column]) -> String {
        columns
            .iter()
            .map(|c| format!("{} {}", self.quote(&c.name), c.data_type))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn column_list(self, columns: &[Column]) -> String {
        columns
            .iter()
            .map(|c| self.quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The statements that publish `p`, to run in one transaction (BigQuery:
    /// in order, each atomic on its own). The staging table is dropped last.
    pub fn publish_statements(self, p: &Publish<'_>) -> Vec<String> {
        let target = self.relation(p.schema, p.table);
        let staging = self.relation(p.schema, p.staging);
        let cols = self.column_list(p.columns);
        let mut out = Vec::new();
        if p.mode == LoadMode::Truncate || !p.exists {
            match self {
                Dialect::BigQuery => {
                    out.push(format!(
                        "CREATE OR REPLACE TABLE {target} AS SELECT * FROM {staging}"
                    ));
                    out.push(format!("DROP TABLE {staging}"));
                }
                Dialect::DuckDb | Dialect::Postgres => {
                    out.push(format!("DROP TABLE IF EXISTS {target}"));
                    out.push(format!(
                        "ALTER TABLE {staging} RENAME TO {}",
                        self.quote(p.table)
                    ));
                }
            }
            return out;
        }
        for c in p.add {
            out.push(format!(
                "ALTER TABLE {target} ADD COLUMN {} {}",
                self.quote(&c.name),
                c.data_type
            ));
        }
        for c in p.widen {
            out.push(match self {
                Dialect::BigQuery => format!(
                    "ALTER TABLE {target} ALTER COLUMN {} SET DATA TYPE {}",
                    self.quote(&c.name),
                    c.data_type
                ),
                Dialect::DuckDb | Dialect::Postgres => format!(
                    "ALTER TABLE {target} ALTER COLUMN {} TYPE {}",
                    self.quote(&c.name),
                    c.data_type
                ),
            });
        }
        match p.mode {
            LoadMode::Append | LoadMode::Truncate => {
                out.push(format!(
                    "INSERT INTO {target} ({cols}) SELECT {cols} FROM {staging}"
                ));
            }
            LoadMode::Merge => {
                let on = |l: &str, r: &str| {
                    p.primary_key
                        .iter()
                        .map(|k| format!("{l}.{q} = {r}.{q}", q = self.quote(k)))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                };
                let keys = p
                    .primary_key
                    .iter()
                    .map(|k| self.quote(k))
                    .collect::<Vec<_>>()
                    .join(", ");
                match self {
                    Dialect::BigQuery => {
                        let set = p
                            .columns
                            .iter()
                            .map(|c| format!("{q} = s.{q}", q = self.quote(&c.name)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let vals = p
                            .columns
                            .iter()
                            .map(|c| format!("s.{}", self.quote(&c.name)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        out.push(format!(
                            "MERGE {target} t USING (SELECT * FROM {staging} \
                             QUALIFY ROW_NUMBER() OVER (PARTITION BY {keys}) = 1) s ON {} \
                             WHEN MATCHED THEN UPDATE SET {set} \
                             WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})",
                            on("t", "s")
                        ));
                    }
                    Dialect::DuckDb | Dialect::Postgres => {
                        // Delete-then-insert in one transaction: the same result as
                        // MERGE, and it also works on tables without a unique index.
                        out.push(format!(
                            "DELETE FROM {target} AS t USING {staging} AS s WHERE {}",
                            on("t", "s")
                        ));
                        out.push(format!(
                            "INSERT INTO {target} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {staging}"
                        ));
                    }
                }
            }
        }
        out.push(format!("DROP TABLE {staging}"));
        out
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Names Weir keeps for its own relations (staging tables): a source
/// table may not take one of them.
pub const RESERVED_PREFIX: &str = "_weir_";

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `_weir_stage_` + a 51-byte prefix filled PostgreSQL's 63
    /// bytes, so two tables sharing their first 51 bytes had one staging table.
    #[test]
    fn derived_names_fit_the_limit_and_never_collide() {
        let a = format!("{}_alpha", "x".repeat(55));
        let b = format!("{}_omega", "x".repeat(55));
        let (sa, sb) = (
            Dialect::Postgres.derived_name(&a, "_weir_stage_", ""),
            Dialect::Postgres.derived_name(&b, "_weir_stage_", ""),
        );
        assert!(sa.len() <= 63 && sb.len() <= 63, "{sa} {sb}");
        assert_ne!(sa, sb);
        assert_eq!(sa, Dialect::Postgres.derived_name(&a, "_weir_stage_", ""));
        assert_eq!(
            Dialect::Postgres.derived_name("t", "_weir_stage_", ""),
            "_weir_stage_t"
        );
        assert_eq!(
            Dialect::DuckDb.derived_name(&a, "", "__weir_tmp"),
            format!("{a}__weir_tmp")
        );
        let m63 = "m".repeat(63);
        let tmp = Dialect::Postgres.derived_name(&m63, "", "__weir_tmp");
        assert!(
            tmp.len() <= 63 && tmp.ends_with("__weir_tmp") && tmp != m63,
            "{tmp}"
        );
        // Multi-byte names are cut on a character boundary.
        let accents = "ç".repeat(40);
        let d = Dialect::Postgres.derived_name(&accents, "_weir_stage_", "");
        assert!(d.len() <= 63, "{d}");
    }

    #[test]
    fn identifier_keys_follow_each_warehouse() {
        assert_eq!(Dialect::DuckDb.identifier_key("MixedCase"), "mixedcase");
        assert_eq!(Dialect::Postgres.identifier_key("MixedCase"), "MixedCase");
        assert_eq!(Dialect::Postgres.identifier_key(&"a".repeat(70)).len(), 63);
    }

    fn col(name: &str, t: &str) -> Column {
        Column {
            name: name.to_owned(),
            data_type: t.to_owned(),
        }
    }

    #[test]
    fn quoting_survives_hostile_names() {
        assert_eq!(Dialect::DuckDb.quote(r#"a"b"#), r#""a""b""#);
        assert_eq!(Dialect::BigQuery.quote("a`b"), r"`a\`b`");
        assert_eq!(Dialect::Postgres.literal("it's"), "'it''s'");
        assert_eq!(Dialect::BigQuery.literal(r"it's\"), r"'it\'s\\'");
    }

    #[test]
    fn merge_adds_columns_then_upserts_then_drops_staging() {
        let columns = [col("id", "BIGINT"), col("v", "VARCHAR")];
        let add = [col("v", "VARCHAR")];
        let p = Publish {
            schema: "raw",
            staging: "_weir_stage_t",
            table: "t",
            mode: LoadMode::Merge,
            exists: true,
            columns: &columns,
            add: &add,
            widen: &[],
            primary_key: &["id".to_owned()],
        };
        assert_eq!(
            Dialect::DuckDb.publish_statements(&p),
            vec![
                r#"ALTER TABLE "raw"."t" ADD COLUMN "v" VARCHAR"#,
                r#"DELETE FROM "raw"."t" AS t USING "raw"."_weir_stage_t" AS s WHERE t."id" = s."id""#,
                r#"INSERT INTO "raw"."t" ("id", "v") SELECT DISTINCT ON ("id") "id", "v" FROM "raw"."_weir_stage_t""#,
                r#"DROP TABLE "raw"."_weir_stage_t""#,
            ]
        );
    }
}
