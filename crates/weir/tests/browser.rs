//! The web UI in a real browser: Debian's Chromium, driven over WebDriver
//! (chromedriver, installed by `.ci/run`), against a real `weir up` serving
//! the Olist pipeline. Signing in, triggering a run and watching it end live,
//! a failed task's error and log, retrying it, a backfill preview, a viewer
//! without buttons and refused by the API; a screenshot of each page lands
//! in the test's output folder.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{olist_project, text, weir, weir_cmd, weir_env};
use fantoccini::{Client, ClientBuilder, Locator};

/// Kills a child process when the test ends, however it ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromedriver() -> (Reaper, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromedriver cannot start ({e}): `apt-get install chromium chromium-driver` (.ci/run does)")
        });
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Reaper(child), port)
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--window-size=1400,1000"],
        }),
    );
    ClientBuilder::rustls()
        .expect("a TLS setup")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session over WebDriver")
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Wait until the element `css` shows `want` (live updates change the page
/// under the browser: the element is looked up again each time).
async fn wait_text(c: &Client, css: &str, want: &str, limit: Duration) {
    let t = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.text().await.map(|t| t.trim() == want).unwrap_or(false) {
                return;
            }
        }
        if t.elapsed() > limit {
            let src = c.source().await.unwrap_or_default();
            panic!(
                "{css} never showed {want} within {limit:?}; page:\n{}",
                &src[..src.len().min(3000)]
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The text of the element `css`.
async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn type_into(c: &Client, css: &str, keys: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .send_keys(keys)
        .await
        .unwrap();
}

async fn sign_in(c: &Client, base: &str, user: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    type_into(c, "#user", user).await;
    type_into(c, "#password", "a long passphrase").await;
    click(c, "#sign-in").await;
    wait_text(
        c,
        "#who",
        &format!(
            "{user} ({})",
            if user == "olga" { "operator" } else { "viewer" }
        ),
        Duration::from_secs(10),
    )
    .await;
}

/// A raw HTTP request: the status line's code.
fn http_status(addr: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_in_chromium() {
    let marker = tempfile::tempdir().unwrap();
    let gate = marker.path().join("open");
    let (_db, dir) = olist_project(
        "0.01",
        &format!(
            "orchestrate:\n  schedule: \"@daily\"\n  start_date: 2999-01-01\n  tasks:\n    - name: gate\n      shell: test -f {} || {{ echo \"the gate is closed\" >&2; exit 3; }}\n      depends_on: [transform]\n      retries: 0\n",
            gate.display()
        ),
    )
    .await;
    for (name, role) in [("olga", "operator"), ("vik", "viewer")] {
        let out = weir_env(
            &["users", "add", name, "--role", role],
            dir.path(),
            &[("WEIR_PASSWORD", "a long passphrase")],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = weir(&["tokens", "create", "ci", "--user", "vik"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut up = weir_cmd(&["up", "--ui-listen", &addr], dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let _up = Reaper(up);
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let l = lines
            .next()
            .expect("weir up printed its UI address")
            .unwrap();
        if let Some(u) = l.strip_prefix("web UI at ") {
            break u.trim_end_matches('/').to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let (_driver, dport) = chromedriver();
    let c = browser(dport).await;

    // The operator signs in and triggers a run; the page follows it live to its end.
    sign_in(&c, &base, "olga").await;
    shot(&c, "home").await;
    click(&c, "#trigger").await;
    wait_text(&c, "#run-state", "failed", Duration::from_secs(180)).await;
    shot(&c, "run-failed").await;
    let run_url = c.current_url().await.unwrap().to_string();
    assert!(run_url.contains("/runs/"), "{run_url}");
    let src = c.source().await.unwrap();
    assert!(src.contains("class=\"graph\"") && src.contains("class=\"timeline\""));

    // The failed task: its error and its log.
    click(&c, "tr[data-task='gate'] td a").await;
    wait_text(&c, "#attempt-state", "failed", Duration::from_secs(10)).await;
    let log = text_of(&c, "#log").await;
    assert!(log.contains("the gate is closed"), "{log}");
    assert!(text_of(&c, "#error").await.contains("3"));
    shot(&c, "attempt-failed").await;

    // An extract's page shows what it handed on: its lake run and snapshot.
    c.goto(&format!("{run_url}/tasks/extract.olist_orders/0"))
        .await
        .unwrap();
    let output = text_of(&c, "#output").await;
    assert!(
        output.contains("lake_run") && output.contains("snapshot"),
        "{output}"
    );
    // … and the files of that lake run, read from its manifest.
    let files = text_of(&c, "#files").await;
    assert!(files.contains("olist_orders"), "{files}");
    assert!(c.find(Locator::Css("#snapshot")).await.is_ok());
    shot(&c, "attempt-extract").await;
    // A dbt node's attempt shows the SQL its build compiled: refs resolved.
    c.goto(&format!(
        "{run_url}/tasks/model.olist.fct_orders_by_state/0"
    ))
    .await
    .unwrap();
    let compiled = text_of(&c, "#compiled").await;
    assert!(
        compiled.contains("int_orders_by_state") && !compiled.contains("ref("),
        "{compiled}"
    );

    // Fix the cause and retry: the run succeeds, seen live.
    std::fs::write(&gate, "").unwrap();
    c.goto(&run_url).await.unwrap();
    click(&c, "#retry").await;
    wait_text(&c, "#run-state", "success", Duration::from_secs(120)).await;
    shot(&c, "run-retried").await;

    // Models: every node with its latest state; a model's page has its
    // columns with their tests' results, its SQL and compiled SQL, and its
    // lineage from the source tables on.
    c.goto(&format!("{base}/models")).await.unwrap();
    let models = text_of(&c, "#models").await;
    assert!(
        models.contains("fct_orders_by_state") && models.contains("success"),
        "{models}"
    );
    shot(&c, "models").await;
    c.find(Locator::LinkText("fct_orders_by_state"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#model-state", "success", Duration::from_secs(10)).await;
    let columns = text_of(&c, "#columns").await;
    assert!(columns.contains("unique: success"), "{columns}");
    let lineage = c
        .find(Locator::Css("#lineage"))
        .await
        .unwrap()
        .html(true)
        .await
        .unwrap();
    for want in [
        "stg_orders",
        "int_orders_by_state",
        "olist_orders",
        "s-success",
    ] {
        assert!(lineage.contains(want), "lineage lacks {want}: {lineage}");
    }
    assert!(c.find(Locator::Css("#compiled")).await.is_ok());
    shot(&c, "model").await;

    // Sources: each table's last extract, its lake runs, the loads that read them.
    c.goto(&format!("{base}/sources")).await.unwrap();
    let sources = text_of(&c, "#sources").await;
    assert!(sources.contains("olist_orders"), "{sources}");
    let loaded = text_of(&c, "#table-olist_orders .lake-runs").await;
    assert!(loaded.contains("rows"), "{loaded}");
    shot(&c, "sources").await;

    // A run with parameters: one table, full refresh, one model's upstream.
    c.goto(&format!("{base}/")).await.unwrap();
    click(&c, "#params summary").await;
    click(&c, "#full_refresh").await;
    type_into(&c, "#tables", "olist_orders").await;
    type_into(&c, "#select", "+fct_orders_by_state").await;
    shot(&c, "trigger-params").await;
    click(&c, "#trigger").await;
    wait_text(&c, "#run-state", "success", Duration::from_secs(120)).await;
    wait_text(
        &c,
        "#run-params",
        "full refresh, tables olist_orders, select +fct_orders_by_state",
        Duration::from_secs(5),
    )
    .await;
    shot(&c, "run-with-params").await;

    // A backfill preview lists the intervals it would create.
    c.goto(&format!("{base}/backfill")).await.unwrap();
    type_into(&c, "#from", "2024-01-01").await;
    type_into(&c, "#to", "2024-01-04").await;
    click(&c, "#preview").await;
    wait_text(
        &c,
        "#plan-count",
        "3 interval(s), each a run:",
        Duration::from_secs(10),
    )
    .await;
    assert!(c.find(Locator::Css("#create-backfill")).await.is_ok());
    shot(&c, "backfill-preview").await;
    c.goto(&format!("{base}/audit")).await.unwrap();
    let audit = text_of(&c, "#audit").await;
    assert!(
        audit.contains("trigger") && audit.contains("retry"),
        "{audit}"
    );
    shot(&c, "audit").await;

    // Sign out; a viewer sees no action, and the API refuses them one.
    click(&c, "form.who button").await;
    sign_in(&c, &base, "vik").await;
    assert!(
        c.find(Locator::Css("#trigger")).await.is_err(),
        "a viewer has no Trigger button"
    );
    c.goto(&run_url).await.unwrap();
    assert!(c.find(Locator::Css("#retry")).await.is_err());
    shot(&c, "viewer-run").await;
    let path = base.split_once(&addr).unwrap().1;
    let post = |t: &str| {
        format!("POST {path}/api/v1/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(http_status(&addr, &post(&token)), 403);
    assert_eq!(http_status(&addr, &post("weir_wrong")), 401);
    c.close().await.unwrap();
}
