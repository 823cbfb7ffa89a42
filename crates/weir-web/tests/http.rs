//! The web UI over HTTP against a real SQLite store and a real PostgreSQL
//! source: sign-in, roles, CSRF, sessions, every page and API route, actions
//! and the audit log, log paging, live events, and that no secret of the
//! project appears in any answer.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};
use tokio_util::sync::CancellationToken;
use weir_orchestrate::store::Role;
use weir_orchestrate::worker::{Quiet, Scope};
use weir_pipeline::{access, runs, Workspace};
use weir_testkit::TestDb;

const SECRET: &str = "s3cret-Pw-that-must-not-show";

struct Site {
    url: String,
    client: Client,
    _ws: Workspace,
    store: Arc<weir_orchestrate::store::Store>,
    _dir: tempfile::TempDir,
    _db: TestDb,
    stop: CancellationToken,
    /// Every body the tests read, scanned for secrets at the end.
    bodies: std::sync::Mutex<Vec<String>>,
}

impl Site {
    async fn get(&self, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let mut r = self.client.get(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        self.bodies.lock().unwrap().push(body.clone());
        (status, body)
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    async fn api(&self, method: &str, path: &str, token: &str) -> (StatusCode, serde_json::Value) {
        self.api_body(method, path, token, "").await
    }

    async fn api_body(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let r = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        self.bodies.lock().unwrap().push(text.clone());
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Sign in; the session cookie and the page's CSRF token.
    async fn sign_in(&self, user: &str, password: &str) -> Result<(String, String), StatusCode> {
        let resp = self
            .client
            .get(format!("{}/login", self.url))
            .send()
            .await
            .unwrap();
        let login = set_cookie(&resp, "weir_login").unwrap();
        let page = resp.text().await.unwrap();
        let token = hidden(&page, "csrf");
        let resp = self
            .post(
                "/login",
                Some(&format!("weir_login={login}")),
                &[("user", user), ("password", password), ("csrf", &token)],
            )
            .await;
        if resp.status() != StatusCode::SEE_OTHER {
            return Err(resp.status());
        }
        let session = format!(
            "weir_session={}",
            set_cookie(&resp, "weir_session").unwrap()
        );
        let (_, home) = self.get("/", Some(&session)).await;
        Ok((session, hidden(&home, "csrf")))
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|r| r.split(';').next().unwrap().to_owned())
        })
}

/// The value of the first hidden input called `name`.
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// A project whose pipeline has a task that succeeds with a long log and one
/// that fails on the source with a SQLSTATE; run once before the UI starts.
async fn site() -> Site {
    let db = TestDb::new().await;
    let url = db.url();
    let with_pw = url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{SECRET}@"),
        1,
    );
    assert_ne!(
        with_pw, url,
        "the test's PostgreSQL URL is postgres://postgres@…"
    );
    let yml = format!(
        "name: webtest\nsource:\n  postgres:\n    url: {with_pw}\n  tables: []\norchestrate:\n  schedule: \"@daily\"\n  defaults: {{ retries: 0 }}\n  tasks:\n    - name: chatty\n      shell: seq 1 300000; echo \"connecting to {with_pw}\"\n    - name: broken\n      sql: SELECT * FROM no_such_table\n      on: source\n      depends_on: [chatty]\n"
    );
    let dir = weir_testkit::project(&yml);
    let ws = Workspace::open(dir.path(), None).unwrap();
    let p = runs::prepare(&ws).await.unwrap();
    let id = runs::create_manual(&p.store, &p.pipeline.dag, &ws.config)
        .await
        .unwrap();
    let worker = ws.worker(
        &p.store,
        p.pipeline.runner(p.store.clone()),
        2,
        Arc::new(Quiet),
    );
    worker
        .work(Scope::Run(id), CancellationToken::new())
        .await
        .unwrap();
    drop(p.lock);
    let store = p.store.clone();
    for (name, role) in [
        ("vera", Role::Viewer),
        ("otto", Role::Operator),
        ("ada", Role::Admin),
    ] {
        access::add_user(&store, name, role, "correct horse battery")
            .await
            .unwrap();
    }
    let mut config = ws.project.ui.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = weir_web::Server::bind(ws.clone(), p.pipeline.clone(), config)
        .await
        .unwrap();
    let url = server.url.trim_end_matches('/').to_owned();
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone()));
    Site {
        url,
        client: Client::builder().redirect(Policy::none()).build().unwrap(),
        _ws: ws,
        store,
        _dir: dir,
        _db: db,
        stop,
        bodies: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_api_roles_csrf_sessions_and_no_secrets() {
    let s = site().await;

    // Signed out: pages send to the login page, the API answers 401 in JSON.
    let r = s
        .client
        .get(format!("{}/runs/1", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login");
    let (st, j) = s.api("GET", "/api/v1/runs", "weir_not_a_token").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(j["error"].is_string());
    let (st, spec) = s.get("/api/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(spec.contains("\"openapi\""));

    // A viewer sees everything and no action.
    let (viewer, viewer_csrf) = s.sign_in("vera", "correct horse battery").await.unwrap();
    let (st, home) = s.get("/", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        home.contains("webtest") && home.contains("Failures in the last day"),
        "{home}"
    );
    assert!(
        home.contains("42P01"),
        "the failure's SQLSTATE is on the home page: {home}"
    );
    assert!(
        !home.contains("id=\"trigger\""),
        "a viewer has no Trigger button"
    );
    let (st, run) = s.get("/runs/1", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK);
    for want in [
        "id=\"grid\"",
        "<svg class=\"graph\"",
        "<svg class=\"timeline\"",
        "chatty",
        "broken",
    ] {
        assert!(run.contains(want), "run page lacks {want}");
    }
    assert!(!run.contains("id=\"retry\""));
    let r = s
        .post("/runs", Some(&viewer), &[("csrf", &viewer_csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The failed attempt: its error, kind and SQLSTATE.
    let (st, att) = s.get("/runs/1/tasks/broken/0", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK, "{att}");
    assert!(
        att.contains("SQLSTATE 42P01")
            && att.contains("no_such_table")
            && att.contains("permanent"),
        "{att}"
    );

    // The long log opens by pages: the last page at once, the first from offset 0.
    let (st, _) = s.get("/runs/1/tasks/chatty/0", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK);
    let t = Instant::now();
    let (st, last) = s.get("/runs/1/tasks/chatty/1", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(last.contains("300000\n"), "the last page holds the end");
    assert!(!last.contains("\n1\n2\n3\n"), "only a page is sent");
    let (_, first) = s
        .get("/runs/1/tasks/chatty/1?offset=0", Some(&viewer))
        .await;
    assert!(first.contains("1\n2\n3\n"));
    eprintln!("log pages in {:?}", t.elapsed());

    // Runs list, filter, bad filter; audit; backfill preview.
    let (st, list) = s.get("/runs?state=failed", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(list.contains("/runs/1\""));
    let (st, _) = s.get("/runs?state=nonsense", Some(&viewer)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, preview) = s
        .get("/backfill?from=2024-01-01&to=2024-01-04", Some(&viewer))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(preview.contains("3 interval(s)"), "{preview}");
    assert!(
        !preview.contains("create-backfill"),
        "a viewer cannot queue it"
    );

    // An operator acts, with the session's CSRF token and only with it.
    let (op, op_csrf) = s.sign_in("otto", "correct horse battery").await.unwrap();
    let r = s.post("/runs", Some(&op), &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let r = s.post("/runs", Some(&op), &[("csrf", &viewer_csrf)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another session's token");
    let r = s.post("/runs", Some(&op), &[("csrf", &op_csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/runs/2");
    let r = s
        .post("/runs/2/cancel", Some(&op), &[("csrf", &op_csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        s.store.run(2).await.unwrap().unwrap().state.as_str(),
        "failed"
    );
    let r = s
        .post(
            "/runs/1/tasks/broken/mark",
            Some(&op),
            &[
                ("csrf", &op_csrf),
                ("state", "success"),
                ("reason", "table dropped on purpose"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let tasks = s.store.tasks(1).await.unwrap();
    let state = |id: &str| {
        tasks
            .iter()
            .find(|t| t.task_id == id)
            .unwrap()
            .state
            .as_str()
    };
    assert_eq!(state("broken"), "success");
    // What the failure held back may run now: the run is running again.
    assert_eq!(
        s.store.run(1).await.unwrap().unwrap().state.as_str(),
        "running"
    );
    assert!(tasks.iter().all(|t| t.state.as_str() != "upstream_failed"));
    let r = s
        .post(
            "/runs/1/tasks/chatty/clear",
            Some(&op),
            &[("csrf", &op_csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        s.store.run(1).await.unwrap().unwrap().state.as_str(),
        "running"
    );
    let r = s
        .post("/schedule/pause", Some(&op), &[("csrf", &op_csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(s.store.is_paused("webtest").await.unwrap());
    let r = s
        .post(
            "/backfill",
            Some(&op),
            &[
                ("csrf", &op_csrf),
                ("from", "2024-01-01"),
                ("to", "2024-01-03"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, queued) = s.get("/runs?state=queued", Some(&op)).await;
    assert_eq!(
        queued.matches("s-queued\">queued</span>").count(),
        2,
        "{queued}"
    );
    let (_, audit) = s.get("/audit", Some(&viewer)).await;
    for what in [
        "trigger",
        "cancel",
        "mark success",
        "clear",
        "pause",
        "backfill",
        "table dropped on purpose",
    ] {
        assert!(audit.contains(what), "audit log lacks {what}");
    }

    // The API with bearer tokens: the viewer's reads, the operator's acts.
    let vt = access::create_api_token(&s.store, "ci-read", "vera", None)
        .await
        .unwrap();
    let ot = access::create_api_token(&s.store, "ci-ops", "otto", Some(chrono::Duration::days(1)))
        .await
        .unwrap();
    let (st, j) = s.api("GET", "/api/v1/runs", &vt).await;
    assert_eq!(st, StatusCode::OK);
    assert!(j["runs"].as_array().unwrap().len() >= 4);
    let expired = access::create_api_token(
        &s.store,
        "ci-old",
        "vera",
        Some(chrono::Duration::seconds(-1)),
    )
    .await
    .unwrap();
    let (st, _) = s.api("GET", "/api/v1/runs", &expired).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "an expired token");
    let again = access::create_api_token(&s.store, "ci-old", "vera", None)
        .await
        .expect("an expired token's name is free again");
    assert_eq!(s.api("GET", "/api/v1/runs", &again).await.0, StatusCode::OK);
    let (st, j) = s.api("GET", "/api/v1/runs/1/tasks", &vt).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        j["tasks"].as_array().unwrap().len(),
        s.store.tasks(1).await.unwrap().len()
    );
    let (st, j) = s
        .api("GET", "/api/v1/runs/1/tasks/broken/attempts/1", &vt)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(j["error_code"], "42P01");
    let (st, j) = s
        .api(
            "GET",
            "/api/v1/runs/1/tasks/chatty/attempts/1/log?offset=0&len=4096",
            &vt,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(j["text"].as_str().unwrap().contains("\n1\n2\n3\n"));
    assert!(j["next"].as_u64().unwrap() <= 4096);
    let (st, _) = s.api("POST", "/api/v1/runs", &vt).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, j) = s.api("POST", "/api/v1/runs", &ot).await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(j["run_id"].as_i64().unwrap() > 2);
    // With parameters: checked against the pipeline before a run exists.
    let before = s.store.runs(1000).await.unwrap().len();
    for (body, want) in [
        (r#"{"tables": ["nope"]}"#, "no source table nope"),
        (r#"{"select": "+fct"}"#, "no `transform:` section"),
        (r#"{"full_refresh": "yes"}"#, "the run's parameters"),
        (r#"{"fullrefresh": true}"#, "unknown field"),
    ] {
        let (st, j) = s.api_body("POST", "/api/v1/runs", &ot, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {j}");
        let e = j["error"].as_str().unwrap();
        assert!(e.contains(want), "{body}: {e}");
    }
    assert_eq!(s.store.runs(1000).await.unwrap().len(), before);
    let (st, j) = s
        .api_body("POST", "/api/v1/runs", &ot, r#"{"full_refresh": true}"#)
        .await;
    assert_eq!(st, StatusCode::CREATED, "{j}");
    let id = j["run_id"].as_i64().unwrap();
    let (st, j) = s.api("GET", &format!("/api/v1/runs/{id}"), &vt).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(j["run"]["params"]["full_refresh"], true, "{j}");
    assert_eq!(j["run"]["asked"], "full refresh", "{j}");
    let (_, list) = s.get("/runs", Some(&op)).await;
    assert!(list.contains("<td>full refresh</td>"), "{list}");
    let r = s
        .post(
            "/runs",
            Some(&op),
            &[("csrf", &op_csrf), ("full_refresh", "on"), ("tables", "")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = s
        .post(
            "/runs",
            Some(&op),
            &[("csrf", &op_csrf), ("tables", "orders")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Without a dbt project or tables, Models and Sources say so.
    let (st, models) = s.get("/models", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        models.contains("no <code>transform:</code> section"),
        "{models}"
    );
    let (st, _) = s.get("/models/model.x.y", Some(&viewer)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, sources) = s.get("/sources", Some(&viewer)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(sources.contains("extracts no table"), "{sources}");
    let (st, _) = s.api("POST", "/api/v1/runs/999/retry", &ot).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, j) = s.api("POST", "/api/v1/runs/2/retry", &ot).await;
    assert_eq!(st, StatusCode::OK, "{j}");
    let (st, j) = s.api("GET", "/api/v1/runs/abc", &vt).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        j["error"].is_string(),
        "a path that does not parse is answered in JSON"
    );
    let (st, _) = s.api("GET", "/api/v1/runs/999", &vt).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Live updates: the event stream answers with the first change at once.
    let mut r = s
        .client
        .get(format!("{}/events", s.url))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), r.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("event: change"));

    // Sessions: signing out ends one; an expired one lets nobody in.
    let r = s
        .post("/logout", Some(&viewer), &[("csrf", &viewer_csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = s
        .client
        .get(format!("{}/", s.url))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "signed out");
    let old = access::random_token();
    let now = Utc::now();
    s.store
        .create_session(
            &access::digest(&old),
            "vera",
            "x",
            now - chrono::Duration::hours(13),
            now - chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    let r = s
        .client
        .get(format!("{}/", s.url))
        .header("cookie", format!("weir_session={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "expired");

    // Wrong passwords are refused, then rate-limited even with the right one.
    for _ in 0..5 {
        assert_eq!(
            s.sign_in("ada", "wrong password!").await.unwrap_err(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        s.sign_in("ada", "correct horse battery").await.unwrap_err(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // No answer held the source's password or a token.
    for body in s.bodies.lock().unwrap().iter() {
        assert!(!body.contains(SECRET), "a page showed the source password");
        assert!(
            !body.contains(&vt) && !body.contains(&ot),
            "a page showed an API token"
        );
    }
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_refused_without_users_and_base_path_served() {
    let dir = weir_testkit::project(
        "name: bare\norchestrate:\n  tasks:\n    - name: t\n      empty: true\n",
    );
    let ws = Workspace::open(dir.path(), None).unwrap();
    let dag = Arc::new(ws.pipeline().await.unwrap());
    let mut config = ws.project.ui.clone();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = weir_web::Server::bind(ws.clone(), dag.clone(), config.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("weir users add"), "{err}");

    config.listen = "127.0.0.1:0".parse().unwrap();
    config.base_path = "/weir".into();
    let server = weir_web::Server::bind(ws, dag, config).await.unwrap();
    let base = format!("http://{}", server.addr);
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone()));
    let c = Client::builder().redirect(Policy::none()).build().unwrap();
    assert_eq!(
        c.get(format!("{base}/weir/login"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = c.get(format!("{base}/weir/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/weir/login");
    assert_eq!(
        c.get(format!("{base}/login"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let page = c
        .get(format!("{base}/weir/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("href=\"/weir/assets/weir.css\""));
    assert_eq!(
        c.get(format!("{base}/weir/assets/weir.js"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    stop.cancel();
}

/// The API fuzzed from its own OpenAPI document by schemathesis (PyPI;
/// `scripts/test` installs it): every operation, with generated valid and
/// invalid inputs, must answer as the document says, never 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_holds_to_its_openapi_document_under_fuzzing() {
    let s = site().await;
    let token = access::create_api_token(&s.store, "fuzz", "otto", None)
        .await
        .unwrap();
    let url = s.url.clone();
    // A run's tables and selector are valid or not by the project, which no
    // schema can say: triggering may also answer 400 to well-formed input
    // (an unknown table), and only that operation may.
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        conf.path(),
        "[[operations]]\ninclude-operation-id = \"triggerRun\"\nchecks.positive_data_acceptance.expected-statuses = [\"2xx\", \"400\"]\n",
    )
    .unwrap();
    let conf_path = conf.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .arg("--config-file")
            .arg(&conf_path)
            .args(["run", &format!("{url}/api/v1/openapi.json"), "--url", &url])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "all", "--max-examples", "25", "--seed", "13"])
            .args(["--request-timeout", "10"])
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("schemathesis cannot start ({e}): pip install schemathesis (scripts/test does)")
    });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(!report.contains(SECRET));
    s.stop.cancel();
}
