//! The HTML pages and the forms behind the action buttons.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use minijinja::context;
use serde::Deserialize;
use weir_orchestrate::dag::RunParams;
use weir_orchestrate::store::{ts, Role};
use weir_pipeline::backfill;

use crate::auth::{self, Principal};
use crate::views::{self, RunsQuery};
use crate::{live, logs, svg, Ui, WebError};

pub(crate) type S = State<Arc<Ui>>;

pub fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.add_filter("secs", |v: f64| format!("{v:.2}"));
    // A task id as one path segment (`urlencode` leaves `/` as it is).
    env.add_filter("enc", |v: String| enc(&v));
    for (name, text) in [
        ("base.html", include_str!("../templates/base.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("home.html", include_str!("../templates/home.html")),
        ("runs.html", include_str!("../templates/runs.html")),
        ("run.html", include_str!("../templates/run.html")),
        ("attempt.html", include_str!("../templates/attempt.html")),
        ("backfill.html", include_str!("../templates/backfill.html")),
        ("audit.html", include_str!("../templates/audit.html")),
        ("models.html", include_str!("../templates/models.html")),
        ("model.html", include_str!("../templates/model.html")),
        ("sources.html", include_str!("../templates/sources.html")),
    ] {
        env.add_template(name, text)
            .expect("the embedded templates parse");
    }
    env
}

pub fn render(ui: &Ui, name: &str, ctx: minijinja::Value) -> Result<Html<String>, WebError> {
    // Checked when weir.yml was read: letters, digits, `- _ .` and slashes.
    let base = context! { base => minijinja::Value::from_safe_string(ui.config.base_path.clone()) };
    let t = ui
        .templates
        .get_template(name)
        .map_err(|e| WebError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    t.render(context! { ..ctx, ..base }).map(Html).map_err(|e| {
        tracing::error!("rendering {name}: {e:#}");
        WebError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering {name} failed"),
        )
    })
}

pub(crate) fn ser<T: serde::Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

pub(crate) fn who(p: &Principal) -> minijinja::Value {
    context! {
        name => &p.user.name,
        role => p.user.role.as_str(),
        operator => p.can_operate(),
        csrf => &p.csrf,
    }
}

pub fn routes() -> Router<Arc<Ui>> {
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/{name}", get(crate::assets::asset))
        .route("/", get(home))
        .route("/runs", get(runs_list).post(trigger))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/retry", post(retry))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/tasks/{task}/clear", post(clear))
        .route("/runs/{id}/tasks/{task}/mark", post(mark))
        .route("/runs/{id}/tasks/{task}/{try}", get(attempt_page))
        .route("/runs/{id}/tasks/{task}/{try}/tail", get(tail))
        .route("/backfill", get(backfill_page).post(backfill_create))
        .route("/schedule/{action}", post(schedule))
        .route("/audit", get(audit))
        .route("/events", get(events))
}

pub(crate) async fn home(State(ui): S, headers: HeaderMap) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let h = views::home(&ui).await?;
    Ok(render(
        &ui,
        "home.html",
        context! { user => who(&p), home => ser(&h), page => "home" },
    )?
    .into_response())
}

async fn runs_list(
    State(ui): S,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let page = views::runs_page(&ui, &q).await?;
    Ok(render(
        &ui,
        "runs.html",
        context! { user => who(&p), runs => ser(&page), page => "runs" },
    )?
    .into_response())
}

#[derive(Deserialize)]
struct RunQuery {
    collapse: Option<String>,
}

async fn run_page(
    State(ui): S,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<RunQuery>,
) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let (detail, attempts) = views::run_detail(&ui, id).await?;
    let grid = views::grid(&ui, &detail).await?;
    let dag = ui.store().run_dag(id).await?;
    let states: BTreeMap<String, String> = detail
        .tasks
        .iter()
        .map(|t| (t.id.clone(), t.state.clone()))
        .collect();
    let groups: BTreeSet<String> = detail.tasks.iter().map(|t| t.group.clone()).collect();
    // Big DAGs open with their tests folded.
    let collapsed: BTreeSet<String> = match &q.collapse {
        Some(c) => c
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None if dag.tasks.len() > 150 => ["test".to_owned()].into(),
        None => BTreeSet::new(),
    };
    let base = ui.config.base_path.clone();
    let graph = svg::graph(&dag, &states, &collapsed, &|t| {
        format!("{base}/runs/{id}/tasks/{}/0", enc(t))
    });
    let timeline = svg::timeline(&attempts, Utc::now(), &|a| {
        format!(
            "{base}/runs/{id}/tasks/{}/{}",
            enc(&a.task_id),
            a.try_number
        )
    });
    let toggles: Vec<(String, bool, String)> = groups
        .iter()
        .map(|g| {
            let mut next = collapsed.clone();
            if !next.remove(g) {
                next.insert(g.clone());
            }
            let list: Vec<&str> = next.iter().map(String::as_str).collect();
            (g.clone(), collapsed.contains(g), list.join(","))
        })
        .collect();
    Ok(render(
        &ui,
        "run.html",
        context! {
            grid => minijinja::Value::from_safe_string(crate::grid::html(&ui.config.base_path, &detail, &grid)),
            user => who(&p), page => "runs",
            run => context! { run => ser(&detail.run), stages => ser(&detail.stages), ntasks => detail.tasks.len() },
            graph => minijinja::Value::from_safe_string(graph),
            timeline => minijinja::Value::from_safe_string(timeline),
            toggles => ser(&toggles),
        },
    )?
    .into_response())
}

/// A path segment with what a URL path cannot hold escaped.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    len: Option<u64>,
}

async fn attempt_page(
    State(ui): S,
    headers: HeaderMap,
    Path((id, task, try_number)): Path<(i64, String, u32)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let all = ui.store().attempt_summaries(id, Some(&task)).await?;
    let tries: Vec<u32> = all.iter().map(|a| a.try_number).collect();
    let a = views::pick(all, id, &task, try_number)?;
    let log = log_page(&ui, id, &a, q.offset, q.len).await;
    // What the task handed downstream: an extract's lake run and snapshot, a
    // load's lake run, rows and rejected rows.
    let output_value = ui
        .store()
        .tasks(id)
        .await?
        .into_iter()
        .find(|t| t.task_id == task)
        .and_then(|t| t.output);
    let output = output_value.as_ref().map(|o| {
        weir_config::scrub(&serde_json::to_string_pretty(o).unwrap_or_default()).into_owned()
    });
    let detail = weir_pipeline::catalog::task_detail(
        &ui.ws,
        &ui.pipeline,
        &ui.manifests,
        &task,
        output_value.as_ref(),
    )
    .await;
    Ok(render(
        &ui,
        "attempt.html",
        context! {
            user => who(&p), page => "runs", attempt => ser(&views::attempt_view(id, &a)),
            log => ser(&log), tries => tries, task_enc => enc(&task),
            running => a.state == "running", output => output, detail => ser(&detail),
        },
    )?
    .into_response())
}

/// The attempt's log file, if it lies in this project's log folder: a path
/// the store holds is never opened otherwise (a shared store is written by
/// other machines), and the store's copy of the log's end is shown instead.
pub fn confined_log(ui: &Ui, log_path: &str) -> Option<std::path::PathBuf> {
    if log_path.is_empty() {
        return None;
    }
    let logs = ui.ws.state_dir().join("logs").canonicalize().ok()?;
    let p = std::path::Path::new(log_path).canonicalize().ok()?;
    p.starts_with(&logs).then_some(p)
}

/// The log page of an attempt: from its file, else the store's copy.
pub async fn log_page(
    ui: &Ui,
    run: i64,
    a: &weir_orchestrate::store::AttemptRow,
    offset: Option<u64>,
    len: Option<u64>,
) -> Option<logs::LogPage> {
    let len = len.unwrap_or(logs::PAGE_BYTES);
    if let Some(path) = confined_log(ui, &a.log_path) {
        if let Ok(Ok(p)) = tokio::task::spawn_blocking(move || logs::page(&path, offset, len)).await
        {
            return Some(p);
        }
    }
    let full = ui
        .store()
        .attempts(run, Some(&a.task_id))
        .await
        .ok()?
        .into_iter()
        .find(|x| x.try_number == a.try_number)?;
    full.log_tail.as_deref().map(logs::stored)
}

#[derive(Deserialize)]
struct TailQuery {
    offset: u64,
}

async fn tail(
    State(ui): S,
    headers: HeaderMap,
    Path((id, task, try_number)): Path<(i64, String, u32)>,
    Query(q): Query<TailQuery>,
) -> Result<Response, WebError> {
    auth::require(&ui, &headers, Role::Viewer).await?;
    let a = views::attempt(&ui, id, &task, try_number).await?;
    let Some(path) = confined_log(&ui, &a.log_path) else {
        return Err(WebError::not_found(
            "this attempt's log is not on this machine",
        ));
    };
    // A browser that reconnects says where it got to.
    let offset = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(q.offset, |o| o.max(q.offset));
    let store = ui.store().clone();
    let try_number = a.try_number;
    Ok(live::tail(path, offset, move || {
        let store = store.clone();
        let task = task.clone();
        Box::pin(async move {
            store
                .attempt_summaries(id, Some(&task))
                .await
                .map(|all| {
                    all.iter()
                        .any(|a| a.try_number == try_number && a.state != "running")
                })
                .unwrap_or(true)
        })
    })
    .into_response())
}

async fn events(State(ui): S, headers: HeaderMap) -> Result<Response, WebError> {
    auth::require(&ui, &headers, Role::Viewer).await?;
    Ok(live::changes(ui.changes.clone()).into_response())
}

async fn audit(
    State(ui): S,
    headers: HeaderMap,
    Query(q): Query<BeforeQuery>,
) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let entries = ui.store().audit_log(100, q.before).await?;
    let older = (entries.len() == 100)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let shown: Vec<_> = entries
        .iter()
        .map(|e| {
            context! { at => ts(e.at), user => &e.user, action => &e.action,
            run_id => e.run_id, task_id => &e.task_id, detail => &e.detail }
        })
        .collect();
    Ok(render(
        &ui,
        "audit.html",
        context! { user => who(&p), entries => shown, older => older, page => "audit" },
    )?
    .into_response())
}

#[derive(Deserialize)]
struct BeforeQuery {
    before: Option<i64>,
}

// ---- actions (operator) ----

#[derive(Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    reason: Option<String>,
    state: Option<String>,
    /// Trigger's parameters: a checkbox, table names, a dbt selector.
    full_refresh: Option<String>,
    tables: Option<String>,
    select: Option<String>,
}

/// The caller, if allowed to act, with the form's CSRF token checked.
async fn operator(ui: &Ui, headers: &HeaderMap, f: &ActionForm) -> Result<Principal, WebError> {
    let p = auth::require(ui, headers, Role::Operator).await?;
    p.check_csrf(f.csrf.as_deref())?;
    Ok(p)
}

fn back_to(ui: &Ui, path: &str) -> Response {
    Redirect::to(&format!("{}{path}", ui.config.base_path)).into_response()
}

async fn trigger(
    State(ui): S,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Result<Response, WebError> {
    let p = operator(&ui, &headers, &f).await?;
    let params = RunParams::new(
        f.full_refresh.is_some(),
        f.tables.as_deref(),
        f.select.as_deref(),
    );
    let id = crate::api::trigger_run(&ui, &p, &params).await?;
    Ok(back_to(&ui, &format!("/runs/{id}")))
}

async fn retry(
    State(ui): S,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Result<Response, WebError> {
    let p = operator(&ui, &headers, &f).await?;
    crate::api::retry_run(&ui, &p, id).await?;
    Ok(back_to(&ui, &format!("/runs/{id}")))
}

async fn cancel(
    State(ui): S,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Result<Response, WebError> {
    let p = operator(&ui, &headers, &f).await?;
    let reason = format!("cancelled by {}", p.user.name);
    let n = ui.store().cancel_run(id, &reason, Utc::now()).await?;
    crate::api::audit(
        &ui,
        &p,
        "cancel",
        Some(id),
        None,
        &format!("{n} task(s) stopped"),
    )
    .await?;
    Ok(back_to(&ui, &format!("/runs/{id}")))
}

async fn clear(
    State(ui): S,
    headers: HeaderMap,
    Path((id, task)): Path<(i64, String)>,
    Form(f): Form<ActionForm>,
) -> Result<Response, WebError> {
    let p = operator(&ui, &headers, &f).await?;
    let n = ui.store().clear_task(id, &task, Utc::now()).await?;
    crate::api::audit(
        &ui,
        &p,
        "clear",
        Some(id),
        Some(&task),
        &format!("{n} task(s) to run again"),
    )
    .await?;
    Ok(back_to(&ui, &format!("/runs/{id}")))
}

async fn mark(
    State(ui): S,
    headers: HeaderMap,
    Path((id, task)): Path<(i64, String)>,
    Form(f): Form<ActionForm>,
) -> Result<Response, WebError> {
    let p = operator(&ui, &headers, &f).await?;
    let success = match f.state.as_deref() {
        Some("success") => true,
        Some("failed") => false,
        _ => return Err(WebError::bad_request("mark a task `success` or `failed`")),
    };
    let reason = f.reason.as_deref().unwrap_or("").trim();
    if reason.is_empty() {
        return Err(WebError::bad_request(
            "say why the task is marked (a reason)",
        ));
    }
    ui.store()
        .mark_task(id, &task, success, &p.user.name, reason, Utc::now())
        .await?;
    let what = if success {
        "mark success"
    } else {
        "mark failed"
    };
    crate::api::audit(&ui, &p, what, Some(id), Some(&task), reason).await?;
    Ok(back_to(&ui, &format!("/runs/{id}")))
}

#[derive(Deserialize)]
struct BackfillForm {
    csrf: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

const BACKFILL_MAX: usize = 1000;

async fn backfill_page(
    State(ui): S,
    headers: HeaderMap,
    Query(q): Query<BackfillForm>,
) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let (from, to) = (q.from.unwrap_or_default(), q.to.unwrap_or_default());
    let (plan, problem) = if from.is_empty() || to.is_empty() {
        (None, None)
    } else {
        match backfill::plan(&ui.ws, &from, &to, BACKFILL_MAX) {
            Ok(plan) => (
                Some(
                    plan.intervals
                        .iter()
                        .map(|iv| (ts(iv.start), ts(iv.end)))
                        .collect::<Vec<_>>(),
                ),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    Ok(render(&ui, "backfill.html", context! {
        user => who(&p), page => "backfill", from => from, to => to, plan => ser(&plan), problem => problem,
    })?.into_response())
}

async fn backfill_create(
    State(ui): S,
    headers: HeaderMap,
    Form(f): Form<BackfillForm>,
) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Operator).await?;
    p.check_csrf(f.csrf.as_deref())?;
    let (from, to) = (f.from.unwrap_or_default(), f.to.unwrap_or_default());
    let plan = backfill::plan(&ui.ws, &from, &to, BACKFILL_MAX)?;
    let ids = backfill::enqueue(&ui.ws, ui.store(), ui.dag(), &plan).await?;
    crate::api::audit(
        &ui,
        &p,
        "backfill",
        None,
        None,
        &format!("{from} to {to}: {} run(s) queued", ids.len()),
    )
    .await?;
    Ok(back_to(&ui, "/runs?state=queued"))
}

async fn schedule(
    State(ui): S,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Response, WebError> {
    let p = operator(&ui, &headers, &f).await?;
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return Err(WebError::not_found("the schedule can be paused or resumed")),
    };
    ui.store()
        .set_paused(&ui.dag().name, paused, &p.user.name, Utc::now())
        .await?;
    crate::api::audit(
        &ui,
        &p,
        if paused { "pause" } else { "resume" },
        None,
        None,
        &ui.dag().name,
    )
    .await?;
    Ok(back_to(&ui, "/"))
}
