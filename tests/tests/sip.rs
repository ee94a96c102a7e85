//! The SIP gateway against real SIP peers on loopback and a real `kaskade-sfu`: a moderator
//! dials baresip (a room system that sends real H.264 and audio) and the meeting decodes it;
//! sipp scenarios for digest authentication with an answer of PCMU only, busy, ringing then
//! hung up, a far end that holds with a re-INVITE, and one that hangs up; the tile shows each
//! call's progress, every failure reaches the moderator in words, and DTMF keys reach the room
//! system. A participant with the dial right picks a room of the locator's directory, whose
//! credentials the node holds by name.

use kaskade_client::{
    ClientMessage, DialRequest, ErrorCode, MeetingState, ModerateAction, Participant,
    ParticipantId, SourceKind, SourceState,
};
use kaskade_e2e::sip_peers::{Baresip, BaresipAudio, Sipp};
use kaskade_e2e::{Node, free_port, start_node};
use kaskade_protocol::token::{Claims, Role, TokenKey};
use kaskade_sfu::transcode::Law;
use rtc::shared::marshal::Unmarshal;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// The machine has two cores: SIP tests (each with an H.264 encoder or two) run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(20);

/// A node with its SIP gateway on a free loopback port, digest credentials for the sipp
/// scenario that asks for them, and calls that ring for 5 s at most.
fn node() -> Node {
    node_with(&[])
}

/// [`node`] with more arguments.
fn node_with(more: &[&str]) -> Node {
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

async fn join(node: &Node, meeting: &str, name: &str) -> Participant {
    Participant::join(kaskade_e2e::small_media_config(node.http, meeting, name))
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

/// The node's CPU share (of one core) over `window`.
async fn cpu_over(node: &Node, window: Duration) -> f64 {
    let before = node.cpu_seconds().unwrap();
    tokio::time::sleep(window).await;
    (node.cpu_seconds().unwrap() - before) / window.as_secs_f64()
}

/// The all-in-one's SQLite file (call records, the SIP directory, dial-in numbers) in a
/// test's scratch directory.
const DB: &str = "kaskade.sqlite";

/// The all-in-one with its files in `scratch` and its SIP gateway on a free loopback port,
/// with `more` arguments: it, and its SIP address.
fn all_in_one(scratch: &kaskade_e2e::Scratch, more: &[&str]) -> (Node, String) {
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
async fn answered(chair: &Participant, uri: &str, what: &str) -> ParticipantId {
    let id = dial(chair, uri, "").await;
    chair
        .wait_until(WAIT, |s| source_state(s, id) == Some(SourceState::Live))
        .await
        .expect(what);
    id
}

/// A UDP socket on loopback standing for a far end's RTP port, and its port.
async fn rtp_socket() -> (tokio::net::UdpSocket, String) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    (socket, port)
}

/// `chair` dials `uri`; the call's participant id.
async fn dial(chair: &Participant, uri: &str, name: &str) -> ParticipantId {
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

fn source_state(state: &MeetingState, id: ParticipantId) -> Option<SourceState> {
    state
        .participants
        .get(&id)?
        .source
        .as_ref()
        .map(|s| s.state)
}

/// `viewer` decoded at least `frames` video frames and `frames` audio packets of `id`, with
/// no decode error.
fn decodes(state: &MeetingState, id: ParticipantId, frames: u64) -> bool {
    let r = state.stats.remote(id);
    r.video_frames_decoded >= frames && r.audio_packets >= frames && r.decode_errors == 0
}

/// The `call_failed` error `chair` got after `before` errors, within [`WAIT`].
async fn failure(chair: &Participant, before: usize) -> String {
    let state = chair
        .wait_until(WAIT, |s| s.errors.len() > before)
        .await
        .expect("the moderator is told the call failed");
    let (code, message) = state.errors[before].clone();
    assert_eq!(code, ErrorCode::CallFailed, "{message}");
    message
}

async fn wait_gone(viewer: &Participant, id: ParticipantId) {
    viewer
        .wait_until(WAIT, |s| !s.participants.contains_key(&id))
        .await
        .expect("the call's participant left the meeting");
}

async fn a_room_system_is_seen_and_heard(audio: BaresipAudio) {
    let _serial = SERIAL.lock().await;
    let node = node();
    let room = Baresip::start(Command::new("baresip"), audio);
    let chair = join(&node, "sip", "chair").await;
    let guest = join(&node, "sip", "guest").await;
    let dialled = std::time::Instant::now();
    let id = dial(&chair, &room.uri(), "Oslo room").await;

    let first = chair
        .wait_until(WAIT, |s| s.stats.remote(id).video_frames_decoded >= 1)
        .await
        .expect("a first frame");
    let first_at = first
        .stats
        .remote(id)
        .first_frame_at
        .expect("first frame time");
    println!(
        "SIP_FIRST_FRAME_IN_MEETING ms={}",
        first_at.duration_since(dialled).as_millis()
    );
    for viewer in [&chair, &guest] {
        let state = viewer
            .wait_until(WAIT, |s| decodes(s, id, 30))
            .await
            .unwrap_or_else(|e| {
                panic!("the room system's video and audio are decoded ({audio:?}): {e}")
            });
        let info = &state.participants[&id];
        assert_eq!(info.name, "Oslo room");
        let source = info.source.as_ref().expect("a source");
        assert_eq!(
            (source.kind, source.state),
            (SourceKind::Sip, SourceState::Live)
        );
    }

    // the room system gets the meeting's picture and sound
    for kind in ["audio", "video"] {
        let line = format!("incoming rtp for '{kind}' established");
        let got = room.wait_for_line(&line, Duration::from_secs(5));
        assert!(got.is_some(), "baresip receives the meeting's {kind}");
    }
    let decoding = room.wait_for_line("video: receiving with resolution", Duration::from_secs(5));
    assert!(decoding.is_some(), "baresip decodes the meeting's picture");

    // the moderator steers the room system's menu with DTMF keys
    chair
        .send(&ClientMessage::Dtmf {
            target: id,
            digits: "4#".into(),
        })
        .await
        .unwrap();
    for key in ["'4'", "'#'"] {
        let heard = room.wait_for_line(&format!("received event: {key}"), Duration::from_secs(5));
        assert!(heard.is_some(), "the room system received the key {key}");
    }

    // the moderator hangs up by removing it: it leaves, and the node has only the two people
    // the node's CPU with the call (its media both ways) and, after it, without
    let with_call = cpu_over(&node, Duration::from_secs(5)).await;
    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&guest, id).await;
    assert_eq!(node.metric("kaskade_sfu_participants").unwrap(), 2.0);
    let without = cpu_over(&node, Duration::from_secs(5)).await;
    println!(
        "SIP_LEG_CPU audio={audio:?} node_cpu_with_call={:.1}% without={:.1}%",
        with_call * 100.0,
        without * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_sending_h264_and_opus_is_seen_and_heard_then_hung_up() {
    a_room_system_is_seen_and_heard(BaresipAudio::Opus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_with_only_g711_is_heard_through_the_transcoder() {
    a_room_system_is_seen_and_heard(BaresipAudio::G711).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_with_only_g722_is_heard_wideband_through_the_transcoder() {
    a_room_system_is_seen_and_heard(BaresipAudio::G722).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_fail_say_why_and_leave() {
    let _serial = SERIAL.lock().await;
    let node = node();
    let chair = join(&node, "fails", "chair").await;

    // busy
    let busy = Sipp::serve("busy");
    let errors = chair.state().errors.len();
    let id = dial(&chair, &busy.uri(), "").await;
    assert_eq!(
        failure(&chair, errors).await,
        format!("{}: busy (486 Busy Here)", busy.uri())
    );
    wait_gone(&chair, id).await;
    assert!(
        busy.finish(WAIT).is_some_and(|s| s.success()),
        "sipp saw the call as scripted"
    );

    // through a proxy (a call manager, played by sipp): the address is not resolved, the
    // INVITE goes to the proxy, whose answer counts
    let proxy = Sipp::serve("busy");
    let proxied = node_with(&["--sip-proxy", &format!("127.0.0.1:{}", proxy.port)]);
    let chair2 = join(&proxied, "fails", "chair").await;
    let errors = chair2.state().errors.len();
    let id = dial(&chair2, "sip:boardroom@mcu.invalid", "").await;
    assert_eq!(
        failure(&chair2, errors).await,
        "sip:boardroom@mcu.invalid: busy (486 Busy Here)"
    );
    wait_gone(&chair2, id).await;
    assert!(
        proxy.finish(WAIT).is_some_and(|s| s.success()),
        "the proxy got the INVITE"
    );

    // nobody answers: after the ring timeout (5 s here) kaskade gives up with CANCEL
    let unanswered = Sipp::serve("ring_then_cancel");
    let errors = chair.state().errors.len();
    let id = dial(&chair, &unanswered.uri(), "").await;
    assert_eq!(
        failure(&chair, errors).await,
        format!("{}: no answer", unanswered.uri())
    );
    wait_gone(&chair, id).await;
    assert!(
        unanswered.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got the CANCEL"
    );

    // refused at once: not a SIP address, and not a moderator
    let refused = chair
        .dial(
            DialRequest {
                uri: "tel:+4930123".into(),
                ..DialRequest::default()
            },
            WAIT,
        )
        .await
        .unwrap();
    assert!(
        matches!(refused, Err((ErrorCode::BadRequest, _))),
        "{refused:?}"
    );
    let guest = join(&node, "fails", "guest").await;
    let refused = guest
        .dial(
            DialRequest {
                uri: "sip:room@127.0.0.1".into(),
                ..DialRequest::default()
            },
            WAIT,
        )
        .await
        .unwrap();
    assert!(
        matches!(refused, Err((ErrorCode::Forbidden, _))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rings_then_is_hung_up_and_an_answered_one_ends_from_either_side() {
    let _serial = SERIAL.lock().await;
    let node = node();
    let chair = join(&node, "ring", "chair").await;

    // it rings; the moderator hangs up: CANCEL
    let ringing = Sipp::serve("ring_then_cancel");
    let id = dial(&chair, &ringing.uri(), "").await;
    chair
        .wait_until(WAIT, |s| source_state(s, id) == Some(SourceState::Ringing))
        .await
        .expect("the tile shows it ringing");
    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        ringing.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got the CANCEL"
    );

    // digest authentication, an answer with PCMU only; the moderator hangs up: BYE
    let authenticating = Sipp::serve("auth_answer_pcmu");
    let id = answered(
        &chair,
        &authenticating.uri(),
        "the call is answered after the challenge",
    )
    .await;
    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        authenticating.finish(WAIT).is_some_and(|s| s.success()),
        "sipp checked the credentials and got the BYE"
    );

    // the far end hangs up: the call leaves the meeting
    let hanging_up = Sipp::serve("answer_then_bye");
    let id = answered(&chair, &hanging_up.uri(), "answered").await;
    wait_gone(&chair, id).await;
    assert!(
        hanging_up.finish(WAIT).is_some_and(|s| s.success()),
        "sipp's BYE was answered"
    );

    // the far end holds with a re-INVITE: kaskade answers recvonly (BFCP refused), then it
    // hangs up
    let holding = Sipp::serve("reinvite_hold");
    let id = dial(&chair, &holding.uri(), "").await;
    wait_gone(&chair, id).await;
    assert!(
        holding.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got recvonly for its hold and port 0 for BFCP"
    );
}

/// What kaskade sent to a far end's RTP port for `duration`: (payload type, payload) each.
async fn far_end_hears(socket: &tokio::net::UdpSocket, duration: Duration) -> Vec<(u8, Vec<u8>)> {
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
fn pcmu_rms(payload: &[u8]) -> f64 {
    let sum: f64 = payload
        .iter()
        .map(|&b| f64::from(Law::MuLaw.expand(b)).powi(2))
        .sum();
    (sum / payload.len().max(1) as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_hears_the_meeting_mixed_into_pcmu() {
    let _serial = SERIAL.lock().await;
    let node = node();
    // the phone's RTP port is this test's own socket: it measures what kaskade sends
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::serve_with("answer_pcmu_to_port", &[("rtp_port", &port)]);
    let chair = join(&node, "hear", "chair").await;
    let id = dial(&chair, &phone.uri(), "phone").await;
    chair
        .wait_until(WAIT, |s| source_state(s, id) == Some(SourceState::Live))
        .await
        .expect("the phone answered");

    let heard = far_end_hears(&phone_rtp, Duration::from_secs(2)).await;
    let audio: Vec<&Vec<u8>> = heard
        .iter()
        .filter(|(pt, _)| *pt == 0)
        .map(|(_, p)| p)
        .collect();
    assert!(
        audio.len() >= 80,
        "a PCMU packet every 20 ms: {} in 2 s",
        audio.len()
    );
    assert!(
        audio.iter().all(|p| p.len() == 160),
        "20 ms of 8 kHz samples each"
    );
    let loudest = audio.iter().map(|p| pcmu_rms(p)).fold(0.0, f64::max);
    assert!(
        loudest > 2_000.0,
        "the chair's tone is in the mix: rms {loudest}"
    );

    // keys go in the same stream as RFC 4733 events
    chair
        .send(&ClientMessage::Dtmf {
            target: id,
            digits: "9".into(),
        })
        .await
        .unwrap();
    let heard = far_end_hears(&phone_rtp, Duration::from_millis(600)).await;
    let events: Vec<&Vec<u8>> = heard
        .iter()
        .filter(|(pt, _)| *pt == 101)
        .map(|(_, p)| p)
        .collect();
    assert_eq!(events.len(), 11, "one key: 8 packets and 3 ends");
    assert!(events.iter().all(|e| e[0] == 9), "the key 9");

    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got the BYE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_sees_the_meetings_speaker_and_decodes_it() {
    a_room_system_in_mode_sees_the_speaker(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_in_packetization_mode_0_gets_whole_nal_units_and_decodes_them() {
    a_room_system_in_mode_sees_the_speaker(0).await;
}

/// A room system that takes H.264 in packetization `mode` sees the meeting's speaker as one
/// stream that decodes (in mode 0, one whole NAL unit per packet) and hears the meeting.
async fn a_room_system_in_mode_sees_the_speaker(mode: u8) {
    let _serial = SERIAL.lock().await;
    let node = node();
    // the room system's RTP ports are this test's own sockets
    let (audio, audio_port) = rtp_socket().await;
    let (video, video_port) = rtp_socket().await;
    let mode_key = mode.to_string();
    let room = Sipp::serve_with(
        "answer_av_to_ports",
        &[
            ("rtp_port", &audio_port),
            ("video_port", &video_port),
            ("mode", &mode_key),
        ],
    );
    let chair = join(&node, "see", "chair").await;
    let dialled = std::time::Instant::now();
    let id = dial(&chair, &room.uri(), "room").await;
    chair
        .wait_until(WAIT, |s| source_state(s, id) == Some(SourceState::Live))
        .await
        .expect("the room system answered");

    // what arrives on its video port is one H.264 stream (payload type 98, as it asked) that
    // decodes: the chair's picture, from a keyframe kaskade asked the chair for
    let mut receiver = kaskade_client::h264::H264Receiver::default();
    let (mut decoded, mut errors, mut ssrcs, mut last_seq) = (0, 0, BTreeSet::new(), None);
    // a mode 0 keyframe is one datagram of many kilobytes
    let mut buf = vec![0u8; 65_536];
    let end = tokio::time::Instant::now() + Duration::from_secs(8);
    while decoded < 20 {
        let Ok(Ok(n)) = tokio::time::timeout_at(end, video.recv(&mut buf)).await else {
            break;
        };
        let packet = rtc::rtp::Packet::unmarshal(&mut &buf[..n]).unwrap();
        assert_eq!(packet.header.payload_type, 98);
        let nal_type = packet.payload.first().map_or(0, |b| b & 0x1f);
        if mode == 0 {
            assert!(
                (1..=23).contains(&nal_type),
                "a whole NAL unit: type {nal_type}"
            );
        }
        if let Some(last) = last_seq {
            assert_eq!(
                packet.header.sequence_number,
                u16::wrapping_add(last, 1),
                "in order"
            );
        }
        last_seq = Some(packet.header.sequence_number);
        ssrcs.insert(packet.header.ssrc);
        let outcome = receiver.push(
            std::time::Instant::now(),
            packet.header.sequence_number,
            packet.header.timestamp,
            packet.header.marker,
            packet.payload,
        );
        if decoded == 0 && outcome.decoded > 0 {
            println!(
                "SIP_FIRST_FRAME_AT_FAR_END ms={}",
                dialled.elapsed().as_millis()
            );
        }
        decoded += outcome.decoded;
        errors += outcome.errors;
    }
    assert!(
        decoded >= 20,
        "the room system decodes the chair: {decoded} frames"
    );
    assert_eq!(errors, 0);
    assert_eq!(ssrcs.len(), 1, "one stream");
    let sound = far_end_hears(&audio, Duration::from_millis(500)).await;
    assert!(
        sound.len() >= 15,
        "and hears the meeting: {} packets",
        sound.len()
    );

    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        room.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got the BYE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_leaves_a_call_record_with_its_caller_and_result() {
    let _serial = SERIAL.lock().await;
    // the all-in-one keeps the call records (its locator's SQLite) and exports them as CSV
    let scratch = kaskade_e2e::Scratch::new("sip-cdr");
    let (server, _) = all_in_one(&scratch, &[]);
    let mut config = kaskade_e2e::small_media_config(server.http, "cdr", "chair");
    config.locator = Some(server.url());
    let chair = Participant::join(config).await.expect("the chair joins");
    let busy = Sipp::serve("busy");
    let errors = chair.state().errors.len();
    let id = dial(&chair, &busy.uri(), "").await;
    failure(&chair, errors).await;
    wait_gone(&chair, id).await;
    let answering = Sipp::serve("answer_then_bye");
    let id = dial(&chair, &answering.uri(), "").await;
    wait_gone(&chair, id).await;

    let deadline = std::time::Instant::now() + WAIT;
    let rows = loop {
        let csv = kaskade_e2e::http_get(server.http, "/api/cdr.csv").unwrap_or_default();
        let rows: Vec<String> = csv
            .lines()
            .filter(|l| l.contains(",sip,"))
            .map(str::to_string)
            .collect();
        if rows.len() == 2 {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIP call records: {csv}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let row_of = |uri: &str| rows.iter().find(|r| r.contains(uri)).cloned().unwrap();
    let busy_row = row_of(&busy.uri());
    assert!(busy_row.ends_with(",busy (486 Busy Here)"), "{busy_row}");
    assert!(row_of(&answering.uri()).ends_with(",answered"), "{rows:?}");
    for row in &rows {
        assert!(
            row.starts_with("cdr") || row.contains(",cdr,"),
            "meeting as the account: {row}"
        );
        let caller = row.rsplit(',').nth(1).unwrap();
        assert!(!caller.is_empty(), "the caller is named: {row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_whose_far_end_goes_silent_is_hung_up() {
    let _serial = SERIAL.lock().await;
    let node = node_with(&["--sip-media-timeout", "2s"]);
    // sipp answers and then sends no RTP at all, as a room system that lost its network
    let silent_port = free_port().to_string();
    let room = Sipp::serve_with("answer_pcmu_to_port", &[("rtp_port", &silent_port)]);
    let chair = join(&node, "silent", "chair").await;
    let id = answered(&chair, &room.uri(), "answered").await;
    let live = std::time::Instant::now();
    wait_gone(&chair, id).await;
    let after = live.elapsed();
    assert!(
        after >= Duration::from_millis(1_500),
        "not before the timeout: {after:?}"
    );
    assert!(
        room.finish(WAIT).is_some_and(|s| s.success()),
        "kaskade sent BYE"
    );
}

/// A token for `name` in `meeting` signed with the all-in-one's `secret`, with the dial right
/// when `dial`.
fn token(secret: &str, meeting: &str, name: &str, dial: bool) -> String {
    let claims = Claims {
        dial,
        ..kaskade_e2e::claims(meeting, name, Role::Participant)
    };
    TokenKey::from_secret(secret.as_bytes()).sign(&claims)
}

/// Runs the all-in-one's `directory` tool on `db`; its stdout.
fn directory_tool(db: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kaskade-under-test"))
        .args(["directory", "--db", db])
        .args(args)
        .output()
        .expect("the directory tool runs");
    assert!(
        output.status.success(),
        "directory {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialler_calls_a_room_of_the_directory_with_the_credentials_it_names() {
    let _serial = SERIAL.lock().await;
    const SECRET: &str = "directory-secret";
    let scratch = kaskade_e2e::Scratch::new("sip-directory");
    let db = scratch.path(DB);
    let room = Sipp::serve("auth_answer_pcmu");
    // the operator's directory: a room that needs the credentials "mcu", one that names
    // credentials no node holds
    directory_tool(
        &db,
        &["set", "oslo", "--name", "Oslo MCU", "--uri", &room.uri()],
    );
    let replaced = directory_tool(
        &db,
        &[
            "set",
            "oslo",
            "--name",
            "Oslo MCU",
            "--uri",
            &room.uri(),
            "--credentials",
            "mcu",
        ],
    );
    assert!(replaced.starts_with("replaced oslo"), "{replaced}");
    directory_tool(
        &db,
        &[
            "set",
            "bergen",
            "--name",
            "Bergen room",
            "--uri",
            "sip:room@192.0.2.1",
            "--credentials",
            "west",
        ],
    );
    let listed = directory_tool(&db, &["list"]);
    assert!(
        listed.contains("\"credentials\": \"mcu\""),
        "the operator sees the references: {listed}"
    );

    // the node holds the credentials by name only: no --sip-password
    let (server, _) = all_in_one(
        &scratch,
        &[
            "--secret",
            SECRET,
            "--sip-credential",
            "mcu=mcu-user:s3cret",
        ],
    );
    let join_as = |name: &str, dial: bool| {
        let mut config = kaskade_e2e::small_media_config(server.http, "dir", name);
        config.locator = Some(server.url());
        config.token = Some(token(SECRET, "dir", name, dial));
        config
    };
    let guest = Participant::join(join_as("guest", false))
        .await
        .expect("a participant without the right joins");
    let dialler = Participant::join(join_as("dialler", true))
        .await
        .expect("a participant with the dial right joins");
    assert!(!guest.welcome().may_dial, "no dialpad without the right");
    assert!(dialler.welcome().may_dial, "the right shows in the welcome");

    // without the right: no directory, no call
    let refused = guest.directory(WAIT).await.unwrap().unwrap_err();
    assert_eq!(refused.0, ErrorCode::Forbidden, "{refused:?}");
    let request = DialRequest {
        entry: Some("oslo".into()),
        ..DialRequest::default()
    };
    let refused = guest
        .dial(request.clone(), WAIT)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.0, ErrorCode::Forbidden, "{refused:?}");

    // the dialler's dialpad lists the rooms by name
    let rooms = dialler
        .directory(WAIT)
        .await
        .unwrap()
        .expect("the directory");
    let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Bergen room", "Oslo MCU"]);
    assert_eq!(rooms[1].uri, room.uri());

    // a room whose credentials this node lacks, and one that is not there, say why
    let bergen = DialRequest {
        entry: Some("bergen".into()),
        ..DialRequest::default()
    };
    let (code, why) = dialler.dial(bergen, WAIT).await.unwrap().unwrap_err();
    assert_eq!(code, ErrorCode::CallFailed, "{why}");
    assert!(why.contains("--sip-credential west="), "{why}");
    let missing = DialRequest {
        entry: Some("tromso".into()),
        ..DialRequest::default()
    };
    let (code, why) = dialler.dial(missing, WAIT).await.unwrap().unwrap_err();
    assert_eq!(code, ErrorCode::NotFound, "{why}");

    // the room: sipp checks the digest made with the credentials the entry names
    let id = dialler
        .dial(request, WAIT)
        .await
        .unwrap()
        .expect("the room is dialled");
    let state = dialler
        .wait_until(WAIT, |s| source_state(s, id) == Some(SourceState::Live))
        .await
        .expect("answered after the challenge");
    assert_eq!(state.participants[&id].name, "Oslo MCU");

    // a dialler hangs up SIP calls, and removes nobody else
    let errors = dialler.state().errors.len();
    dialler
        .moderate(ModerateAction::Remove, guest.welcome().you.id)
        .await
        .unwrap();
    let state = dialler
        .wait_until(WAIT, |s| s.errors.len() > errors)
        .await
        .expect("refused");
    assert_eq!(state.errors[errors].0, ErrorCode::Forbidden);
    dialler.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&guest, id).await;
    assert!(
        room.finish(WAIT).is_some_and(|s| s.success()),
        "sipp verified the credentials and got the BYE"
    );
}

/// Sends `duration` of a loud 440 Hz PCMU tone to `to` from `socket`, paced at 20 ms.
async fn talk(socket: &tokio::net::UdpSocket, to: std::net::SocketAddr, duration: Duration) {
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for n in 0..duration.as_millis() / 20 {
        pace.tick().await;
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&(n as u16).to_be_bytes());
        packet.extend_from_slice(&((n * 160) as u32).to_be_bytes());
        packet.extend_from_slice(&0x5EED_u32.to_be_bytes());
        packet.extend((0..160).map(|i| {
            let t = (n * 160 + i) as f64 / 8_000.0;
            Law::MuLaw.compress((12_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
        }));
        socket.send_to(&packet, to).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meeting_calls_a_participants_phone_that_talks_and_that_they_hang_up() {
    let _serial = SERIAL.lock().await;
    // the phone behind the trunk: sipp answers with PCMU to this test's socket
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::serve_with("phone_answer_pcmu_to_port", &[("rtp_port", &port)]);
    let trunk = format!("sip:{{number}}@127.0.0.1:{}", phone.port);
    let node = node_with(&["--sip-phone-uri", &trunk]);
    let chair = join(&node, "callme", "chair").await;
    let bob = join(&node, "callme", "bob").await;
    assert!(bob.welcome().call_me, "the node offers call-me");
    assert!(!bob.welcome().may_dial, "bob is no dialler");

    let refused = bob
        .call_me("call me maybe", WAIT)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.0, ErrorCode::BadRequest, "{refused:?}");
    let id = bob
        .call_me("+47 22 00 00 00", WAIT)
        .await
        .unwrap()
        .expect("bob's phone is called");
    let state = chair
        .wait_until(WAIT, |s| source_state(s, id) == Some(SourceState::Live))
        .await
        .expect("the phone answered");
    let info = &state.participants[&id];
    assert_eq!(info.name, "bob (phone)");
    assert_eq!(info.source.as_ref().unwrap().kind, SourceKind::Phone);
    let again = bob.call_me("+4722000000", WAIT).await.unwrap().unwrap_err();
    assert_eq!(
        again.0,
        ErrorCode::BadRequest,
        "one phone at a time: {again:?}"
    );

    // the phone hears the meeting from the leg's RTP socket, and talks back to it
    let mut buf = [0u8; 2_048];
    let (_, leg) = tokio::time::timeout(WAIT, phone_rtp.recv_from(&mut buf))
        .await
        .expect("kaskade sends the phone the meeting's sound")
        .unwrap();
    talk(&phone_rtp, leg, Duration::from_secs(3)).await;
    let state = chair
        .wait_until(WAIT, |s| {
            s.speaker == Some(id) && s.stats.remote(id).audio_packets >= 100
        })
        .await
        .expect("the meeting hears the phone and sees it talk");
    assert_eq!(state.stats.remote(id).decode_errors, 0);

    // a moderator mutes it like anyone else; bob hangs his phone up
    chair.moderate(ModerateAction::MuteAudio, id).await.unwrap();
    chair
        .wait_until(WAIT, |s| {
            s.participants.get(&id).is_some_and(|p| p.audio_muted)
        })
        .await
        .expect("the phone is muted");
    bob.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "sipp was offered sound only and got the BYE"
    );
}

/// Presses `keys` on a phone's keypad: RFC 4733 events (payload type 101) from `socket` to
/// `to`, each key three packets of one event, 20 ms apart, then 80 ms of quiet.
async fn press(
    socket: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    keys: &str,
    timestamp: &mut u32,
) {
    for key in keys.chars() {
        let code = match key {
            '*' => 10,
            '#' => 11,
            digit => digit.to_digit(10).unwrap() as u8,
        };
        *timestamp = timestamp.wrapping_add(2_000);
        for (n, duration) in [160u16, 320, 480].into_iter().enumerate() {
            let end = if n == 2 { 0x80 } else { 0 };
            let marker = if n == 0 { 0x80 } else { 0 };
            let mut packet = vec![0x80, marker | 101];
            packet.extend_from_slice(&(*timestamp as u16).wrapping_add(n as u16).to_be_bytes());
            packet.extend_from_slice(&timestamp.to_be_bytes());
            packet.extend_from_slice(&0x0000_7E1Eu32.to_be_bytes());
            packet.extend_from_slice(&[code, end | 10]);
            packet.extend_from_slice(&duration.to_be_bytes());
            socket.send_to(&packet, to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
}

/// Where kaskade's first packet to a phone's socket came from (the leg's RTP socket), its
/// SSRC, and how loud the PCMU `socket` then hears for `duration` is at most.
async fn listen(
    socket: &tokio::net::UdpSocket,
    duration: Duration,
) -> (std::net::SocketAddr, u32, f64) {
    let mut buf = [0u8; 2_048];
    let (n, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("kaskade sends the phone sound")
        .unwrap();
    assert!(n >= 12);
    let ssrc = u32::from_be_bytes(buf[8..12].try_into().unwrap());
    let loudest = far_end_hears(socket, duration)
        .await
        .iter()
        .filter(|(pt, _)| *pt == 0)
        .map(|(_, p)| pcmu_rms(p))
        .fold(0.0, f64::max);
    (from, ssrc, loudest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_dials_in_with_the_meetings_number_and_pin_after_a_wrong_pin() {
    let _serial = SERIAL.lock().await;
    let scratch = kaskade_e2e::Scratch::new("sip-dial-in");
    let (server, sip) = all_in_one(&scratch, &["--sip-dial-in-number", "+47 21 00 00 00"]);
    let mut config = kaskade_e2e::small_media_config(server.http, "dialin", "chair");
    config.locator = Some(server.url());
    let chair = Participant::join(config).await.expect("the chair joins");
    chair
        .send(&ClientMessage::SetPin {
            pin: Some("2468".into()),
        })
        .await
        .unwrap();
    let state = chair
        .wait_until(WAIT, |s| s.dial_in.is_some())
        .await
        .expect("the moderator sees the meeting's dial-in");
    let (number, pin) = state.dial_in.clone().unwrap();
    assert_eq!(pin.as_deref(), Some("2468"));

    // the phone: the welcome, the number, a wrong PIN, the right one
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::call("dial_in_pcmu_from_port", &sip, &[("rtp_port", &port)]);
    let (leg, ssrc, welcome) = listen(&phone_rtp, Duration::from_secs(2)).await;
    assert!(welcome > 1_000.0, "the welcome is heard: rms {welcome}");
    let mut timestamp = 0;
    press(&phone_rtp, leg, &format!("{number}#"), &mut timestamp).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    press(&phone_rtp, leg, "1111#", &mut timestamp).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        chair
            .state()
            .participants
            .values()
            .all(|p| p.source.is_none()),
        "a wrong PIN joins nobody"
    );
    press(&phone_rtp, leg, "2468#", &mut timestamp).await;
    let state = chair
        .wait_until(WAIT, |s| {
            s.participants.values().any(|p| {
                p.source
                    .as_ref()
                    .is_some_and(|s| s.kind == SourceKind::Phone)
            })
        })
        .await
        .expect("the phone joins the meeting");
    let (id, info) = state
        .participants
        .iter()
        .find(|(_, p)| p.source.is_some())
        .unwrap();
    assert_eq!(info.name, "Phone …1234");
    // the phone hears the meeting in the stream the menu spoke in
    let (from, joined_ssrc, _) = listen(&phone_rtp, Duration::from_millis(200)).await;
    assert_eq!(
        (from, joined_ssrc),
        (leg, ssrc),
        "one stream from menu to meeting"
    );
    chair.moderate(ModerateAction::Remove, *id).await.unwrap();
    wait_gone(&chair, *id).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "sipp dialled in, was answered and got the BYE"
    );

    // two wrong PINs: goodbye, and kaskade hangs up
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::call("dial_in_pcmu_from_port", &sip, &[("rtp_port", &port)]);
    let (leg, _, _) = listen(&phone_rtp, Duration::from_millis(100)).await;
    press(&phone_rtp, leg, &format!("{number}#"), &mut timestamp).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    press(&phone_rtp, leg, "1111#", &mut timestamp).await;
    press(&phone_rtp, leg, "2222#", &mut timestamp).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "kaskade said goodbye and hung up"
    );
    assert!(
        chair
            .state()
            .participants
            .values()
            .all(|p| p.source.is_none()),
        "nobody joined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_registers_at_a_pbx_with_its_credentials() {
    let _serial = SERIAL.lock().await;
    let registrar = Sipp::serve("registrar");
    let at = format!("sip:127.0.0.1:{}", registrar.port);
    let _node = node_with(&["--sip-register", &at]);
    assert!(
        registrar.finish(WAIT).is_some_and(|s| s.success()),
        "the registrar challenged, checked the digest of mcu-user and granted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_far_end_lost_is_found_by_the_keep_alive_and_leaves() {
    let _serial = SERIAL.lock().await;
    let node = node_with(&["--sip-keepalive", "1s"]);
    let chair = join(&node, "lost", "chair").await;
    // the room system answers recvonly (it sends nothing, rightly: the media timeout leaves
    // it alone), then forgets the call
    let room = Sipp::serve("answer_then_forget");
    let id = answered(&chair, &room.uri(), "answered").await;
    wait_gone(&chair, id).await;
    assert!(
        room.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got the keep-alive OPTIONS and answered 481"
    );
}
