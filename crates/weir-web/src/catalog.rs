//! The Models and Sources pages: what `weir_pipeline::catalog` reads,
//! rendered, with each node's lineage drawn as SVG on the server.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use minijinja::context;
use weir_orchestrate::store::Role;
use weir_pipeline::catalog::{self, Lineage};

use crate::pages::{enc, render, ser, who, S};
use crate::svg::{self, Drawn};
use crate::{auth, Ui, WebError};

pub fn routes() -> Router<Arc<Ui>> {
    Router::new()
        .route("/models", get(models))
        .route("/models/{id}", get(model))
        .route("/sources", get(sources))
}

async fn models(State(ui): S, headers: HeaderMap) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let rows = match ui.pipeline.dbt() {
        Some(_) => catalog::models(ui.store(), &ui.pipeline).await?,
        None => Vec::new(),
    };
    Ok(render(
        &ui,
        "models.html",
        context! { user => who(&p), models => ser(&rows), dbt => ui.pipeline.dbt().is_some(), page => "models" },
    )?
    .into_response())
}

async fn model(
    State(ui): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let m = catalog::model(ui.store(), &ui.pipeline, &id).await?;
    let base = ui.config.base_path.clone();
    let graph = lineage_svg(
        &m.lineage,
        &id,
        &|n: &catalog::LineageNode| match &n.table {
            Some(t) => Some(format!("{base}/sources#table-{}", enc(t))),
            None if n.kind == "source" => None,
            None => Some(format!("{base}/models/{}", enc(&n.unique_id))),
        },
    );
    Ok(render(
        &ui,
        "model.html",
        context! {
            user => who(&p), model => ser(&m), page => "models",
            lineage => minijinja::Value::from_safe_string(graph),
        },
    )?
    .into_response())
}

/// The lineage graph, the page's own node marked.
fn lineage_svg(
    l: &Lineage,
    own: &str,
    href: &dyn Fn(&catalog::LineageNode) -> Option<String>,
) -> String {
    let boxes: Vec<Drawn> = l
        .nodes
        .iter()
        .map(|n| Drawn {
            label: n.label.clone(),
            state: n.state.clone().unwrap_or_default(),
            rank: n.rank,
            href: href(n),
            class: if n.unique_id == own {
                "self"
            } else if n.kind == "source" {
                "source"
            } else {
                ""
            },
        })
        .collect();
    let edges: BTreeSet<(usize, usize)> = l.edges.iter().copied().collect();
    svg::draw(&boxes, &edges, "lineage")
}

async fn sources(State(ui): S, headers: HeaderMap) -> Result<Response, WebError> {
    let p = auth::require(&ui, &headers, Role::Viewer).await?;
    let s = catalog::sources(&ui.ws, ui.store(), &ui.pipeline, &ui.manifests).await?;
    Ok(render(
        &ui,
        "sources.html",
        context! { user => who(&p), sources => ser(&s), page => "sources" },
    )?
    .into_response())
}
