//! Loading a folder of CSV files into PostgreSQL (the seed's `init.sql` step).
//!
//! Known Olist file names get the Olist schema; any other file gets a table
//! named after it, with column types inferred from its values. Every value is
//! checked against its column type while streaming into `COPY`; malformed rows
//! are reported with file and line, and a table with any is rolled back whole
//! (one transaction per table). An empty field is NULL, as in the Olist files.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{NaiveDate, NaiveDateTime};
use futures::SinkExt;
use tokio_postgres::Client;

use crate::olist::{existing_tables, OlistTable};
use crate::pg::{query_err, quote_ident};
use crate::SourceError;

/// The most malformed rows reported per file (the count is always exact).
const MAX_REPORTED: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Boolean,
    Integer,
    BigInt,
    SmallInt,
    Numeric,
    Double,
    Date,
    Timestamp,
    Text,
}

impl ColType {
    fn from_pg(t: &str) -> ColType {
        match t {
            "integer" => ColType::Integer,
            "smallint" => ColType::SmallInt,
            "bigint" => ColType::BigInt,
            "double precision" => ColType::Double,
            "timestamp" => ColType::Timestamp,
            "date" => ColType::Date,
            "boolean" => ColType::Boolean,
            t if t.starts_with("numeric") => ColType::Numeric,
            _ => ColType::Text,
        }
    }

    fn pg(self) -> &'static str {
        match self {
            ColType::Boolean => "boolean",
            ColType::Integer => "integer",
            ColType::BigInt => "bigint",
            ColType::SmallInt => "smallint",
            ColType::Numeric => "numeric",
            ColType::Double => "double precision",
            ColType::Date => "date",
            ColType::Timestamp => "timestamp",
            ColType::Text => "text",
        }
    }

    /// Whether `v` (never empty) is a valid value of this type.
    fn accepts(self, v: &str) -> bool {
        match self {
            ColType::Boolean => matches!(
                v,
                "true" | "false" | "True" | "False" | "TRUE" | "FALSE" | "t" | "f"
            ),
            ColType::SmallInt => v.parse::<i16>().is_ok(),
            ColType::Integer => v.parse::<i32>().is_ok(),
            ColType::BigInt => v.parse::<i64>().is_ok(),
            ColType::Numeric | ColType::Double => {
                v.parse::<f64>().is_ok()
                    && v.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')
                    })
            }
            ColType::Date => NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok(),
            ColType::Timestamp => parse_timestamp(v),
            ColType::Text => true,
        }
    }
}

fn parse_timestamp(v: &str) -> bool {
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .any(|f| NaiveDateTime::parse_from_str(v, f).is_ok())
}

/// Infer a column type from its values as dbt seeds do: the narrowest of
/// boolean, bigint, double, date, timestamp that holds every value, else text.
/// Integers with a leading zero (zip codes) stay text.
#[derive(Debug, Clone)]
struct Inference {
    candidates: Vec<ColType>,
    seen: bool,
}

impl Inference {
    fn new() -> Self {
        Inference {
            candidates: vec![
                ColType::Boolean,
                ColType::BigInt,
                ColType::Double,
                ColType::Date,
                ColType::Timestamp,
            ],
            seen: false,
        }
    }
    fn see(&mut self, v: &str) {
        if v.is_empty() {
            return;
        }
        self.seen = true;
        let leading_zero = v.len() > 1 && v.starts_with('0') && !v.starts_with("0.");
        self.candidates.retain(|t| {
            !(leading_zero && matches!(t, ColType::BigInt | ColType::Double)) && t.accepts(v)
        });
    }
    fn result(&self) -> ColType {
        if !self.seen {
            return ColType::Text;
        }
        self.candidates.first().copied().unwrap_or(ColType::Text)
    }
}

/// A table name from a file name: lower case, non-alphanumerics as `_`.
fn table_name_for(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("table");
    let mut s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// What was loaded from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFile {
    pub file: PathBuf,
    pub table: String,
    pub rows: u64,
}

/// Load every `*.csv` in `dir` (sorted by name) into `schema`.
pub async fn load_csv_dir(
    client: &mut Client,
    dir: &Path,
    schema: &str,
    replace: bool,
) -> Result<Vec<LoadedFile>, SourceError> {
    let io_err = |e: std::io::Error| SourceError::Io {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SourceError::Config(format!(
            "no .csv files in {}",
            dir.display()
        )));
    }
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .await
        .map_err(query_err(format!("creating schema {schema}")))?;
    let mut loaded = Vec::new();
    for file in files {
        loaded.push(load_csv_file(client, &file, schema, replace).await?);
    }
    Ok(loaded)
}

/// A file being read, and where its lines start: the csv crate's own line
/// numbers miss the header's line in files that end lines with CRLF (the
/// real Olist files do), so lines are counted from the bytes themselves.
struct Counted {
    file: std::fs::File,
    read: u64,
    lines: Lines,
}

/// The newlines read but not yet asked about (a buffer's worth at most:
/// the csv reader asks about records in order, just behind what it read).
#[derive(Default)]
struct LineIndex {
    newlines: std::collections::VecDeque<u64>,
    before: u64,
}

impl LineIndex {
    /// The 1-based line of a record the csv reader says starts at `offset`.
    /// After a CRLF, the csv reader has ended the previous record at the
    /// `\r` and starts the next one at the `\n`: that newline belongs before it.
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.newlines.front().is_some_and(|&n| n <= offset) {
            self.newlines.pop_front();
            self.before += 1;
        }
        self.before + 1
    }
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let mut idx = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                idx.newlines.push_back(self.read + i as u64);
            }
        }
        self.read += n as u64;
        Ok(n)
    }
}

type CsvReader = csv::Reader<Counted>;
type Lines = std::sync::Arc<std::sync::Mutex<LineIndex>>;

fn open(path: &Path) -> Result<(CsvReader, Lines), SourceError> {
    let file = std::fs::File::open(path).map_err(|e| SourceError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let lines: Lines = Lines::default();
    let rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(Counted {
            file,
            read: 0,
            lines: lines.clone(),
        });
    Ok((rdr, lines))
}

/// The line an error is at.
fn error_line(lines: &Lines, e: &csv::Error) -> u64 {
    e.position().map_or(0, |p| {
        lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .line_at(p.byte())
    })
}

fn header(path: &Path, rdr: &mut CsvReader, lines: &Lines) -> Result<Vec<String>, SourceError> {
    let h = rdr.headers().map_err(|e| csv_error(path, lines, &e))?;
    Ok(h.iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                c.trim_start_matches('\u{feff}')
            } else {
                c
            }
            .to_owned()
        })
        .collect())
}

fn csv_error(path: &Path, lines: &Lines, e: &csv::Error) -> SourceError {
    let line = error_line(lines, e);
    SourceError::MalformedCsv {
        file: path.display().to_string(),
        rows: 1,
        problems: vec![format!("line {line}: {e}")],
    }
}

/// Load one CSV file into one table in one transaction.
pub async fn load_csv_file(
    client: &mut Client,
    path: &Path,
    schema: &str,
    replace: bool,
) -> Result<LoadedFile, SourceError> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let (mut rdr, mut lines) = open(path)?;
    let head = header(path, &mut rdr, &lines)?;
    let (table, columns): (String, Vec<(String, ColType, String)>) =
        match OlistTable::for_file(file_name) {
            Some(t) => {
                let expected: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
                if head != expected {
                    return Err(SourceError::MalformedCsv {
                        file: path.display().to_string(),
                        rows: 1,
                        problems: vec![format!(
                            "line 1: header is {head:?}, the Olist file has {expected:?}"
                        )],
                    });
                }
                (
                    t.name.to_owned(),
                    t.columns
                        .iter()
                        .map(|(c, ty)| (c.to_string(), ColType::from_pg(ty), ty.to_string()))
                        .collect(),
                )
            }
            None => {
                // First pass: infer each column's type.
                let mut inf = vec![Inference::new(); head.len()];
                for rec in rdr.records() {
                    let rec = rec.map_err(|e| csv_error(path, &lines, &e))?;
                    // Keep the line index to the bytes not yet passed.
                    if let Some(p) = rec.position() {
                        lines
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .line_at(p.byte());
                    }
                    for (i, v) in rec.iter().enumerate().take(head.len()) {
                        inf[i].see(v);
                    }
                }
                (rdr, lines) = open(path)?;
                header(path, &mut rdr, &lines)?;
                let cols = head
                    .iter()
                    .zip(&inf)
                    .map(|(c, i)| (c.clone(), i.result(), i.result().pg().to_owned()))
                    .collect();
                (table_name_for(path), cols)
            }
        };

    let tx = client
        .transaction()
        .await
        .map_err(query_err("starting a transaction"))?;
    let existing = existing_tables(&tx, schema, &[table.as_str()]).await?;
    if !existing.is_empty() {
        if !replace {
            return Err(SourceError::TablesExist {
                schema: schema.to_owned(),
                tables: existing,
            });
        }
        tx.batch_execute(&format!(
            "DROP TABLE {}.{} CASCADE",
            quote_ident(schema),
            quote_ident(&table)
        ))
        .await
        .map_err(query_err(format!("dropping {schema}.{table}")))?;
    }
    let ddl: Vec<String> = columns
        .iter()
        .map(|(c, _, ty)| format!("{} {ty}", quote_ident(c)))
        .collect();
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(&table));
    tx.batch_execute(&format!("CREATE TABLE {qualified} ({})", ddl.join(", ")))
        .await
        .map_err(query_err(format!("creating {schema}.{table}")))?;
    let sink = tx
        .copy_in(&format!("COPY {qualified} FROM STDIN (FORMAT csv)"))
        .await
        .map_err(query_err(format!("loading {}", path.display())))?;
    let mut sink = Box::pin(sink);
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut problems = Vec::new();
    let mut bad_rows = 0u64;
    let mut rows = 0u64;
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                bad_rows += 1;
                if problems.len() < MAX_REPORTED {
                    let line = error_line(&lines, &e);
                    problems.push(format!("line {line}: {e}"));
                }
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = rec.position().map_or(0, |p| {
            lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .line_at(p.byte())
        });
        if rec.len() != columns.len() {
            bad_rows += 1;
            if problems.len() < MAX_REPORTED {
                problems.push(format!(
                    "line {line}: {} fields, the header has {}",
                    rec.len(),
                    columns.len()
                ));
            }
            continue;
        }
        let bad = rec
            .iter()
            .zip(&columns)
            .find(|(v, (_, ty, _))| !v.is_empty() && !ty.accepts(v));
        if let Some((v, (c, _, ty))) = bad {
            bad_rows += 1;
            if problems.len() < MAX_REPORTED {
                problems.push(format!(
                    "line {line}: column {c}: {v:?} is not a valid {ty}"
                ));
            }
            continue;
        }
        if bad_rows > 0 {
            continue; // the table will not be loaded; keep checking to report everything
        }
        for (i, v) in rec.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            if !v.is_empty() {
                buf.put_u8(b'"');
                for part in v.split('"').enumerate() {
                    if part.0 > 0 {
                        buf.put_slice(b"\"\"");
                    }
                    buf.put_slice(part.1.as_bytes());
                }
                buf.put_u8(b'"');
            }
        }
        buf.put_u8(b'\n');
        rows += 1;
        if buf.len() >= 1 << 20 {
            let chunk: Bytes = buf.split().freeze();
            sink.send(chunk)
                .await
                .map_err(query_err(format!("loading {}", path.display())))?;
        }
    }
    if bad_rows > 0 {
        // Dropping the sink and the transaction rolls the table back.
        return Err(SourceError::MalformedCsv {
            file: path.display().to_string(),
            rows: bad_rows,
            problems,
        });
    }
    if !buf.is_empty() {
        sink.send(buf.split().freeze())
            .await
            .map_err(query_err(format!("loading {}", path.display())))?;
    }
    let stored = sink
        .as_mut()
        .finish()
        .await
        .map_err(query_err(format!("loading {}", path.display())))?;
    if let Some(t) = OlistTable::for_file(file_name) {
        if let Some(pk) = t.primary_key_sql(schema) {
            tx.batch_execute(&pk)
                .await
                .map_err(query_err(format!("adding the primary key of {table}")))?;
        }
    }
    tx.commit()
        .await
        .map_err(query_err(format!("committing {table}")))?;
    debug_assert_eq!(stored, rows);
    Ok(LoadedFile {
        file: path.to_path_buf(),
        table,
        rows: stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[&str]) -> ColType {
        let mut i = Inference::new();
        values.iter().for_each(|v| i.see(v));
        i.result()
    }

    #[test]
    fn inference_picks_the_narrowest_type() {
        assert_eq!(infer(&["1", "2", ""]), ColType::BigInt);
        assert_eq!(infer(&["1", "2.5"]), ColType::Double);
        assert_eq!(
            infer(&["01310", "2"]),
            ColType::Text,
            "zip codes keep their zeros"
        );
        assert_eq!(infer(&["true", "false"]), ColType::Boolean);
        assert_eq!(infer(&["2017-01-01", "2018-02-03"]), ColType::Date);
        assert_eq!(infer(&["2017-01-01 10:00:00"]), ColType::Timestamp);
        assert_eq!(infer(&["abc", "1"]), ColType::Text);
        assert_eq!(
            infer(&["", ""]),
            ColType::Text,
            "an all-NULL column is text"
        );
    }

    #[test]
    fn file_names_become_table_names() {
        assert_eq!(
            table_name_for(Path::new("/x/My Sales-2024.csv")),
            "my_sales_2024"
        );
        assert_eq!(table_name_for(Path::new("2024.csv")), "_2024");
    }
}
