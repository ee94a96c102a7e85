//! Recordings through the locator, against fake recorders: small HTTP servers that speak the
//! recorder's API (`POST/GET /recordings`, `DELETE /recordings/{id}`), check the locator's node
//! credential and keep what they were asked. They stand in for `kaskade-recorder` until the
//! end-to-end test records a real meeting with the real one.

mod common;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use common::locator::{Locator, Options, SECRET, answer, start, token};
use kaskade_protocol::cluster::{ApiError, node_credential, verify_node_credential};
use kaskade_protocol::recording::{RecorderReport, RecordingInfo, RecordingState, StartRecording};
use kaskade_protocol::signaling::Role;
use kaskade_protocol::token::{TokenKey, unix_now};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What a fake recorder was asked and holds.
#[derive(Default)]
struct Seen {
    /// Every request, as `METHOD path`.
    requests: Vec<String>,
    /// Every start request.
    starts: Vec<StartRecording>,
    /// Its recordings.
    recordings: Vec<RecordingInfo>,
}

/// A fake recorder serving on a loopback port.
struct FakeRecorder {
    name: String,
    url: String,
    seen: Arc<Mutex<Seen>>,
    server: JoinHandle<()>,
}

impl Drop for FakeRecorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct FakeState {
    name: String,
    seen: Arc<Mutex<Seen>>,
}

fn refuse(status: AxumStatus, error: &str, message: &str) -> Response {
    let body = ApiError {
        error: error.into(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// Counts the request; the refusal when the locator did not send it.
fn refused(fake: &FakeState, headers: &HeaderMap, request: String) -> Option<Response> {
    fake.seen.lock().unwrap().requests.push(request);
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match verify_node_credential(SECRET.as_bytes(), credential, unix_now()) {
        Ok(name) if name == "locator" => None,
        _ => Some(refuse(
            AxumStatus::UNAUTHORIZED,
            "bad_node_credentials",
            "not the locator",
        )),
    }
}

async fn fake_start(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    Json(start): Json<StartRecording>,
) -> Response {
    if let Some(refused) = refused(&fake, &headers, "POST /recordings".into()) {
        return refused;
    }
    let mut seen = fake.seen.lock().unwrap();
    let info = RecordingInfo {
        id: format!("{}-{}", fake.name, seen.recordings.len() + 1),
        meeting: start.meeting.clone(),
        state: RecordingState::Recording,
        started_at_ms: unix_now() * 1000 + seen.recordings.len() as u64,
        stopped_at_ms: None,
        participants: Vec::new(),
        composed: None,
        manifest: format!("/r/{}/manifest.json", start.meeting),
        incidents: Vec::new(),
    };
    seen.starts.push(start);
    seen.recordings.push(info.clone());
    (AxumStatus::CREATED, Json(info)).into_response()
}

#[derive(Deserialize)]
struct MeetingQuery {
    meeting: String,
}

async fn fake_list(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    Query(query): Query<MeetingQuery>,
) -> Response {
    if let Some(refused) = refused(
        &fake,
        &headers,
        format!("GET /recordings?{}", query.meeting),
    ) {
        return refused;
    }
    let seen = fake.seen.lock().unwrap();
    let list: Vec<&RecordingInfo> = seen
        .recordings
        .iter()
        .filter(|r| r.meeting == query.meeting)
        .collect();
    Json(list).into_response()
}

async fn fake_stop(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = refused(&fake, &headers, format!("DELETE /recordings/{id}")) {
        return refused;
    }
    let mut seen = fake.seen.lock().unwrap();
    match seen.recordings.iter_mut().find(|r| r.id == id) {
        Some(recording) => {
            recording.state = RecordingState::Finalizing;
            recording.stopped_at_ms = Some(unix_now() * 1000);
            Json(recording.clone()).into_response()
        }
        None => refuse(AxumStatus::NOT_FOUND, "not_found", "no such recording"),
    }
}

impl FakeRecorder {
    async fn start(name: &str) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = FakeState {
            name: name.into(),
            seen: seen.clone(),
        };
        let router = Router::new()
            .route("/recordings", get(fake_list).post(fake_start))
            .route("/recordings/{id}", delete(fake_stop))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            name: name.into(),
            url,
            seen,
            server,
        }
    }

    /// Reports to `locator` with `recordings` running and a credential made with `secret`.
    async fn report(
        &self,
        locator: &Locator,
        recordings: u32,
        secret: &str,
    ) -> (StatusCode, Value) {
        let report = RecorderReport {
            name: self.name.clone(),
            url: self.url.clone(),
            recordings,
        };
        send_report(locator, &report, &self.name, secret).await
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().requests.clone()
    }

    fn starts(&self) -> Vec<StartRecording> {
        self.seen.lock().unwrap().starts.clone()
    }
}

async fn send_report(
    locator: &Locator,
    report: &RecorderReport,
    credential_name: &str,
    secret: &str,
) -> (StatusCode, Value) {
    let response = locator
        .http
        .post(format!("{}/api/recorders/report", locator.base))
        .header(
            "Authorization",
            node_credential(secret.as_bytes(), credential_name, unix_now()),
        )
        .json(report)
        .send()
        .await
        .unwrap();
    answer(response).await
}

/// A request on `meeting`'s recordings (`suffix` after `/recordings`), with `bearer` when given.
async fn recordings(
    locator: &Locator,
    method: reqwest::Method,
    meeting: &str,
    suffix: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let url = format!("{}/api/meetings/{meeting}/recordings{suffix}", locator.base);
    let mut request = locator.http.request(method, url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.unwrap()).await
}

async fn start_recording(
    locator: &Locator,
    meeting: &str,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    recordings(locator, reqwest::Method::POST, meeting, "", bearer, &[]).await
}

async fn list_recordings(
    locator: &Locator,
    meeting: &str,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    recordings(locator, reqwest::Method::GET, meeting, "", bearer, &[]).await
}

async fn stop_recording(
    locator: &Locator,
    meeting: &str,
    id: &str,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let suffix = format!("/{id}");
    recordings(
        locator,
        reqwest::Method::DELETE,
        meeting,
        &suffix,
        bearer,
        &[],
    )
    .await
}

fn error(answer: &(StatusCode, Value)) -> (StatusCode, Option<&str>) {
    (answer.0, answer.1["error"].as_str())
}

/// A locator with a secret and the API key `k3y`.
async fn closed_locator() -> Locator {
    start(Options {
        open: false,
        api_key: Some("k3y"),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_moderator_starts_a_recording_and_the_recorder_gets_a_recorder_token() {
    let locator = closed_locator().await;
    let recorder = FakeRecorder::start("rec-a").await;
    let (status, ack) = recorder.report(&locator, 0, SECRET).await;
    assert_eq!((status, ack), (StatusCode::OK, json!({"timeout_ms": 3000})));
    let moderator = token("board", "ann", Role::Moderator, false);
    let (status, info) = start_recording(&locator, "board", Some(&moderator)).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(
        (info["id"].as_str(), info["state"].as_str()),
        (Some("rec-a-1"), Some("recording"))
    );
    let starts = recorder.starts();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].meeting, "board");
    assert_eq!(
        starts[0].join_url, locator.base,
        "the Host the request came to"
    );
    let claims = TokenKey::from_secret(SECRET.as_bytes())
        .verify(&starts[0].token, "board", unix_now())
        .expect("a token for the meeting under the cluster secret");
    assert_eq!(
        (
            claims.role,
            claims.sub.as_str(),
            claims.name.as_str(),
            claims.rejoin
        ),
        (Role::Recorder, "recorder", "Recorder", true)
    );
    let day = 24 * 3600;
    assert!((unix_now() + day - 10..=unix_now() + day).contains(&claims.exp));
    // behind a TLS proxy the recorder joins over https
    let (status, _) = recordings(
        &locator,
        reqwest::Method::POST,
        "board",
        "",
        Some(&moderator),
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        recorder.starts()[1].join_url,
        locator.base.replace("http://", "https://")
    );
    let (_, metrics) = locator.get("/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("kaskade_locator_recorder_reports_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn only_moderators_and_the_operator_start_and_stop_recordings() {
    let locator = closed_locator().await;
    let recorder = FakeRecorder::start("rec-a").await;
    recorder.report(&locator, 0, SECRET).await;
    let participant = token("board", "bob", Role::Participant, false);
    let elsewhere = token("other", "ann", Role::Moderator, false);
    let refused = start_recording(&locator, "board", Some(&participant)).await;
    assert_eq!(error(&refused), (StatusCode::FORBIDDEN, Some("forbidden")));
    for bearer in [
        None,
        Some("nonsense"),
        Some(elsewhere.as_str()),
        Some("wrong-key"),
    ] {
        let refused = start_recording(&locator, "board", bearer).await;
        assert_eq!(
            error(&refused),
            (StatusCode::UNAUTHORIZED, Some("bad_token")),
            "{bearer:?}"
        );
    }
    let bad = start_recording(&locator, "no%20good", Some("k3y")).await;
    assert_eq!(error(&bad), (StatusCode::BAD_REQUEST, Some("bad_request")));
    assert!(
        recorder.starts().is_empty(),
        "no refused start reached the recorder"
    );

    let (status, info) = start_recording(&locator, "board", Some("k3y")).await;
    assert_eq!(status, StatusCode::CREATED, "the operator starts");
    let id = info["id"].as_str().unwrap();
    let refused = stop_recording(&locator, "board", id, Some(&participant)).await;
    assert_eq!(error(&refused), (StatusCode::FORBIDDEN, Some("forbidden")));
    let refused = stop_recording(&locator, "board", id, None).await;
    assert_eq!(
        error(&refused),
        (StatusCode::UNAUTHORIZED, Some("bad_token"))
    );
    // a moderator of another meeting cannot stop this one's recording through their meeting
    let foreign = stop_recording(&locator, "other", id, Some(&elsewhere)).await;
    assert_eq!(error(&foreign), (StatusCode::NOT_FOUND, Some("not_found")));
    let unknown = stop_recording(&locator, "board", "nope", Some("k3y")).await;
    assert_eq!(error(&unknown), (StatusCode::NOT_FOUND, Some("not_found")));
    assert!(
        unknown.1["message"].as_str().unwrap().contains("\"nope\""),
        "{}",
        unknown.1
    );
    assert!(
        !recorder.requests().iter().any(|r| r.starts_with("DELETE")),
        "the locator asks to stop only a recording of the meeting it knows"
    );
    let moderator = token("board", "ann", Role::Moderator, false);
    let (status, stopped) = stop_recording(&locator, "board", id, Some(&moderator)).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(
        (stopped["id"].as_str(), stopped["state"].as_str()),
        (Some(id), Some("finalizing"))
    );
}

#[tokio::test]
async fn an_open_locator_lists_for_anyone_but_starts_only_for_a_moderator_token() {
    let locator = start(Options::default()).await;
    let recorder = FakeRecorder::start("rec-a").await;
    recorder.report(&locator, 0, SECRET).await;
    let refused = start_recording(&locator, "standup", None).await;
    assert_eq!(
        error(&refused),
        (StatusCode::UNAUTHORIZED, Some("bad_token"))
    );
    let (status, list) = list_recordings(&locator, "standup", None).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    // the first open participant is the moderator, and their join token starts a recording
    locator.send_report(&common::report("a", 10), SECRET).await;
    let (_, joined) = locator.join("standup", json!({"name": "Ann"})).await;
    assert_eq!(joined["role"], "moderator");
    let (status, _) = start_recording(&locator, "standup", joined["token"].as_str()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = list_recordings(&locator, "standup", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn lists_merge_every_live_recorder_for_holders_of_a_token_of_the_meeting() {
    let locator = closed_locator().await;
    let busy = FakeRecorder::start("busy").await;
    let idle = FakeRecorder::start("idle").await;
    busy.report(&locator, 5, SECRET).await;
    idle.report(&locator, 0, SECRET).await;
    // a recorder that does not answer is skipped; as the least busy it is asked first, so each
    // start below also fails over past it
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = RecorderReport {
        name: "dead".into(),
        url: format!("http://{}", closed.local_addr().unwrap()),
        recordings: 0,
    };
    drop(closed);
    send_report(&locator, &dead, "dead", SECRET).await;
    let moderator = token("board", "ann", Role::Moderator, false);
    for _ in 0..2 {
        let (status, _) = start_recording(&locator, "board", Some(&moderator)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    assert_eq!(idle.starts().len(), 2, "the least busy recorder records");
    // the next start goes to busy once idle counts more recordings
    idle.report(&locator, 6, SECRET).await;
    start_recording(&locator, "board", Some(&moderator)).await;
    assert_eq!(busy.starts().len(), 1);
    let participant = token("board", "bob", Role::Participant, false);
    let (status, list) = list_recordings(&locator, "board", Some(&participant)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&"idle-1") && ids.contains(&"idle-2") && ids.contains(&"busy-1"));
    let (status, list) = list_recordings(&locator, "board", Some("k3y")).await;
    assert_eq!(
        (status, list.as_array().map(Vec::len)),
        (StatusCode::OK, Some(3))
    );
    let elsewhere = token("other", "bob", Role::Participant, false);
    let refused = list_recordings(&locator, "board", Some(&elsewhere)).await;
    assert_eq!(
        error(&refused),
        (StatusCode::UNAUTHORIZED, Some("bad_token"))
    );
    let refused = list_recordings(&locator, "board", None).await;
    assert_eq!(
        error(&refused),
        (StatusCode::UNAUTHORIZED, Some("bad_token"))
    );
}

#[tokio::test]
async fn without_a_live_recorder_a_start_is_503_and_a_silent_recorder_is_not_used() {
    let locator = start(Options {
        open: false,
        timeout: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let moderator = token("board", "ann", Role::Moderator, false);
    let none = start_recording(&locator, "board", Some(&moderator)).await;
    assert_eq!(
        error(&none),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_recorder"))
    );
    let recorder = FakeRecorder::start("rec-a").await;
    let (_, ack) = recorder.report(&locator, 0, SECRET).await;
    assert_eq!(ack["timeout_ms"], 400);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let gone = start_recording(&locator, "board", Some(&moderator)).await;
    assert_eq!(
        error(&gone),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_recorder"))
    );
    let (status, list) = list_recordings(&locator, "board", Some(&moderator)).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    assert!(recorder.requests().is_empty(), "{:?}", recorder.requests());
    recorder.report(&locator, 0, SECRET).await;
    let (status, _) = start_recording(&locator, "board", Some(&moderator)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "reporting again brings it back"
    );
}

#[tokio::test]
async fn recorder_reports_are_authenticated_and_validated() {
    let locator = closed_locator().await;
    let recorder = FakeRecorder::start("rec-a").await;
    let wrong = recorder.report(&locator, 0, "wrong").await;
    assert_eq!(
        error(&wrong),
        (StatusCode::UNAUTHORIZED, Some("bad_node_credentials"))
    );
    let report = RecorderReport {
        name: "rec-a".into(),
        url: recorder.url.clone(),
        recordings: 0,
    };
    let forged = send_report(&locator, &report, "rec-b", SECRET).await;
    assert_eq!(
        error(&forged),
        (StatusCode::FORBIDDEN, Some("bad_node_credentials"))
    );
    let bad_url = RecorderReport {
        url: "ftp://rec-a".into(),
        ..report.clone()
    };
    let invalid = send_report(&locator, &bad_url, "rec-a", SECRET).await;
    assert_eq!(
        error(&invalid),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let moderator = token("board", "ann", Role::Moderator, false);
    let none = start_recording(&locator, "board", Some(&moderator)).await;
    assert_eq!(
        error(&none),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_recorder"))
    );
}

#[tokio::test]
async fn an_embedded_recorder_is_used_without_reports() {
    let recorder = FakeRecorder::start("embedded").await;
    let locator = start(Options {
        open: false,
        timeout: Duration::from_millis(200),
        embedded_recorder: Some(recorder.url.clone()),
        ..Options::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let moderator = token("board", "ann", Role::Moderator, false);
    let (status, info) = start_recording(&locator, "board", Some(&moderator)).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    let id = info["id"].as_str().unwrap();
    let (status, _) = stop_recording(&locator, "board", id, Some(&moderator)).await;
    assert_eq!(status, StatusCode::OK);
    let requests: HashMap<String, usize> =
        recorder
            .requests()
            .into_iter()
            .fold(HashMap::new(), |mut m, r| {
                *m.entry(r).or_default() += 1;
                m
            });
    assert_eq!(requests.get("POST /recordings"), Some(&1));
    assert_eq!(requests.get(&format!("DELETE /recordings/{id}")), Some(&1));
}
