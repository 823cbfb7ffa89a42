//! The worker loop with real stores and task bodies that misbehave on
//! purpose: retries and back-off, timeouts that cancel, shutdown and resume,
//! a thousand tasks, and several workers sharing one PostgreSQL store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use weir_config::SecretUrl;
use weir_orchestrate::dag::{Dag, Task, TaskKind};
use weir_orchestrate::retry::{ErrorKind, TaskError};
use weir_orchestrate::schedule::{Interval, SystemClock};
use weir_orchestrate::store::{RunKind, RunState, Store};
use weir_orchestrate::worker::{
    Quiet, Scope, TaskContext, TaskOutput, TaskRunner, WorkEnd, Worker, WorkerOptions,
};
use weir_testkit::TestDb;

/// Task bodies chosen by the task id's first word:
/// `ok` succeeds, `nap` sleeps 30 ms, `flaky` fails with a transient error on
/// its first two tries, `broken` fails for good, `slow` sleeps for a minute
/// unless cancelled.
#[derive(Default)]
struct Script {
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    successes: Mutex<HashMap<String, usize>>,
}

#[async_trait::async_trait]
impl TaskRunner for Script {
    async fn run(&self, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let kind = ctx
            .task
            .id
            .split(['.', '_'])
            .next()
            .unwrap_or("")
            .to_owned();
        let r = match kind.as_str() {
            "ok" => Ok(TaskOutput::default()),
            "nap" => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(TaskOutput::default())
            }
            "flaky" if ctx.try_number <= 2 => Err(TaskError::transient("connection reset by peer")),
            "flaky" => Ok(TaskOutput::default()),
            "broken" => Err(TaskError::permanent("relation \"nope\" does not exist")),
            "slow" => tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => Ok(TaskOutput::default()),
                () = ctx.cancel.cancelled() => Err(TaskError { kind: ErrorKind::Cancelled, message: "cancelled".into(), code: None }),
            },
            other => Err(TaskError::permanent(format!("no script for {other}"))),
        };
        if r.is_ok() {
            *self
                .successes
                .lock()
                .unwrap()
                .entry(ctx.task.id.clone())
                .or_default() += 1;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

fn task(id: &str, after: &[&str]) -> Task {
    Task::new(id, TaskKind::Empty).after(after.iter().copied())
}

fn options(dir: &std::path::Path, owner: &str, slots: usize) -> WorkerOptions {
    WorkerOptions {
        owner: owner.to_owned(),
        slots,
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(50),
        logs_dir: dir.join("logs"),
        grace: Duration::from_secs(2),
        notify: Default::default(),
    }
}

fn worker(
    store: &Arc<Store>,
    script: &Arc<Script>,
    dir: &std::path::Path,
    owner: &str,
    slots: usize,
) -> Worker {
    Worker::new(
        store.clone(),
        script.clone(),
        options(dir, owner, slots),
        Arc::new(SystemClock),
        Arc::new(Quiet),
    )
}

async fn run_of(store: &Store, dag: &Dag, max_active: usize) -> i64 {
    let now = Utc::now();
    store
        .create_run(
            dag,
            RunKind::Manual,
            Interval {
                start: now,
                end: now,
            },
            RunState::Running,
            max_active,
            now,
        )
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn transient_failures_are_retried_after_a_back_off_and_the_recovery_is_told() {
    let dir = weir_testkit::temp_dir();
    let store = Arc::new(Store::open_sqlite(&dir.path().join("m.db")).unwrap());
    let mut flaky = task("flaky", &[]);
    flaky.retry.retries = 3;
    flaky.retry.delay = Duration::from_millis(20);
    let mut broken = task("broken", &[]);
    broken.retry.retries = 3;
    let dag = Dag::new(
        "d",
        vec![
            flaky,
            task("ok.after", &["flaky"]),
            broken,
            task("ok.never", &["broken"]),
        ],
        vec![],
    )
    .unwrap();
    let run = run_of(&store, &dag, 8).await;
    let script = Arc::new(Script::default());
    let w = worker(&store, &script, dir.path(), "w", 4);
    let end = w
        .work(Scope::Run(run), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(end, WorkEnd::Run(RunState::Failed));
    let attempts = store.attempts(run, None).await.unwrap();
    let mut got: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {}",
                a.task_id,
                a.try_number,
                a.state,
                a.error_kind.as_deref().unwrap_or("-")
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "broken 1 failed permanent",
            "flaky 1 failed transient",
            "flaky 2 failed transient",
            "flaky 3 success -",
            "ok.after 1 success -",
        ]
    );
    // Each attempt has its log, also kept in the store.
    let a = attempts
        .iter()
        .find(|a| a.task_id == "flaky" && a.try_number == 1)
        .unwrap();
    let log = std::fs::read_to_string(&a.log_path).unwrap();
    assert!(
        log.contains("transient error: connection reset by peer"),
        "{log}"
    );
    assert!(
        a.log_tail.as_deref().unwrap().contains("connection reset"),
        "{:?}",
        a.log_tail
    );
    let events = store
        .claim_events("t", Duration::from_secs(1), Utc::now())
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"recovered") && kinds.contains(&"failed"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_task_past_its_timeout_is_cancelled_and_retried() {
    let dir = weir_testkit::temp_dir();
    let store = Arc::new(Store::open_sqlite(&dir.path().join("m.db")).unwrap());
    let mut slow = task("slow", &[]);
    slow.retry.timeout = Some(Duration::from_millis(200));
    slow.retry.retries = 1;
    slow.retry.delay = Duration::from_millis(10);
    let dag = Dag::new("d", vec![slow], vec![]).unwrap();
    let run = run_of(&store, &dag, 8).await;
    let script = Arc::new(Script::default());
    let started = std::time::Instant::now();
    let end = worker(&store, &script, dir.path(), "w", 4)
        .work(Scope::Run(run), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(end, WorkEnd::Run(RunState::Failed));
    // Two tries of 0.2 s, not two minutes: the body really was cancelled.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let attempts = store.attempts(run, None).await.unwrap();
    let got: Vec<(u32, &str, Option<&str>)> = attempts
        .iter()
        .map(|a| (a.try_number, a.state.as_str(), a.error_kind.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "failed", Some("timeout")),
            (2, "failed", Some("timeout"))
        ]
    );
    assert!(attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("timed out after 0.2s"));
    assert_eq!(script.running.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stopped_worker_leaves_its_tasks_queued_for_the_next_one() {
    let dir = weir_testkit::temp_dir();
    let store = Arc::new(Store::open_sqlite(&dir.path().join("m.db")).unwrap());
    let dag = Dag::new(
        "d",
        vec![
            task("ok.first", &[]),
            task("slow", &["ok.first"]),
            task("ok.last", &["slow"]),
        ],
        vec![],
    )
    .unwrap();
    let run = run_of(&store, &dag, 8).await;
    let script = Arc::new(Script::default());
    let stop = CancellationToken::new();
    let w = worker(&store, &script, dir.path(), "w1", 4);
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.cancel();
    });
    assert_eq!(
        w.work(Scope::Run(run), stop).await.unwrap(),
        WorkEnd::Stopped
    );
    let slow = store
        .tasks(run)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.task_id == "slow")
        .unwrap();
    assert_eq!(slow.state.as_str(), "queued");
    assert_eq!(
        (slow.failures, slow.interruptions),
        (0, 0),
        "a shutdown is nobody's failure"
    );
    let attempts = store.attempts(run, Some("slow")).await.unwrap();
    assert_eq!(attempts[0].state, "interrupted");
}

#[tokio::test]
async fn a_thousand_tasks_each_succeed_once_within_the_run_limit() {
    let dir = weir_testkit::temp_dir();
    let store = Arc::new(Store::open_sqlite(&dir.path().join("m.db")).unwrap());
    let mut tasks = vec![task("ok.start", &[])];
    for i in 0..1000 {
        tasks.push(task(&format!("ok.{i}"), &["ok.start"]));
    }
    let all: Vec<String> = (0..1000).map(|i| format!("ok.{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    tasks.push(task("ok.end", &refs));
    let dag = Dag::new("d", tasks, vec![]).unwrap();
    let run = run_of(&store, &dag, 8).await;
    let script = Arc::new(Script::default());
    let end = worker(&store, &script, dir.path(), "w", 32)
        .work(Scope::Run(run), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(end, WorkEnd::Run(RunState::Success));
    let successes = script.successes.lock().unwrap();
    assert_eq!(successes.len(), 1002);
    assert!(successes.values().all(|n| *n == 1));
    assert!(script.most_at_once.load(Ordering::SeqCst) <= 8);
}

#[tokio::test]
async fn three_workers_share_a_run_on_postgresql_and_run_each_task_once() {
    let db = TestDb::new().await;
    let dir = weir_testkit::temp_dir();
    let url = SecretUrl::new(db.url());
    let mut tasks = Vec::new();
    for i in 0..200 {
        // Chains of ten: some parallelism, some order.
        let after: Vec<String> = if i % 10 == 0 {
            vec![]
        } else {
            vec![format!("nap.{}", i - 1)]
        };
        let mut t = task(&format!("nap.{i}"), &[]);
        t.depends_on = after;
        if i % 3 == 0 {
            t.pool = Some("db".into());
        }
        tasks.push(t);
    }
    let dag = Dag::new("d", tasks, vec![("db".into(), 2)]).unwrap();
    let creator = Store::open_postgres(&url).await.unwrap();
    let run = run_of(&creator, &dag, 6).await;
    let script = Arc::new(Script::default());
    let mut handles = Vec::new();
    for w in 0..3 {
        // Each worker has its own store connection, as separate processes would.
        let store = Arc::new(Store::open_postgres(&url).await.unwrap());
        let worker = worker(&store, &script, dir.path(), &format!("w{w}"), 4);
        handles.push(tokio::spawn(async move {
            worker
                .work(Scope::Run(run), CancellationToken::new())
                .await
                .unwrap()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), WorkEnd::Run(RunState::Success));
    }
    let successes = script.successes.lock().unwrap().clone();
    assert_eq!(successes.len(), 200);
    assert!(successes.values().all(|n| *n == 1), "a task ran twice");
    assert!(
        script.most_at_once.load(Ordering::SeqCst) <= 6,
        "max_active_tasks held across workers"
    );
    let attempts = creator.attempts(run, None).await.unwrap();
    assert_eq!(attempts.len(), 200);
    let owners: std::collections::BTreeSet<&str> =
        attempts.iter().map(|a| a.owner.as_str()).collect();
    assert_eq!(owners.len(), 3, "all three workers took part: {owners:?}");
}
