//! SQL text per warehouse dialect: quoting, and the statements that publish a
//! staged table.

use weir_config::LoadMode;

use crate::{Column, Publish};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    DuckDb,
    Postgres,
    BigQuery,
}

impl Dialect {
    /// Quote an identifier so any name (mixed case, spaces, keywords) is safe.
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::DuckDb | Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
            Dialect::BigQuery => format!("`{}`", ident.replace('\\', "\\\\").replace('`', "\\`")),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
