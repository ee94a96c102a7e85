//! Meetings' dial-in numbers: a node reads the meeting behind a number a phone entered (and
//! its PIN), a meeting's number for its moderators (numbering it on first ask), and sets the
//! PIN a moderator chose; the operator reads a meeting's number for invitations.

use super::nodes::authenticate;
use super::operator::authorize;
use super::{ApiPath, AppState, Failure, check_meeting, fail, parse_json};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use kaskade_protocol::directory::{DialIn, PinRequest, valid_dial_in_number, valid_pin};

/// `GET /api/nodes/{node}/dial-in/{number}`: the meeting and PIN of `number`, or 404.
pub(super) async fn by_number(
    State(state): State<AppState>,
    ApiPath((node, number)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<DialIn>, Failure> {
    authenticate(&state, &headers, Some(&node))?;
    let known = if valid_dial_in_number(&number) {
        state.0.dial_ins.by_number(&number).await?
    } else {
        None
    };
    known.map(Json).ok_or_else(|| {
        fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no meeting has the number {number:?}"),
        )
    })
}

/// `GET /api/nodes/{node}/meetings/{meeting}/dial-in`.
pub(super) async fn for_node(
    State(state): State<AppState>,
    ApiPath((node, meeting)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<DialIn>, Failure> {
    authenticate(&state, &headers, Some(&node))?;
    check_meeting(&meeting)?;
    Ok(Json(state.0.dial_ins.of_meeting(&meeting).await?))
}

/// `PUT /api/nodes/{node}/meetings/{meeting}/dial-in` `{"pin": "1234" | null}`.
pub(super) async fn set_pin(
    State(state): State<AppState>,
    ApiPath((node, meeting)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DialIn>, Failure> {
    authenticate(&state, &headers, Some(&node))?;
    check_meeting(&meeting)?;
    let request: PinRequest = parse_json(&body)?;
    if request.pin.as_deref().is_some_and(|pin| !valid_pin(pin)) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a PIN is 4 to 8 digits",
        ));
    }
    Ok(Json(state.0.dial_ins.set_pin(&meeting, request.pin).await?))
}

/// `GET /api/meetings/{meeting}/dial-in` (the operator's).
pub(super) async fn for_operator(
    State(state): State<AppState>,
    ApiPath(meeting): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<DialIn>, Failure> {
    authorize(&state, &headers)?;
    check_meeting(&meeting)?;
    Ok(Json(state.0.dial_ins.of_meeting(&meeting).await?))
}
