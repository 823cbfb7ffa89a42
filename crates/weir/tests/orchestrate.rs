//! The pipeline as a DAG, end to end through the real `weir` binary: a full
//! Olist run with project tasks, `kill -9` and restart, timeouts that cancel
//! queries on the server, several worker processes on a PostgreSQL store,
//! notifications across restarts, the scheduler catching up, retry and
//! backfill.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_config::SecretUrl;
use weir_orchestrate::store::{RunState, Store};
use weir_testkit::{temp_dir, TestDb};

mod common;
use common::*;

/// Every final table's rows, sorted: what a clean run and a recovered run must agree on.
fn final_tables(dir: &Path) -> String {
    let mut all = String::new();
    for t in [
        "fct_orders_by_state",
        "fct_sales_by_category",
        "fct_delivery_times",
    ] {
        all.push_str(&format!("== {t}\n"));
        all.push_str(&query_csv(
            dir,
            &format!("SELECT * FROM final.{t} ORDER BY ALL"),
        ));
    }
    all
}

async fn sqlite_store(dir: &Path) -> Store {
    Store::open_sqlite(&dir.join(".weir/metadata.db")).unwrap()
}

/// Per task: how many attempts succeeded.
async fn successes(store: &Store, run: i64) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for t in store.tasks(run).await.unwrap() {
        out.insert(t.task_id, 0);
    }
    for a in store.attempts(run, None).await.unwrap() {
        if a.state == "success" {
            *out.get_mut(&a.task_id).unwrap() += 1;
        }
    }
    out
}

#[tokio::test]
async fn the_olist_pipeline_runs_as_a_dag_with_project_tasks_and_history() {
    let (db, dir) = olist_project(
        "0.02",
        "orchestrate:\n  defaults: { retries: 1, retry_delay: 100ms }\n  tasks:\n    - name: audit\n      sql: CREATE OR REPLACE TABLE main.audit AS SELECT sum(orders) AS orders FROM final.fct_orders_by_state\n      depends_on: [transform]\n    - name: announce\n      shell: echo \"announcing $WEIR_TASK_ID of run $WEIR_RUN_ID\"; echo to-stderr >&2\n      depends_on: [audit]\n",
    )
    .await;
    let out = weir(&["run"], dir.path());
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("run 1 succeeded"), "{all}");
    for stage in ["extract", "load", "transform"] {
        assert!(
            all.contains(&format!("{stage} ")),
            "no {stage} time in: {all}"
        );
    }
    // The answers equal the source's, asked directly.
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT c.customer_state, count(*) FROM olist_orders o JOIN olist_customers c USING (customer_id) GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    let source_total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    let audit = query_csv(dir.path(), "SELECT orders FROM main.audit");
    assert_eq!(audit.lines().nth(1).unwrap(), source_total.to_string());

    // History: the run, its tasks, one log per attempt with the command's output.
    let runs = text(&weir(&["runs"], dir.path()));
    assert!(
        runs.contains("manual") && runs.contains("success"),
        "{runs}"
    );
    let logs = weir(&["logs", "1", "announce"], dir.path());
    let logs = text(&logs);
    assert!(logs.contains("announcing announce of run 1"), "{logs}");
    assert!(logs.contains("to-stderr"), "{logs}");
    let store = sqlite_store(dir.path()).await;
    let ok = successes(&store, 1).await;
    assert!(
        ok.len() > 80,
        "one task per table, model and test: {}",
        ok.len()
    );
    assert!(ok.values().all(|n| *n == 1), "{ok:?}");
    let extract = store
        .attempts(1, Some("extract.olist_orders"))
        .await
        .unwrap();
    assert_eq!(extract[0].rows, Some(1991));
    assert!(extract[0].peak_rss_kb.unwrap() > 1000);
    // Every extract read the snapshot the run's start task exported.
    let tasks = store.tasks(1).await.unwrap();
    let start = tasks.iter().find(|t| t.task_id == "start").unwrap();
    let snap = start.output.as_ref().unwrap()["snapshot"]["txid_snapshot"].clone();
    for t in tasks.iter().filter(|t| t.task_id.starts_with("extract.")) {
        assert_eq!(
            t.output.as_ref().unwrap()["snapshot"],
            snap,
            "{}",
            t.task_id
        );
    }
    drop(db);
}

#[tokio::test]
async fn kill_9_mid_run_then_restart_runs_every_task_once_and_matches_a_clean_run() {
    let (db, clean) = olist_project("0.02", "").await;
    let out = weir(&["run"], clean.path());
    assert!(out.status.success(), "{}", text(&out));
    let want = final_tables(clean.path());

    // The same project elsewhere, killed again and again mid-run.
    let dir = temp_dir();
    std::fs::create_dir_all(dir.path().join("transform")).unwrap();
    copy_olist_models(&dir.path().join("transform"));
    std::fs::copy(clean.path().join("weir.yml"), dir.path().join("weir.yml")).unwrap();
    let mut kills = 0;
    let mut finished = false;
    for delay_ms in [400u64, 1000, 1800] {
        let mut child = weir_cmd(&["run"], dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a resumed run failed");
            finished = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // Killed after the run had ended (while closing the warehouse): the
        // next `weir run` would rightly start a new run, so stop here.
        let store = sqlite_store(dir.path()).await;
        if let Some(run) = store.run(1).await.unwrap() {
            if run.state.is_done() {
                assert_eq!(run.state, RunState::Success, "a resumed run failed");
                finished = true;
                break;
            }
        }
    }
    assert!(kills >= 1, "the run finished before it could be killed");
    if !finished {
        let out = weir(&["run"], dir.path());
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        assert!(all.contains("resuming run 1"), "{all}");
    }
    let store = sqlite_store(dir.path()).await;
    assert_eq!(
        store.runs(10).await.unwrap().len(),
        1,
        "restarts resumed the one run"
    );
    let ok = successes(&store, 1).await;
    assert!(
        ok.values().all(|n| *n == 1),
        "every task succeeded exactly once: {ok:?}"
    );
    let attempts = store.attempts(1, None).await.unwrap();
    assert!(
        attempts.iter().any(|a| a.state == "interrupted"),
        "the kills interrupted running attempts"
    );
    assert_eq!(
        final_tables(dir.path()),
        want,
        "the recovered warehouse equals a clean run's"
    );
    // No table was loaded twice: raw row counts equal the source's.
    let client = db.client().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM olist_order_items", &[])
        .await
        .unwrap()
        .get(0);
    let raw = query_csv(dir.path(), "SELECT count(*) FROM raw.olist_order_items");
    assert_eq!(raw.lines().nth(1).unwrap(), n.to_string());
}

async fn active_sleeps(db: &TestDb) -> i64 {
    let client = db.client().await;
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_task_past_its_timeout_has_its_query_cancelled_on_the_server() {
    let source = TestDb::new().await;
    let warehouse = TestDb::new().await;
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("weir.yml"),
        format!(
            "name: slow\nsource:\n  postgres:\n    url: {}\n  tables: []\nwarehouse:\n  postgres: {{ url: \"{}\" }}\norchestrate:\n  tasks:\n    - name: on_source\n      sql: SELECT pg_sleep(60)\n      on: source\n      timeout: 1s\n      retries: 0\n    - name: on_warehouse\n      sql: SELECT pg_sleep(60)\n      timeout: 1s\n      retries: 0\n",
            source.url(),
            warehouse.url()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = weir(&["run"], dir.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(all.contains("timed out after 1.0s"), "{all}");
    // The queries were cancelled on the servers, not left running.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, w) = (
            active_sleeps(&source).await,
            active_sleeps(&warehouse).await,
        );
        if s == 0 && w == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running: source {s}, warehouse {w}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let store = sqlite_store(dir.path()).await;
    for task in ["on_source", "on_warehouse"] {
        let a = store.attempts(1, Some(task)).await.unwrap();
        assert_eq!(a.len(), 1, "{task}: retries: 0");
        assert_eq!(a[0].error_kind.as_deref(), Some("timeout"), "{task}");
    }
}

#[test]
fn a_timed_out_duckdb_statement_is_interrupted_not_left_running() {
    let dir = temp_dir();
    // Hours of work for DuckDB; the task gets a second.
    std::fs::write(
        dir.path().join("weir.yml"),
        "name: slow\norchestrate:\n  tasks:\n    - name: huge\n      sql: SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = 7\n      timeout: 1s\n      retries: 0\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = weir(&["run"], dir.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("timed out after 1.0s"), "{all}");
    // The process could exit: the statement was stopped, not abandoned on a thread.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// A PostgreSQL-backed project of `n` shell tasks in chains of ten.
fn many_tasks_yml(metadata: &str, n: usize, sleep: &str) -> String {
    let mut y = format!(
        "name: many\norchestrate:\n  metadata: {metadata}\n  lease: 2s\n  poll: 100ms\n  max_active_tasks: 12\n  tasks:\n"
    );
    for i in 0..n {
        y.push_str(&format!("    - name: t{i}\n      shell: sleep {sleep}\n"));
        if i % 10 != 0 {
            y.push_str(&format!("      depends_on: [t{}]\n", i - 1));
        }
    }
    y
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn three_worker_processes_run_200_tasks_once_also_when_one_is_killed() {
    let meta = TestDb::new().await;
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("weir.yml"),
        many_tasks_yml(&meta.url(), 200, "0.3"),
    )
    .unwrap();
    let mut workers = Workers(Vec::new());
    for _ in 0..3 {
        workers.0.push(
            weir_cmd(&["worker", "--slots", "4"], dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let out = weir(&["run", "--detach"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let store = Store::open_postgres(&SecretUrl::new(meta.url()))
        .await
        .unwrap();
    // Let the work start, then kill one worker with tasks in hand.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = store
            .tasks(1)
            .await
            .unwrap()
            .iter()
            .filter(|t| t.state.is_done())
            .count();
        if done >= 30 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers.0[0].kill().unwrap();
    workers.0[0].wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = store.run(1).await.unwrap().unwrap();
        if run.state.is_done() {
            assert_eq!(run.state, RunState::Success);
            break;
        }
        assert!(Instant::now() < deadline, "the run did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ok = successes(&store, 1).await;
    assert_eq!(ok.len(), 202, "start, 200 tasks, end");
    assert!(
        ok.values().all(|n| *n == 1),
        "every task succeeded exactly once: {ok:?}"
    );
    let attempts = store.attempts(1, None).await.unwrap();
    let owners: std::collections::BTreeSet<&str> =
        attempts.iter().map(|a| a.owner.as_str()).collect();
    assert!(owners.len() >= 3, "{owners:?}");
    let lost: Vec<&str> = attempts
        .iter()
        .filter(|a| a.state == "lost")
        .map(|a| a.task_id.as_str())
        .collect();
    assert!(
        !lost.is_empty(),
        "the killed worker's tasks were lost and run elsewhere"
    );
}

/// A tiny HTTP server that records the JSON bodies POSTed to it.
fn webhook(listener: TcpListener) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(conn);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                g.lock().unwrap().push(v);
            }
            let mut conn = r.into_inner();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    got
}

#[tokio::test]
async fn a_failure_is_notified_exactly_once_across_restarts() {
    let dir = temp_dir();
    // A port nothing listens on yet: the first run's notification cannot go out.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = "T0KEN-in-the-path-9f8e";
    std::fs::write(
        dir.path().join("weir.yml"),
        format!(
            "name: noisy\norchestrate:\n  notify:\n    webhook: http://127.0.0.1:{port}/hooks/{token}\n  tasks:\n    - name: bad\n      shell: exit 3\n"
        ),
    )
    .unwrap();
    let first = weir(&["run"], dir.path());
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert!(
        !text(&first).contains(token),
        "the webhook's secret path leaked: {}",
        text(&first)
    );
    let got = webhook(TcpListener::bind(("127.0.0.1", port)).unwrap());
    // The next two runs fail too; the first run's notice goes out at the next start, once.
    for _ in 0..2 {
        let out = weir(&["run"], dir.path());
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    }
    std::thread::sleep(Duration::from_millis(200));
    let bodies = got.lock().unwrap().clone();
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for b in &bodies {
        *per_event
            .entry(b["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert!(b["text"].as_str().unwrap().contains("bad failed"), "{b}");
    }
    assert_eq!(per_event.len(), 3, "{bodies:?}");
    assert!(per_event.values().all(|n| *n == 1), "{per_event:?}");
    for run in 1..=3 {
        assert_eq!(
            per_event.get(&format!("{run}/bad/1/failed")),
            Some(&1),
            "{per_event:?}"
        );
    }
}

#[tokio::test]
async fn weir_up_catches_up_missed_intervals_one_run_at_a_time() {
    let dir = temp_dir();
    let start = (chrono::Utc::now() - chrono::Duration::hours(3))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    std::fs::write(
        dir.path().join("weir.yml"),
        format!(
            "name: hourly\norchestrate:\n  schedule: \"@hourly\"\n  start_date: {start}\n  catchup: true\n  max_active_runs: 1\n  tasks:\n    - name: stamp\n      shell: echo \"$WEIR_INTERVAL_START\" >> intervals.txt\n"
        ),
    )
    .unwrap();
    let mut up = weir_cmd(&["up", "--ui-listen", "127.0.0.1:0"], dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let store = sqlite_store(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = store.runs(10).await.unwrap();
        if runs.len() >= 3 && runs.iter().all(|r| r.state == RunState::Success) {
            break;
        }
        assert!(Instant::now() < deadline, "runs: {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SIGTERM stops it cleanly.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status();
    let status = up.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let runs = store.runs(10).await.unwrap();
    // Three hours behind (four if the hour turned while the test ran).
    assert!((3..=4).contains(&runs.len()), "{runs:?}");
    let mut runs: Vec<_> = runs.into_iter().rev().collect();
    runs.sort_by_key(|r| r.interval.start);
    for w in runs.windows(2) {
        assert_eq!(
            w[0].interval.end, w[1].interval.start,
            "contiguous intervals"
        );
        // One at a time: the next started after the previous ended.
        assert!(w[1].started_at.unwrap() >= w[0].ended_at.unwrap());
    }
    let stamped = std::fs::read_to_string(dir.path().join("intervals.txt")).unwrap();
    assert_eq!(stamped.lines().count(), runs.len(), "{stamped}");
}

#[tokio::test]
async fn retry_reruns_only_what_failed_and_backfill_cuts_intervals() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("weir.yml"),
        "name: twice\norchestrate:\n  schedule: \"@daily\"\n  tasks:\n    - name: fine\n      shell: echo fine >> fine.txt\n    - name: flaky\n      shell: test -f marker || { touch marker; exit 1; }\n      depends_on: [fine]\n    - name: after\n      shell: echo after\n      depends_on: [flaky]\n",
    )
    .unwrap();
    let out = weir(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = weir(&["retry", "1"], dir.path());
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("3 failed or skipped task(s)"),
        "flaky, after and end: {all}"
    );
    let fine = std::fs::read_to_string(dir.path().join("fine.txt")).unwrap();
    assert_eq!(
        fine.lines().count(),
        1,
        "a task that succeeded is not run again"
    );

    let out = weir(
        &["backfill", "--from", "2026-01-01", "--to", "2026-01-04"],
        dir.path(),
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("backfill: 3 interval(s)"), "{all}");
    let store = sqlite_store(dir.path()).await;
    let backfills: Vec<String> = store
        .runs(10)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind == "backfill")
        .map(|r| format!("{} {}", r.interval.start.format("%m-%d"), r.state.as_str()))
        .collect();
    assert_eq!(
        backfills,
        ["01-03 success", "01-02 success", "01-01 success"]
    );
}

/// `weir run --full-refresh` reads an incremental table whole and replaces
/// what merging loads kept (a row deleted at the source goes), `--tables`
/// runs part of the pipeline, and a typo starts no run.
#[tokio::test]
async fn runs_with_parameters_refresh_in_full_and_run_part_of_the_pipeline() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now(), v text);
         INSERT INTO events (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c');
         CREATE TABLE other (id int PRIMARY KEY);
         INSERT INTO other VALUES (1);",
    )
    .await
    .unwrap();
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("weir.yml"),
        format!(
            "name: params\nsource:\n  postgres:\n    url: {}\n  tables:\n    - name: events\n      cursor: updated_at\n    - other\nlake:\n  url: file://./lake\norchestrate:\n  defaults: {{ retries: 0 }}\n",
            db.url()
        ),
    )
    .unwrap();
    let ids = |dir: &Path| query_csv(dir, "SELECT id FROM raw.events ORDER BY id");
    let out = weir(&["run"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids(dir.path()), "id\n1\n2\n3\n");

    // An incremental run merges what changed: the deleted row stays.
    c.batch_execute("DELETE FROM events WHERE id = 1; INSERT INTO events (id, v) VALUES (4, 'd');")
        .await
        .unwrap();
    let out = weir(&["run", "--new", "--tables", "events"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(tables events)"), "{}", text(&out));
    assert_eq!(ids(dir.path()), "id\n1\n2\n3\n4\n");
    let store = sqlite_store(dir.path()).await;
    let tasks: Vec<String> = store
        .tasks(2)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert!(tasks.contains(&"extract.events".to_owned()), "{tasks:?}");
    assert!(!tasks.iter().any(|t| t.ends_with(".other")), "{tasks:?}");

    // A full refresh reads it whole and replaces it.
    let out = weir(&["run", "--full-refresh", "--tables", "events"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids(dir.path()), "id\n2\n3\n4\n");
    let r = store.run(3).await.unwrap().unwrap();
    assert!(r.params.full_refresh && r.params.tables == ["events"]);
    let out = weir(&["runs"], dir.path());
    assert!(
        text(&out).contains("(full refresh, tables events)"),
        "{}",
        text(&out)
    );

    // A table the pipeline does not have: refused, and no run is created.
    let out = weir(&["run", "--tables", "event"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no source table event in the pipeline (its tables: events, other)"),
        "{}",
        text(&out)
    );
    assert_eq!(store.runs(100).await.unwrap().len(), 3);
}
