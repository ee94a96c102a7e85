//! `POST /api/meetings/{meeting}/join`: admit a participant, place them on a node, and hand
//! them that node's signaling URL and a token for it.

use super::{ApiPath, AppState, Failure, Shared, bearer, check_meeting, fail, parse_json};
use crate::placement::{PlacementError, Request};
use crate::state::{Now, Placed};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kaskade_protocol::cluster::{JoinRequest, JoinResponse};
use kaskade_protocol::signaling::{Role, display_name};
use kaskade_protocol::token::Claims;
use std::net::SocketAddr;
use std::time::Instant;
use tracing::{info, warn};

/// Largest join request body (a name, a token, a region and a node name fit many times over).
pub const MAX_JOIN_BODY: usize = 16 << 10;

/// How long a token handed out with a placement lasts.
pub const JOIN_TOKEN_SECS: u64 = 300;

pub(super) async fn join(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    ApiPath(meeting): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = match state.0.limits.join(client.ip(), Instant::now()) {
        Ok(()) => admit(&state, meeting, &headers, &body).await,
        Err(refusal) => {
            info!(client = %client.ip(), "join refused: {refusal}");
            Err(fail(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                refusal.to_string(),
            ))
        }
    };
    match admitted {
        Ok(joined) => {
            state.0.metrics.join("ok");
            Json(joined).into_response()
        }
        Err(failure) => {
            state.0.metrics.join(failure.code());
            failure.into_response()
        }
    }
}

/// Who a join request is, from its token, or a guest where joins are open.
struct Joiner {
    identity: String,
    name: String,
    role: Role,
    rejoin: bool,
    /// The token grants the right to place SIP calls.
    dial: bool,
    /// A one-time token's id and expiry, spent once the join is placed.
    one_time: Option<(String, u64)>,
}

/// The request in `body` (empty means all defaults), within [`MAX_JOIN_BODY`].
fn parse_request(body: &[u8]) -> Result<JoinRequest, Failure> {
    if body.len() > MAX_JOIN_BODY {
        return Err(fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            format!("a join request is at most {MAX_JOIN_BODY} bytes"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(JoinRequest::default());
    }
    parse_json(body)
}

/// Checks the request's token (in the body, or as `Authorization: Bearer`) for `meeting`: a
/// locator with a secret admits only token holders, and a node's signaling token is no join
/// token.
fn identify(
    shared: &Shared,
    meeting: &str,
    request: &JoinRequest,
    headers: &HeaderMap,
    now_secs: u64,
) -> Result<Joiner, Failure> {
    let bad_token = |message: String| fail(StatusCode::UNAUTHORIZED, "bad_token", message);
    let token = request
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers));
    let claims = match token {
        Some(token) => shared
            .tokens
            .verify(token, meeting, now_secs)
            .map_err(|e| bad_token(e.to_string()))?,
        None if shared.open => {
            return Ok(Joiner {
                identity: format!("guest-{:08x}", rand::random::<u32>()),
                name: display_name(&request.name),
                role: Role::Participant,
                rejoin: false,
                dial: false,
                one_time: None,
            });
        }
        None => {
            return Err(bad_token(
                "this locator admits only holders of a token for the meeting".into(),
            ));
        }
    };
    if claims.aud.is_some() {
        return Err(bad_token(
            "this token is for a node's signaling, not for joining".into(),
        ));
    }
    Ok(Joiner {
        one_time: claims.jti.map(|jti| (jti, claims.exp)),
        identity: claims.sub,
        name: claims.name,
        role: claims.role,
        rejoin: claims.rejoin,
        dial: claims.dial,
    })
}

/// What a client is told when placement fails.
fn placement_failure(error: PlacementError, request: &JoinRequest) -> Failure {
    match error {
        PlacementError::MeetingFull(_) => {
            fail(StatusCode::CONFLICT, "meeting_full", error.to_string())
        }
        PlacementError::NoCapacity => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_capacity",
            error.to_string(),
        ),
        PlacementError::UnknownNode => fail(
            StatusCode::NOT_FOUND,
            "unknown_node",
            format!(
                "no live node is named {:?}",
                request.node.as_deref().unwrap_or("")
            ),
        ),
    }
}

/// Places `role` in `meeting` where `request` prefers (checking first a node the client lost),
/// timed and counted.
async fn place(
    state: &AppState,
    meeting: &str,
    request: &JoinRequest,
    role: Role,
    now: Now,
) -> Result<Placed, Failure> {
    let shared = &state.0;
    if let Some(lost) = request.avoid_node.as_deref() {
        check_lost_node(state, lost, now).await?;
    }
    let wanted = Request {
        region: request.region.as_deref(),
        pinned: request.node.as_deref(),
        avoid: request.avoid_node.as_deref(),
        hidden: role == Role::Recorder,
    };
    let started = Instant::now();
    let placed = shared.store.place(meeting, wanted, now).await?;
    shared
        .metrics
        .placement_seconds
        .observe(started.elapsed().as_secs_f64());
    let placed = placed.map_err(|e| placement_failure(e, request))?;
    shared.metrics.placement(placed.placement.kind.label());
    Ok(placed)
}

async fn admit(
    state: &AppState,
    meeting: String,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<JoinResponse, Failure> {
    let shared = &state.0;
    check_meeting(&meeting)?;
    let request = parse_request(body)?;
    let now = Now::current();
    let now_secs = now.unix_ms / 1000;
    let Joiner {
        identity,
        name,
        mut role,
        rejoin,
        dial,
        one_time,
    } = identify(shared, &meeting, &request, headers, now_secs)?;
    let view = shared
        .store
        .meeting(&meeting, now)
        .await?
        .unwrap_or_default();
    let known_moderator = view.moderators.contains(&identity);
    if role == Role::Participant && known_moderator {
        role = Role::Moderator;
    }
    if view.locked && !rejoin && role != Role::Moderator {
        return Err(fail(
            StatusCode::LOCKED,
            "meeting_locked",
            "the meeting is locked: a moderator has to unlock it",
        ));
    }
    let placed = place(state, &meeting, &request, role, now).await?;
    if shared.open && role == Role::Participant && placed.placement.participants_before == 0 {
        role = Role::Moderator;
    }
    if role == Role::Moderator && !known_moderator {
        shared.store.add_moderator(&meeting, &identity).await?;
    }
    if let Some((jti, exp)) = &one_time
        && !shared.store.spend_token(jti, *exp, now).await?
    {
        info!(%meeting, "a one-time token was presented again");
        return Err(fail(
            StatusCode::UNAUTHORIZED,
            "token_used",
            "this one-time token was already used",
        ));
    }
    // the node token of a one-time join is one-time too, and good on the placed node only
    let token = shared.tokens.sign(&Claims {
        meeting: meeting.clone(),
        sub: identity,
        name,
        role,
        exp: now_secs + JOIN_TOKEN_SECS,
        rejoin,
        jti: one_time.is_some().then(Claims::new_jti),
        aud: one_time.is_some().then(|| placed.node.node.clone()),
        dial,
    });
    Ok(JoinResponse {
        meeting,
        node: placed.node.node,
        signaling_url: placed.node.signaling_url,
        token,
        role,
    })
}

/// A client lost `node`: if its health check fails too, drop it now rather than at the node
/// timeout, so the next joins of its participants do not wait for it.
async fn check_lost_node(state: &AppState, node: &str, now: Now) -> Result<(), Failure> {
    let shared = &state.0;
    let Some(record) = shared.store.node(node, now).await? else {
        return Ok(());
    };
    let url = format!("{}/healthz", record.http_url.trim_end_matches('/'));
    let healthy = shared
        .http
        .get(&url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if healthy {
        info!(%node, "a client lost the node, but it answers its health check");
    } else {
        warn!(%node, "a client lost the node and its health check fails: dropping it");
        shared.store.mark_dead(node).await?;
    }
    Ok(())
}
