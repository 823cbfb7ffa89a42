//! PostgreSQL connections, for every part of Weir that talks to PostgreSQL:
//! the source, the PostgreSQL warehouse and the metadata store.
//!
//! - [`connect`] bounds the whole connection (TCP and the startup handshake)
//!   by a timeout: the URL's `connect_timeout`, else
//!   [`DEFAULT_CONNECT_TIMEOUT`]. A server that accepts TCP and never answers
//!   is an error, not a hang.
//! - [`PgError`] keeps what the server said (message, detail, hint), its
//!   SQLSTATE and the driver's error as the cause, so callers in other crates
//!   still know what kind of failure it was ([`PgError::is_transient`]).
//!   Nothing in it carries the password: URLs appear redacted.
//!
//! Invariants: knows tokio-postgres and `weir-config`'s secrets, nothing of
//! sources, warehouses or the orchestrator.

use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};
use weir_config::SecretUrl;

/// How long a connection may take when the URL does not say
/// (`?connect_timeout=SECONDS`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive idle time when the URL does not set `keepalives_idle`: a
/// connection whose server vanished (no RST) is noticed in minutes, not the
/// operating system's two hours.
pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(60);

/// Something PostgreSQL (or the way to it) refused.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}{}", code.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
pub struct PgError {
    /// What Weir was doing: `cannot connect to postgres://u:***@h/db`,
    /// `listing tables of schema public`.
    pub context: String,
    /// The server's message with its detail and hint, or the driver's.
    pub message: String,
    /// The SQLSTATE when the server sent one.
    pub code: Option<String>,
    /// The connection did not complete within its timeout.
    pub timed_out: bool,
    #[source]
    pub source: Option<tokio_postgres::Error>,
}

impl PgError {
    /// Wrap a driver error with what Weir was doing.
    pub fn new(context: impl Into<String>, e: tokio_postgres::Error) -> PgError {
        PgError {
            context: context.into(),
            message: message(&e),
            code: e.code().map(|c| c.code().to_owned()),
            timed_out: false,
            source: Some(e),
        }
    }

    /// Whether trying again later can help: a connection that failed or
    /// dropped, a timeout, or a SQLSTATE of that kind (see [`transient_sqlstate`]).
    pub fn is_transient(&self) -> bool {
        if self.timed_out {
            return true;
        }
        match (&self.code, &self.source) {
            (Some(code), _) => transient_sqlstate(code),
            (None, Some(e)) => transient(e),
            (None, None) => false,
        }
    }
}

/// A `map_err` helper: `client.query(..).await.map_err(PgError::with("listing tables"))`.
impl PgError {
    pub fn with(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let context = context.into();
        move |e| PgError::new(context, e)
    }
}

/// SQLSTATEs worth a retry: connection exceptions (class 08), serialization
/// failures and deadlocks (40001, 40P01), too many connections (53300),
/// out of memory or disk (53200, 53100), lock timeouts (55P03), and the
/// server shutting down, restarting or starting up (57P01, 57P02, 57P03).
/// Everything else (syntax, permissions, authentication, constraint
/// violations, missing objects) fails the same way every time.
pub fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001"
                | "40P01"
                | "53000"
                | "53100"
                | "53200"
                | "53300"
                | "55P03"
                | "57P01"
                | "57P02"
                | "57P03"
                | "58000"
                | "58030"
        )
}

/// Whether a driver error is worth a retry: by its SQLSTATE when the server
/// sent one; otherwise a closed connection or an I/O failure (refused,
/// reset, timed out) is, a malformed configuration is not.
pub fn transient(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        return transient_sqlstate(code.code());
    }
    if e.is_closed() {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io_transient(io);
        }
        cur = err.source();
    }
    false
}

/// Whether an I/O error of a connection is worth a retry: refused, reset,
/// timed out, unreachable; not a missing permission or a bad address.
pub fn io_transient(io: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        io.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::TimedOut
            | K::UnexpectedEof
            | K::NotConnected
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable
            | K::Interrupted
    )
}

/// What the server said (message, detail, hint) when it said something;
/// otherwise the driver's error with its causes.
pub fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" hint: {h}"));
            }
            s
        }
        None => weir_config::describe_error(e),
    }
}

/// A URL whose user name or password holds `@ / ? #` unescaped is read by
/// the driver differently from how it looks (it would connect to a host
/// named after part of the password): say so, without echoing it.
fn unescaped_userinfo(raw: &str) -> Option<String> {
    let start = raw.find("://")? + 3;
    let at = raw[start..].rfind('@')? + start;
    let info = &raw[start..at];
    let (c, esc) = [('@', "%40"), ('/', "%2F"), ('?', "%3F"), ('#', "%23")]
        .into_iter()
        .find(|(c, _)| info.contains(*c))?;
    Some(format!(
        "the user name or password in the URL holds an unescaped `{c}`; write it as `{esc}`"
    ))
}

/// Connect to `url`; the connection's driver task runs on the current
/// runtime. `what` names the database for errors (`the source`, `the
/// warehouse`, `the metadata database`).
pub async fn connect(url: &SecretUrl, what: &str) -> Result<Client, PgError> {
    let context = format!("cannot connect to {what} {}", url.redacted());
    if let Some(message) = unescaped_userinfo(url.expose()) {
        return Err(PgError {
            context,
            message,
            code: None,
            timed_out: false,
            source: None,
        });
    }
    let mut config: Config = url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError {
            context: context.clone(),
            // The parser's message names the option, never echoes its value.
            message: format!("the connection URL is not valid: {}", message(&e)),
            code: None,
            timed_out: false,
            source: Some(e),
        })?;
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    config.connect_timeout(timeout);
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
    }
    // The driver's own timeout covers each TCP connect, one host after the
    // other; this one bounds the whole, startup handshake included (a server
    // that accepted TCP may never answer), leaving each host its time.
    let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
    let overall = timeout.saturating_mul(hosts.saturating_add(1));
    let connected = tokio::time::timeout(overall, config.connect(NoTls)).await;
    let (client, connection) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(PgError::new(context, e)),
        Err(_) => {
            return Err(PgError {
                context,
                message: format!(
                    "no answer within {} s (`connect_timeout` is {} s per host; set it in the URL to wait longer)",
                    overall.as_secs_f64(),
                    timeout.as_secs_f64()
                ),
                code: None,
                timed_out: true,
                source: None,
            })
        }
    };
    let what = what.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection to {what} closed: {}", message(&e));
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> SecretUrl {
        SecretUrl::new(s.to_owned())
    }

    /// Regression: a wrong password, a missing database or role all printed
    /// `db error`. The server's message and SQLSTATE are kept (and the
    /// password is not).
    #[tokio::test]
    async fn server_refusals_keep_message_and_sqlstate() {
        let admin = weir_testkit::admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let e = connect(&url(&format!("{base}/no_such_db_for_weir")), "the source")
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("3D000"), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(e.to_string().contains("(SQLSTATE 3D000)"), "{e}");
        assert!(!e.is_transient());
        let no_role = base.replacen("postgres@", "no_such_role_weir:S3cretPw@", 1);
        let e = connect(&url(&format!("{no_role}/postgres")), "the source")
            .await
            .unwrap_err();
        assert!(
            matches!(e.code.as_deref(), Some("28000") | Some("28P01")),
            "{e}"
        );
        assert!(e.to_string().contains("no_such_role_weir"), "{e}");
        assert!(!e.to_string().contains("S3cretPw"), "{e}");
        assert!(!e.is_transient());
    }

    /// Regression: a refused connection was classified by its English text;
    /// now by what it is.
    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = connect(
            &url(&format!("postgres://u:pw@127.0.0.1:{port}/db")),
            "the source",
        )
        .await
        .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.code.is_none());
    }

    /// Regression: against a host that accepts TCP and never answers,
    /// connecting hung forever (`connect_timeout` in the URL was ignored).
    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t0 = std::time::Instant::now();
        let e = connect(
            &url(&format!(
                "postgres://u@127.0.0.1:{port}/db?connect_timeout=1"
            )),
            "the source",
        )
        .await
        .unwrap_err();
        assert!(e.timed_out, "{e}");
        assert!(e.is_transient());
        assert!(e.to_string().contains("no answer within 2 s"), "{e}");
        // The timeout bounds the whole handshake; generous against a busy machine.
        assert!(t0.elapsed() < Duration::from_secs(20));
        drop(listener);
    }

    #[test]
    fn sqlstates_are_sorted_by_what_they_mean() {
        for c in [
            "08006", "08001", "40001", "40P01", "53300", "57P01", "57P03",
        ] {
            assert!(transient_sqlstate(c), "{c}");
        }
        for c in ["28P01", "3D000", "42601", "42P01", "23505", "22P02"] {
            assert!(!transient_sqlstate(c), "{c}");
        }
    }

    #[tokio::test]
    async fn a_malformed_url_is_reported_without_its_password() {
        let e = connect(&url("postgres://u:Zq!p@ss:w/rd#1@host/db"), "the source")
            .await
            .unwrap_err();
        let shown = e.to_string();
        assert!(
            !shown.contains("Zq!p") && !shown.contains("rd#1"),
            "{shown}"
        );
        assert!(
            shown.starts_with("cannot connect to the source postgres://u:***@host/db"),
            "{shown}"
        );
        assert!(
            shown.contains("unescaped `@`; write it as `%40`"),
            "{shown}"
        );
        assert!(!e.is_transient());
    }
}
