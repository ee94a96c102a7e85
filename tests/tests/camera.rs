//! RTSP cameras in meetings, against a real RTSP server (GStreamer's gst-rtsp-server, from
//! tests/rtsp/camera.py) and a real `kaskade-sfu`: a moderator adds a camera, participants
//! decode its H.264 and its G.711 audio transcoded to Opus (its Opus audio as it is), the
//! camera survives a restart of its server, and every refusal says what is wrong.

use kaskade_client::{
    CameraRequest, ErrorCode, MeetingState, Participant, ParticipantId, RtspTransport, SourceState,
};
use kaskade_e2e::{Node, RtspCamera, free_port, start_node};
use std::process::Command;
use std::time::Duration;

/// The machine has two cores: camera tests run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(20);

/// The test camera on loopback (`port` 0: a free one).
fn start_camera(port: u16, args: &[&str]) -> RtspCamera {
    RtspCamera::start(Command::new("/usr/bin/python3"), port, args)
}

fn node() -> Node {
    start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), &[])
}

async fn join(node: &Node, meeting: &str, name: &str) -> Participant {
    Participant::join(kaskade_e2e::small_media_config(node.http, meeting, name))
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

fn camera_request(url: &str, name: &str) -> CameraRequest {
    CameraRequest {
        url: url.into(),
        name: name.into(),
        username: None,
        password: None,
        transport: RtspTransport::Tcp,
    }
}

/// `chair` adds the camera of `request`; `what` names it in a failure.
async fn add(chair: &Participant, request: CameraRequest, what: &str) -> ParticipantId {
    chair
        .add_camera(request, WAIT)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what} is added: {e:?}"))
}

/// `request` with the test camera's `--auth ops:s3cret` credentials.
fn logged_in(mut request: CameraRequest) -> CameraRequest {
    request.username = Some("ops".into());
    request.password = Some("s3cret".into());
    request
}

/// `viewer` decodes at least `frames` more video frames and audio packets of `camera` than
/// it had in `before`, with no decode error.
fn decodes(state: &MeetingState, camera: ParticipantId, before: (u64, u64), frames: u64) -> bool {
    let r = state.stats.remote(camera);
    r.video_frames_decoded >= before.0 + frames
        && r.audio_packets >= before.1 + frames
        && r.decode_errors == 0
}

fn received(viewer: &Participant, camera: ParticipantId) -> (u64, u64) {
    let r = viewer.stats().remote(camera);
    (r.video_frames_decoded, r.audio_packets)
}

fn source_state(state: &MeetingState, camera: ParticipantId) -> Option<SourceState> {
    state
        .participants
        .get(&camera)
        .and_then(|p| p.source.as_ref())
        .map(|s| s.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_is_seen_and_heard_and_survives_its_server_restarting() {
    let _serial = SERIAL.lock().await;
    let node = node();
    let camera = start_camera(0, &[]);
    let chair = join(&node, "cams", "chair").await;
    let guest = join(&node, "cams", "guest").await;
    let id = add(
        &chair,
        camera_request(&camera.url(), "Board room"),
        "the camera",
    )
    .await;

    // both see it as a camera named as asked, and decode its video and audio
    for viewer in [&chair, &guest] {
        let state = viewer
            .wait_until(WAIT, |s| decodes(s, id, (0, 0), 30))
            .await
            .expect("the camera's video and audio are decoded");
        let info = &state.participants[&id];
        assert_eq!(info.name, "Board room");
        assert_eq!(source_state(&state, id), Some(SourceState::Live));
    }

    // the camera's server goes away: the tile says so, and kaskade keeps trying
    let port = camera.port;
    drop(camera);
    let state = guest
        .wait_until(WAIT, |s| {
            source_state(s, id) == Some(SourceState::Reconnecting)
        })
        .await
        .expect("the camera is shown reconnecting");
    let detail = state.participants[&id]
        .source
        .as_ref()
        .unwrap()
        .detail
        .clone();
    assert!(detail.is_some_and(|d| !d.is_empty()), "with the reason");

    // it comes back on the same address: live again, and decoded again
    let _camera = start_camera(port, &[]);
    let before = received(&guest, id);
    guest
        .wait_until(Duration::from_secs(60), |s| {
            source_state(s, id) == Some(SourceState::Live) && decodes(s, id, before, 30)
        })
        .await
        .expect("the camera is live and decoded again after its server restarted");

    // when the people leave, the camera leaves with them
    guest.leave().await.unwrap();
    chair.leave().await.unwrap();
    let mut empty = false;
    for _ in 0..50 {
        if node.metric("kaskade_sfu_participants").unwrap() == 0.0 {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(empty, "the camera left the emptied meeting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_over_udp_with_credentials_and_a_law_audio_plays() {
    let _serial = SERIAL.lock().await;
    let node = node();
    let camera = start_camera(0, &["--auth", "ops:s3cret", "--audio", "pcma"]);
    let chair = join(&node, "udp", "chair").await;
    let mut request = logged_in(camera_request(&camera.url(), ""));
    request.transport = RtspTransport::Udp;
    let id = add(&chair, request, "the camera over UDP").await;
    let state = chair
        .wait_until(WAIT, |s| decodes(s, id, (0, 0), 30))
        .await
        .expect("the UDP camera's video and audio are decoded");
    assert_eq!(
        state.participants[&id].name, "127.0.0.1",
        "named after its host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_sends_opus_is_heard_as_it_sends_it() {
    let _serial = SERIAL.lock().await;
    let node = node();
    // credentials: the Opus stream plays in a second session, which must log in too
    let camera = start_camera(0, &["--auth", "ops:s3cret", "--audio", "opus"]);
    let chair = join(&node, "opus", "chair").await;
    let request = logged_in(camera_request(&camera.url(), "Lobby"));
    let id = add(&chair, request, "the camera with Opus audio").await;
    let state = chair
        .wait_until(WAIT, |s| decodes(s, id, (0, 0), 50))
        .await
        .expect("the camera's video and Opus audio arrive");
    let r = state.stats.remote(id);
    let mean = r.audio_bytes / r.audio_packets;
    // the camera's 64 kbit/s packets, not re-encoded at the transcoder's 32 kbit/s
    assert!((150..=170).contains(&mean), "{mean} bytes an audio packet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_viewer_of_a_camera_with_rare_keyframes_decodes_at_once_and_hears_its_aac() {
    let _serial = SERIAL.lock().await;
    let node = node();
    // a keyframe every 10 s: without the node's cached group of pictures, someone who joins
    // 2 s after one waits 8 s for the next
    // and AAC audio, transcoded to Opus
    let camera = start_camera(0, &["--gop", "150", "--audio", "aac"]);
    let chair = join(&node, "gop", "chair").await;
    let id = add(&chair, camera_request(&camera.url(), "Lobby"), "the camera").await;
    chair
        .wait_until(WAIT, |s| decodes(s, id, (0, 0), 15))
        .await
        .expect("the chair decodes the camera");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let joined = std::time::Instant::now();
    let guest = join(&node, "gop", "guest").await;
    guest
        .wait_until(Duration::from_secs(5), |s| {
            s.stats.remote(id).video_frames_decoded > 0
        })
        .await
        .expect("the late viewer decodes the camera long before its next keyframe");
    println!(
        "late viewer's first camera frame {} ms after joining (next keyframe ~8 s away)",
        joined.elapsed().as_millis()
    );
    assert!(node.metric("kaskade_sfu_gop_replays_total").unwrap() >= 1.0);
    let state = guest
        .wait_until(WAIT, |s| decodes(s, id, (0, 0), 30))
        .await
        .expect("and goes on decoding");
    assert_eq!(state.stats.remote(id).decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_wrong_and_nothing_joins() {
    let _serial = SERIAL.lock().await;
    let node = node();
    let secured = start_camera(0, &["--auth", "ops:s3cret"]);
    let jpeg = start_camera(0, &["--video", "jpeg"]);
    let chair = join(&node, "refusals", "chair").await;
    let guest = join(&node, "refusals", "guest").await;
    let closed = format!("rtsp://127.0.0.1:{}/cam", free_port());
    let wrong_path = format!("rtsp://127.0.0.1:{}/nothing-here", jpeg.port);
    let mut wrong_password = camera_request(&secured.url(), "");
    wrong_password.username = Some("ops".into());
    wrong_password.password = Some("guess".into());
    let cases = [
        (
            camera_request("http://example.com/cam", ""),
            ErrorCode::BadRequest,
            "rtsp://",
        ),
        (
            camera_request(&closed, ""),
            ErrorCode::SourceFailed,
            "cannot reach the camera",
        ),
        (
            camera_request(&secured.url(), ""),
            ErrorCode::SourceFailed,
            "credentials",
        ),
        (wrong_password, ErrorCode::SourceFailed, "credentials"),
        (
            camera_request(&wrong_path, ""),
            ErrorCode::SourceFailed,
            "no stream at this URL",
        ),
        (
            camera_request(&jpeg.url(), ""),
            ErrorCode::SourceFailed,
            "JPEG video",
        ),
    ];
    for (request, code, says) in cases {
        let url = request.url.clone();
        let (got, message) = chair
            .add_camera(request, WAIT)
            .await
            .unwrap()
            .expect_err("refused");
        assert_eq!(got, code, "{url}: {message}");
        assert!(
            message.contains(says),
            "{url}: {message:?} should say {says:?}"
        );
    }
    let (code, _) = guest
        .add_camera(camera_request(&jpeg.url(), ""), WAIT)
        .await
        .unwrap()
        .expect_err("only moderators add cameras");
    assert_eq!(code, ErrorCode::Forbidden);
    assert_eq!(
        node.metric("kaskade_sfu_participants").unwrap(),
        2.0,
        "no refused camera joined"
    );
    assert_eq!(chair.state().participants.len(), 1);
}
