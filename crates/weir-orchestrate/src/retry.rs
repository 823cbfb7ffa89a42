//! Retries: which errors are worth another try, and how long to wait first.

use std::hash::{Hash, Hasher};
use std::time::Duration;

/// What went wrong with a task, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
    /// The SQLSTATE of a database error (`42P01`, `57P01`), when the
    /// database sent one: the UI and `weir logs` show it beside the message.
    pub code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A dropped connection, a serialization failure, HTTP 429/5xx: retried.
    Transient,
    /// Configuration, SQL, authentication, a command that failed: not retried.
    Permanent,
    /// The task ran past its `timeout` and was cancelled: retried.
    Timeout,
    /// The run was stopped (Ctrl-C, shutdown): the task goes back to pending.
    Cancelled,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Timeout)
    }
}

impl TaskError {
    pub fn transient(message: impl Into<String>) -> Self {
        TaskError {
            kind: ErrorKind::Transient,
            message: message.into(),
            code: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        TaskError {
            kind: ErrorKind::Permanent,
            message: message.into(),
            code: None,
        }
    }

    /// Classify any error by what it is, walking its causes: a Weir error
    /// that knows (`WarehouseError`, `PgError`), a PostgreSQL SQLSTATE, an I/O
    /// error kind. Never by the text of a message: a server with another
    /// `lc_messages` words them differently. What is none of these is
    /// permanent.
    pub fn classify(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut kind = ErrorKind::Permanent;
        let mut code = None;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            code = code.or_else(|| sqlstate_of(err));
            if let Some(t) = transient_by_type(err) {
                kind = if t {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                };
                break;
            }
            cur = err.source();
        }
        // A cause below the one that decided may still carry the SQLSTATE.
        while let Some(err) = cur {
            code = code.or_else(|| sqlstate_of(err));
            cur = err.source();
        }
        TaskError {
            kind,
            message: weir_config::describe_error(e),
            code,
        }
    }

    /// An error known only by its text: permanent (what could be retried
    /// is classified by its type, see [`TaskError::classify`]).
    pub fn from_message(message: impl Into<String>) -> Self {
        TaskError::permanent(message)
    }
}

/// The SQLSTATE `err` carries, if it is a database error that has one.
fn sqlstate_of(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let shared = err
        .downcast_ref::<std::sync::Arc<weir_warehouse::WarehouseError>>()
        .map(|a| a.as_ref());
    if let Some(w) = shared.or_else(|| err.downcast_ref::<weir_warehouse::WarehouseError>()) {
        return w.sqlstate().map(str::to_owned);
    }
    if let Some(pg) = err.downcast_ref::<weir_pg::PgError>() {
        return pg.code.clone();
    }
    err.downcast_ref::<tokio_postgres::Error>()
        .and_then(|pg| pg.code())
        .map(|c| c.code().to_owned())
}

/// `Some(transient)` when `err` is of a type that knows whether it is.
fn transient_by_type(err: &(dyn std::error::Error + 'static)) -> Option<bool> {
    // Shared (`Arc`) warehouse errors, as transform results keep them.
    let shared = err
        .downcast_ref::<std::sync::Arc<weir_warehouse::WarehouseError>>()
        .map(|a| a.as_ref());
    if let Some(w) = shared.or_else(|| err.downcast_ref::<weir_warehouse::WarehouseError>()) {
        // Errors of the lake beneath a load say so through their cause.
        if !matches!(w, weir_warehouse::WarehouseError::Lake(_)) {
            return Some(w.is_transient());
        }
    }
    if let Some(l) = err.downcast_ref::<weir_lake::LakeError>() {
        return Some(l.is_transient());
    }
    if let Some(pg) = err.downcast_ref::<weir_pg::PgError>() {
        return Some(pg.is_transient());
    }
    if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
        return Some(weir_pg::transient(pg));
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        return Some(weir_pg::io_transient(io));
    }
    None
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// How often and how patiently a task is retried.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Tries after the first.
    pub retries: u32,
    /// The wait before the first retry; doubled each time after.
    pub delay: Duration,
    /// The wait never grows past this.
    pub max_delay: Duration,
    /// Cancel an attempt that runs longer than this.
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
            timeout: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry):
    /// `delay × 2^(retry-1)`, capped at `max_delay`, then jittered to between
    /// half and all of it so tasks that failed together do not retry together.
    /// `key` makes the jitter repeatable (run, task and try).
    pub fn backoff(&self, retry: u32, key: impl Hash) -> Duration {
        let exp = retry.saturating_sub(1).min(63);
        let factor = 1u64.checked_shl(exp).unwrap_or(u64::MAX);
        let base_ms = u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX);
        let cap_ms = u64::try_from(self.max_delay.as_millis()).unwrap_or(u64::MAX);
        let full = base_ms.saturating_mul(factor).min(cap_ms);
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let unit = (h.finish() % 1_000_001) as f64 / 1_000_000.0;
        let jittered = full / 2 + ((full - full / 2) as f64 * unit) as u64;
        Duration::from_millis(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let p = RetryPolicy {
            retries: 10,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: None,
        };
        for (retry, full) in [
            (1u32, 1000u64),
            (2, 2000),
            (3, 4000),
            (6, 32000),
            (7, 60000),
            (20, 60000),
        ] {
            for key in 0..50 {
                let d = p.backoff(retry, ("run", "task", key)).as_millis() as u64;
                assert!(
                    d >= full / 2 && d <= full,
                    "retry {retry}: {d} ms outside {}..={full}",
                    full / 2
                );
            }
        }
        // Repeatable for the same key, spread across keys.
        assert_eq!(p.backoff(3, 7), p.backoff(3, 7));
        let spread: std::collections::BTreeSet<_> = (0..20).map(|k| p.backoff(3, k)).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn thousands_of_retries_never_overflow() {
        let p = RetryPolicy {
            retries: u32::MAX,
            delay: Duration::from_secs(u64::MAX / 1000),
            max_delay: Duration::MAX,
            timeout: None,
        };
        let mut last = Duration::ZERO;
        for retry in [1, 2, 63, 64, 65, 1000, 5000, u32::MAX] {
            let d = p.backoff(retry, retry);
            assert!(d >= Duration::from_millis(u64::MAX / 2));
            last = last.max(d);
        }
        let small = RetryPolicy {
            delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(5),
            ..p
        };
        for retry in 0..10_000 {
            assert!(small.backoff(retry, retry) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn only_transient_errors_are_retried() {
        // Text is never enough, whatever it says.
        for m in [
            "error: connection reset by peer",
            "db error: ERROR: syntax error at or near \"SELEC\"",
            "HTTP status 503 Service Unavailable",
        ] {
            assert_eq!(TaskError::from_message(m).kind, ErrorKind::Permanent, "{m}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer went away");
        assert_eq!(TaskError::classify(&io).kind, ErrorKind::Transient);
        // A Weir error with a cause is classified by the cause's kind.
        let locked = weir_warehouse::WarehouseError::Locked {
            target: "w.duckdb".into(),
            holder: "PID 7 (weir)".into(),
        };
        assert_eq!(TaskError::classify(&locked).kind, ErrorKind::Transient);
        let sql = weir_warehouse::WarehouseError::Sql {
            sql: "select".into(),
            message: "konnte Zugriff nicht serialisieren".into(),
            code: Some("40001".into()),
            transient: weir_pg::transient_sqlstate("40001"),
        };
        assert_eq!(TaskError::classify(&sql).kind, ErrorKind::Transient);
        let bq = weir_warehouse::WarehouseError::BigQuery {
            message: "quota".into(),
            status: Some(429),
            transient: true,
        };
        assert_eq!(TaskError::classify(&bq).kind, ErrorKind::Transient);
        let bad = weir_warehouse::WarehouseError::BigQuery {
            message: "no such table".into(),
            status: Some(404),
            transient: false,
        };
        assert_eq!(TaskError::classify(&bad).kind, ErrorKind::Permanent);
        assert!(ErrorKind::Timeout.retryable());
        assert!(!ErrorKind::Cancelled.retryable());
    }
}
