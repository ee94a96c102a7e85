//! The operator's endpoints: nodes and meetings with their load, tokens for the operator's own
//! backend, and the call records as CSV (the SIP directory's are in `directory`). With `--api-key`, each needs `Authorization: Bearer
//! KEY`; `/api/tokens` is off without one.

use super::{ApiPath, AppState, Failure, bearer, check_meeting, fail, parse_json, public_base};
use crate::cdr::{Bound, parse_time, to_csv};
use crate::state::{MeetingView, NodeView, Now};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_protocol::signaling::Role;
use kaskade_protocol::token::Claims;
use ring::digest;
use serde::{Deserialize, Serialize};

/// Longest token lifetime the endpoint grants (30 days).
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// Whether the request carries the configured API key (never true without one).
pub(super) fn has_api_key(state: &AppState, headers: &HeaderMap) -> bool {
    state.0.api_key.as_ref().is_some_and(|key| {
        bearer(headers)
            .is_some_and(|b| digest::digest(&digest::SHA256, b.as_bytes()).as_ref() == key.as_ref())
    })
}

/// Checks the API key when one is configured.
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Failure> {
    if state.0.api_key.is_none() || has_api_key(state, headers) {
        Ok(())
    } else {
        Err(fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <the locator's --api-key>`",
        ))
    }
}

/// `GET /api/nodes`.
pub(super) async fn nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<NodeView>>, Failure> {
    authorize(&state, &headers)?;
    Ok(Json(state.0.store.nodes(Now::current()).await?))
}

/// `GET /api/meetings`.
pub(super) async fn meetings(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<MeetingView>>, Failure> {
    authorize(&state, &headers)?;
    Ok(Json(state.0.store.meetings(Now::current()).await?))
}

/// `GET /api/meetings/{meeting}`.
pub(super) async fn meeting(
    State(state): State<AppState>,
    ApiPath(meeting): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<MeetingView>, Failure> {
    authorize(&state, &headers)?;
    state
        .0
        .store
        .meeting(&meeting, Now::current())
        .await?
        .map(Json)
        .ok_or_else(|| {
            fail(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no meeting {meeting:?}"),
            )
        })
}

/// The body of `POST /api/tokens`.
#[derive(Debug, Deserialize)]
struct TokenRequest {
    meeting: String,
    identity: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    /// A one-time token (a `jti`): it admits once, never again.
    #[serde(default)]
    once: bool,
    /// The holder may place SIP calls from the meeting's dialpad.
    #[serde(default)]
    dial: bool,
}

/// The answer of `POST /api/tokens`.
#[derive(Debug, Serialize)]
struct TokenResponse {
    token: String,
    join_url: String,
}

/// `POST /api/tokens`.
pub(super) async fn tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    if state.0.api_key.is_none() {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "unauthorized",
            "minting tokens over HTTP is off: start the locator with --api-key KEY (or \
             KASKADE_API_KEY) and send `Authorization: Bearer KEY`",
        ));
    }
    authorize(&state, &headers)?;
    let request: TokenRequest = parse_json(&body)?;
    check_meeting(&request.meeting)?;
    if request.identity.is_empty()
        || request.identity.len() > 256
        || request.identity.chars().any(char::is_control)
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "identity must be 1 to 256 printable characters",
        ));
    }
    let ttl = request.ttl_seconds.unwrap_or(3600);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("ttl_seconds must be 1 to {MAX_TTL_SECS}"),
        ));
    }
    let claims = Claims {
        meeting: request.meeting.clone(),
        name: request
            .name
            .map(|n| kaskade_protocol::signaling::display_name(&n))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| request.identity.clone()),
        sub: request.identity,
        role: request.role.unwrap_or(Role::Participant),
        exp: kaskade_protocol::token::unix_now() + ttl,
        rejoin: false,
        jti: request.once.then(Claims::new_jti),
        aud: None,
        dial: request.dial,
    };
    let token = state.0.tokens.sign(&claims);
    let base = public_base(&headers).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let join_url = format!("{base}/m/{}?token={token}", request.meeting);
    Ok(Json(TokenResponse { token, join_url }).into_response())
}

/// The query of `GET /api/cdr.csv`.
#[derive(Debug, Deserialize)]
pub(super) struct CdrQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// `GET /api/cdr.csv?from=&to=`.
pub(super) async fn cdr_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<CdrQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    authorize(&state, &headers)?;
    let Query(query) =
        query.map_err(|e| fail(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let bound = |text: Option<&str>, bound: Bound| -> Result<Option<u64>, Failure> {
        match text.filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => parse_time(t, bound).map(Some).ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("{t:?} is not a time: use RFC 3339, YYYY-MM-DD or Unix seconds"),
                )
            }),
        }
    };
    let from = bound(query.from.as_deref(), Bound::From)?;
    let to = bound(query.to.as_deref(), Bound::To)?;
    let records = state.0.cdr.query(from, to).await.map_err(|e| {
        tracing::warn!("reading call records: {e}");
        fail(StatusCode::SERVICE_UNAVAILABLE, "internal", e.to_string())
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"kaskade-cdr.csv\"",
            ),
        ],
        to_csv(&records),
    )
        .into_response())
}
