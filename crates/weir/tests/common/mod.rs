//! The one harness every end-to-end test of the `weir` binary uses: run the
//! real binary in a test's own folder (never with the caller's
//! `WEIR_SOURCE_URL`), read what it printed, and set up Olist projects over a
//! throw-away database.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weir_testkit::{temp_dir, TestDb};

/// `weir ARGS` in `dir`, not yet started.
pub fn weir_cmd(args: &[&str], dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(args).current_dir(dir).env_remove("WEIR_SOURCE_URL");
    c
}

/// Run `weir ARGS` in `dir` to its end.
pub fn weir(args: &[&str], dir: &Path) -> Output {
    weir_cmd(args, dir).output().expect("run weir")
}

/// Run `weir ARGS` in `dir` with extra environment variables.
pub fn weir_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = weir_cmd(args, dir);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run weir")
}

/// Everything a run printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Copy a folder's files into `to`, leaving out dbt's `target/` and `logs/`.
pub fn copy_dir(from: &Path, to: &Path) {
    for f in files_under(from) {
        let rel = f.strip_prefix(from).unwrap();
        if rel.starts_with("target") || rel.starts_with("logs") {
            continue;
        }
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// The example Olist dbt project.
pub fn olist_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/olist/transform")
}

/// Copy the Olist dbt project (without its build output) into `to`.
pub fn copy_olist_models(to: &Path) {
    copy_dir(&olist_models(), to)
}

/// A project over a freshly generated Olist source at `scale`, with `extra`
/// appended to its weir.yml.
pub async fn olist_project(scale: &str, extra: &str) -> (TestDb, tempfile::TempDir) {
    let db = TestDb::new().await;
    let dir = temp_dir();
    let out = weir(
        &["source", "generate", "--url", &db.url(), "--scale", scale],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::create_dir_all(dir.path().join("transform")).unwrap();
    copy_olist_models(&dir.path().join("transform"));
    std::fs::write(
        dir.path().join("weir.yml"),
        format!(
            "name: olist\nsource:\n  postgres:\n    url: {}\n  tables: [\"*\"]\n  jobs: 2\nlake:\n  url: file://./lake\nwarehouse:\n  schema: raw\ntransform:\n  project: ./transform\n  threads: 2\n{extra}",
            db.url()
        ),
    )
    .unwrap();
    (db, dir)
}

/// `weir query` as CSV; the query must succeed.
pub fn query_csv(dir: &Path, sql: &str) -> String {
    let out = weir(&["query", "--format", "csv", sql], dir);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
