//! Olist sample data: the nine tables' schema, a deterministic generator that
//! reproduces the reference marginals, and writers to PostgreSQL (`COPY`) or
//! to CSV files named as the public dataset ships them.

mod data;
mod generate;

use std::path::Path;

use bytes::Bytes;
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

pub use data::{CATEGORIES, ORDERS_PER_STATE};
pub use generate::{generate, CsvSink, GenerateOptions};

use crate::pg::{query_err, quote_ident};
use crate::SourceError;

/// One Olist table: its PostgreSQL name, the CSV file it ships as, columns and key.
#[derive(Debug)]
pub struct OlistTable {
    pub name: &'static str,
    pub csv_file: &'static str,
    /// (column, PostgreSQL type)
    pub columns: &'static [(&'static str, &'static str)],
    pub primary_key: &'static [&'static str],
}

const ID: &str = "varchar(32)";
const TS: &str = "timestamp";

pub const TABLES: [OlistTable; 9] = [
    OlistTable {
        name: "olist_customers",
        csv_file: "olist_customers_dataset.csv",
        columns: &[
            ("customer_id", ID),
            ("customer_unique_id", ID),
            ("customer_zip_code_prefix", "varchar(5)"),
            ("customer_city", "text"),
            ("customer_state", "char(2)"),
        ],
        primary_key: &["customer_id"],
    },
    OlistTable {
        name: "olist_geolocation",
        csv_file: "olist_geolocation_dataset.csv",
        columns: &[
            ("geolocation_zip_code_prefix", "varchar(5)"),
            ("geolocation_lat", "double precision"),
            ("geolocation_lng", "double precision"),
            ("geolocation_city", "text"),
            ("geolocation_state", "char(2)"),
        ],
        primary_key: &[],
    },
    OlistTable {
        name: "olist_order_items",
        csv_file: "olist_order_items_dataset.csv",
        columns: &[
            ("order_id", ID),
            ("order_item_id", "integer"),
            ("product_id", ID),
            ("seller_id", ID),
            ("shipping_limit_date", TS),
            ("price", "numeric(10,2)"),
            ("freight_value", "numeric(10,2)"),
        ],
        primary_key: &["order_id", "order_item_id"],
    },
    OlistTable {
        name: "olist_order_payments",
        csv_file: "olist_order_payments_dataset.csv",
        columns: &[
            ("order_id", ID),
            ("payment_sequential", "integer"),
            ("payment_type", "text"),
            ("payment_installments", "integer"),
            ("payment_value", "numeric(10,2)"),
        ],
        primary_key: &["order_id", "payment_sequential"],
    },
    OlistTable {
        name: "olist_order_reviews",
        csv_file: "olist_order_reviews_dataset.csv",
        columns: &[
            ("review_id", ID),
            ("order_id", ID),
            ("review_score", "smallint"),
            ("review_comment_title", "text"),
            ("review_comment_message", "text"),
            ("review_creation_date", TS),
            ("review_answer_timestamp", TS),
        ],
        // review_id alone repeats in the real data; with the order it is unique
        primary_key: &["review_id", "order_id"],
    },
    OlistTable {
        name: "olist_orders",
        csv_file: "olist_orders_dataset.csv",
        columns: &[
            ("order_id", ID),
            ("customer_id", ID),
            ("order_status", "text"),
            ("order_purchase_timestamp", TS),
            ("order_approved_at", TS),
            ("order_delivered_carrier_date", TS),
            ("order_delivered_customer_date", TS),
            ("order_estimated_delivery_date", TS),
        ],
        primary_key: &["order_id"],
    },
    OlistTable {
        name: "olist_products",
        csv_file: "olist_products_dataset.csv",
        columns: &[
            ("product_id", ID),
            ("product_category_name", "text"),
            ("product_name_lenght", "integer"),
            ("product_description_lenght", "integer"),
            ("product_photos_qty", "integer"),
            ("product_weight_g", "integer"),
            ("product_length_cm", "integer"),
            ("product_height_cm", "integer"),
            ("product_width_cm", "integer"),
        ],
        primary_key: &["product_id"],
    },
    OlistTable {
        name: "olist_sellers",
        csv_file: "olist_sellers_dataset.csv",
        columns: &[
            ("seller_id", ID),
            ("seller_zip_code_prefix", "varchar(5)"),
            ("seller_city", "text"),
            ("seller_state", "char(2)"),
        ],
        primary_key: &["seller_id"],
    },
    OlistTable {
        name: "product_category_name_translation",
        csv_file: "product_category_name_translation.csv",
        columns: &[
            ("product_category_name", "text"),
            ("product_category_name_english", "text"),
        ],
        primary_key: &["product_category_name"],
    },
];

impl OlistTable {
    /// The Olist table a CSV file name stands for, if any.
    pub fn for_file(file_name: &str) -> Option<&'static OlistTable> {
        TABLES.iter().find(|t| t.csv_file == file_name)
    }

    pub fn create_sql(&self, schema: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(c, t)| format!("{} {t}", quote_ident(c)))
            .collect();
        format!(
            "CREATE TABLE {}.{} ({})",
            quote_ident(schema),
            quote_ident(self.name),
            cols.join(", ")
        )
    }

    /// Added after the data, which is faster than loading into an indexed table.
    pub fn primary_key_sql(&self, schema: &str) -> Option<String> {
        (!self.primary_key.is_empty()).then(|| {
            let cols: Vec<String> = self.primary_key.iter().map(|c| quote_ident(c)).collect();
            format!(
                "ALTER TABLE {}.{} ADD PRIMARY KEY ({})",
                quote_ident(schema),
                quote_ident(self.name),
                cols.join(", ")
            )
        })
    }

    /// The CSV header line, quoted as the public files quote it.
    pub fn csv_header(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(c, _)| format!("\"{c}\""))
            .collect();
        format!("{}\n", cols.join(","))
    }
}

/// Tables of `names` that already exist in `schema`.
pub async fn existing_tables(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    names: &[&str],
) -> Result<Vec<String>, SourceError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = ANY($2) ORDER BY 1",
            &[&schema, &names],
        )
        .await
        .map_err(query_err("checking for existing tables"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The schema `weir demo` writes its sample data to, in whatever database
/// it is given: never the user's own tables.
pub const DEMO_SCHEMA: &str = "weir_demo";
/// The comment that marks a schema as the demo's own.
const DEMO_MARK: &str = "made by weir demo; its tables are replaced by every demo run";

/// Make sure `schema` is the demo's to fill: absent (it is created and
/// marked), or marked as made by an earlier demo, or empty. A schema that
/// holds tables the demo did not make is refused unless `overwrite`: the
/// demo must never destroy data it did not create.
pub async fn claim_demo_schema(
    client: &Client,
    schema: &str,
    overwrite: bool,
) -> Result<(), SourceError> {
    let row = client
        .query_opt(
            "SELECT coalesce(obj_description(n.oid, 'pg_namespace'), ''),
                    (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))
             FROM pg_namespace n WHERE n.nspname = $1",
            &[&schema],
        )
        .await
        .map_err(query_err(format!("looking at schema {schema}")))?;
    match row {
        Some(r) => {
            let comment: String = r.get(0);
            let relations: i64 = r.get(1);
            if comment != DEMO_MARK && relations > 0 && !overwrite {
                return Err(SourceError::Config(format!(
                    "schema {schema} already holds {relations} table(s) or view(s) that `weir demo` did not make, and the demo replaces its tables; give another database, or --overwrite to let the demo replace them"
                )));
            }
        }
        None => client
            .batch_execute(&format!("CREATE SCHEMA {}", quote_ident(schema)))
            .await
            .map_err(query_err(format!("creating schema {schema}")))?,
    }
    client
        .batch_execute(&format!(
            "COMMENT ON SCHEMA {} IS {}",
            quote_ident(schema),
            crate::pg::quote_literal(DEMO_MARK)
        ))
        .await
        .map_err(query_err(format!("marking schema {schema}")))?;
    Ok(())
}

/// Row counts written per table, in generation order.
pub type Counts = Vec<(&'static str, u64)>;

enum Msg {
    Begin(&'static OlistTable),
    Data(Bytes),
    End(u64),
}

struct ChannelSink(mpsc::Sender<Msg>);

impl CsvSink for ChannelSink {
    type Error = ();
    fn begin(&mut self, table: &'static OlistTable) -> Result<(), ()> {
        self.0.blocking_send(Msg::Begin(table)).map_err(|_| ())
    }
    fn data(&mut self, bytes: &[u8]) -> Result<(), ()> {
        self.0
            .blocking_send(Msg::Data(Bytes::copy_from_slice(bytes)))
            .map_err(|_| ())
    }
    fn end(&mut self, rows: u64) -> Result<(), ()> {
        self.0.blocking_send(Msg::End(rows)).map_err(|_| ())
    }
}

/// Create the nine tables in `schema` and fill them with `COPY`, all in one
/// transaction: either every table is there, complete, or none changed.
/// Existing tables are an error unless `replace`.
pub async fn generate_into_postgres(
    client: &mut Client,
    schema: &str,
    opts: GenerateOptions,
    replace: bool,
) -> Result<Counts, SourceError> {
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    let tx = client
        .transaction()
        .await
        .map_err(query_err("starting a transaction"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(schema)
    ))
    .await
    .map_err(query_err(format!("creating schema {schema}")))?;
    let existing = existing_tables(&tx, schema, &names).await?;
    if !existing.is_empty() && !replace {
        return Err(SourceError::TablesExist {
            schema: schema.to_owned(),
            tables: existing,
        });
    }
    for t in &existing {
        tx.batch_execute(&format!(
            "DROP TABLE {}.{} CASCADE",
            quote_ident(schema),
            quote_ident(t)
        ))
        .await
        .map_err(query_err(format!("dropping {schema}.{t}")))?;
    }
    let (send, mut recv) = mpsc::channel::<Msg>(8);
    let producer = tokio::task::spawn_blocking(move || generate(opts, &mut ChannelSink(send)));
    let mut counts = Counts::new();
    let mut current: Option<(
        &'static OlistTable,
        std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    )> = None;
    while let Some(msg) = recv.recv().await {
        match msg {
            Msg::Begin(t) => {
                tx.batch_execute(&t.create_sql(schema))
                    .await
                    .map_err(query_err(format!("creating {}", t.name)))?;
                let sink = tx
                    .copy_in(&format!(
                        "COPY {}.{} FROM STDIN (FORMAT csv)",
                        quote_ident(schema),
                        quote_ident(t.name)
                    ))
                    .await
                    .map_err(query_err(format!("loading {}", t.name)))?;
                current = Some((t, Box::pin(sink)));
            }
            Msg::Data(bytes) => {
                if let Some((t, sink)) = current.as_mut() {
                    sink.send(bytes)
                        .await
                        .map_err(query_err(format!("loading {}", t.name)))?;
                }
            }
            Msg::End(generated) => {
                if let Some((t, mut sink)) = current.take() {
                    let n = sink
                        .as_mut()
                        .finish()
                        .await
                        .map_err(query_err(format!("loading {}", t.name)))?;
                    if n != generated {
                        return Err(SourceError::Bug(format!(
                            "{}: generated {generated} rows, COPY stored {n}",
                            t.name
                        )));
                    }
                    if let Some(pk) = t.primary_key_sql(schema) {
                        tx.batch_execute(&pk)
                            .await
                            .map_err(query_err(format!("adding the key of {}", t.name)))?;
                    }
                    // Fresh statistics, as a restored database would have after ANALYZE.
                    tx.batch_execute(&format!(
                        "ANALYZE {}.{}",
                        quote_ident(schema),
                        quote_ident(t.name)
                    ))
                    .await
                    .map_err(query_err(format!("analyzing {}", t.name)))?;
                    counts.push((t.name, n));
                }
            }
        }
    }
    producer
        .await
        .map_err(|e| SourceError::Bug(format!("the generator stopped: {e}")))?
        .map_err(|()| SourceError::Bug("the generator's output channel closed early".to_owned()))?;
    tx.commit()
        .await
        .map_err(query_err("committing the generated data"))?;
    Ok(counts)
}

/// Write the nine tables as CSV files into `dir` (created if missing).
pub fn generate_csv(dir: &Path, opts: GenerateOptions) -> Result<Counts, SourceError> {
    use std::io::Write;
    struct Files<'d> {
        dir: &'d Path,
        file: Option<(std::io::BufWriter<std::fs::File>, &'static OlistTable, u64)>,
        counts: Counts,
    }
    impl CsvSink for Files<'_> {
        type Error = std::io::Error;
        fn begin(&mut self, t: &'static OlistTable) -> std::io::Result<()> {
            // Written under a temporary name and renamed when complete.
            let mut f = std::io::BufWriter::new(std::fs::File::create(
                self.dir.join(format!(".{}.tmp", t.csv_file)),
            )?);
            f.write_all(t.csv_header().as_bytes())?;
            self.file = Some((f, t, 0));
            Ok(())
        }
        fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if let Some((f, ..)) = self.file.as_mut() {
                f.write_all(bytes)?;
            }
            Ok(())
        }
        fn end(&mut self, rows: u64) -> std::io::Result<()> {
            if let Some((f, t, _)) = self.file.take() {
                f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                std::fs::rename(
                    self.dir.join(format!(".{}.tmp", t.csv_file)),
                    self.dir.join(t.csv_file),
                )?;
                self.counts.push((t.name, rows));
            }
            Ok(())
        }
    }
    let io_err = |e: std::io::Error| SourceError::Io {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let mut files = Files {
        dir,
        file: None,
        counts: Counts::new(),
    };
    generate(opts, &mut files).map_err(io_err)?;
    Ok(files.counts)
}
