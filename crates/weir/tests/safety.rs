//! The first week in production, through the real binary: the defects a
//! careful user hit (the quick start as root, a demo that dropped tables,
//! leaked passwords, errors classified by their English text, a warehouse
//! file held by a reader, a read-write `weir query`, …). Each test is the
//! regression test of one of them and names it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use weir_orchestrate::store::Store;
use weir_testkit::{project, temp_dir, TestDb};

mod common;
use common::*;

fn olist_example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/olist")
}

/// A copy of the Olist example project in `to`.
fn copy_example(to: &Path) {
    std::fs::copy(olist_example().join("weir.yml"), to.join("weir.yml")).unwrap();
    std::fs::create_dir_all(to.join("transform")).unwrap();
    copy_olist_models(&to.join("transform"));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Where the private cluster of a project folder lives: its `.weir/pg`, or,
/// when the postgres user cannot enter that, the folder its note names.
fn cluster_dir(project: &Path) -> std::path::PathBuf {
    let pg = project.join(".weir/pg");
    match std::fs::read_to_string(pg.join("WHERE.txt")) {
        Ok(note) => note.rsplit(' ').next().unwrap().trim().into(),
        Err(_) => pg,
    }
}

/// Regression (A.1): as root in a folder of mode 700 (root's home, any
/// `mktemp -d`), the demo's private PostgreSQL could not enter its data
/// folder and `weir demo` stopped at `initdb: … Permission denied`.
#[test]
fn the_demo_runs_in_a_private_folder_also_as_root() {
    let dir = temp_dir();
    let private = dir.path().join("home");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    copy_example(&private);
    let out = weir(
        &["demo", "-p", private.to_str().unwrap(), "--scale", "0.01"],
        &private,
    );
    let all = text(&out);
    let cluster = cluster_dir(&private);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("demo finished"), "{all}");
    assert!(all.contains("schema weir_demo"), "{all}");
    if is_root() {
        assert!(
            cluster.starts_with("/var/tmp/weir-demo-pg"),
            "as root the cluster lives where postgres can reach it: {}",
            cluster.display()
        );
    }
    let _ = std::fs::remove_dir_all(&cluster);
}

/// Regression (A.2): `weir demo --source-url URL` regenerated the sample data
/// into the user's database, dropping the tables that were there.
#[tokio::test]
async fn the_demo_never_replaces_tables_it_did_not_make() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE olist_orders (mine text); INSERT INTO olist_orders VALUES ('keep me');
         CREATE SCHEMA weir_demo; CREATE TABLE weir_demo.precious (x int); INSERT INTO weir_demo.precious VALUES (1);",
    )
    .await
    .unwrap();
    let dir = temp_dir();
    copy_example(dir.path());
    let url = db.url();
    let demo = |extra: &[&str]| {
        let mut args = vec!["demo", "--source-url", &url, "--scale", "0.01"];
        args.extend_from_slice(extra);
        weir(&args, dir.path())
    };
    let out = demo(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--overwrite"), "{}", text(&out));
    let kept: i64 = c
        .query_one("SELECT count(*) FROM weir_demo.precious", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
    // In a database whose `weir_demo` is free, the demo makes its own
    // schema and leaves `public` as it was.
    c.batch_execute("DROP SCHEMA weir_demo CASCADE")
        .await
        .unwrap();
    let out = demo(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let again = demo(&[]);
    assert!(
        again.status.success(),
        "a second demo reuses its own schema: {}",
        text(&again)
    );
    let mine: String = c
        .query_one("SELECT mine FROM public.olist_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mine, "keep me");
}

/// Regression (A.3): the README said `${SOURCE_DATABASE_URL}` while the
/// example reads `WEIR_SOURCE_URL`; and `weir run` had no `--source-url`.
#[tokio::test]
async fn one_source_variable_everywhere_and_run_takes_source_url() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let example = std::fs::read_to_string(olist_example().join("weir.yml")).unwrap();
    assert!(example.contains("${WEIR_SOURCE_URL"), "{example}");
    assert!(
        !readme.contains("SOURCE_DATABASE_URL"),
        "the README names another variable"
    );
    assert!(readme.contains("${WEIR_SOURCE_URL}"));
    let (db, dir) = olist_project("0.01", "").await;
    // The project's URL points nowhere; --source-url wins.
    let yml = std::fs::read_to_string(dir.path().join("weir.yml")).unwrap();
    std::fs::write(
        dir.path().join("weir.yml"),
        yml.replace(&db.url(), "postgres://nobody@127.0.0.1:1/none"),
    )
    .unwrap();
    let out = weir(&["run", "--source-url", &db.url()], dir.path());
    assert!(out.status.success(), "{}", text(&out));
}

/// Regression (A.4): the two README commands built into two target folders,
/// so a newcomer compiled DuckDB's C++ twice. Both go through scripts that
/// share `scripts/env.sh`, and CI runs the README's test command.
#[test]
fn the_quick_start_commands_share_one_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme.find("## Quick start").expect("a quick start");
    let block = &readme[start..];
    let code = &block[block.find("```sh").unwrap() + 5..];
    let code = &code[..code.find("```").unwrap()];
    let commands: Vec<&str> = code
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands.len(), 2, "two commands: {commands:?}");
    for c in &commands {
        let script = c
            .strip_prefix("bash ")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("`{c}` is not a script of the repository"));
        let text = std::fs::read_to_string(root.join(script)).unwrap();
        assert!(
            text.contains("source \"$root/scripts/env.sh\"")
                || text.contains("source scripts/env.sh"),
            "{script} must use the shared build settings"
        );
    }
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(ci.contains(commands[1]), ".ci/run runs `{}`", commands[1]);
}

/// Regression (D.12): a password with unescaped `@ : / #` made the URL
/// unparseable, and it was printed in the error, stored in the run history,
/// written to the task log and shown by `weir logs`; also by `weir query
/// --warehouse`.
#[test]
fn a_password_in_a_url_that_does_not_parse_is_never_shown_or_stored() {
    let secret = "Zq!p@ss:w/rd#1";
    let dir = project(&format!(
        "name: leak\nsource:\n  postgres:\n    url: \"postgres://u:{secret}@127.0.0.1:1/db\"\n  tables: [t]\norchestrate:\n  defaults: {{ retries: 0 }}\n"
    ));
    let mut shown = String::new();
    for args in [
        vec!["run"],
        vec!["logs", "1"],
        vec!["runs"],
        vec!["extract"],
    ] {
        let out = weir(&args, dir.path());
        shown.push_str(&text(&out));
    }
    let out = weir(
        &[
            "query",
            "SELECT 1",
            "--warehouse",
            &format!("postgres://u:{secret}@127.0.0.1:1/db"),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    shown.push_str(&text(&out));
    assert!(shown.contains("postgres://u:***@127.0.0.1:1/db"), "{shown}");
    for part in [secret, "Zq!p", "rd#1", "ss:w"] {
        assert!(!shown.contains(part), "`{part}` was shown:\n{shown}");
    }
    for f in files_under(dir.path()) {
        if f.ends_with("weir.yml") {
            continue; // where the user wrote it
        }
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("Zq!p"), "{} holds the password", f.display());
    }
}

/// Start a private cluster for a test (its own data folder and port).
fn private_cluster(dir: &Path) -> weir_source::cluster::PrivateCluster {
    weir_source::cluster::PrivateCluster::start(&dir.join("pg")).expect("a private PostgreSQL")
}

/// Regression (D.14): a refused connection was permanent, so a PostgreSQL
/// restart during a run failed the task with its retries unused. Errors are
/// classified by kind and SQLSTATE: the source is down at `start`, comes back
/// on its port, and the run goes on; a backend terminated by the server
/// (57P01) is retried too.
#[tokio::test]
async fn a_source_that_restarts_is_retried_not_failed() {
    let dir = temp_dir();
    let mut cluster = private_cluster(dir.path());
    let port = cluster.port;
    let url = cluster.url("postgres");
    let out = weir(
        &["source", "generate", "--url", &url, "--scale", "0.005"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(
        dir.path().join("weir.yml"),
        format!(
            "name: restart\nsource:\n  postgres:\n    url: {url}\n  tables: [olist_sellers]\norchestrate:\n  defaults: {{ retries: 8, retry_delay: 1s, max_retry_delay: 2s }}\n  tasks:\n    - {{ name: slow, sql: SELECT pg_sleep(30), on: source, depends_on: [load.olist_sellers] }}\n"
        ),
    )
    .unwrap();
    cluster.stop();
    let child = weir_cmd(&["run"], dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Down until `start` has failed for it at least once.
    let failed_start =
        |a: &weir_orchestrate::store::AttemptRow| a.task_id == "start" && a.state == "failed";
    assert!(
        attempt_seen(dir.path(), failed_start).await,
        "start never met the stopped source"
    );
    let cluster =
        weir_source::cluster::PrivateCluster::start_on(&dir.path().join("pg"), Some(port)).unwrap();
    // Once `slow` runs, the server terminates its backend (57P01); its
    // second try is cancelled (57014, not transient), so the run ends.
    let admin = cluster.url("postgres");
    let sleeping =
        "FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND pid <> pg_backend_pid()";
    assert!(
        sql_until(
            &admin,
            &format!("SELECT pg_terminate_backend(pid) {sleeping}")
        )
        .await,
        "the slow task never ran"
    );
    assert!(
        sql_until(&admin, &format!("SELECT pg_cancel_backend(pid) {sleeping}")).await,
        "the slow task was not retried"
    );
    let done = child.wait_with_output().unwrap();
    let (status, out) = (done.status, text(&done));
    let store = Store::open_sqlite(&dir.path().join(".weir/metadata.db")).unwrap();
    let attempts = store.attempts(1, None).await.unwrap();
    let start: Vec<_> = attempts.iter().filter(|a| a.task_id == "start").collect();
    assert!(start.len() >= 2, "start was retried: {start:?}");
    assert!(
        start[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect to the source")),
        "{start:?}"
    );
    assert_eq!(start[0].error_kind.as_deref(), Some("transient"));
    let slow: Vec<_> = attempts.iter().filter(|a| a.task_id == "slow").collect();
    assert!(
        slow[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("57P01")),
        "the terminated backend's SQLSTATE is kept: {slow:?}"
    );
    assert_eq!(slow[0].error_kind.as_deref(), Some("transient"), "{slow:?}");
    // 57014 (a cancelled query) is not transient: the run ends there.
    assert!(!status.success(), "{out}");
    let cancelled = attempts
        .iter()
        .filter(|a| a.task_id == "slow")
        .nth(1)
        .unwrap();
    assert!(
        cancelled
            .error
            .as_deref()
            .is_some_and(|e| e.contains("57014")),
        "{cancelled:?}"
    );
    assert_eq!(cancelled.error_kind.as_deref(), Some("permanent"));
    drop(cluster);
    remove_cluster(&dir.path().join("pg"));
}

/// Whether an attempt of run 1 (or any later run) for which `pred` holds
/// shows up in the project's history within a minute.
async fn attempt_seen(
    dir: &Path,
    pred: impl Fn(&weir_orchestrate::store::AttemptRow) -> bool,
) -> bool {
    let t0 = Instant::now();
    let db = dir.join(".weir/metadata.db");
    while t0.elapsed() < Duration::from_secs(60) {
        if db.exists() {
            if let Ok(store) = Store::open_sqlite(&db) {
                for run in store.runs(10).await.unwrap_or_default() {
                    let attempts = store.attempts(run.id, None).await.unwrap_or_default();
                    if attempts.iter().any(&pred) {
                        return true;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Run `sql` (one boolean per row) every 300 ms until a row is true,
/// within a minute.
async fn sql_until(url: &str, sql: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = client.query(sql, &[]).await.unwrap();
        if rows.iter().any(|r| r.get::<_, bool>(0)) {
            return true;
        }
    }
    false
}

/// Remove a private cluster's data, also where it was moved (as root).
fn remove_cluster(data: &Path) {
    if let Ok(note) = std::fs::read_to_string(data.join("WHERE.txt")) {
        let _ = std::fs::remove_dir_all(note.rsplit(' ').next().unwrap().trim());
    }
}

/// Regression (D.16): any open DuckDB reader made `weir run` fail for good.
/// The lock is transient: the run waits for the reader, says who it is, and
/// goes on when it lets go.
#[tokio::test]
async fn a_reader_holding_the_warehouse_delays_the_run_instead_of_failing_it() {
    let (_db, dir) = olist_project(
        "0.005",
        "orchestrate:\n  defaults: { retries: 10, retry_delay: 1s, max_retry_delay: 1s }\n",
    )
    .await;
    let file = dir.path().join("warehouse.duckdb");
    drop(weir_warehouse::DuckDb::open(&file).unwrap());
    let reader =
        weir_warehouse::DuckDb::open_with(&file, weir_warehouse::Access::ReadOnly).unwrap();
    let child = weir_cmd(&["run"], dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held until an attempt has met the reader.
    let met = |a: &weir_orchestrate::store::AttemptRow| {
        a.error
            .as_deref()
            .is_some_and(|e| e.contains("is in use by PID"))
    };
    assert!(
        attempt_seen(dir.path(), met).await,
        "no attempt met the reader"
    );
    drop(reader);
    let done = child.wait_with_output().unwrap();
    let (status, out) = (done.status, text(&done));
    assert!(status.success(), "{out}");
    let store = Store::open_sqlite(&dir.path().join(".weir/metadata.db")).unwrap();
    let attempts = store.attempts(1, None).await.unwrap();
    let held = attempts
        .iter()
        .find(|a| {
            a.error
                .as_deref()
                .is_some_and(|e| e.contains("is in use by PID"))
        })
        .unwrap_or_else(|| panic!("no attempt met the reader: {attempts:?}"));
    assert_eq!(held.error_kind.as_deref(), Some("transient"));
    assert!(held
        .error
        .as_deref()
        .unwrap()
        .contains(&std::process::id().to_string()));
}

/// Regression (D.17, C.11, E.19): `weir query` ran any statement read-write
/// (`drop table` worked), a mistyped `--warehouse` created a new empty
/// database, `select now()` failed on its time zone, and `--format json`
/// dropped the keys of NULL values.
#[test]
fn query_reads_only_and_knows_time_zones() {
    let dir = project("name: q\n");
    let file = dir.path().join("warehouse.duckdb");
    let out = weir(
        &[
            "query",
            "--write",
            "CREATE TABLE t AS SELECT 1 AS x, NULL::INT AS y",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = weir(&["query", "DROP TABLE t"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("read-only"),
        "{}",
        text(&out)
    );
    assert_eq!(query_csv(dir.path(), "SELECT x FROM t"), "x\n1\n");
    let out = weir(
        &["query", "--format", "json", "SELECT x, y FROM t"],
        dir.path(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"[{"x":1,"y":null}]"#
    );
    let missing = dir.path().join("typo.duckdb");
    let out = weir(
        &[
            "query",
            "SELECT 1",
            "--warehouse",
            missing.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no such file"), "{}", text(&out));
    assert!(
        !missing.exists(),
        "a mistyped path must not create a database"
    );
    for sql in [
        "SELECT now() AS t",
        "SELECT date_trunc('day', TIMESTAMPTZ '2026-03-01 02:30:00+00' AT TIME ZONE 'America/Sao_Paulo') AS d",
    ] {
        for format in ["table", "csv", "json"] {
            let out = weir(&["query", "--format", format, sql], dir.path());
            assert!(out.status.success(), "{sql} as {format}: {}", text(&out));
        }
    }
    assert_eq!(
        query_csv(dir.path(), "SELECT extract(hour FROM TIMESTAMPTZ '2026-03-01 02:30:00+00' AT TIME ZONE 'America/Sao_Paulo') AS h"),
        "h\n23\n"
    );
    assert!(file.exists());
}

/// Regression (E.18): `weir backfill` silently stopped at 1,000 intervals and
/// a reversed range gave "0 intervals" with exit 0; `weir runs` refused to
/// run when a source variable was unset; an empty variable failed late
/// (exit 1) instead of as a config error (exit 2).
#[test]
fn backfill_ranges_history_without_secrets_and_empty_variables() {
    let dir = project(
        "name: b\nsource:\n  postgres:\n    url: \"${WEIR_TEST_UNSET_URL}\"\n  tables: [t]\norchestrate:\n  schedule: \"@hourly\"\n",
    );
    let out = weir(&["runs"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let out = weir_env(
        &["backfill", "--from", "2026-02-01", "--to", "2026-01-01"],
        dir.path(),
        &[("WEIR_TEST_UNSET_URL", "postgres://u@127.0.0.1:1/x")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is not before to 2026-01-01"),
        "{}",
        text(&out)
    );
    let out = weir_env(
        &["backfill", "--from", "2026-01-01", "--to", "2026-03-01"],
        dir.path(),
        &[("WEIR_TEST_UNSET_URL", "postgres://u@127.0.0.1:1/x")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("more than 1000 intervals"),
        "{}",
        text(&out)
    );
    let out = weir_env(&["extract"], dir.path(), &[("WEIR_TEST_UNSET_URL", "")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("weir.yml:4:10: source.postgres.url: environment variable `WEIR_TEST_UNSET_URL` is set but empty"), "{}", text(&out));
}

/// Regression (E.18): columns without an Arrow type were reported one per
/// table per attempt; now every one, of every table, at once, before any
/// extract starts.
#[tokio::test]
async fn unsupported_column_types_are_reported_all_at_once() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE a (id int, p point, q polygon); CREATE TABLE b (id int, r tsvector); CREATE TABLE c (id int);",
        )
        .await
        .unwrap();
    let dir = project(&format!(
        "name: types\nsource:\n  postgres:\n    url: {}\n  tables: [\"*\"]\n",
        db.url()
    ));
    let out = weir(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let logs = text(&weir(&["logs", "1", "start"], dir.path()));
    for want in [
        "2 source table(s) have columns without an Arrow type",
        "public.a: columns without an Arrow mapping (p point, q polygon)",
        "public.b: 1 column without an Arrow mapping (r tsvector)",
    ] {
        assert!(logs.contains(want), "{want}:\n{logs}");
    }
    let store_attempts = logs.matches("=== start try").count();
    assert_eq!(
        store_attempts, 1,
        "a permanent problem is not retried:\n{logs}"
    );
}

/// Regression (E.19): `weir retry` on a successful run rewrote its duration;
/// the "another weir process () is running" message had no PID; a stopped
/// run was listed as `running`; WARN lines carried colour codes into pipes.
#[tokio::test]
async fn retry_lock_messages_stopped_runs_and_plain_logs() {
    let dir = project("name: s\norchestrate:\n  tasks:\n    - { name: quick, shell: \"true\" }\n");
    let out = weir(&["run"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let store = Store::open_sqlite(&dir.path().join(".weir/metadata.db")).unwrap();
    let before = store.run(1).await.unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let out = weir(&["retry", "1"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no failed or skipped task"),
        "{}",
        text(&out)
    );
    let after = store.run(1).await.unwrap().unwrap();
    assert_eq!(
        (before.started_at, before.ended_at),
        (after.started_at, after.ended_at)
    );

    // A run that is stopped mid-way, then seen while nobody runs it.
    std::fs::write(
        dir.path().join("weir.yml"),
        "name: s\norchestrate:\n  tasks:\n    - { name: nap, shell: \"sleep 31\" }\n",
    )
    .unwrap();
    let mut child = weir_cmd(&["run", "--new"], dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join(".weir/lock");
    let mine = format!("pid {},", child.id());
    let t0 = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|l| l.starts_with(&mine)) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let napping = |a: &weir_orchestrate::store::AttemptRow| a.task_id == "nap";
    assert!(attempt_seen(dir.path(), napping).await);
    let busy = weir(&["run"], dir.path());
    assert_eq!(busy.status.code(), Some(2), "{}", text(&busy));
    assert!(
        text(&busy).contains(&format!("(pid {}, `", child.id())),
        "{}",
        text(&busy)
    );
    let runs = text(&weir(&["runs"], dir.path()));
    assert!(
        runs.lines()
            .any(|l| l.trim_start().starts_with("2 ") && l.contains("running")),
        "{runs}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Its `sleep` has a process group of its own and outlives it.
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 31"])
        .status();
    let runs = text(&weir(&["runs"], dir.path()));
    assert!(
        runs.lines()
            .any(|l| l.trim_start().starts_with("2 ") && l.contains("stopped")),
        "{runs}"
    );

    // A WARN line into a pipe carries no colour codes.
    let dbt = dir.path().join("transform");
    std::fs::create_dir_all(dbt.join("models")).unwrap();
    std::fs::write(dbt.join("dbt_project.yml"), "name: w\nprofile: w\n").unwrap();
    std::fs::write(
        dbt.join("models/m.sql"),
        "{% do exceptions.warn('mind the gap') %}select 1 as x",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("weir.yml"),
        "name: s\ntransform:\n  project: ./transform\n",
    )
    .unwrap();
    let out = weir(&["transform", "compile"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARN") && err.contains("mind the gap"),
        "{}",
        text(&out)
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// E.21: `weir lake gc` is a dry run unless told, then keeps the last runs.
#[tokio::test]
async fn lake_gc_removes_old_runs_only_when_asked() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let dir = project(&format!(
        "name: gc\nsource:\n  postgres:\n    url: {}\n",
        db.url()
    ));
    for _ in 0..4 {
        let out = weir(&["extract"], dir.path());
        assert!(out.status.success(), "{}", text(&out));
    }
    let manifests = || {
        std::fs::read_dir(dir.path().join("lake/gc/_manifests"))
            .unwrap()
            .count()
    };
    let out = weir(&["lake", "gc", "--keep", "2"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("would remove 2 run(s)"),
        "{}",
        text(&out)
    );
    assert_eq!(manifests(), 4);
    let out = weir(&["lake", "gc", "--keep", "2", "--apply"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifests(), 2);
    let out = weir(&["load"], dir.path());
    assert!(
        out.status.success(),
        "the latest run still loads: {}",
        text(&out)
    );
}

/// D.16: `weir up` keeps the warehouse open only while tasks use it, so a
/// reader gets in between runs without stopping it.
#[tokio::test]
async fn weir_up_lets_readers_in_between_runs() {
    let (_db, dir) = olist_project("0.005", "").await;
    let mut up = weir_cmd(&["up", "--ui-listen", "127.0.0.1:0"], dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join(".weir/lock");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|l| l.starts_with(&format!("pid {},", up.id())))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "weir up never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = weir(&["run", "--detach"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let store = Store::open_sqlite(&dir.path().join(".weir/metadata.db")).unwrap();
    let t0 = Instant::now();
    loop {
        let run = store.run(1).await.unwrap().unwrap();
        if run.state.is_done() {
            assert_eq!(run.state, weir_orchestrate::store::RunState::Success);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the run did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Within a few seconds of the run's end the file is free for a reader,
    // while `weir up` goes on.
    let t0 = Instant::now();
    let read = loop {
        let out = weir(
            &[
                "query",
                "--format",
                "csv",
                "SELECT count(*) AS n FROM final.fct_orders_by_state",
            ],
            dir.path(),
        );
        if out.status.success() || t0.elapsed() > Duration::from_secs(30) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(read.status.success(), "{}", text(&read));
    assert!(up.try_wait().unwrap().is_none(), "weir up is still running");
    up.kill().unwrap();
    up.wait().unwrap();
}
