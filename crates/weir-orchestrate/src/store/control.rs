//! What an operator does to runs by hand: cancel a run, clear a task and
//! what depends on it, mark a task succeeded or failed. Each is one
//! transaction that locks the run's row first, like every other change of
//! task states, and leaves the upstream counters recomputed.

use chrono::{DateTime, Utc};

use super::{end_run_if_done, ms, recompute, RunState, Store, StoreError};
use crate::db::{params, retrying, DbError, DbTx};

async fn lock_run(tx: &mut DbTx, run: i64) -> Result<RunState, DbError> {
    let Some(r) = tx
        .one(
            "SELECT state FROM runs WHERE id = $1 {FOR_UPDATE}",
            params![run],
        )
        .await?
    else {
        return Err(DbError::Other(format!("there is no run {run}")));
    };
    Ok(RunState::parse(&r.text(0)).unwrap_or(RunState::Failed))
}

/// A task whose attempt runs, or whose cancelled attempt's worker may still
/// be stopping it (its lease has not run out), is not to be touched.
fn busy(
    run: i64,
    task: &str,
    state: &str,
    lease_until: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    if state == "running" {
        return Err(DbError::Other(format!(
            "task {task} of run {run} is running; cancel the run or wait for it"
        )));
    }
    if lease_until.is_some_and(|t| t > ms(now)) {
        return Err(DbError::Other(format!(
            "task {task} of run {run} was cancelled and its worker may still be stopping it; try again in a few seconds"
        )));
    }
    Ok(())
}

/// A run that gets tasks to do again runs (a queued run stays queued: the
/// scheduler starts it within `max_active_runs`).
async fn reopen(tx: &mut DbTx, run: i64, now: DateTime<Utc>) -> Result<(), DbError> {
    tx.exec(
        "UPDATE runs SET ended_at = NULL,
             state = CASE WHEN state = 'queued' THEN 'queued' ELSE 'running' END,
             started_at = CASE WHEN state = 'queued' THEN started_at ELSE coalesce(started_at, $2) END
         WHERE id = $1",
        params![run, ms(now)],
    )
    .await
    .map(drop)
}

impl Store {
    /// Stop run `run`: its unfinished tasks fail (running attempts are
    /// recorded as cancelled; their workers lose the lease at the next
    /// heartbeat and stop them) and the run fails. Returns the tasks stopped.
    pub async fn cancel_run(
        &self,
        run: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let reason = weir_config::scrub(reason).into_owned();
        let dag = self.run_dag(run).await?;
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            if lock_run(&mut tx, run).await?.is_done() {
                return Err(DbError::Other(format!("run {run} has ended already")));
            }
            tx.exec(
                "UPDATE attempts SET state = 'failed', ended_at = $2, error = $3, error_kind = 'cancelled'
                 WHERE run_id = $1 AND state = 'running'",
                params![run, ms(now), &reason],
            )
            .await?;
            // The lease stays as it was: the worker still running an
            // attempt learns of the cancel at its next heartbeat, and until
            // the lease has run out the task cannot be cleared or marked
            // (no second attempt beside the one being stopped).
            let n = tx
                .exec(
                    "UPDATE task_instances SET state = 'failed', next_try_at = NULL
                     WHERE run_id = $1
                       AND state NOT IN ('success', 'failed', 'skipped', 'upstream_failed')",
                    params![run],
                )
                .await?;
            recompute(&mut tx, &dag, run).await?;
            tx.exec(
                "UPDATE runs SET state = 'failed', ended_at = $2 WHERE id = $1",
                params![run, ms(now)],
            )
            .await?;
            tx.commit().await?;
            Ok(n as usize)
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Run `task` of `run` again, with every task downstream of it (their
    /// tries so far stay in the history). A finished run runs again.
    pub async fn clear_task(
        &self,
        run: i64,
        task: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let dag = self.run_dag(run).await?;
        let Some(root) = dag.get(task) else {
            return Err(self.invalid(format!("run {run} has no task {task}")));
        };
        let mut cleared = vec![false; dag.tasks.len()];
        cleared[root] = true;
        // Tasks are in topological order: downstream comes later.
        for i in root..dag.tasks.len() {
            if cleared[i] {
                for &d in dag.downstream(i) {
                    cleared[d] = true;
                }
            }
        }
        let ids: Vec<&str> = (0..dag.tasks.len())
            .filter(|&i| cleared[i])
            .map(|i| dag.tasks[i].id.as_str())
            .collect();
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            lock_run(&mut tx, run).await?;
            for id in &ids {
                let r = tx
                    .one(
                        "SELECT state, lease_expires_at FROM task_instances WHERE run_id = $1 AND task_id = $2",
                        params![run, *id],
                    )
                    .await?;
                if let Some(r) = r {
                    busy(run, id, &r.text(0), r.opt_int(1), now)?;
                }
                tx.exec(
                    "UPDATE task_instances SET state = 'pending', failures = 0, interruptions = 0,
                         next_try_at = NULL
                     WHERE run_id = $1 AND task_id = $2",
                    params![run, *id],
                )
                .await?;
            }
            recompute(&mut tx, &dag, run).await?;
            reopen(&mut tx, run, now).await?;
            end_run_if_done(&mut tx, run, now).await?;
            tx.commit().await?;
            Ok(ids.len())
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Set `task`'s state by hand (`success` or `failed`), as an attempt
    /// with `reason` as its error. Marked success, the tasks it had held
    /// back (upstream failed, skipped) may run; marked failed, what waits on
    /// it is settled by the trigger rules.
    pub async fn mark_task(
        &self,
        run: i64,
        task: &str,
        success: bool,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let dag = self.run_dag(run).await?;
        let Some(i) = dag.get(task) else {
            return Err(self.invalid(format!("run {run} has no task {task}")));
        };
        let state = if success { "success" } else { "failed" };
        let note = weir_config::scrub(&format!("marked {state} by {by}: {reason}")).into_owned();
        let mut below = vec![false; dag.tasks.len()];
        for j in i..dag.tasks.len() {
            if j == i || dag.upstream(j).iter().any(|&u| below[u]) {
                below[j] = true;
            }
        }
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            lock_run(&mut tx, run).await?;
            let Some(r) = tx
                .one(
                    "SELECT state, tries, lease_expires_at FROM task_instances WHERE run_id = $1 AND task_id = $2",
                    params![run, task],
                )
                .await?
            else {
                return Err(DbError::Other(format!("run {run} has no task {task}")));
            };
            busy(run, task, &r.text(0), r.opt_int(2), now)?;
            let try_number = r.int(1) + 1;
            tx.exec(
                "INSERT INTO attempts (run_id, task_id, try_number, state, started_at, ended_at,
                     error, error_kind, log_path, owner)
                 VALUES ($1, $2, $3, $4, $5, $5, $6, 'manual', '', $7)",
                params![run, task, try_number, state, ms(now), &note, by],
            )
            .await?;
            tx.exec(
                "UPDATE task_instances SET state = $3, tries = $4, lease_owner = NULL,
                     lease_expires_at = NULL, next_try_at = NULL
                 WHERE run_id = $1 AND task_id = $2",
                params![run, task, state, try_number],
            )
            .await?;
            if success {
                for (j, t) in dag.tasks.iter().enumerate() {
                    if below[j] && j != i {
                        tx.exec(
                            "UPDATE task_instances SET state = 'pending'
                             WHERE run_id = $1 AND task_id = $2
                               AND state IN ('upstream_failed', 'skipped')",
                            params![run, &t.id],
                        )
                        .await?;
                    }
                }
            }
            recompute(&mut tx, &dag, run).await?;
            reopen(&mut tx, run, now).await?;
            end_run_if_done(&mut tx, run, now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
        .map_err(|e| self.err(e))
    }
}
