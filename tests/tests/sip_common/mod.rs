//! What the SIP tests share: a node (or the all-in-one) with its SIP gateway on loopback,
//! participants with the tests' small media, a call dialled and answered, and a far end's RTP
//! socket that hears what kaskade sends.

use kaskade_client::{
    DialRequest, ErrorCode, MeetingState, Participant, ParticipantId, SourceState,
};
use kaskade_e2e::{Node, free_port, start_node};
use kaskade_sfu::transcode::Law;
use std::process::Command;
use std::time::Duration;

/// The machine has two cores: SIP tests (each with an H.264 encoder or two) run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const WAIT: Duration = Duration::from_secs(20);

/// A node with its SIP gateway on a free loopback port, digest credentials for the sipp
/// scenario that asks for them, and calls that ring for 5 s at most.
pub fn node() -> Node {
    node_with(&[])
}

/// [`node`] with more arguments.
pub fn node_with(more: &[&str]) -> Node {
    let sip = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--sip-listen",
        &sip,
        "--sip-auth-user",
        "mcu-user",
        "--sip-password",
        "s3cret",
        "--sip-ring-timeout",
        "5s",
    ];
    args.extend_from_slice(more);
    start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), &args)
}

pub async fn join(node: &Node, meeting: &str, name: &str) -> Participant {
    Participant::join(kaskade_e2e::small_media_config(node.http, meeting, name))
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

/// The all-in-one's SQLite file (call records, the SIP directory, dial-in numbers) in a
/// test's scratch directory.
pub const DB: &str = "kaskade.sqlite";

/// The all-in-one with its files in `scratch` and its SIP gateway on a free loopback port,
/// with `more` arguments: it, and its SIP address.
pub fn all_in_one(scratch: &kaskade_e2e::Scratch, more: &[&str]) -> (Node, String) {
    let sip = format!("127.0.0.1:{}", free_port());
    let (db, recordings) = (scratch.path(DB), scratch.path("rec"));
    let mut args = vec![
        "--db",
        &db,
        "--recordings",
        &recordings,
        "--sip-listen",
        &sip,
    ];
    args.extend_from_slice(more);
    let node = Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-under-test")),
        &args,
    )
    .expect("the all-in-one starts");
    (node, sip)
}

/// `chair` dials `uri` and the far end answers (`what` says how, when it does not); the
/// call's participant id.
pub async fn answered(chair: &Participant, uri: &str, what: &str) -> ParticipantId {
    let id = dial(chair, uri, "").await;
    live(chair, id, what).await;
    id
}

/// What `viewer` sees once the call `id` is live (`what` says how, when it does not get there).
pub async fn live(viewer: &Participant, id: ParticipantId, what: &str) -> MeetingState {
    viewer
        .wait_until(WAIT, |s| source_state(s, id) == Some(SourceState::Live))
        .await
        .expect(what)
}

/// A UDP socket on loopback standing for a far end's RTP port, and its port.
pub async fn rtp_socket() -> (tokio::net::UdpSocket, String) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    (socket, port)
}

/// `chair` dials `uri`; the call's participant id.
pub async fn dial(chair: &Participant, uri: &str, name: &str) -> ParticipantId {
    let request = DialRequest {
        uri: uri.into(),
        name: name.into(),
        ..DialRequest::default()
    };
    chair
        .dial(request, WAIT)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{uri} is dialled: {e:?}"))
}

pub fn source_state(state: &MeetingState, id: ParticipantId) -> Option<SourceState> {
    state
        .participants
        .get(&id)?
        .source
        .as_ref()
        .map(|s| s.state)
}

/// `viewer` decoded at least `frames` video frames and `frames` audio packets of `id`, with
/// no decode error.
pub fn decodes(state: &MeetingState, id: ParticipantId, frames: u64) -> bool {
    let r = state.stats.remote(id);
    r.video_frames_decoded >= frames && r.audio_packets >= frames && r.decode_errors == 0
}

/// The `call_failed` error `chair` got after `before` errors, within [`WAIT`].
pub async fn failure(chair: &Participant, before: usize) -> String {
    let state = chair
        .wait_until(WAIT, |s| s.errors.len() > before)
        .await
        .expect("the moderator is told the call failed");
    let (code, message) = state.errors[before].clone();
    assert_eq!(code, ErrorCode::CallFailed, "{message}");
    message
}

pub async fn wait_gone(viewer: &Participant, id: ParticipantId) {
    viewer
        .wait_until(WAIT, |s| !s.participants.contains_key(&id))
        .await
        .expect("the call's participant left the meeting");
}

/// What kaskade sent to a far end's RTP port for `duration`: (payload type, payload) each.
pub async fn far_end_hears(
    socket: &tokio::net::UdpSocket,
    duration: Duration,
) -> Vec<(u8, Vec<u8>)> {
    let mut heard = Vec::new();
    let mut buf = [0u8; 2_048];
    let end = tokio::time::Instant::now() + duration;
    while let Ok(Ok(n)) = tokio::time::timeout_at(end, socket.recv(&mut buf)).await {
        if n >= 12 {
            heard.push((buf[1] & 0x7f, buf[12..n].to_vec()));
        }
    }
    heard
}

/// The loudness of a PCMU payload (root mean square of its samples).
pub fn pcmu_rms(payload: &[u8]) -> f64 {
    let sum: f64 = payload
        .iter()
        .map(|&b| f64::from(Law::MuLaw.expand(b)).powi(2))
        .sum();
    (sum / payload.len().max(1) as f64).sqrt()
}
