//! The node protocol: reports, meeting info, link info and call records. Every request carries
//! a node credential (`Authorization: Kaskade-Node name:unix:hmac`) made with the cluster
//! secret, and a node speaks only for itself.

use super::{ApiPath, AppState, Failure, check_meeting, fail, parse_json};
use crate::state::Now;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_protocol::cluster::{
    CallRecord, MAX_NODE_INDEX, NodeReport, ReportAck, verify_node_credential,
};
use kaskade_protocol::signaling::valid_meeting;
use kaskade_protocol::token::unix_now;
use tracing::info;

/// Meetings one report may list.
const MAX_REPORTED_MEETINGS: usize = 100_000;
/// Call records one request may carry.
const MAX_CALL_RECORDS: usize = 10_000;
/// Longest node name, region, URL and identity accepted.
pub(super) const MAX_NAME: usize = 128;
const MAX_URL: usize = 2048;
const MAX_IDENTITY: usize = 256;

/// The node a request's credential names; when `node` is given, it must be that node.
pub(super) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    node: Option<&str>,
) -> Result<String, Failure> {
    let shared = &state.0;
    let refused = |message: String| {
        shared.metrics.report_rejected("credentials");
        fail(StatusCode::UNAUTHORIZED, "bad_node_credentials", message)
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refused(
            "node requests need `Authorization: Kaskade-Node name:unix:hmac` made with the \
             cluster secret"
                .into(),
        ));
    };
    let name = verify_node_credential(&shared.secret, value, unix_now()).map_err(|e| {
        refused(format!(
            "{e}: is the node started with the locator's --secret?"
        ))
    })?;
    if let Some(node) = node {
        speaks_for(state, &name, node)?;
    }
    Ok(name)
}

/// Refuses a request that the credential of `name` makes for `node`, another node.
pub(super) fn speaks_for(state: &AppState, name: &str, node: &str) -> Result<(), Failure> {
    if name == node {
        return Ok(());
    }
    state.0.metrics.report_rejected("forbidden");
    Err(fail(
        StatusCode::FORBIDDEN,
        "bad_node_credentials",
        format!("the credential is {name:?}'s, not {node:?}'s"),
    ))
}

/// Whether `text` is 1 to `max` bytes without control characters.
pub(super) fn plain(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && !text.chars().any(char::is_control)
}

/// Whether `url` is a URL of one of `schemes`, without spaces.
pub(super) fn url_with(url: &str, schemes: &[&str]) -> bool {
    url.len() <= MAX_URL
        && !url.chars().any(|c| c.is_control() || c.is_whitespace())
        && schemes
            .iter()
            .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()))
}

/// What is wrong with a report, if anything.
fn invalid(report: &NodeReport) -> Option<String> {
    if !plain(&report.node, MAX_NAME) {
        return Some(format!(
            "node names are 1 to {MAX_NAME} printable characters"
        ));
    }
    if report
        .index
        .is_some_and(|i| !(1..=MAX_NODE_INDEX).contains(&i))
    {
        return Some(format!("index must be 1 to {MAX_NODE_INDEX}"));
    }
    if !url_with(
        &report.signaling_url,
        &["ws://", "wss://", "http://", "https://"],
    ) {
        return Some("signaling_url must be a ws(s):// or http(s):// URL".into());
    }
    if !url_with(&report.http_url, &["http://", "https://"]) {
        return Some("http_url must be an http(s):// URL".into());
    }
    if report
        .region
        .as_deref()
        .is_some_and(|r| !plain(r, MAX_NAME))
    {
        return Some(format!("regions are 1 to {MAX_NAME} printable characters"));
    }
    if report.capacity == 0 {
        return Some("capacity must be at least 1".into());
    }
    if report.max_bitrate_out_bps == Some(0) {
        return Some("max_bitrate_out_bps must be positive when given".into());
    }
    if report.media_addr.port() == 0 {
        return Some("media_addr needs a port".into());
    }
    if !report.cpu_cores.is_finite() || report.cpu_cores < 0.0 {
        return Some("cpu_cores must be a finite, non-negative number".into());
    }
    if report.meetings.len() > MAX_REPORTED_MEETINGS {
        return Some(format!(
            "at most {MAX_REPORTED_MEETINGS} meetings per report"
        ));
    }
    for load in &report.meetings {
        if !valid_meeting(&load.meeting) {
            return Some(format!("{:?} is not a meeting name", load.meeting));
        }
        if load.moderators.iter().any(|m| !plain(m, MAX_IDENTITY)) {
            return Some(format!(
                "a moderator identity of {:?} is malformed",
                load.meeting
            ));
        }
    }
    None
}

/// `POST /api/nodes/report`.
pub(super) async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportAck>, Failure> {
    let shared = &state.0;
    let name = authenticate(&state, &headers, None)?;
    let report: NodeReport =
        parse_json(&body).inspect_err(|_| shared.metrics.report_rejected("malformed"))?;
    if let Some(problem) = invalid(&report) {
        shared.metrics.report_rejected("invalid");
        return Err(fail(StatusCode::BAD_REQUEST, "bad_request", problem));
    }
    speaks_for(&state, &name, &report.node)?;
    let now = Now::current();
    let registration = shared.store.report(&report, now).await?;
    let index = registration.index;
    if registration.new {
        info!(node = %name, index, signaling = %report.signaling_url, "node registered");
    }
    shared.metrics.node_reports.inc();
    Ok(Json(ReportAck {
        index,
        node_timeout_ms: shared.node_timeout_ms(),
    }))
}

/// `GET /api/nodes/{node}/meetings/{meeting}`.
pub(super) async fn meeting_info(
    State(state): State<AppState>,
    ApiPath((node, meeting)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    authenticate(&state, &headers, Some(&node))?;
    check_meeting(&meeting)?;
    match state.0.store.host(&node, &meeting, Now::current()).await? {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(unregistered(&node)),
    }
}

fn unregistered(node: &str) -> Failure {
    fail(
        StatusCode::NOT_FOUND,
        "unknown_node",
        format!("{node:?} is not a live node: it reports first (POST /api/nodes/report)"),
    )
}

/// `GET /api/nodes/{node}/links/{peer}`.
pub(super) async fn link(
    State(state): State<AppState>,
    ApiPath((node, peer)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    authenticate(&state, &headers, Some(&node))?;
    let now = Now::current();
    if state.0.store.node(&node, now).await?.is_none() {
        return Err(unregistered(&node));
    }
    match state.0.store.link(&node, &peer, now).await? {
        Some(link) => Ok(Json(link).into_response()),
        None => Err(fail(
            StatusCode::NOT_FOUND,
            "unknown_node",
            format!("{peer:?} is not a live node other than {node:?}"),
        )),
    }
}

/// `POST /api/nodes/{node}/cdr`.
pub(super) async fn cdr(
    State(state): State<AppState>,
    ApiPath(node): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    authenticate(&state, &headers, Some(&node))?;
    let records: Vec<CallRecord> = parse_json(&body)?;
    if records.len() > MAX_CALL_RECORDS {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("at most {MAX_CALL_RECORDS} records per request"),
        ));
    }
    if let Some(foreign) = records.iter().find(|r| r.node != node) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "record {:?} names node {:?}, not {node:?}",
                foreign.session, foreign.node
            ),
        ));
    }
    if let Some(bad) = records.iter().find(|r| r.left_at_ms < r.joined_at_ms) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("record {:?} ends before it starts", bad.session),
        ));
    }
    let stored = state.0.cdr.insert(records).await.map_err(|e| {
        tracing::warn!("storing call records: {e}");
        fail(StatusCode::SERVICE_UNAVAILABLE, "internal", e.to_string())
    })?;
    state.0.metrics.cdr_rows.inc_by(stored as u64);
    Ok(StatusCode::NO_CONTENT)
}
