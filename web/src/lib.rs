//! `kaskade_web`: the web client browsers load to meet (`assets/`: the landing page, the
//! meeting page, its script and style), as routes that any server handing out meetings merges
//! into its router: the locator in front of a cluster, a node that runs without one, and the
//! all-in-one. The assets are compiled in, so a server needs no files beside its binary.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

/// The web client's pages (`/`, `/m/{meeting}`) and assets (`/static/...`).
pub fn pages<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { Html(include_str!("../assets/index.html")) }),
        )
        .route(
            "/m/{meeting}",
            get(|| async { Html(include_str!("../assets/meeting.html")) }),
        )
        .route(
            "/static/client.js",
            get(|| async { asset("text/javascript", include_str!("../assets/client.js")) }),
        )
        .route(
            "/static/style.css",
            get(|| async { asset("text/css", include_str!("../assets/style.css")) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
