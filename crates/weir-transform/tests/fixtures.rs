//! Data-driven fixture projects, run on a real DuckDB file and a real
//! PostgreSQL database: each folder under `tests/fixtures/` is a dbt project
//! with a `steps` file; every step's output goes into one transcript, compared
//! with `tests/golden/fixtures/<name>.txt` (`UPDATE_EXPECT=1` rewrites it
//! after review). Both warehouses must produce the same transcript.
//!
//! Steps, one per line (`#` starts a comment):
//! - `build|run|test|seed|compile [-s SEL…] [--exclude SEL…] [--full-refresh] [--vars YAML]`:
//!   load the project and run the command; prints each node's status (or the
//!   project's problems, if it does not load)
//! - `ls [-s SEL…] [--exclude SEL…]`: the selected nodes
//! - `sql: STATEMENT`: run it on the warehouse
//! - `query: SELECT`: its rows, `|`-separated
//! - `compiled NODE…`: the compiled SQL of those nodes (by file stem)
//! - `manifest`: each node's type, relation, materialisation, tags and parents
//! - `run_results`: `target/run_results.json`'s results

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use weir_config::SecretUrl;
use weir_testkit::{temp_dir, TestDb};
use weir_transform::{
    execute, load_project, parse_yaml, select, Command, ProjectOptions, ResourceType, RunOptions,
    Selector, Status, Target,
};
use weir_warehouse::{DuckDb, Postgres, Warehouse};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("steps").is_file())
        .collect();
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A step's command-line arguments.
#[derive(Default)]
struct Args {
    select: Vec<String>,
    exclude: Vec<String>,
    full_refresh: bool,
    vars: Map<String, Value>,
}

fn parse_args(rest: &str) -> Args {
    let mut a = Args::default();
    let mut words = rest.split_whitespace().peekable();
    let mut list: Option<&mut Vec<String>> = None;
    while let Some(w) = words.next() {
        match w {
            "-s" | "--select" => list = Some(&mut a.select),
            "--exclude" => list = Some(&mut a.exclude),
            "--full-refresh" => {
                a.full_refresh = true;
                list = None;
            }
            "--vars" => {
                // The rest of the line is the YAML.
                let yaml: Vec<&str> = words.by_ref().collect();
                let v = parse_yaml(Path::new("--vars"), &yaml.join(" ")).unwrap();
                a.vars = v.as_object().cloned().unwrap_or_default();
                list = None;
            }
            other => list
                .as_deref_mut()
                .unwrap_or_else(|| panic!("unexpected step argument {other:?}"))
                .push(other.to_owned()),
        }
    }
    a
}

fn options(kind: &str, args: &Args) -> ProjectOptions {
    ProjectOptions {
        target: Target {
            name: "test".into(),
            kind: kind.into(),
            schema: "analytics".into(),
            database: String::new(),
            threads: 4,
        },
        vars: args.vars.clone(),
        full_refresh: args.full_refresh,
    }
}

fn text(a: &dyn arrow::array::Array, i: usize) -> String {
    if a.is_null(i) {
        return "NULL".into();
    }
    arrow::util::display::ArrayFormatter::try_new(a, &Default::default())
        .unwrap()
        .value(i)
        .to_string()
}

/// Node file paths, temp folders and warehouse-specific error texts out.
fn normalise(s: &str, dir: &Path) -> String {
    s.replace(&dir.display().to_string(), "<dir>")
}

async fn transcript(fixture: &Path, kind: &str, wh: Arc<dyn Warehouse>) -> String {
    let tmp = temp_dir();
    let dir = tmp.path().join("project");
    copy_dir(fixture, &dir);
    let steps = std::fs::read_to_string(dir.join("steps")).unwrap();
    let mut out = String::new();
    for line in steps.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push_str(&format!("## {line}\n"));
        let (verb, rest) = line.split_once([' ', ':']).unwrap_or((line, ""));
        let rest = rest.trim();
        match verb {
            // A failing statement is part of the transcript (its first line: the
            // rest is the warehouse's own wording).
            "sql" => {
                if let Err(e) = wh.execute(rest).await {
                    out.push_str(&format!(
                        "error: {}\n",
                        e.to_string().lines().next().unwrap_or("")
                    ));
                }
            }
            "query" => {
                let r = match wh.query(rest).await {
                    Ok(r) => r,
                    Err(e) => {
                        out.push_str(&format!(
                            "error: {}\n",
                            e.to_string().lines().next().unwrap_or("")
                        ));
                        continue;
                    }
                };
                for b in &r.batches {
                    for i in 0..b.num_rows() {
                        let cells: Vec<String> =
                            b.columns().iter().map(|c| text(c.as_ref(), i)).collect();
                        out.push_str(&cells.join(" | "));
                        out.push('\n');
                    }
                }
            }
            "compiled" => {
                for name in rest.split_whitespace() {
                    let found = walk(&dir.join("target/compiled"))
                        .into_iter()
                        .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(name))
                        .unwrap_or_else(|| panic!("{}: no compiled {name}", fixture.display()));
                    out.push_str(&format!("-- {name}\n"));
                    out.push_str(std::fs::read_to_string(found).unwrap().trim_end());
                    out.push('\n');
                }
            }
            "manifest" => {
                let m: Value = serde_json::from_str(
                    &std::fs::read_to_string(dir.join("target/manifest.json"))
                        .unwrap_or_else(|_| "{}".into()),
                )
                .unwrap();
                for section in ["nodes", "sources"] {
                    for (id, n) in m[section].as_object().into_iter().flatten() {
                        out.push_str(&format!(
                            "{id}: {} {}.{} materialized={} tags={} depends_on={}\n",
                            n["resource_type"].as_str().unwrap_or(""),
                            n["schema"].as_str().unwrap_or(""),
                            n["alias"]
                                .as_str()
                                .or(n["identifier"].as_str())
                                .unwrap_or(""),
                            n["config"]["materialized"].as_str().unwrap_or("-"),
                            n["tags"],
                            n["depends_on"]["nodes"],
                        ));
                    }
                }
            }
            "run_results" => {
                let r: Value = serde_json::from_str(
                    &std::fs::read_to_string(dir.join("target/run_results.json"))
                        .unwrap_or_else(|_| "{}".into()),
                )
                .unwrap();
                let mut rows: Vec<String> = r["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        format!(
                            "{} {} failures={} relation={}",
                            x["unique_id"].as_str().unwrap_or(""),
                            x["status"].as_str().unwrap_or(""),
                            x["failures"],
                            x["relation_name"].as_str().unwrap_or(""),
                        )
                    })
                    .collect();
                rows.sort();
                for row in rows {
                    out.push_str(&row);
                    out.push('\n');
                }
            }
            "build" | "run" | "test" | "seed" | "compile" | "ls" => {
                let args = parse_args(rest);
                let project = match load_project(&dir, &options(kind, &args)) {
                    Ok(p) => p,
                    Err(problems) => {
                        out.push_str(&normalise(&problems.to_string(), &dir));
                        continue;
                    }
                };
                let selector = Selector {
                    select: args.select.clone(),
                    exclude: args.exclude.clone(),
                };
                if verb == "ls" {
                    let types = [ResourceType::Seed, ResourceType::Model, ResourceType::Test];
                    match select(&project, &selector, &types) {
                        Ok(ids) => {
                            for id in ids {
                                out.push_str(&format!("{id}\n"));
                            }
                        }
                        Err(e) => out.push_str(&format!("{e}\n")),
                    }
                    continue;
                }
                let command = match verb {
                    "build" => Command::Build,
                    "run" => Command::Run,
                    "test" => Command::Test,
                    "seed" => Command::Seed,
                    _ => Command::Compile,
                };
                let opts = RunOptions {
                    command,
                    selector,
                    threads: 4,
                    fail_fast: false,
                };
                let summary =
                    match execute(Arc::new(project), wh.clone(), &opts, &|_, _, _| {}).await {
                        Ok(s) => s,
                        Err(e) => {
                            out.push_str(&format!("{}\n", normalise(&e.to_string(), &dir)));
                            continue;
                        }
                    };
                let mut results = summary.results.clone();
                results.sort_by(|a, b| a.unique_id.cmp(&b.unique_id));
                for r in results {
                    // Errors name the node and its file; the warehouse's own
                    // wording differs between warehouses and is left out.
                    let message = match r.status {
                        Status::Error => {
                            let prefix = r.message.split("): ").next().unwrap_or("");
                            format!("{prefix})")
                        }
                        _ => r.message.clone(),
                    };
                    out.push_str(&format!(
                        "{}: {}{}{}\n",
                        r.unique_id,
                        r.status.as_str(),
                        r.failures.map(|f| format!(" ({f})")).unwrap_or_default(),
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!(" — {message}")
                        },
                    ));
                }
            }
            other => panic!("{}: unknown step {other:?}", fixture.display()),
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

fn check(fixture: &Path, kind: &str, got: &str) {
    let name = fixture.file_name().unwrap().to_string_lossy();
    // Kept for a look when the comparison fails.
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fixture-{name}-{kind}.txt")),
        got,
    );
    weir_testkit::check_golden(
        env!("CARGO_MANIFEST_DIR"),
        &format!("fixtures/{name}.txt"),
        got,
    );
}

// `run_query`, `statement` and `adapter.*` block on the warehouse from inside a
// render: a multi-threaded runtime, as the CLI has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_projects_on_duckdb() {
    for f in fixtures() {
        let dir = temp_dir();
        let wh: Arc<dyn Warehouse> = Arc::new(DuckDb::open(&dir.path().join("w.duckdb")).unwrap());
        let got = transcript(&f, "duckdb", wh).await;
        check(&f, "duckdb", &got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_projects_on_postgres() {
    for f in fixtures() {
        let db = TestDb::new().await;
        let wh: Arc<dyn Warehouse> =
            Arc::new(Postgres::connect(&SecretUrl::new(db.url())).await.unwrap());
        let got = transcript(&f, "postgres", wh).await;
        check(&f, "postgres", &got);
    }
}
