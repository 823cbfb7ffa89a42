//! The web UI and its JSON API, served by `weir up` (and `weir worker
//! --ui`) in the same process as the scheduler. It knows HTTP and nothing
//! else new: what it shows it reads from the metadata store, and what it
//! does it asks of `weir_pipeline`, exactly as the CLI does.
//!
//! - pages are rendered on the server ([`pages`], templates under
//!   `templates/`), the DAG graph and the timeline drawn as SVG ([`svg`]);
//!   the browser loads only what is embedded here ([`assets`]);
//! - [`catalog`]: the Models and Sources pages (dbt nodes with their SQL,
//!   tests and lineage; source tables with their extracts and lake runs);
//! - [`api`] serves `/api/v1` from the same view functions ([`views`]);
//! - [`auth`]: sign-in with Argon2-hashed passwords, sessions in the store,
//!   CSRF tokens on every form, bearer tokens for the API, rate-limited logins;
//! - [`live`]: server-sent events for states and log tails.
//!
//! The UI never blocks the scheduler: it opens its own store connections,
//! and every query it makes is bounded by a page size.

mod api;
mod assets;
mod auth;
mod catalog;
mod error;
mod grid;
mod live;
mod logs;
mod pages;
mod svg;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use weir_config::UiConfig;
use weir_orchestrate::dag::Dag;
use weir_orchestrate::pipeline::Pipeline;
use weir_orchestrate::store::Store;
use weir_pipeline::Workspace;

pub use error::WebError;

/// Everything a request handler can reach.
pub struct Ui {
    pub ws: Workspace,
    /// The UI's own connections to the metadata store, used in turn, so
    /// concurrent pages read side by side (SQLite in WAL mode lets readers
    /// run beside each other and beside the scheduler's writer).
    stores: Vec<Arc<Store>>,
    next_store: std::sync::atomic::AtomicUsize,
    /// The pipeline as this process loaded it: what a triggered run runs,
    /// and the dbt project the Models page shows.
    pub pipeline: Arc<Pipeline>,
    pub config: UiConfig,
    templates: minijinja::Environment<'static>,
    limiter: auth::Limiter,
    /// Lake manifests the Sources page has read (they never change).
    pub(crate) manifests: weir_pipeline::catalog::ManifestCache,
    changes: tokio::sync::watch::Receiver<String>,
}

/// Connections the UI keeps to the metadata store.
const STORE_CONNECTIONS: usize = 2;

impl Ui {
    /// The pipeline's whole DAG.
    pub fn dag(&self) -> &Dag {
        &self.pipeline.dag
    }

    /// A connection to the store for one request.
    pub fn store(&self) -> &Arc<Store> {
        let i = self
            .next_store
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.stores[i % self.stores.len()]
    }
}

/// Why the UI cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lifecycle(#[from] weir_pipeline::LifecycleError),
    #[error(transparent)]
    Store(#[from] weir_orchestrate::store::StoreError),
}

/// Headers every answer carries: no framing, no sniffing, scripts and styles
/// only from the UI itself, and pages (which hold CSRF tokens) not cached.
async fn security_headers(mut r: axum::response::Response) -> axum::response::Response {
    use axum::http::header::{self, HeaderValue};
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// A bound, ready UI: [`Server::serve`] answers requests until shutdown.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Router,
    pub addr: SocketAddr,
    pub url: String,
}

impl Server {
    /// Bind `config.listen` for the project in `ws`. Listening beyond
    /// loopback with no user to sign in as is refused: that would expose
    /// the history to anyone who can reach the port.
    pub async fn bind(
        ws: Workspace,
        pipeline: Arc<Pipeline>,
        config: UiConfig,
    ) -> Result<Server, StartError> {
        let store = ws.store().await?;
        if !config.listen.ip().is_loopback() && store.user_count().await? == 0 {
            return Err(StartError::Refused(format!(
                "the UI would listen on {} with no user configured, open to anyone who can reach it; \
                 add one with `weir users add NAME --role admin`, or listen on 127.0.0.1",
                config.listen
            )));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let changes = live::watch_changes(store.clone());
        let mut stores = vec![store];
        for _ in 1..STORE_CONNECTIONS {
            stores.push(ws.store().await?);
        }
        let url = format!("http://{addr}{}/", config.base_path);
        let base = config.base_path.clone();
        let ui = Arc::new(Ui {
            ws,
            stores,
            next_store: std::sync::atomic::AtomicUsize::new(0),
            pipeline,
            config,
            templates: pages::templates(),
            limiter: auth::Limiter::default(),
            manifests: Default::default(),
            changes,
        });
        let routes = pages::routes()
            .merge(catalog::routes())
            .merge(api::routes())
            .layer(axum::middleware::map_response(security_headers));
        let app = if base.is_empty() {
            routes.with_state(ui)
        } else {
            // Nested, the home page is `/weir`; `/weir/` is it too.
            Router::new()
                .nest(&base, routes)
                .route(&format!("{base}/"), axum::routing::get(pages::home))
                .with_state(ui)
        };
        Ok(Server {
            listener,
            app,
            addr,
            url,
        })
    }

    /// Serve until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        axum::serve(
            self.listener,
            self.app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    }
}
