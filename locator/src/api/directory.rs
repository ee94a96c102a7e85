//! The directory of SIP rooms: the operator lists, sets and removes entries (guarded like the
//! other operator endpoints), and nodes read it with their node credential when a participant
//! opens the dialpad or dials an entry.

use super::nodes::authenticate;
use super::operator::authorize;
use super::{ApiPath, AppState, Failure, fail, parse_json};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kaskade_protocol::directory::{DirectoryEntry, valid_id};
use serde::Deserialize;
use tracing::info;

/// The body of `PUT /api/directory/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBody {
    name: String,
    uri: String,
    #[serde(default)]
    credentials: Option<String>,
}

/// `GET /api/directory`.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<DirectoryEntry>>, Failure> {
    authorize(&state, &headers)?;
    Ok(Json(state.0.directory.list().await?))
}

/// `PUT /api/directory/{id}`: 201 with the entry when it is new, 200 when it replaced one.
pub(super) async fn set(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    authorize(&state, &headers)?;
    let body: EntryBody = parse_json(&body)?;
    let entry = DirectoryEntry {
        id,
        name: body.name.trim().to_string(),
        uri: body.uri.trim().to_string(),
        credentials: body.credentials.filter(|c| !c.is_empty()),
    };
    entry
        .check()
        .map_err(|why| fail(StatusCode::BAD_REQUEST, "bad_request", why))?;
    let created = state.0.directory.put(entry.clone()).await?;
    info!(id = %entry.id, uri = %entry.uri, created, "directory entry set");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry)).into_response())
}

/// `DELETE /api/directory/{id}`: 204, or 404 when there is no such entry.
pub(super) async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    authorize(&state, &headers)?;
    if valid_id(&id) && state.0.directory.remove(&id).await? {
        info!(%id, "directory entry removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no directory entry {id:?}"),
        ))
    }
}

/// `GET /api/nodes/{node}/directory`: the whole directory, credentials references included,
/// for a node.
pub(super) async fn for_node(
    State(state): State<AppState>,
    ApiPath(node): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<DirectoryEntry>>, Failure> {
    authenticate(&state, &headers, Some(&node))?;
    Ok(Json(state.0.directory.list().await?))
}
