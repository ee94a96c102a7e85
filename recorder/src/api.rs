//! The recorder's HTTP surface: recording control for the locator (`/recordings`, node
//! credentials), and playback for people (`/r/{meeting}`: the recordings page, its JSON list
//! and the files, with range requests so players can seek; a token for the meeting unless the
//! recorder runs with open access).

use crate::service::{Recorder, ServiceError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use kaskade_protocol::cluster::{ApiError, verify_node_credential};
use kaskade_protocol::recording::StartRecording;
use kaskade_protocol::token::unix_now;
use serde::Deserialize;
use std::sync::Arc;

/// Bytes served per range response at most; players ask again for the rest.
const MAX_RANGE: u64 = 8 << 20;

/// The recorder's routes.
pub fn router(recorder: Arc<Recorder>) -> Router {
    Router::new()
        .route("/recordings", get(list).post(start))
        .route("/recordings/{id}", delete(stop))
        .route("/r/{meeting}", get(page))
        .route("/r/{meeting}/recordings.json", get(public_list))
        .route("/r/{meeting}/{id}/{file}", get(file))
        .with_state(recorder)
}

#[derive(Deserialize)]
struct MeetingQuery {
    meeting: String,
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
}

async fn start(
    State(recorder): State<Arc<Recorder>>,
    headers: HeaderMap,
    Json(request): Json<StartRecording>,
) -> Response {
    if let Err(e) = locator_only(&recorder, &headers) {
        return e.into_response();
    }
    match recorder.start(request).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(
    State(recorder): State<Arc<Recorder>>,
    headers: HeaderMap,
    Query(query): Query<MeetingQuery>,
) -> Response {
    if let Err(e) = locator_only(&recorder, &headers) {
        return e.into_response();
    }
    Json(recorder.list(&query.meeting)).into_response()
}

async fn stop(
    State(recorder): State<Arc<Recorder>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = locator_only(&recorder, &headers) {
        return e.into_response();
    }
    match recorder.stop(&id).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../web/recordings.html"))
}

async fn public_list(
    State(recorder): State<Arc<Recorder>>,
    Path(meeting): Path<String>,
    Query(query): Query<TokenQuery>,
) -> Response {
    if let Err(e) = recorder.check_viewer(&meeting, query.token.as_deref()) {
        return e.into_response();
    }
    Json(recorder.list(&meeting)).into_response()
}

async fn file(
    State(recorder): State<Arc<Recorder>>,
    Path((meeting, id, name)): Path<(String, String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = recorder.check_viewer(&meeting, query.token.as_deref()) {
        return e.into_response();
    }
    let file = match recorder.open_file(&meeting, &id, &name).await {
        Ok(file) => file,
        Err(e) => return e.into_response(),
    };
    let len = file.len();
    let Some(range) = headers.get(header::RANGE).and_then(|r| r.to_str().ok()) else {
        // no range asked: the whole file, read piece by piece
        let pieces = futures_util::stream::unfold((file, 0u64), move |(file, at)| async move {
            if at >= len {
                return None;
            }
            let end = (at + MAX_RANGE).min(len);
            let piece = file
                .read_range(at, end)
                .await
                .map_err(std::io::Error::other);
            Some((piece, (file, end)))
        });
        return media_response(StatusCode::OK, &name, Body::from_stream(pieces), None);
    };
    let Some((start, end)) = parse_range(range, len) else {
        return (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        )
            .into_response();
    };
    let end = end.min(start + MAX_RANGE);
    match file.read_range(start, end).await {
        Ok(bytes) => media_response(
            StatusCode::PARTIAL_CONTENT,
            &name,
            Body::from(bytes),
            Some(format!("bytes {start}-{}/{len}", end - 1)),
        ),
        Err(e) => e.into_response(),
    }
}

fn media_response(
    status: StatusCode,
    name: &str,
    body: Body,
    content_range: Option<String>,
) -> Response {
    let content_type = if name.ends_with(".json") {
        "application/json"
    } else {
        "video/mp4"
    };
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body,
    )
        .into_response();
    if let Some(range) = content_range
        && let Ok(value) = range.parse()
    {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// `bytes=START-[END]` or `bytes=-SUFFIX` against a file of `len` bytes: the half-open range
/// `[start, end)`, or `None` if it cannot be satisfied. Multiple ranges are not served.
/// Public for the fuzz target of the `Range` header (`fuzz/fuzz_targets/recorder_http.rs`).
pub fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (len.saturating_sub(n), len)
        }
        (start, "") => (start.parse().ok()?, len),
        (start, end) => (
            start.parse().ok()?,
            end.parse::<u64>().ok()?.saturating_add(1).min(len),
        ),
    };
    (start < end && start < len).then_some((start, end))
}

/// Recording control is for the locator: a node credential under the cluster secret.
fn locator_only(recorder: &Recorder, headers: &HeaderMap) -> Result<(), ServiceError> {
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    verify_node_credential(recorder.secret(), credential, unix_now())
        .map(|_| ())
        .map_err(|e| ServiceError::Unauthorized(e.to_string()))
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            ServiceError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ServiceError::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        (
            status,
            Json(ApiError {
                error: error.into(),
                message: self.to_string(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_parsed_and_bounded() {
        assert_eq!(parse_range("bytes=0-", 100), Some((0, 100)));
        assert_eq!(parse_range("bytes=10-19", 100), Some((10, 20)));
        assert_eq!(parse_range("bytes=90-500", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-", 100), None);
    }
}
