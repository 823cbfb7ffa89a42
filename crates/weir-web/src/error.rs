//! How a failed request answers: pages with a page, the API with JSON, and
//! never with a secret (every message is scrubbed).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use weir_pipeline::LifecycleError;

#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub message: String,
    /// Where a signed-out browser is sent (pages), instead of a 401.
    pub login: Option<String>,
    pub api: bool,
}

impl WebError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        WebError {
            status,
            message: message.into(),
            login: None,
            api: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "your role does not allow this")
    }

    pub fn for_api(mut self) -> Self {
        self.api = true;
        self.login = None;
        self
    }
}

impl From<LifecycleError> for WebError {
    fn from(e: LifecycleError) -> Self {
        let status = match &e {
            LifecycleError::NotFound(_) => StatusCode::NOT_FOUND,
            LifecycleError::Conflict(_) => StatusCode::CONFLICT,
            LifecycleError::Store(s) => return WebError::from_store(s),
            e if e.is_usage() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        WebError::new(status, e.to_string())
    }
}

impl From<weir_orchestrate::store::StoreError> for WebError {
    fn from(e: weir_orchestrate::store::StoreError) -> Self {
        WebError::from_store(&e)
    }
}

impl WebError {
    fn from_store(e: &weir_orchestrate::store::StoreError) -> Self {
        match e.refusal() {
            // What cannot be done to a run as it is now: said as it is.
            Some(m) => WebError::new(StatusCode::CONFLICT, m.to_owned()),
            // The store itself failed: logged in full, told in general.
            None => {
                tracing::error!("metadata store: {e}");
                WebError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the metadata store failed; the server's log says why",
                )
            }
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let Some(to) = &self.login {
            return Redirect::to(to).into_response();
        }
        let message = weir_config::scrub(&self.message).into_owned();

        if self.api {
            let body = serde_json::json!({ "error": message, "status": self.status.as_u16() });
            return (self.status, axum::Json(body)).into_response();
        }
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>Weir: {code}</title>\
             <main class=error><h1>{code}</h1><p>{}</p>\
             </main>",
            html_escape(&message),
            code = self.status
        );
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response()
    }
}

/// Text for HTML outside the templates (which escape by themselves).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
