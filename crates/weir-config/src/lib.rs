//! `weir.yml`: the project model every command reads.
//!
//! Loading validates the whole file and returns *every* problem at once, each
//! with file, line, column and key path; user input never panics. `${VAR}`
//! references are filled from the environment after parsing, so positions stay
//! true and a secret read from the environment is never echoed back in an
//! error. URLs that may carry passwords are [`SecretUrl`]s.
//!
//! Invariants: this crate knows nothing of PostgreSQL drivers, object stores
//! or warehouses; it only describes what the user asked for. It is the bottom
//! of the workspace: every other crate may depend on it.

mod name;
mod orchestrate;
mod secret;
mod ui;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use name::project_name;
pub use orchestrate::{
    check_schedule, parse_duration, parse_start_date, pattern_matches, NotifyConfig,
    OrchestrateConfig, SqlTarget, TaskPolicy, TriggerRule, UserTask, UserTaskKind, DEFAULT_LEASE,
    DEFAULT_MAX_ACTIVE_TASKS, DEFAULT_POLL, DEFAULT_TIMEOUT, NO_TIMEOUT, SOURCE_POOL,
};
pub use secret::{describe_error, redact_url, register_secret, scrub, Secret, SecretUrl, MASK};
pub use ui::{normalize_base_path, UiConfig, DEFAULT_UI_LISTEN};
pub use yaml::{interpolate, Location};
use yaml::{At, Reader};

/// The project file's name inside a project folder.
pub const PROJECT_FILE: &str = "weir.yml";

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: Location,
    /// Dotted key path, e.g. `source.tables[2].cursor`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.location.file.display(),
            self.location.line,
            self.location.column,
            if self.key.is_empty() {
                "(document)"
            } else {
                &self.key
            },
            self.message
        )
    }
}

/// Everything wrong with a config file, in file order.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigError>),
}

fn render(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(
        "{} problem(s) in the project file:\n  {}",
        errors.len(),
        lines.join("\n  ")
    )
}

/// A Weir project: the parsed `weir.yml` and the folder it lives in.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    pub source: Option<SourceConfig>,
    pub lake: LakeConfig,
    pub warehouse: WarehouseConfig,
    pub transform: Option<TransformConfig>,
    /// How the pipeline runs as a DAG (`weir run`, `weir up`).
    pub orchestrate: Option<OrchestrateConfig>,
    /// `ui:`: where the web UI listens.
    pub ui: UiConfig,
}

/// The dbt-compatible project a Weir project runs on its warehouse.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformConfig {
    /// The folder holding `dbt_project.yml` (relative paths are under the project).
    pub project: PathBuf,
    /// Nodes built at once.
    pub threads: usize,
    /// The target schema (dbt's `target.schema`); custom schemas derive from it.
    pub schema: String,
}

impl TransformConfig {
    /// The dbt project's folder, relative paths taken from `project_dir`.
    pub fn dbt_dir(&self, project_dir: &Path) -> PathBuf {
        if self.project.is_absolute() {
            self.project.clone()
        } else {
            project_dir.join(&self.project)
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: SecretUrl,
    pub schema: String,
    pub tables: TableSelection,
    /// Parallel connections for extraction.
    pub jobs: usize,
    /// Tables larger than this are read in chunks of about this size.
    pub chunk_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSelection {
    /// `"*"` was given: every table in the schema.
    pub all: bool,
    /// Named tables, and per-table settings (also for `"*"` tables).
    pub tables: Vec<TableConfig>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableConfig {
    pub name: String,
    pub primary_key: Option<Vec<String>>,
    /// Column whose growing value marks new or changed rows.
    pub cursor: Option<String>,
    /// For an incremental table: how far behind the last high-water mark the
    /// next run starts, as a SQL literal of the cursor's type (e.g. `'10 minutes'`
    /// for a timestamp, `1000` for an integer). Rows re-read are de-duplicated
    /// by primary key on load.
    pub cursor_lookback: Option<String>,
    pub chunk_by: Option<ChunkBy>,
    /// Columns to read as `::text` because their type has no Arrow mapping.
    pub cast_to_text: Vec<String>,
    /// How `weir load` writes this table (overrides `warehouse.mode`).
    pub load_mode: Option<LoadMode>,
    /// NDJSON rows that may fail to parse before the load fails (overrides
    /// `warehouse.max_bad_records`).
    pub max_bad_records: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkBy {
    /// Physical block ranges: works for any table.
    Ctid,
    /// Ranges of an integer column (usually the primary key).
    Column(String),
    /// Never split this table.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LakeFormat {
    Parquet,
    Ndjson,
}

impl LakeFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "parquet" => Some(LakeFormat::Parquet),
            "ndjson" | "json" => Some(LakeFormat::Ndjson),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    Zstd(i32),
}

#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// `file://…` (relative paths are under the project), `gs://…`, `s3://…`.
    pub url: String,
    pub format: LakeFormat,
    pub parquet_compression: Compression,
    pub parquet_row_group_rows: usize,
    pub ndjson_gzip: bool,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            url: "file://./lake".to_owned(),
            format: LakeFormat::Parquet,
            parquet_compression: Compression::Zstd(DEFAULT_ZSTD_LEVEL),
            parquet_row_group_rows: 122_880,
            ndjson_gzip: false,
        }
    }
}

/// How a load writes a table that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Replace the table's contents (BigQuery's WRITE_TRUNCATE).
    Truncate,
    /// Add the run's rows.
    Append,
    /// Upsert on the primary key: changed rows replace old ones, new rows are added.
    Merge,
}

impl LoadMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "truncate" => Some(LoadMode::Truncate),
            "append" => Some(LoadMode::Append),
            "merge" => Some(LoadMode::Merge),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoadMode::Truncate => "truncate",
            LoadMode::Append => "append",
            LoadMode::Merge => "merge",
        }
    }
}

/// Which warehouse, and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub enum WarehouseTarget {
    /// An embedded DuckDB file (relative paths are under the project).
    DuckDb {
        path: PathBuf,
    },
    Postgres {
        url: SecretUrl,
    },
    BigQuery(BigQueryConfig),
}

impl WarehouseTarget {
    /// The adapter's name, as dbt's `target.type` says it.
    pub fn kind(&self) -> &'static str {
        match self {
            WarehouseTarget::DuckDb { .. } => "duckdb",
            WarehouseTarget::Postgres { .. } => "postgres",
            WarehouseTarget::BigQuery(_) => "bigquery",
        }
    }

    /// dbt's `target.database`: the BigQuery project, empty elsewhere.
    pub fn database(&self) -> String {
        match self {
            WarehouseTarget::BigQuery(b) => b.project.clone(),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BigQueryConfig {
    /// The Google Cloud project that runs jobs and holds the datasets.
    pub project: String,
    /// Dataset location, e.g. `US` or `southamerica-east1`.
    pub location: Option<String>,
    /// A service-account key file; without it an access token is read from
    /// `GOOGLE_OAUTH_ACCESS_TOKEN`.
    pub credentials: Option<PathBuf>,
    /// API root, for emulators (default `https://bigquery.googleapis.com`).
    pub endpoint: Option<String>,
    /// The `gs://` URI under which BigQuery sees the lake's root (default: the
    /// lake URL, which must then be `gs://`).
    pub lake_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WarehouseConfig {
    pub target: WarehouseTarget,
    /// The schema (BigQuery: dataset) the loader writes raw tables into.
    pub schema: String,
    pub mode: LoadMode,
    /// Add `_weir_run_id` and `_weir_loaded_at` to every loaded row.
    pub lineage: bool,
    pub max_bad_records: u64,
    /// Tables loaded at once.
    pub jobs: usize,
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        WarehouseConfig {
            target: WarehouseTarget::DuckDb {
                path: PathBuf::from(DEFAULT_DUCKDB_FILE),
            },
            schema: "raw".to_owned(),
            mode: LoadMode::Truncate,
            lineage: false,
            max_bad_records: 0,
            jobs: DEFAULT_JOBS,
        }
    }
}

/// The embedded warehouse's file, under the project folder.
pub const DEFAULT_DUCKDB_FILE: &str = "warehouse.duckdb";
pub const DEFAULT_JOBS: usize = 4;
/// zstd level 1, as pyarrow defaults to: on the Olist tables level 3 made files no
/// smaller and string-heavy tables 20% slower to write.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
pub const DEFAULT_CHUNK_BYTES: u64 = 256 * 1024 * 1024;

impl Project {
    /// Read `DIR/weir.yml`, interpolating `${VAR}` from the process environment.
    pub fn load(dir: &Path) -> Result<Project, LoadError> {
        Self::load_with_env(dir, &|k| std::env::var(k).ok())
    }

    pub fn load_with_env(
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Project, LoadError> {
        let path = dir.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(dir, &path, &text, env)
    }

    /// Read `DIR/weir.yml` for a command that only reads the run history
    /// (`weir runs`, `weir logs`): a variable that is unset outside
    /// `orchestrate:` (the source's password, say) is left as written
    /// instead of being an error. Nothing loaded this way may connect to the
    /// source, the lake or the warehouse.
    pub fn load_for_history(dir: &Path) -> Result<Project, LoadError> {
        let path = dir.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse_with(dir, &path, &text, &|k| std::env::var(k).ok(), true)
    }

    /// Parse `text` as the contents of `file` for the project in `dir`.
    pub fn parse(
        dir: &Path,
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Project, LoadError> {
        Self::parse_with(dir, file, text, env, false)
    }

    fn parse_with(
        dir: &Path,
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        lenient_env: bool,
    ) -> Result<Project, LoadError> {
        let root = match yaml::parse(text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                return Err(LoadError::Invalid(vec![ConfigError {
                    location: Location {
                        file: file.to_path_buf(),
                        line: 1,
                        column: 1,
                    },
                    key: String::new(),
                    message: "the file is empty (it needs at least `name:`)".to_owned(),
                }]))
            }
            Err((line, column, info)) => {
                return Err(LoadError::Invalid(vec![ConfigError {
                    location: Location {
                        file: file.to_path_buf(),
                        line,
                        column,
                    },
                    key: String::new(),
                    message: format!("invalid YAML: {info}"),
                }]))
            }
        };
        let mut r = Reader {
            file,
            errors: Vec::new(),
            env,
            lenient_env,
        };
        let top = r.mapping_with_hint(
            At {
                node: &root,
                path: "",
            },
            &[
                "name",
                "source",
                "lake",
                "warehouse",
                "transform",
                "orchestrate",
                "ui",
            ],
            &|key| {
                orchestrate::KEYS
                    .contains(&key)
                    .then(|| format!("it belongs under `orchestrate:` (orchestrate.{key})"))
            },
        );
        let name = match top.get("name") {
            Some((n, p)) => r.string(At { node: n, path: p }).unwrap_or_default(),
            None => {
                r.error(&root, "name", "missing required key `name`");
                String::new()
            }
        };
        if !name.is_empty()
            && !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            let (n, p) = &top["name"];
            r.error(
                n,
                p,
                "a project name may hold only letters, digits, `_` and `-`",
            );
        }
        let source = top
            .get("source")
            .and_then(|(n, p)| read_source(&mut r, At { node: n, path: p }));
        let lake = match top.get("lake") {
            Some((n, p)) => read_lake(&mut r, At { node: n, path: p }),
            None => LakeConfig::default(),
        };
        let transform = top
            .get("transform")
            .map(|(n, p)| read_transform(&mut r, At { node: n, path: p }));
        let orchestrate = top
            .get("orchestrate")
            .map(|(n, p)| orchestrate::read(&mut r, At { node: n, path: p }));
        let warehouse = match top.get("warehouse") {
            Some((n, p)) => read_warehouse(&mut r, At { node: n, path: p }),
            None => WarehouseConfig::default(),
        };
        let ui = match top.get("ui") {
            Some((n, p)) => ui::read(&mut r, At { node: n, path: p }),
            None => UiConfig::default(),
        };
        if r.errors.is_empty() {
            Ok(Project {
                dir: dir.to_path_buf(),
                name,
                source,
                lake,
                warehouse,
                transform,
                orchestrate,
                ui,
            })
        } else {
            r.errors
                .sort_by_key(|e| (e.location.line, e.location.column));
            Err(LoadError::Invalid(r.errors))
        }
    }
}

fn read_source(r: &mut Reader<'_>, at: At<'_>) -> Option<SourceConfig> {
    let m = r.mapping(
        at,
        &["postgres", "tables", "exclude", "jobs", "chunk_size_mb"],
    );
    let mut url = None;
    let mut schema = "public".to_owned();
    match m.get("postgres") {
        Some((n, p)) => {
            let pg = r.mapping(At { node: n, path: p }, &["url", "schema"]);
            match pg.get("url") {
                Some((n, p)) => url = r.string(At { node: n, path: p }).map(SecretUrl::new),
                None => r.error(n, p, "missing required key `url`"),
            }
            if let Some((n, p)) = pg.get("schema") {
                schema = r.string(At { node: n, path: p }).unwrap_or(schema);
            }
        }
        None => r.error(at.node, at.path, "missing required key `postgres`"),
    }
    let mut tables = TableSelection {
        all: true,
        tables: Vec::new(),
        exclude: Vec::new(),
    };
    if let Some((n, p)) = m.get("tables") {
        tables = read_tables(r, At { node: n, path: p });
    }
    if let Some((n, p)) = m.get("exclude") {
        tables.exclude = r.strings(At { node: n, path: p }).unwrap_or_default();
    }
    let jobs = m
        .get("jobs")
        .and_then(|(n, p)| r.uint(At { node: n, path: p }, 1, 256))
        .map_or(DEFAULT_JOBS, |v| v as usize);
    let chunk_bytes = m
        .get("chunk_size_mb")
        .and_then(|(n, p)| r.uint(At { node: n, path: p }, 1, 1 << 20))
        .map_or(DEFAULT_CHUNK_BYTES, |mb| mb * 1024 * 1024);
    Some(SourceConfig {
        url: url?,
        schema,
        tables,
        jobs,
        chunk_bytes,
    })
}

fn read_tables(r: &mut Reader<'_>, at: At<'_>) -> TableSelection {
    use saphyr::YamlDataOwned;
    let mut sel = TableSelection {
        all: false,
        tables: Vec::new(),
        exclude: Vec::new(),
    };
    let items: Vec<&saphyr::MarkedYamlOwned> = match &at.node.data {
        YamlDataOwned::Sequence(items) => items.iter().collect(),
        _ => vec![at.node],
    };
    for (i, item) in items.into_iter().enumerate() {
        let path = if matches!(at.node.data, YamlDataOwned::Sequence(_)) {
            format!("{}[{i}]", at.path)
        } else {
            at.path.to_owned()
        };
        let item_at = At {
            node: item,
            path: &path,
        };
        if let YamlDataOwned::Mapping(_) = &item.data {
            if let Some(t) = read_table(r, item_at) {
                if sel.tables.iter().any(|o| o.name == t.name) {
                    r.error(item, &path, format!("table `{}` is listed twice", t.name));
                }
                sel.tables.push(t);
            }
        } else if let Some(name) = r.string(item_at) {
            if name == "*" {
                sel.all = true;
            } else if sel.tables.iter().any(|o| o.name == name) {
                r.error(item, &path, format!("table `{name}` is listed twice"));
            } else {
                sel.tables.push(TableConfig {
                    name,
                    ..TableConfig::default()
                });
            }
        }
    }
    sel
}

fn read_table(r: &mut Reader<'_>, at: At<'_>) -> Option<TableConfig> {
    let m = r.mapping(
        at,
        &[
            "name",
            "primary_key",
            "cursor",
            "cursor_lookback",
            "chunk_by",
            "cast_to_text",
            "load_mode",
            "max_bad_records",
        ],
    );
    let mut t = TableConfig::default();
    match m.get("name") {
        Some((n, p)) => t.name = r.string(At { node: n, path: p })?,
        None => {
            r.error(at.node, at.path, "missing required key `name`");
            return None;
        }
    }
    let get = |k: &str| m.get(k).map(|(n, p)| (*n, p.as_str()));
    if let Some((n, p)) = get("primary_key") {
        t.primary_key = r.strings(At { node: n, path: p });
    }
    if let Some((n, p)) = get("cursor") {
        t.cursor = r.string(At { node: n, path: p });
    }
    if let Some((n, p)) = get("cursor_lookback") {
        t.cursor_lookback = r.string(At { node: n, path: p });
        if t.cursor.is_none() {
            r.error(n, p, "`cursor_lookback` needs a `cursor`");
        }
    }
    if let Some((n, p)) = get("chunk_by") {
        t.chunk_by = r.string(At { node: n, path: p }).map(|s| match s.as_str() {
            "ctid" => ChunkBy::Ctid,
            "none" => ChunkBy::None,
            _ => ChunkBy::Column(s),
        });
    }
    if let Some((n, p)) = get("cast_to_text") {
        t.cast_to_text = r.strings(At { node: n, path: p }).unwrap_or_default();
    }
    if let Some((n, p)) = get("load_mode") {
        t.load_mode = read_mode(r, At { node: n, path: p });
    }
    if let Some((n, p)) = get("max_bad_records") {
        t.max_bad_records = r.uint(At { node: n, path: p }, 0, u64::MAX >> 1);
    }
    Some(t)
}

fn read_lake(r: &mut Reader<'_>, at: At<'_>) -> LakeConfig {
    let mut lake = LakeConfig::default();
    let m = r.mapping(at, &["url", "format", "parquet", "ndjson"]);
    if let Some((n, p)) = m.get("url") {
        if let Some(url) = r.string(At { node: n, path: p }) {
            let scheme_ok = ["file://", "gs://", "s3://", "memory://"]
                .iter()
                .any(|s| url.starts_with(s))
                || !url.contains("://");
            if scheme_ok {
                lake.url = url;
            } else {
                r.error(
                    n,
                    p,
                    "the lake URL must start with file://, gs:// or s3:// (or be a plain path)",
                );
            }
        }
    }
    if let Some((n, p)) = m.get("format") {
        if let Some(f) = r.choice(At { node: n, path: p }, &["parquet", "ndjson"]) {
            lake.format = LakeFormat::parse(&f).unwrap_or(LakeFormat::Parquet);
        }
    }
    if let Some((n, p)) = m.get("parquet") {
        let pq = r.mapping(
            At { node: n, path: p },
            &["compression", "compression_level", "row_group_size"],
        );
        let level = pq
            .get("compression_level")
            .and_then(|(n, p)| r.uint(At { node: n, path: p }, 1, 22))
            .map(|l| l as i32);
        if let Some((n, p)) = pq.get("compression") {
            if let Some(c) = r.choice(At { node: n, path: p }, &["zstd", "snappy", "none"]) {
                lake.parquet_compression = match c.as_str() {
                    "snappy" => Compression::Snappy,
                    "none" => Compression::None,
                    _ => Compression::Zstd(level.unwrap_or(DEFAULT_ZSTD_LEVEL)),
                };
            }
        } else if let Some(l) = level {
            lake.parquet_compression = Compression::Zstd(l);
        }
        if let Some((n, p)) = pq.get("row_group_size") {
            if let Some(v) = r.uint(At { node: n, path: p }, 1024, 100_000_000) {
                lake.parquet_row_group_rows = v as usize;
            }
        }
    }
    if let Some((n, p)) = m.get("ndjson") {
        let nd = r.mapping(At { node: n, path: p }, &["gzip"]);
        if let Some((n, p)) = nd.get("gzip") {
            lake.ndjson_gzip = r.bool(At { node: n, path: p }).unwrap_or(false);
        }
    }
    lake
}

fn read_transform(r: &mut Reader<'_>, at: At<'_>) -> TransformConfig {
    let m = r.mapping(at, &["project", "threads", "schema"]);
    let mut t = TransformConfig {
        project: PathBuf::from("transform"),
        threads: DEFAULT_JOBS,
        schema: "main".to_owned(),
    };
    if let Some((n, p)) = m.get("project") {
        if let Some(v) = r.string(At { node: n, path: p }) {
            t.project = PathBuf::from(v);
        }
    }
    if let Some((n, p)) = m.get("threads") {
        if let Some(v) = r.uint(At { node: n, path: p }, 1, 256) {
            t.threads = v as usize;
        }
    }
    if let Some((n, p)) = m.get("schema") {
        if let Some(v) = r.string(At { node: n, path: p }) {
            t.schema = v;
        }
    }
    t
}

fn read_mode(r: &mut Reader<'_>, at: At<'_>) -> Option<LoadMode> {
    r.choice(at, &["truncate", "append", "merge"])
        .and_then(|m| LoadMode::parse(&m))
}

fn read_warehouse(r: &mut Reader<'_>, at: At<'_>) -> WarehouseConfig {
    let mut wh = WarehouseConfig::default();
    let m = r.mapping(
        at,
        &[
            "duckdb",
            "postgres",
            "bigquery",
            "schema",
            "mode",
            "lineage",
            "max_bad_records",
            "jobs",
        ],
    );
    let kinds: Vec<&str> = ["duckdb", "postgres", "bigquery"]
        .into_iter()
        .filter(|k| m.contains_key(*k))
        .collect();
    if kinds.len() > 1 {
        r.error(
            at.node,
            at.path,
            format!(
                "choose one warehouse, not {} (found: {})",
                kinds.len(),
                kinds.join(", ")
            ),
        );
    }
    if let Some((n, p)) = m.get("duckdb") {
        let d = r.mapping(At { node: n, path: p }, &["path"]);
        if let Some((n, p)) = d.get("path") {
            if let Some(path) = r.string(At { node: n, path: p }) {
                wh.target = WarehouseTarget::DuckDb {
                    path: PathBuf::from(path),
                };
            }
        }
    } else if let Some((n, p)) = m.get("postgres") {
        let pg = r.mapping(At { node: n, path: p }, &["url"]);
        match pg.get("url") {
            Some((n, p)) => {
                if let Some(url) = r.string(At { node: n, path: p }) {
                    wh.target = WarehouseTarget::Postgres {
                        url: SecretUrl::new(url),
                    };
                }
            }
            None => r.error(n, p, "missing required key `url`"),
        }
    } else if let Some((n, p)) = m.get("bigquery") {
        let bq = r.mapping(
            At { node: n, path: p },
            &["project", "location", "credentials", "endpoint", "lake_uri"],
        );
        let get = |r: &mut Reader<'_>, k: &str| {
            bq.get(k)
                .and_then(|(n, p)| r.string(At { node: n, path: p }))
        };
        let project = get(r, "project");
        if project.is_none() && !bq.contains_key("project") {
            r.error(n, p, "missing required key `project`");
        }
        let lake_uri = get(r, "lake_uri");
        if let (Some(uri), Some((n, p))) = (&lake_uri, bq.get("lake_uri")) {
            if !uri.starts_with("gs://") {
                r.error(n, p, "`lake_uri` must start with gs://");
            }
        }
        wh.target = WarehouseTarget::BigQuery(BigQueryConfig {
            project: project.unwrap_or_default(),
            location: get(r, "location"),
            credentials: get(r, "credentials").map(PathBuf::from),
            endpoint: get(r, "endpoint"),
            lake_uri,
        });
    }
    if let Some((n, p)) = m.get("schema") {
        if let Some(s) = r.string(At { node: n, path: p }) {
            if s.is_empty() {
                r.error(n, p, "the schema name is empty");
            } else {
                wh.schema = s;
            }
        }
    }
    if let Some((n, p)) = m.get("mode") {
        wh.mode = read_mode(r, At { node: n, path: p }).unwrap_or(wh.mode);
    }
    if let Some((n, p)) = m.get("lineage") {
        wh.lineage = r.bool(At { node: n, path: p }).unwrap_or(false);
    }
    if let Some((n, p)) = m.get("max_bad_records") {
        wh.max_bad_records = r
            .uint(At { node: n, path: p }, 0, u64::MAX >> 1)
            .unwrap_or(0);
    }
    if let Some((n, p)) = m.get("jobs") {
        wh.jobs = r
            .uint(At { node: n, path: p }, 1, 64)
            .map_or(DEFAULT_JOBS, |v| v as usize);
    }
    wh
}

#[cfg(test)]
mod tests;
