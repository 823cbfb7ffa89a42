//! `/api/v1`: JSON for scripts, with bearer tokens an admin creates (`weir
//! tokens create`). It returns what the pages show, built by the same
//! functions in [`crate::views`], and its actions are the pages' actions.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use weir_orchestrate::dag::RunParams;
use weir_orchestrate::store::Role;
use weir_pipeline::runs;

use crate::auth::{self, Principal};
use crate::views::{self, RunsQuery};
use crate::{Ui, WebError};

type S = State<Arc<Ui>>;

/// `Path`, answering a path that does not parse with JSON, as the rest of the API does.
struct ApiPath<T>(T);

impl<T, St> FromRequestParts<St> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    St: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| WebError::bad_request(e.body_text()).for_api())
    }
}

/// `Query`, answering a query that does not parse with JSON.
struct ApiQuery<T>(T);

impl<T, St> FromRequestParts<St> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned + Send,
    St: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| WebError::bad_request(e.body_text()).for_api())
    }
}

pub fn routes() -> Router<Arc<Ui>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/runs", get(list_runs).post(trigger))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/runs/{id}/tasks", get(tasks))
        .route("/api/v1/runs/{id}/retry", post(retry))
        .route(
            "/api/v1/runs/{id}/tasks/{task}/attempts/{try}",
            get(attempt),
        )
        .route(
            "/api/v1/runs/{id}/tasks/{task}/attempts/{try}/log",
            get(log),
        )
}

/// A browser calling the API with its session cookie sends the session's
/// CSRF token in this header; a bearer token needs none.
fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

fn api<T>(r: Result<T, WebError>) -> Result<T, WebError> {
    r.map_err(WebError::for_api)
}

/// Record in the audit log that `p` did `action` (now).
pub async fn audit(
    ui: &Ui,
    p: &Principal,
    action: &str,
    run: Option<i64>,
    task: Option<&str>,
    detail: &str,
) -> Result<(), WebError> {
    Ok(ui
        .store()
        .audit(&p.user.name, action, run, task, detail, Utc::now())
        .await?)
}

/// Create a manual run asked to do `params`, as the page's Trigger form does.
pub async fn trigger_run(ui: &Ui, p: &Principal, params: &RunParams) -> Result<i64, WebError> {
    let id = runs::create_with(ui.store(), &ui.pipeline, &ui.ws.config, params).await?;
    let asked = params.describe();
    let detail = if asked.is_empty() {
        "manual run".to_owned()
    } else {
        format!("manual run: {asked}")
    };
    audit(ui, p, "trigger", Some(id), None, &detail).await?;
    Ok(id)
}

/// The body `POST /api/v1/runs` takes; every field may be left out.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    full_refresh: bool,
    #[serde(default)]
    tables: Vec<String>,
    select: Option<String>,
}

/// Queue a run's failed and skipped tasks again, as `weir retry` does.
pub async fn retry_run(ui: &Ui, p: &Principal, id: i64) -> Result<usize, WebError> {
    let r = runs::retry(ui.store(), id).await?;
    audit(
        ui,
        p,
        "retry",
        Some(id),
        None,
        &format!("{} task(s) queued", r.reset),
    )
    .await?;
    Ok(r.reset)
}

async fn list_runs(
    State(ui): S,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Response, WebError> {
    api(auth::require_api(&ui, &headers, Role::Viewer).await)?;
    // The pages' forms send empty fields for "any"; the API says so by leaving them out.
    for (name, v) in [("state", &q.state), ("from", &q.from), ("to", &q.to)] {
        if v.as_deref() == Some("") {
            return Err(
                WebError::bad_request(format!("`{name}` is empty; leave it out for any")).for_api(),
            );
        }
    }
    Ok(Json(api(views::runs_page(&ui, &q).await)?).into_response())
}

async fn run(
    State(ui): S,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, WebError> {
    api(auth::require_api(&ui, &headers, Role::Viewer).await)?;
    let (detail, _) = api(views::run_detail(&ui, id).await)?;
    Ok(Json(json!({ "run": detail.run, "stages": detail.stages })).into_response())
}

async fn tasks(
    State(ui): S,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, WebError> {
    api(auth::require_api(&ui, &headers, Role::Viewer).await)?;
    let (detail, _) = api(views::run_detail(&ui, id).await)?;
    Ok(Json(json!({ "tasks": detail.tasks })).into_response())
}

async fn attempt(
    State(ui): S,
    headers: HeaderMap,
    ApiPath((id, task, try_number)): ApiPath<(i64, String, u32)>,
) -> Result<Response, WebError> {
    api(auth::require_api(&ui, &headers, Role::Viewer).await)?;
    let a = api(views::attempt(&ui, id, &task, try_number).await)?;
    Ok(Json(views::attempt_view(id, &a)).into_response())
}

#[derive(serde::Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    len: Option<u64>,
}

async fn log(
    State(ui): S,
    headers: HeaderMap,
    ApiPath((id, task, try_number)): ApiPath<(i64, String, u32)>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, WebError> {
    api(auth::require_api(&ui, &headers, Role::Viewer).await)?;
    if q.offset
        .max(q.len)
        .is_some_and(|n| n > views::MAX_LOG_NUMBER)
    {
        return Err(WebError::bad_request(format!(
            "offset and len are at most {}",
            views::MAX_LOG_NUMBER
        ))
        .for_api());
    }
    let a = api(views::attempt(&ui, id, &task, try_number).await)?;
    match crate::pages::log_page(&ui, id, &a, q.offset, q.len).await {
        Some(p) => Ok(Json(p).into_response()),
        None => Err(WebError::not_found(
            "this attempt's log is on neither this machine nor in the store",
        )
        .for_api()),
    }
}

async fn trigger(
    State(ui): S,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let p = api(auth::require_api(&ui, &headers, Role::Operator).await)?;
    api(p.check_csrf(csrf_header(&headers)))?;
    // No body is a run of the whole pipeline.
    let b: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| WebError::bad_request(format!("the run's parameters: {e}")).for_api())?
    };
    let params = RunParams::new(
        b.full_refresh,
        b.tables.iter().map(String::as_str),
        b.select.as_deref(),
    );
    let id = api(trigger_run(&ui, &p, &params).await)?;
    Ok((StatusCode::CREATED, Json(json!({ "run_id": id }))).into_response())
}

async fn retry(
    State(ui): S,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, WebError> {
    let p = api(auth::require_api(&ui, &headers, Role::Operator).await)?;
    api(p.check_csrf(csrf_header(&headers)))?;
    let n = api(retry_run(&ui, &p, id).await)?;
    Ok(Json(json!({ "run_id": id, "tasks_queued": n })).into_response())
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}
