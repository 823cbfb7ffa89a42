//! Test helpers shared by every crate's tests (dev-only, never a runtime dependency).
//!
//! [`TestDb::new`] creates a throw-away database on the real PostgreSQL server
//! named by `WEIR_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and drops it when the guard goes out of scope, so tests run in parallel
//! without seeing each other's data. `.ci/run` makes sure a server answers.
//! [`start_bqemulator`] starts a local BigQuery API for the BigQuery tests.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL tests connect with to create their databases.
pub fn admin_url() -> String {
    std::env::var("WEIR_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    admin: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// Create a fresh empty database. Panics with a clear message when no server answers:
    /// tests need a real PostgreSQL (see `.ci/run`).
    pub async fn new() -> TestDb {
        let admin = admin_url();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "weir_test_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&admin).await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        TestDb { name, admin }
    }

    /// A URL for this database, with the admin URL's credentials.
    pub fn url(&self) -> String {
        let (base, query) = match self.admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (self.admin.as_str(), String::new()),
        };
        let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
        format!("{prefix}/{}{query}", self.name)
    }

    /// A new client connected to this database (its connection task is spawned).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| {
        panic!("tests need a PostgreSQL server at WEIR_TEST_PG_URL (default {DEFAULT_ADMIN_URL}); `bash .ci/run` starts one: {e}")
    });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside a test's runtime; use a thread with its own to stay clear of it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A temporary folder for a test's project, lake and outputs.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("weir-test-")
        .tempdir()
        .expect("create temp dir")
}

/// A temporary project folder holding `weir_yml` as its `weir.yml`.
pub fn project(weir_yml: &str) -> tempfile::TempDir {
    let dir = temp_dir();
    std::fs::write(dir.path().join("weir.yml"), weir_yml).expect("write weir.yml");
    dir
}

/// Compare `got` with the golden file `<crate_dir>/tests/golden/<name>`;
/// `UPDATE_EXPECT=1` rewrites the file instead (review the diff before committing).
pub fn check_golden(crate_dir: &str, name: &str, got: &str) {
    let path = std::path::Path::new(crate_dir)
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the golden folder");
        }
        std::fs::write(&path, got).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "golden {} differs (UPDATE_EXPECT=1 rewrites it after review)",
        path.display()
    );
}

/// A running bqemulator (BigQuery's REST API, from PyPI); killed on drop.
pub struct BqEmulator {
    child: Child,
    pub port: u16,
}

impl Drop for BqEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the emulator with `gcs_root` as its bucket folder; wait until it answers.
pub fn start_bqemulator(gcs_root: &Path) -> BqEmulator {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/start-bqemulator.py");
    let (port, grpc) = (free_port(), free_port());
    let log = std::fs::File::create(gcs_root.join("emulator.log")).unwrap();
    let child = Command::new("python3")
        .arg(&script)
        .args([
            "start",
            "--rest-port",
            &port.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ])
        .args(["--project", "test"])
        .env("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")
        .env("BQEMU_GCS_LOCAL_ROOT", gcs_root)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("python3 must be installed (scripts/test installs bqemulator)");
    let mut emu = BqEmulator { child, port };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return emu;
        }
        if let Ok(Some(status)) = emu.child.try_wait() {
            let log = std::fs::read_to_string(gcs_root.join("emulator.log")).unwrap_or_default();
            panic!("bqemulator exited with {status}:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "bqemulator did not start in 90 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
