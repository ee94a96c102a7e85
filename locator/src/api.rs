//! The locator's HTTP API (docs/CLUSTER.md): joins for clients, the node protocol, the
//! operator's endpoints, recordings (kept by recorders, reached through the locator),
//! the directory of SIP rooms and meetings' dial-in numbers, `/metrics`, `/healthz`, the OpenAPI description, and the web client's pages.
//!
//! Every error body is an [`ApiError`] with a code a caller can act on.

mod dial_in;
mod directory;
mod join;
mod nodes;
mod operator;
mod recordings;

use crate::cdr::CdrDb;
use crate::dial_in::DialIns;
use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::persist::PersistError;
use crate::recorders::Recorders;
use crate::state::{Now, Store, StoreError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_limits::{IpLimits, IpLimitsConfig};
use kaskade_protocol::cluster::ApiError;
use kaskade_protocol::signaling::valid_meeting;
use kaskade_protocol::token::TokenKey;
use ring::digest;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body the API reads (a node's report of hundreds of participants fits);
/// larger ones get 413 before they are read.
pub const MAX_BODY: usize = 1 << 20;

/// How long the locator waits for a node's `/healthz` when a client reports losing it.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How the API is configured.
pub struct ApiConfig {
    /// The cluster secret: signs tokens and node credentials.
    pub secret: Vec<u8>,
    /// Whether joins without a token are allowed (no operator secret was given).
    pub open: bool,
    /// The key guarding `/api/tokens` and the operator endpoints.
    pub api_key: Option<String>,
    /// A node (or recorder) whose reports stop for this long is dropped.
    pub node_timeout: Duration,
    /// Base URL of a recorder served with this locator (the all-in-one), live without reports.
    pub embedded_recorder: Option<String>,
    /// Per-client-address limit on joins.
    pub ip_limits: IpLimitsConfig,
}

/// What the locator keeps across restarts, besides the cluster's state.
pub struct Kept {
    /// The call records.
    pub cdr: CdrDb,
    /// The SIP directory.
    pub directory: Directory,
    /// Meetings' dial-in numbers.
    pub dial_ins: DialIns,
}

/// What every handler shares.
pub struct Shared {
    store: Arc<dyn Store>,
    cdr: CdrDb,
    directory: Directory,
    dial_ins: DialIns,
    metrics: Metrics,
    secret: Vec<u8>,
    tokens: TokenKey,
    open: bool,
    api_key: Option<digest::Digest>,
    node_timeout: Duration,
    recorders: Recorders,
    http: reqwest::Client,
    limits: Arc<IpLimits>,
}

impl Shared {
    /// The node timeout in milliseconds, as reports are answered.
    fn node_timeout_ms(&self) -> u64 {
        u64::try_from(self.node_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The handlers' state: cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of an API over `store` and what the locator keeps.
    pub fn new(config: ApiConfig, store: Arc<dyn Store>, kept: Kept) -> Self {
        let Kept {
            cdr,
            directory,
            dial_ins,
        } = kept;
        let http = reqwest::Client::builder()
            .timeout(HEALTH_PROBE_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self(Arc::new(Shared {
            store,
            cdr,
            directory,
            dial_ins,
            metrics: Metrics::new(),
            tokens: TokenKey::from_secret(&config.secret),
            secret: config.secret,
            open: config.open,
            api_key: config
                .api_key
                .map(|key| digest::digest(&digest::SHA256, key.as_bytes())),
            node_timeout: config.node_timeout,
            recorders: Recorders::new(config.node_timeout, config.embedded_recorder),
            http,
            limits: IpLimits::new(config.ip_limits),
        }))
    }
}

/// Builds the router's API part and the list of its routes from one table, so the list
/// cannot miss a route the router serves.
macro_rules! api_routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route of the API as `(method, path)`, exactly as the router serves them.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn api_routes() -> Router<AppState> {
            Router::new()$(.route($path, axum::routing::$method($handler)))*
        }
    };
}

api_routes! {
    post "/api/meetings/{meeting}/join" => join::join,
    post "/api/nodes/report" => nodes::report,
    get "/api/nodes/{node}/meetings/{meeting}" => nodes::meeting_info,
    get "/api/nodes/{node}/links/{peer}" => nodes::link,
    post "/api/nodes/{node}/cdr" => nodes::cdr,
    get "/api/nodes" => operator::nodes,
    get "/api/meetings" => operator::meetings,
    get "/api/meetings/{meeting}" => operator::meeting,
    post "/api/tokens" => operator::tokens,
    get "/api/cdr.csv" => operator::cdr_csv,
    get "/api/directory" => directory::list,
    put "/api/directory/{id}" => directory::set,
    delete "/api/directory/{id}" => directory::remove,
    get "/api/nodes/{node}/directory" => directory::for_node,
    get "/api/nodes/{node}/dial-in/{number}" => dial_in::by_number,
    get "/api/nodes/{node}/meetings/{meeting}/dial-in" => dial_in::for_node,
    put "/api/nodes/{node}/meetings/{meeting}/dial-in" => dial_in::set_pin,
    get "/api/meetings/{meeting}/dial-in" => dial_in::for_operator,
    post "/api/recorders/report" => recordings::report,
    post "/api/meetings/{meeting}/recordings" => recordings::start,
    get "/api/meetings/{meeting}/recordings" => recordings::list,
    delete "/api/meetings/{meeting}/recordings/{id}" => recordings::stop,
    get "/api/openapi.json" => openapi,
    get "/metrics" => metrics,
    get "/healthz" => healthz,
}

/// The locator's router: the API and the web client's pages.
pub fn router(state: AppState) -> Router {
    api_routes()
        .fallback(|| async { fail(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_request",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
        .merge(kaskade_web::pages())
}

/// The OpenAPI 3.1 description of [`ROUTES`].
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> Response {
    let shared = &state.0;
    if let Ok(nodes) = shared.store.nodes(Now::current()).await {
        shared
            .metrics
            .nodes
            .set(i64::try_from(nodes.len()).unwrap_or(i64::MAX));
    }
    if let Ok(meetings) = shared.store.meetings(Now::current()).await {
        shared
            .metrics
            .meetings
            .set(i64::try_from(meetings.len()).unwrap_or(i64::MAX));
    }
    let mut sizes = shared.store.map_sizes();
    sizes.push(("recorders", shared.recorders.registered()));
    shared.metrics.set_map_sizes(&sizes);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

/// An error answer: a status and an [`ApiError`] body.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl Failure {
    /// The error code.
    pub(crate) fn code(&self) -> &'static str {
        self.error
    }
}

/// A failure with `status`, machine-readable `error` and a message for people.
pub(crate) fn fail(status: StatusCode, error: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        error,
        message: message.into(),
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ApiError {
            error: self.error.to_string(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoFreeIndex => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_capacity",
                e.to_string(),
            ),
            e => {
                tracing::warn!("state store: {e}");
                fail(StatusCode::SERVICE_UNAVAILABLE, "internal", e.to_string())
            }
        }
    }
}

impl From<PersistError> for Failure {
    fn from(e: PersistError) -> Self {
        match e {
            PersistError::Full(_) => fail(StatusCode::CONFLICT, "full", e.to_string()),
            e => {
                tracing::warn!("kept state: {e}");
                fail(StatusCode::SERVICE_UNAVAILABLE, "internal", e.to_string())
            }
        }
    }
}

/// Path parameters whose rejection is an [`ApiError`].
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| fail(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
    }
}

/// A JSON body, or a 400 that says what is wrong with it.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("malformed JSON: {e}"),
        )
    })
}

/// A 400 unless `meeting` is a meeting name.
fn check_meeting(meeting: &str) -> Result<(), Failure> {
    if valid_meeting(meeting) {
        Ok(())
    } else {
        Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "meeting names are 1 to 64 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `scheme://host` by which the client reached this locator: the `Host` header, and https when
/// a proxy says `X-Forwarded-Proto: https`. `None` unless `Host` is a plain `host[:port]`.
fn public_base(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !plain_host {
        return None;
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|p| p.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let scheme = if https { "https" } else { "http" };
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests;
