//! Recordings through the locator. Recorders report here (`POST /api/recorders/report`, with a
//! node credential named after the recorder); moderators and the operator start and stop a
//! meeting's recordings and holders of a token for the meeting list them. The locator forwards
//! each request to the live recorders' own API (`POST {url}/recordings`, `GET
//! {url}/recordings?meeting=M`, `DELETE {url}/recordings/{id}`), authenticated with a node
//! credential named [`CREDENTIAL_NAME`].

use super::nodes::{MAX_NAME, authenticate, plain, speaks_for, url_with};
use super::operator::has_api_key;
use super::{ApiPath, AppState, Failure, bearer, check_meeting, fail, parse_json, public_base};
use crate::recorders::Recorder;
use crate::state::Now;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use futures_util::future::join_all;
use kaskade_protocol::cluster::{ApiError, node_credential};
use kaskade_protocol::recording::{RecorderReport, RecordingInfo, StartRecording};
use kaskade_protocol::signaling::Role;
use kaskade_protocol::token::{Claims, unix_now};
use reqwest::RequestBuilder;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tracing::{info, warn};

/// How long the locator waits for a recorder's answer.
const RECORDER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a recorder's token lasts: the longest recording, which rejoins with it after a
/// lost node.
const RECORDER_TOKEN_SECS: u64 = 24 * 3600;
/// The name in the node credential the locator presents to recorders.
const CREDENTIAL_NAME: &str = "locator";

/// The answer to a recorder's report.
#[derive(Debug, Serialize)]
pub(super) struct RecorderAck {
    /// A recorder whose reports stop for this long is no longer used.
    timeout_ms: u64,
}

/// `POST /api/recorders/report`.
pub(super) async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RecorderAck>, Failure> {
    let shared = &state.0;
    let name = authenticate(&state, &headers, None)?;
    let report: RecorderReport =
        parse_json(&body).inspect_err(|_| shared.metrics.report_rejected("malformed"))?;
    if let Some(problem) = invalid(&report) {
        shared.metrics.report_rejected("invalid");
        return Err(fail(StatusCode::BAD_REQUEST, "bad_request", problem));
    }
    speaks_for(&state, &name, &report.name)?;
    if shared.recorders.report(&report, Now::current().instant) {
        info!(recorder = %name, url = %report.url, "recorder registered");
    }
    shared.metrics.recorder_reports.inc();
    Ok(Json(RecorderAck {
        timeout_ms: shared.node_timeout_ms(),
    }))
}

/// What is wrong with a recorder's report, if anything.
fn invalid(report: &RecorderReport) -> Option<String> {
    if !plain(&report.name, MAX_NAME) {
        return Some(format!(
            "recorder names are 1 to {MAX_NAME} printable characters"
        ));
    }
    if !url_with(&report.url, &["http://", "https://"]) {
        return Some("url must be an http(s):// URL".into());
    }
    None
}

/// Who asks about a meeting's recordings.
enum Caller {
    /// The operator: the request carries the API key.
    Operator,
    /// The holder of a valid token for the meeting.
    Holder(Claims),
}

/// The caller of a request about `meeting`'s recordings; 401 `bad_token` for anyone else.
fn caller(state: &AppState, headers: &HeaderMap, meeting: &str) -> Result<Caller, Failure> {
    if has_api_key(state, headers) {
        return Ok(Caller::Operator);
    }
    let token = bearer(headers).ok_or_else(|| {
        fail(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "recordings need `Authorization: Bearer <a token for the meeting>` (or the \
             operator's API key)",
        )
    })?;
    state
        .0
        .tokens
        .verify(token, meeting, unix_now())
        .map(Caller::Holder)
        .map_err(|e| fail(StatusCode::UNAUTHORIZED, "bad_token", e.to_string()))
}

/// Lets through the operator and the meeting's moderators (by the token's role, or, as on
/// join, a participant whose identity is among the meeting's moderators); 403 `forbidden` for
/// other holders of a token.
async fn moderator(state: &AppState, headers: &HeaderMap, meeting: &str) -> Result<(), Failure> {
    let claims = match caller(state, headers, meeting)? {
        Caller::Operator => return Ok(()),
        Caller::Holder(claims) => claims,
    };
    let known_moderator = claims.role == Role::Participant
        && state
            .0
            .store
            .meeting(meeting, Now::current())
            .await?
            .is_some_and(|view| view.moderators.contains(&claims.sub));
    if claims.role == Role::Moderator || known_moderator {
        Ok(())
    } else {
        Err(fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a moderator of the meeting (or the operator) starts and stops recordings",
        ))
    }
}

/// `POST /api/meetings/{meeting}/recordings`: the least busy live recorder that answers records
/// the meeting.
pub(super) async fn start(
    State(state): State<AppState>,
    ApiPath(meeting): ApiPath<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<RecordingInfo>), Failure> {
    check_meeting(&meeting)?;
    moderator(&state, &headers, &meeting).await?;
    let join_url = public_base(&headers).ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the recorder joins through this request's Host, which is missing or not a plain \
             host[:port]",
        )
    })?;
    let recorders = state.0.recorders.live(Now::current().instant);
    if recorders.is_empty() {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_recorder",
            "no recorder is live: run kaskade-recorder --locator <this locator>",
        ));
    }
    let request = StartRecording {
        token: state.0.tokens.sign(&Claims {
            meeting: meeting.clone(),
            sub: "recorder".into(),
            name: "Recorder".into(),
            role: Role::Recorder,
            exp: unix_now() + RECORDER_TOKEN_SECS,
            rejoin: true,
            jti: None,
            aud: None,
            dial: false,
        }),
        meeting,
        join_url,
    };
    let mut failures = Vec::new();
    for recorder in &recorders {
        let started: Result<RecordingInfo, _> = call(
            &state,
            recorder,
            Method::POST,
            &["recordings"],
            |r| r.json(&request),
            StatusCode::CREATED,
        )
        .await;
        match started {
            Ok(info) => {
                state.0.recorders.started(&recorder.name);
                info!(meeting = %request.meeting, recorder = %recorder.name, id = %info.id,
                    "recording started");
                return Ok((StatusCode::CREATED, Json(info)));
            }
            Err(refused @ RecorderError::Refused(..)) => return Err(refused.into()),
            Err(e) => {
                warn!("starting a recording: {e}");
                failures.push(e.to_string());
            }
        }
    }
    Err(fail(
        StatusCode::BAD_GATEWAY,
        "recorder_failed",
        format!(
            "no live recorder could start the recording: {}",
            failures.join("; ")
        ),
    ))
}

/// `GET /api/meetings/{meeting}/recordings`: the recordings of every live recorder, oldest
/// first.
pub(super) async fn list(
    State(state): State<AppState>,
    ApiPath(meeting): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<RecordingInfo>>, Failure> {
    check_meeting(&meeting)?;
    if !state.0.open {
        caller(&state, &headers, &meeting)?;
    }
    let mut recordings: Vec<RecordingInfo> = listings(&state, &meeting)
        .await
        .into_iter()
        .flat_map(|(_, list)| list)
        .collect();
    recordings.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
    Ok(Json(recordings))
}

/// `DELETE /api/meetings/{meeting}/recordings/{id}`: the recorder that holds this recording of
/// the meeting stops it.
pub(super) async fn stop(
    State(state): State<AppState>,
    ApiPath((meeting, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<RecordingInfo>, Failure> {
    check_meeting(&meeting)?;
    moderator(&state, &headers, &meeting).await?;
    let listings = listings(&state, &meeting).await;
    let Some((recorder, _)) = listings
        .iter()
        .find(|(_, list)| list.iter().any(|r| r.id == id))
    else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no live recorder has a recording {id:?} of meeting {meeting:?}"),
        ));
    };
    let stopped = call(
        &state,
        recorder,
        Method::DELETE,
        &["recordings", &id],
        |r| r,
        StatusCode::OK,
    )
    .await?;
    info!(%meeting, recorder = %recorder.name, %id, "recording stopped");
    Ok(Json(stopped))
}

/// Every live recorder with its recordings of `meeting`; one that fails is skipped and logged.
async fn listings(state: &AppState, meeting: &str) -> Vec<(Recorder, Vec<RecordingInfo>)> {
    let recorders = state.0.recorders.live(Now::current().instant);
    let asks = recorders.into_iter().map(|recorder| async move {
        let list = call(
            state,
            &recorder,
            Method::GET,
            &["recordings"],
            |r| r.query(&[("meeting", meeting)]),
            StatusCode::OK,
        )
        .await;
        list.inspect_err(|e| warn!("listing recordings of {meeting:?}: {e}"))
            .ok()
            .map(|list| (recorder, list))
    });
    join_all(asks).await.into_iter().flatten().collect()
}

/// Why a recorder did not do what it was asked.
#[derive(Debug, thiserror::Error)]
enum RecorderError {
    /// It could not be reached, failed, refused the locator's credential or answered garbage.
    #[error("{0}")]
    Failed(String),
    /// It refused the request itself (4xx).
    #[error("refused: {0} {error}: {message}", error = .1.error, message = .1.message)]
    Refused(StatusCode, ApiError),
}

impl From<RecorderError> for Failure {
    fn from(e: RecorderError) -> Self {
        match e {
            RecorderError::Refused(StatusCode::NOT_FOUND, error) => {
                fail(StatusCode::NOT_FOUND, "not_found", error.message)
            }
            RecorderError::Refused(status, error) => fail(
                status,
                "recorder_refused",
                format!("the recorder refused: {}: {}", error.error, error.message),
            ),
            RecorderError::Failed(why) => fail(StatusCode::BAD_GATEWAY, "recorder_failed", why),
        }
    }
}

/// Sends `method` to `segments` under `recorder`'s URL, with the locator's node credential and
/// what `build` adds; the answer when its status is `expect`.
async fn call<T: DeserializeOwned>(
    state: &AppState,
    recorder: &Recorder,
    method: Method,
    segments: &[&str],
    build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    expect: StatusCode,
) -> Result<T, RecorderError> {
    let failed = |why: String| {
        RecorderError::Failed(format!(
            "recorder {:?} ({}): {why}",
            recorder.name, recorder.url
        ))
    };
    let mut url = reqwest::Url::parse(&recorder.url).map_err(|e| failed(e.to_string()))?;
    url.path_segments_mut()
        .map_err(|()| failed("its URL is not a base URL".into()))?
        .pop_if_empty()
        .extend(segments);
    let credential = node_credential(&state.0.secret, CREDENTIAL_NAME, unix_now());
    let request = state
        .0
        .http
        .request(method, url)
        .header(header::AUTHORIZATION, credential)
        .timeout(RECORDER_TIMEOUT);
    let response = build(request)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
    if status == expect {
        return serde_json::from_slice(&body).map_err(|e| failed(format!("malformed answer: {e}")));
    }
    let credential_refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(error) if status.is_client_error() && !credential_refused => {
            Err(RecorderError::Refused(status, error))
        }
        _ => Err(failed(format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))),
    }
}
