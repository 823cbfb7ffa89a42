use std::path::Path;

use super::*;

fn env(k: &str) -> Option<String> {
    match k {
        "SOURCE_DATABASE_URL" => Some("postgres://app:s3cr3t-pw@db.internal:5432/shop".to_owned()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Project, LoadError> {
    Project::parse(Path::new("/p"), Path::new("/p/weir.yml"), text, &env)
}

/// Render every error of `text` one per line as `line:col key: message`.
fn check_errors(text: &str, expected: &[&str]) {
    let errors = match load(text) {
        Ok(p) => panic!("expected errors, got {p:?}"),
        Err(LoadError::Invalid(e)) => e,
        Err(e) => panic!("{e}"),
    };
    let got: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{}:{} {}: {}",
                e.location.line, e.location.column, e.key, e.message
            )
        })
        .collect();
    assert_eq!(got, expected, "\nall errors: {got:#?}");
    for e in &errors {
        assert_eq!(e.location.file, Path::new("/p/weir.yml"));
    }
}

#[test]
fn full_project_parses() {
    let p = load(
        r#"
name: olist
source:
  postgres: { url: "${SOURCE_DATABASE_URL}", schema: sales }
  tables:
    - olist_customers
    - name: olist_orders
      primary_key: order_id
      cursor: updated_at
      cursor_lookback: "'5 minutes'"
      chunk_by: ctid
      cast_to_text: [geom]
  jobs: 8
lake:
  url: s3://bucket/prefix
  format: ndjson
  parquet: { compression: zstd, compression_level: 9, row_group_size: 65536 }
  ndjson: { gzip: true }
"#,
    )
    .unwrap();
    assert_eq!(p.name, "olist");
    let s = p.source.unwrap();
    assert_eq!(s.schema, "sales");
    assert_eq!(s.jobs, 8);
    assert!(!s.tables.all);
    assert_eq!(s.tables.tables[0].name, "olist_customers");
    let orders = &s.tables.tables[1];
    assert_eq!(
        orders.primary_key.as_deref(),
        Some(&["order_id".to_owned()][..])
    );
    assert_eq!(orders.cursor.as_deref(), Some("updated_at"));
    assert_eq!(orders.chunk_by, Some(ChunkBy::Ctid));
    assert_eq!(orders.cast_to_text, vec!["geom"]);
    assert_eq!(p.lake.format, LakeFormat::Ndjson);
    assert_eq!(p.lake.parquet_compression, Compression::Zstd(9));
    assert_eq!(p.lake.parquet_row_group_rows, 65536);
    assert!(p.lake.ndjson_gzip);
    // the URL came from the environment, and shows redacted
    assert!(!format!("{:?}", s.url).contains("s3cr3t-pw"));
    assert!(s.url.expose().contains("s3cr3t-pw"));
}

#[test]
fn defaults_apply() {
    let p = load("name: x\nsource:\n  postgres:\n    url: postgres://localhost/db\n").unwrap();
    let s = p.source.unwrap();
    assert!(s.tables.all);
    assert_eq!(s.schema, "public");
    assert_eq!(p.lake.url, "file://./lake");
    assert_eq!(p.lake.format, LakeFormat::Parquet);
}

#[test]
fn every_error_is_reported_at_once_with_line_and_key() {
    check_errors(
        r#"name: olist
colour: blue
source:
  postgres:
    url: "${NOT_SET}"
    shema: public
  tables:
    - name: orders
      cursor: [a, b]
    - 42
  jobs: lots
lake:
  format: csv
  parquet:
    row_group_size: 10
"#,
        &[
            "2:1 colour: unknown key `colour` (expected one of: name, source, lake, warehouse, transform, orchestrate, ui)",
            "5:10 source.postgres.url: environment variable `NOT_SET` is not set",
            "6:5 source.postgres.shema: unknown key `shema` (expected one of: url, schema)",
            "9:15 source.tables[0].cursor: expected a string, found a list",
            "11:9 source.jobs: expected a whole number, found a string",
            "13:11 lake.format: `csv` is not one of: parquet, ndjson",
            "15:21 lake.parquet.row_group_size: 10 is out of range (1024 to 100000000)",
        ],
    );
}

#[test]
fn malformed_yaml_names_the_position() {
    check_errors(
        "name: x\nsource: [unclosed\n",
        &["3:1 : invalid YAML: while parsing a flow sequence, expected ',' or ']'"],
    );
}

#[test]
fn missing_keys_and_duplicates() {
    check_errors(
        "source:\n  tables: [a, a]\n",
        &[
            "1:1 name: missing required key `name`",
            "2:3 source: missing required key `postgres`",
            "2:15 source.tables[1]: table `a` is listed twice",
        ],
    );
}

#[test]
fn secret_from_env_never_appears_in_errors() {
    let err = load("name: x\nsource:\n  postgres:\n    url: ${SOURCE_DATABASE_URL}\n  jobs: 0\n")
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    assert!(shown.contains("source.jobs"), "{shown}");
}

#[test]
fn warehouse_section_parses_and_defaults_to_duckdb() {
    let p = load("name: x\n").unwrap();
    assert_eq!(
        p.warehouse.target,
        WarehouseTarget::DuckDb {
            path: PathBuf::from("warehouse.duckdb")
        }
    );
    assert_eq!(p.warehouse.schema, "raw");
    assert_eq!(p.warehouse.mode, LoadMode::Truncate);

    let p = load(
        r#"
name: x
source:
  postgres: { url: "postgres://localhost/db" }
  tables:
    - { name: orders, load_mode: merge, max_bad_records: 10 }
warehouse:
  postgres: { url: "${SOURCE_DATABASE_URL}" }
  schema: landing
  mode: append
  lineage: true
  max_bad_records: 3
  jobs: 2
"#,
    )
    .unwrap();
    let WarehouseTarget::Postgres { url } = &p.warehouse.target else {
        panic!("{:?}", p.warehouse.target)
    };
    assert!(!format!("{url:?}").contains("s3cr3t-pw"));
    assert_eq!(p.warehouse.schema, "landing");
    assert_eq!(p.warehouse.mode, LoadMode::Append);
    assert!(p.warehouse.lineage);
    assert_eq!(p.warehouse.max_bad_records, 3);
    assert_eq!(p.warehouse.jobs, 2);
    let t = &p.source.unwrap().tables.tables[0];
    assert_eq!(t.load_mode, Some(LoadMode::Merge));
    assert_eq!(t.max_bad_records, Some(10));

    let p = load(
        "name: x\nwarehouse:\n  bigquery: { project: p1, location: US, lake_uri: gs://b/lake }\n",
    )
    .unwrap();
    let WarehouseTarget::BigQuery(bq) = &p.warehouse.target else {
        panic!()
    };
    assert_eq!(bq.project, "p1");
    assert_eq!(bq.lake_uri.as_deref(), Some("gs://b/lake"));
}

#[test]
fn warehouse_errors_name_line_and_key() {
    check_errors(
        r#"name: x
warehouse:
  duckdb: { path: a.duckdb }
  postgres: { url: postgres://h/db }
  mode: upsert
  bigqery: {}
"#,
        &[
            "3:3 warehouse: choose one warehouse, not 2 (found: duckdb, postgres)",
            "5:9 warehouse.mode: `upsert` is not one of: truncate, append, merge",
            "6:3 warehouse.bigqery: unknown key `bigqery` (expected one of: duckdb, postgres, bigquery, schema, mode, lineage, max_bad_records, jobs)",
        ],
    );
}

#[test]
fn orchestrate_section_parses_with_defaults_and_overrides() {
    let p = load(
        r#"
name: x
orchestrate:
  schedule: "0 3 * * *"
  timezone: America/Sao_Paulo
  start_date: 2026-01-01
  catchup: true
  max_active_runs: 2
  max_active_tasks: 8
  metadata: "postgres://weir:s3cr3t-pw@h/meta"
  lease: 10s
  pools: { source: 2, api: 1 }
  defaults: { retries: 3, retry_delay: 30s, max_retry_delay: 10m, timeout: 1h }
  extract: { pool: source, retries: 5 }
  tasks:
    - name: vacuum
      sql: VACUUM ANALYZE
      on: source
      depends_on: [end]
      trigger_rule: all_done
    - { name: ping, shell: "curl -fsS https://example.org", pool: api, timeout: 30s }
  notify: { webhook: "https://hooks.example/T0/B1/secret", command: "logger weir" }
"#,
    )
    .unwrap();
    let o = p.orchestrate.unwrap();
    assert_eq!(o.schedule.as_deref(), Some("0 3 * * *"));
    assert_eq!(o.timezone, "America/Sao_Paulo");
    assert_eq!(
        o.start_date.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    assert!(o.catchup);
    assert_eq!((o.max_active_runs, o.max_active_tasks), (2, 8));
    assert_eq!(o.lease, std::time::Duration::from_secs(10));
    assert_eq!(o.poll, DEFAULT_POLL);
    assert!(!format!("{:?}", o.metadata).contains("s3cr3t-pw"));
    assert_eq!(o.pools, [("api".to_owned(), 1), ("source".to_owned(), 2)]);
    assert_eq!(o.defaults.retries, Some(3));
    let extract = o.extract.or(&o.defaults);
    assert_eq!(extract.retries, Some(5));
    assert_eq!(extract.timeout, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(extract.pool.as_deref(), Some("source"));
    assert_eq!(o.tasks.len(), 2);
    assert_eq!(o.tasks[0].depends_on, ["end"]);
    assert_eq!(o.tasks[0].policy.trigger_rule, Some(TriggerRule::AllDone));
    assert!(matches!(
        &o.tasks[0].kind,
        UserTaskKind::Sql { on: SqlTarget::Source, sql } if sql == "VACUUM ANALYZE"
    ));
    assert_eq!(o.tasks[1].location.line, 21);
    assert!(!format!("{:?}", o.notify).contains("secret"));
}

#[test]
fn orchestrate_errors_name_line_and_key() {
    check_errors(
        r#"name: x
schedule: "@daily"
orchestrate:
  schedule: every day
  timezone: Mars/Olympus
  catchup: true
  lease: soon
  defaults: { retries: -1, timeout: 5 parsecs, trigger_rule: sometimes }
  load: { pool: nowhere }
  metadata: mysql://h/db
  tasks:
    - name: a
      sql: SELECT 1
      shell: echo
    - { name: b, empty: true }
    - { name: b, empty: true }
    - shell: echo
"#,
        &[
            "2:1 schedule: unknown key `schedule`: it belongs under `orchestrate:` (orchestrate.schedule)",
            "4:13 orchestrate.schedule: `every day` is not a schedule (@once, @hourly, @daily, @weekly, @monthly or a cron expression): Invalid pattern: Pattern must have between 5 and 7 fields.",
            "5:13 orchestrate.timezone: `Mars/Olympus` is not an IANA time zone (e.g. UTC, America/Sao_Paulo)",
            "6:12 orchestrate.catchup: `catchup: true` needs a `start_date` to catch up from",
            "7:10 orchestrate.lease: `soon` is not a duration (e.g. 30s, 5m, 2h)",
            "8:24 orchestrate.defaults.retries: -1 is out of range (0 to 100000)",
            "8:37 orchestrate.defaults.timeout: `5 parsecs` is not a duration (e.g. 30s, 5m, 2h)",
            "8:62 orchestrate.defaults.trigger_rule: `sometimes` is not one of: all_success, all_done, one_failed",
            "9:17 orchestrate.load.pool: no pool named `nowhere` under orchestrate.pools",
            "10:13 orchestrate.metadata: `metadata` is `sqlite` (the default) or a postgres:// URL",
            "12:7 orchestrate.tasks[0]: a task needs exactly one of `sql`, `shell` or `empty: true`",
            "16:7 orchestrate.tasks[2]: task `b` is defined twice",
            "17:7 orchestrate.tasks[3]: missing required key `name`",
        ],
    );
}

/// Regression: `timeout: 0s` was accepted, and then every attempt timed out
/// as it started.
#[test]
fn a_zero_timeout_is_an_error_and_none_turns_the_default_off() {
    check_errors(
        r#"name: x
orchestrate:
  defaults: { timeout: 0s }
"#,
        &["3:24 orchestrate.defaults.timeout: `0s` would cancel every attempt as it starts; give a positive duration, or `none` for no timeout"],
    );
    let p = load("name: x\norchestrate:\n  extract: { timeout: none }\n").unwrap();
    let o = p.orchestrate.unwrap();
    assert_eq!(o.extract.timeout, Some(NO_TIMEOUT));
    assert_eq!(o.defaults.timeout, None);
}

/// Regression: `${VAR}` set to an empty string gave an empty URL, which failed
/// only when connecting (`cannot connect to : invalid configuration`, exit 1)
/// instead of as a configuration error with its line and key.
#[test]
fn an_empty_variable_is_a_config_error() {
    let env = |k: &str| (k == "EMPTY_URL").then(String::new);
    let text = "name: x\nsource:\n  postgres:\n    url: \"${EMPTY_URL}\"\n";
    let err = Project::parse(Path::new("/p"), Path::new("/p/weir.yml"), text, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 problem(s) in the project file:\n  /p/weir.yml:4:10: source.postgres.url: environment variable `EMPTY_URL` is set but empty (write `${EMPTY_URL:-}` if empty is meant)"
    );
}

/// Regression: `weir runs` and `weir logs` refused to run when a variable the
/// source's URL names was unset, although they never connect to the source.
#[test]
fn history_commands_read_the_project_without_source_variables() {
    let text = "name: x\nsource:\n  postgres:\n    url: \"${NOT_SET_FOR_HISTORY}\"\norchestrate:\n  schedule: \"@daily\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(PROJECT_FILE), text).unwrap();
    assert!(Project::load(dir.path()).is_err());
    let p = Project::load_for_history(dir.path()).unwrap();
    assert_eq!(p.source.unwrap().url.expose(), "${NOT_SET_FOR_HISTORY}");
    // What the history commands do need is still checked.
    let text = "name: x\norchestrate:\n  metadata: \"${NOT_SET_FOR_HISTORY}\"\n";
    std::fs::write(dir.path().join(PROJECT_FILE), text).unwrap();
    assert!(Project::load_for_history(dir.path()).is_err());
}

#[test]
fn the_ui_section_is_read_and_checked() {
    let env = |_: &str| None;
    let p = Project::parse(Path::new("/p"), Path::new("/p/weir.yml"), "name: x\n", &env).unwrap();
    assert_eq!(p.ui.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(p.ui.base_path, "");
    let text =
        "name: x\nui:\n  listen: 0.0.0.0:9000\n  base_path: /weir/\n  secure_cookies: true\n";
    let p = Project::parse(Path::new("/p"), Path::new("/p/weir.yml"), text, &env).unwrap();
    assert_eq!(p.ui.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(p.ui.base_path, "/weir");
    assert!(p.ui.secure_cookies);
    let text = "name: x\nui:\n  listen: localhost\n  base_path: /we ir/../x\n";
    let err = Project::parse(Path::new("/p"), Path::new("/p/weir.yml"), text, &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/p/weir.yml:3:11: ui.listen: `localhost` is not an address and port"),
        "{err}"
    );
    assert!(err.contains("/p/weir.yml:4:14: ui.base_path:"), "{err}");
}
