//! Who is asking: a browser session (cookie, with a CSRF token for every
//! form) or an API bearer token; signing in and out; login rate limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use weir_orchestrate::store::{Role, User};
use weir_pipeline::access;

use crate::{Ui, WebError};

pub const SESSION_COOKIE: &str = "weir_session";
const LOGIN_COOKIE: &str = "weir_login";

/// A signed-in caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The session's CSRF token; `None` for a bearer token (no cookie, so
    /// nothing another site could make a browser send).
    pub csrf: Option<String>,
}

impl Principal {
    pub fn can_operate(&self) -> bool {
        self.user.role.can_operate()
    }

    /// A state-changing request from a browser must carry the session's token.
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<(), WebError> {
        match &self.csrf {
            None => Ok(()),
            Some(expected) if sent.is_some_and(|s| constant_eq(s, expected)) => Ok(()),
            Some(_) => Err(WebError::new(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or stale; reload the page and try again",
            )),
        }
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The caller, if signed in (a session) or holding an API token.
pub async fn principal(ui: &Ui, headers: &HeaderMap) -> Result<Option<Principal>, WebError> {
    if let Some(t) = bearer(headers) {
        return Ok(access::token_user(ui.store(), t)
            .await?
            .map(|user| Principal { user, csrf: None }));
    }
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(access::session(ui.store(), token)
        .await?
        .map(|s| Principal {
            user: s.user,
            csrf: Some(s.csrf),
        }))
}

/// The caller with at least `role`; a signed-out browser goes to the login page.
pub async fn require(ui: &Ui, headers: &HeaderMap, role: Role) -> Result<Principal, WebError> {
    match principal(ui, headers).await? {
        Some(p) if p.user.role >= role => Ok(p),
        Some(_) => Err(WebError::forbidden()),
        None => Err(WebError {
            login: Some(format!("{}/login", ui.config.base_path)),
            ..WebError::new(StatusCode::UNAUTHORIZED, "sign in first")
        }),
    }
}

/// The same for the API: 401 with JSON, never a redirect.
pub async fn require_api(ui: &Ui, headers: &HeaderMap, role: Role) -> Result<Principal, WebError> {
    require(ui, headers, role).await.map_err(WebError::for_api)
}

/// Failed sign-ins per client address and per user name: after
/// `MAX_FAILURES` in `WINDOW`, sign-in is refused until the window passes.
pub struct Limiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Password checks at once.
    checks: tokio::sync::Semaphore,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            failures: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(2),
        }
    }
}

/// The most addresses and names the limiter remembers; past it, the oldest
/// windows are forgotten first.
const MAX_KEYS: usize = 10_000;

const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(300);

impl Limiter {
    fn blocked(&self, keys: &[String]) -> bool {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (_, since)| since.elapsed() < WINDOW);
        keys.iter()
            .any(|k| m.get(k).is_some_and(|(n, _)| *n >= MAX_FAILURES))
    }

    fn failed(&self, keys: &[String]) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_KEYS {
            let mut oldest: Vec<(Instant, String)> =
                m.iter().map(|(k, (_, t))| (*t, k.clone())).collect();
            oldest.sort();
            for (_, k) in oldest.into_iter().take(MAX_KEYS / 10) {
                m.remove(&k);
            }
        }
        for k in keys {
            let e = m.entry(k.clone()).or_insert((0, Instant::now()));
            e.0 += 1;
        }
    }

    fn succeeded(&self, keys: &[String]) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            m.remove(k);
        }
    }
}

fn set_cookie(ui: &Ui, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let path = if ui.config.base_path.is_empty() {
        "/"
    } else {
        ui.config.base_path.as_str()
    };
    let secure = if ui.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie values are hex and paths are checked")
}

/// The login form, with a token tied to a cookie (so no other site can sign
/// a browser in to an account of its choosing).
pub async fn login_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    login_form(&ui, &headers, None, StatusCode::OK)
}

fn login_form(
    ui: &Ui,
    headers: &HeaderMap,
    message: Option<&str>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let token = cookie(headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(access::random_token, str::to_owned);
    let html = crate::pages::render(
        ui,
        "login.html",
        minijinja::context! { csrf => &token, message => message, user => () },
    )?;
    let mut r = (status, html).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(ui, LOGIN_COOKIE, &token, 3600),
    );
    Ok(r)
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

pub async fn login(
    State(ui): State<Arc<Ui>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    if !cookie(&headers, LOGIN_COOKIE).is_some_and(|c| constant_eq(c, &f.csrf)) {
        return login_form(
            &ui,
            &headers,
            Some("The sign-in form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let keys = [format!("ip:{}", peer.ip()), format!("user:{}", f.user)];
    if ui.limiter.blocked(&keys) {
        return login_form(
            &ui,
            &headers,
            Some("Too many failed sign-ins; wait a few minutes."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    // Counted before the check, so parallel guesses cannot all pass the
    // limit; a success clears it. Argon2 is slow and large on purpose: a few
    // checks at once at most.
    ui.limiter.failed(&keys);
    let verified = {
        let _permit = ui.limiter.checks.acquire().await.map_err(|_| {
            WebError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
        })?;
        access::verify_login(ui.store(), &f.user, &f.password).await?
    };
    let Some(user) = verified else {
        let shown: String = f.user.chars().take(64).collect();
        tracing::warn!(user = ?shown, peer = %peer.ip(), "failed sign-in");
        return login_form(
            &ui,
            &headers,
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    ui.limiter.succeeded(&keys);
    let (token, _) = access::start_session(ui.store(), &user, Utc::now()).await?;
    ui.store()
        .audit(
            &user.name,
            "sign in",
            None,
            None,
            &format!("from {}", peer.ip()),
            Utc::now(),
        )
        .await?;
    let mut r = Redirect::to(&format!("{}/", ui.config.base_path)).into_response();
    let ttl = access::SESSION_TTL.num_seconds();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&ui, SESSION_COOKIE, &token, ttl),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&ui, LOGIN_COOKIE, "", 0));
    Ok(r)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

pub async fn logout(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    let p = require(&ui, &headers, Role::Viewer).await?;
    p.check_csrf(f.csrf.as_deref())?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        access::end_session(ui.store(), token).await?;
    }
    let mut r = Redirect::to(&format!("{}/login", ui.config.base_path)).into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&ui, SESSION_COOKIE, "", 0));
    Ok(r)
}
