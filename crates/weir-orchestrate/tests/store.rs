//! The metadata store's decisions — readiness, trigger rules, limits, leases,
//! retries, recovery — driven with an injected clock, each scenario run on
//! both stores: a SQLite file and a throw-away PostgreSQL database.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use weir_config::{SecretUrl, TriggerRule};
use weir_orchestrate::dag::{Dag, Task, TaskKind};
use weir_orchestrate::retry::TaskError;
use weir_orchestrate::schedule::{Interval, Schedule};
use weir_orchestrate::scheduler::Scheduler;
use weir_orchestrate::store::{
    Claim, Finished, RunKind, RunState, Store, TaskState, MAX_INTERRUPTIONS,
};
use weir_orchestrate::worker::{decide, TaskOutput};
use weir_testkit::TestDb;

/// Both stores, fresh: (name, store, what keeps it alive).
async fn stores() -> Vec<(&'static str, Store, Box<dyn std::any::Any>)> {
    let dir = weir_testkit::temp_dir();
    let sqlite = Store::open_sqlite(&dir.path().join("metadata.db")).unwrap();
    let db = TestDb::new().await;
    let pg = Store::open_postgres(&SecretUrl::new(db.url()))
        .await
        .unwrap();
    vec![
        ("sqlite", sqlite, Box::new(dir)),
        ("postgres", pg, Box::new(db)),
    ]
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn task(id: &str, after: &[&str]) -> Task {
    Task::new(id, TaskKind::Empty).after(after.iter().copied())
}

fn with_rule(mut t: Task, rule: TriggerRule) -> Task {
    t.trigger_rule = rule;
    t
}

fn no_log(_: i64, _: &str, _: u32) -> std::path::PathBuf {
    std::path::PathBuf::from("/dev/null")
}

const LEASE: Duration = Duration::from_secs(30);

async fn new_run(store: &Store, dag: &Dag, max_active: usize) -> i64 {
    store
        .create_run(
            dag,
            RunKind::Manual,
            Interval {
                start: t0(),
                end: t0(),
            },
            RunState::Running,
            max_active,
            t0(),
        )
        .await
        .unwrap()
        .unwrap()
}

async fn claim(
    store: &Store,
    run: i64,
    want: usize,
    owner: &str,
    now: DateTime<Utc>,
) -> Vec<Claim> {
    store
        .claim(run, want, owner, LEASE, now, &no_log)
        .await
        .unwrap()
}

fn ids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.task_id.as_str()).collect()
}

/// Finish `c` as the worker would, with `result`.
async fn finish(
    store: &Store,
    dag: &Dag,
    c: &Claim,
    result: Result<TaskOutput, TaskError>,
    now: DateTime<Utc>,
) -> Finished {
    let task = &dag.tasks[dag.get(&c.task_id).unwrap()];
    let outcome = decide(task, c, &result, now);
    store.finish(c, &outcome, now).await.unwrap()
}

fn ok() -> Result<TaskOutput, TaskError> {
    Ok(TaskOutput::default())
}

async fn states(store: &Store, run: i64) -> Vec<String> {
    store
        .tasks(run)
        .await
        .unwrap()
        .iter()
        .map(|t| format!("{}={}", t.task_id, t.state.as_str()))
        .collect()
}

#[tokio::test]
async fn trigger_rules_decide_what_runs_after_a_failure() {
    for (name, store, _keep) in stores().await {
        let dag = Dag::new(
            "d",
            vec![
                task("a", &[]),
                task("ok", &[]),
                task("b", &["a"]),
                task("c", &["b"]),
                with_rule(task("cleanup", &["a", "ok"]), TriggerRule::AllDone),
                with_rule(task("alert", &["a"]), TriggerRule::OneFailed),
                with_rule(task("alert_ok", &["ok"]), TriggerRule::OneFailed),
                task("after_alert_ok", &["alert_ok"]),
            ],
            vec![],
        )
        .unwrap();
        let run = new_run(&store, &dag, 16).await;
        let first = claim(&store, run, 10, "w", at(1)).await;
        assert_eq!(ids(&first), ["a", "ok"], "{name}");
        let a = &first[0];
        let f = finish(&store, &dag, a, Err(TaskError::permanent("boom")), at(2)).await;
        assert_eq!(
            f,
            Finished::Committed {
                settled: vec![
                    ("b".to_owned(), TaskState::UpstreamFailed),
                    ("c".to_owned(), TaskState::UpstreamFailed)
                ],
                run: None
            },
            "{name}"
        );
        // cleanup waits for `ok` too; alert runs now.
        assert_eq!(
            ids(&claim(&store, run, 10, "w", at(3)).await),
            ["alert"],
            "{name}"
        );
        let f = finish(&store, &dag, &first[1], ok(), at(4)).await;
        assert_eq!(
            f,
            Finished::Committed {
                settled: vec![
                    ("alert_ok".to_owned(), TaskState::Skipped),
                    ("after_alert_ok".to_owned(), TaskState::Skipped)
                ],
                run: None
            },
            "{name}"
        );
        let next = claim(&store, run, 10, "w", at(5)).await;
        assert_eq!(ids(&next), ["cleanup"], "{name}");
        finish(&store, &dag, &next[0], ok(), at(6)).await;
        let alert = store
            .tasks(run)
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.task_id == "alert")
            .unwrap();
        assert_eq!(alert.state, TaskState::Running, "{name}");
        let c = Claim {
            run_id: run,
            task_id: "alert".into(),
            try_number: 1,
            failures: 0,
            interruptions: 0,
            owner: "w".into(),
            interval: Interval {
                start: t0(),
                end: t0(),
            },
        };
        let f = finish(&store, &dag, &c, ok(), at(7)).await;
        assert_eq!(
            f,
            Finished::Committed {
                settled: vec![],
                run: Some(RunState::Failed)
            },
            "{name}: the run ends when its last task does"
        );
        assert_eq!(
            states(&store, run).await,
            [
                "a=failed",
                "ok=success",
                "b=upstream_failed",
                "alert=success",
                "cleanup=success",
                "alert_ok=skipped",
                "c=upstream_failed",
                "after_alert_ok=skipped"
            ],
            "{name}"
        );
        assert_eq!(
            store.run(run).await.unwrap().unwrap().state,
            RunState::Failed
        );
    }
}

#[tokio::test]
async fn claims_respect_max_active_tasks_and_pools() {
    for (name, store, _keep) in stores().await {
        let mut tasks: Vec<Task> = (0..6).map(|i| task(&format!("t{i}"), &[])).collect();
        for t in tasks.iter_mut().take(4) {
            t.pool = Some("db".into());
        }
        let dag = Dag::new("d", tasks, vec![("db".into(), 2)]).unwrap();
        let run = new_run(&store, &dag, 3).await;
        let first = claim(&store, run, 10, "w1", at(1)).await;
        // Three at most in the run, two at most from the pool: t0, t1 (pool), t4.
        assert_eq!(ids(&first), ["t0", "t1", "t4"], "{name}");
        assert!(
            claim(&store, run, 10, "w2", at(1)).await.is_empty(),
            "{name}"
        );
        finish(&store, &dag, &first[2], ok(), at(2)).await;
        // One run slot free; the pool is still full, so t5 (no pool) goes.
        assert_eq!(
            ids(&claim(&store, run, 10, "w2", at(3)).await),
            ["t5"],
            "{name}"
        );
        finish(&store, &dag, &first[0], ok(), at(4)).await;
        assert_eq!(
            ids(&claim(&store, run, 10, "w2", at(5)).await),
            ["t2"],
            "{name}"
        );

        // A pool is shared by every run of the DAG.
        let run2 = new_run(&store, &dag, 3).await;
        let c = claim(&store, run2, 10, "w3", at(6)).await;
        assert_eq!(
            ids(&c),
            ["t4", "t5"],
            "{name}: the pool's two slots are taken by run {run}"
        );
    }
}

#[tokio::test]
async fn an_expired_lease_cannot_commit_and_the_task_goes_to_another_worker() {
    for (name, store, _keep) in stores().await {
        let dag = Dag::new("d", vec![task("a", &[]), task("b", &["a"])], vec![]).unwrap();
        let run = new_run(&store, &dag, 4).await;
        let mine = claim(&store, run, 1, "w1", at(0)).await.remove(0);
        // The lease is renewed while held...
        assert!(
            store.heartbeat(&mine, LEASE, at(20)).await.unwrap(),
            "{name}"
        );
        // ...and lapses 30 s after the last renewal: w1 cannot commit, nor renew.
        assert_eq!(
            finish(&store, &dag, &mine, ok(), at(51)).await,
            Finished::LeaseLost,
            "{name}"
        );
        assert!(
            !store.heartbeat(&mine, LEASE, at(51)).await.unwrap(),
            "{name}"
        );
        // Nobody else may take it before it is reaped...
        assert!(
            claim(&store, run, 1, "w2", at(51)).await.is_empty(),
            "{name}"
        );
        let reaped = store.reap("d", false, at(51)).await.unwrap();
        assert_eq!(reaped.len(), 1, "{name}");
        assert_eq!(reaped[0].state, TaskState::Queued, "{name}");
        assert_eq!(reaped[0].owner, "w1", "{name}");
        // ...then w2 runs it as try 2, and w1's late result is still refused.
        let theirs = claim(&store, run, 1, "w2", at(52)).await.remove(0);
        assert_eq!(
            (theirs.task_id.as_str(), theirs.try_number),
            ("a", 2),
            "{name}"
        );
        assert_eq!(
            finish(&store, &dag, &mine, ok(), at(53)).await,
            Finished::LeaseLost,
            "{name}"
        );
        assert!(matches!(
            finish(&store, &dag, &theirs, ok(), at(54)).await,
            Finished::Committed { .. }
        ));
        let attempts = store.attempts(run, Some("a")).await.unwrap();
        let got: Vec<(u32, &str, &str)> = attempts
            .iter()
            .map(|a| (a.try_number, a.state.as_str(), a.owner.as_str()))
            .collect();
        assert_eq!(got, [(1, "lost", "w1"), (2, "success", "w2")], "{name}");
        // The interruption did not use up a retry.
        let a = &store.tasks(run).await.unwrap()[0];
        assert_eq!((a.failures, a.interruptions), (0, 1), "{name}");
        assert_eq!(
            ids(&claim(&store, run, 1, "w2", at(55)).await),
            ["b"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_task_that_keeps_killing_its_worker_fails_in_the_end() {
    for (name, store, _keep) in stores().await {
        let dag = Dag::new("d", vec![task("a", &[]), task("b", &["a"])], vec![]).unwrap();
        let run = new_run(&store, &dag, 4).await;
        let mut now = 0;
        for i in 1..=MAX_INTERRUPTIONS {
            let c = claim(&store, run, 1, "w", at(now)).await;
            assert_eq!(ids(&c), ["a"], "{name}: try {i}");
            now += 100;
            let r = store.reap("d", false, at(now)).await.unwrap();
            let want = if i == MAX_INTERRUPTIONS {
                TaskState::Failed
            } else {
                TaskState::Queued
            };
            assert_eq!(r[0].state, want, "{name}: try {i}");
        }
        assert_eq!(
            states(&store, run).await,
            ["a=failed", "b=upstream_failed"],
            "{name}"
        );
        assert_eq!(
            store.run(run).await.unwrap().unwrap().state,
            RunState::Failed,
            "{name}"
        );
    }
}

#[tokio::test]
async fn transient_errors_wait_for_the_back_off_and_permanent_ones_fail_at_once() {
    for (name, store, _keep) in stores().await {
        let mut flaky = task("flaky", &[]);
        flaky.retry.retries = 2;
        flaky.retry.delay = Duration::from_secs(10);
        let mut broken = task("broken", &[]);
        broken.retry.retries = 5;
        let dag = Dag::new("d", vec![flaky, broken], vec![]).unwrap();
        let run = new_run(&store, &dag, 4).await;
        let c = claim(&store, run, 2, "w", at(0)).await;
        finish(
            &store,
            &dag,
            &c[0],
            Err(TaskError::transient("connection reset by peer")),
            at(1),
        )
        .await;
        finish(
            &store,
            &dag,
            &c[1],
            Err(TaskError::permanent("syntax error at or near \"SELEC\"")),
            at(1),
        )
        .await;
        assert_eq!(
            states(&store, run).await,
            ["flaky=up_for_retry", "broken=failed"],
            "{name}"
        );
        let due = store.next_retry_at(run).await.unwrap().unwrap();
        // Jittered between half and all of the 10 s delay.
        assert!(due >= at(6) && due <= at(11), "{name}: {due}");
        assert!(claim(&store, run, 2, "w", at(5)).await.is_empty(), "{name}");
        let c = claim(&store, run, 2, "w", at(12)).await;
        assert_eq!((c[0].try_number, c[0].failures), (2, 1), "{name}");
        // Second failure: the back-off doubles (10-20 s).
        finish(
            &store,
            &dag,
            &c[0],
            Err(TaskError::transient("HTTP status 503")),
            at(13),
        )
        .await;
        let due = store.next_retry_at(run).await.unwrap().unwrap();
        assert!(due >= at(23) && due <= at(33), "{name}: {due}");
        let c = claim(&store, run, 2, "w", at(40)).await;
        finish(
            &store,
            &dag,
            &c[0],
            Err(TaskError::transient("HTTP status 503")),
            at(41),
        )
        .await;
        // Retries used up: failed, with a notification saying so.
        assert_eq!(
            states(&store, run).await,
            ["flaky=failed", "broken=failed"],
            "{name}"
        );
        let events = store
            .claim_events("me", Duration::from_secs(60), at(42))
            .await
            .unwrap();
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.task_id.as_deref().unwrap_or(""), e.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [("broken", "failed"), ("flaky", "retries_exhausted")],
            "{name}"
        );
        // Claimed events are not handed to another sender until the claim lapses.
        assert!(store
            .claim_events("other", Duration::from_secs(60), at(43))
            .await
            .unwrap()
            .is_empty());
        store.mark_sent(&events[0].key, at(44)).await.unwrap();
        let again = store
            .claim_events("other", Duration::from_secs(60), at(200))
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{name}: only the unsent one comes back");
        assert_eq!(again[0].kind, "retries_exhausted");
    }
}

#[tokio::test]
async fn retry_resets_failed_and_skipped_tasks_and_the_run_goes_on() {
    for (name, store, _keep) in stores().await {
        let dag = Dag::new(
            "d",
            vec![
                task("a", &[]),
                task("b", &["a"]),
                task("c", &["b"]),
                task("d", &[]),
            ],
            vec![],
        )
        .unwrap();
        let run = new_run(&store, &dag, 4).await;
        let c = claim(&store, run, 4, "w", at(0)).await;
        assert_eq!(ids(&c), ["a", "d"]);
        finish(&store, &dag, &c[1], ok(), at(1)).await;
        let f = finish(&store, &dag, &c[0], Err(TaskError::permanent("no")), at(1)).await;
        assert!(
            matches!(
                f,
                Finished::Committed {
                    run: Some(RunState::Failed),
                    ..
                }
            ),
            "{name}"
        );
        assert_eq!(
            store.reset_for_retry(run, at(2)).await.unwrap(),
            3,
            "{name}"
        );
        assert_eq!(
            states(&store, run).await,
            ["a=queued", "d=success", "b=pending", "c=pending"],
            "{name}"
        );
        assert_eq!(
            store.run(run).await.unwrap().unwrap().state,
            RunState::Running
        );
        for id in ["a", "b", "c"] {
            let c = claim(&store, run, 4, "w", at(3)).await;
            assert_eq!(ids(&c), [id], "{name}");
            assert_eq!(c[0].failures, 0, "{name}: a fresh retry budget");
            finish(&store, &dag, &c[0], ok(), at(4)).await;
        }
        assert_eq!(
            store.run(run).await.unwrap().unwrap().state,
            RunState::Success
        );
        // A run that is not over cannot be retried.
        let run2 = new_run(&store, &dag, 4).await;
        assert!(store.reset_for_retry(run2, at(5)).await.is_err(), "{name}");
    }
}

#[tokio::test]
async fn the_scheduler_catches_up_one_run_at_a_time() {
    for (name, store, _keep) in stores().await {
        let store = Arc::new(store);
        let dag = Dag::new("d", vec![task("only", &[])], vec![]).unwrap();
        let scheduler = |catchup| Scheduler {
            store: store.clone(),
            dag: dag.clone(),
            schedule: Schedule::parse(Some("@daily"), "UTC").unwrap(),
            start_date: t0(),
            catchup,
            max_active_runs: 1,
            max_active_tasks: 4,
        };
        let s = scheduler(true);
        // Three days and five hours later: three complete intervals.
        let tick = s.tick(at(3 * 86400 + 5 * 3600)).await.unwrap();
        assert_eq!(tick.created.len(), 3, "{name}");
        assert_eq!(
            tick.started,
            vec![tick.created[0]],
            "{name}: max_active_runs is 1"
        );
        // Asked again: nothing new, nothing more started while one runs.
        let again = s.tick(at(3 * 86400 + 6 * 3600)).await.unwrap();
        assert_eq!(again, Default::default(), "{name}");
        // The first run ends; the next tick starts the second, oldest first.
        let first = tick.created[0];
        let c = claim(&store, first, 1, "w", at(3 * 86400 + 7 * 3600)).await;
        finish(&store, &dag, &c[0], ok(), at(3 * 86400 + 7 * 3600)).await;
        let next = s.tick(at(3 * 86400 + 8 * 3600)).await.unwrap();
        assert_eq!(next.started, vec![tick.created[1]], "{name}");
        let runs = store.runs(10).await.unwrap();
        let intervals: Vec<String> = runs
            .iter()
            .rev()
            .map(|r| format!("{} {}", r.interval.start.format("%m-%d"), r.state.as_str()))
            .collect();
        assert_eq!(
            intervals,
            ["03-01 success", "03-02 running", "03-03 queued"],
            "{name}"
        );
    }
    // Without catch-up only the newest interval runs, and never twice.
    for (name, store, _keep) in stores().await {
        let store = Arc::new(store);
        let s = Scheduler {
            store: store.clone(),
            dag: Dag::new("d", vec![task("only", &[])], vec![]).unwrap(),
            schedule: Schedule::parse(Some("@daily"), "UTC").unwrap(),
            start_date: t0(),
            catchup: false,
            max_active_runs: 1,
            max_active_tasks: 4,
        };
        let tick = s.tick(at(3 * 86400 + 5 * 3600)).await.unwrap();
        assert_eq!(tick.created.len(), 1, "{name}");
        let run = store.run(tick.created[0]).await.unwrap().unwrap();
        assert_eq!(run.interval.start, at(2 * 86400), "{name}");
        // Two schedulers (a restart, or two `weir up` on PostgreSQL) never
        // create an interval's run twice.
        assert!(s
            .tick(at(3 * 86400 + 5 * 3600))
            .await
            .unwrap()
            .created
            .is_empty());
        assert_eq!(store.runs(10).await.unwrap().len(), 1, "{name}");
    }
}
