//! The SIP gateway against real SIP peers on loopback and a real `kaskade-sfu`: a moderator
//! dials baresip (a room system that sends real H.264 and audio) and the meeting decodes it;
//! sipp scenarios for digest authentication with an answer of PCMU only, busy, ringing then
//! hung up, a far end that holds with a re-INVITE, one that hangs up, one in packetization mode
//! 0, one that goes silent and one that loses the call; a registrar. The tile shows each call's
//! progress, every failure reaches the moderator in words, and DTMF keys reach the room system.
//! Phones and diallers are in `sip_phones.rs`.

#[allow(dead_code)]
mod sip_common;

use kaskade_client::{
    ClientMessage, DialRequest, ErrorCode, MediaKind, ModerateAction, Participant, SourceKind,
    SourceState,
};
use kaskade_e2e::sip_peers::{Baresip, BaresipAudio, Sipp};
use kaskade_e2e::{Node, free_port};
use kaskade_sfu::transcode::Law;
use rtc::shared::marshal::Unmarshal;
use sip_common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// The node's CPU share (of one core) over `window`.
async fn cpu_over(node: &Node, window: Duration) -> f64 {
    let before = node.cpu_seconds().unwrap();
    tokio::time::sleep(window).await;
    (node.cpu_seconds().unwrap() - before) / window.as_secs_f64()
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

    // the far end holds with a re-INVITE: kaskade answers recvonly (BFCP refused); it then
    // refreshes the session with a re-INVITE without an offer, which kaskade answers with its
    // last description unchanged; then it hangs up
    let holding = Sipp::serve("reinvite_hold");
    let id = dial(&chair, &holding.uri(), "").await;
    wait_gone(&chair, id).await;
    assert!(
        holding.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got recvonly for its hold and port 0 for BFCP, then the same for its refresh"
    );
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
    live(&chair, id, "the phone answered").await;

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
    a_room_system_sees_the_meeting(1, Picture::Speaker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_in_packetization_mode_0_gets_whole_nal_units_and_decodes_them() {
    a_room_system_sees_the_meeting(0, Picture::Speaker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_sees_everyone_in_a_grid_composed_for_it() {
    a_room_system_sees_the_meeting(0, Picture::Grid).await;
}

/// What the node's `--sip-picture` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Picture {
    Speaker,
    Grid,
}

/// A room system that takes H.264 in packetization `mode` gets one stream that decodes (in
/// mode 0, one whole NAL unit per packet) and hears the meeting. With the speaker's picture it
/// is the chair's video; with the grid, a 1280x720 picture (its level 3.1) with the chair and
/// a guest each in a tile, showing their video, the one who speaks framed.
async fn a_room_system_sees_the_meeting(mode: u8, picture: Picture) {
    let _serial = SERIAL.lock().await;
    let node = node_with(&[
        "--sip-picture",
        if picture == Picture::Grid {
            "grid"
        } else {
            "speaker"
        },
    ]);
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
    // the guest speaks (its packets' audio level is loud)
    let _guest = match picture {
        Picture::Grid => {
            let mut config = kaskade_e2e::small_media_config(node.http, "see", "guest");
            config.audio_level = kaskade_client::audio::LEVEL_LOUD;
            Some(Participant::join(config).await.expect("the guest joins"))
        }
        Picture::Speaker => None,
    };
    let dialled = std::time::Instant::now();
    let id = dial(&chair, &room.uri(), "room").await;
    live(&chair, id, "the room system answered").await;

    // what arrives on its video port is one H.264 stream (payload type 98, as it asked) that
    // decodes
    let mut receiver = kaskade_picture::receive::H264Receiver::default().keeping_pictures();
    let (mut decoded, mut errors, mut ssrcs, mut last_seq) = (0, 0, BTreeSet::new(), None);
    // a mode 0 keyframe of a room system's own can be one datagram of many kilobytes
    let mut buf = vec![0u8; 65_536];
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let seen = |receiver: &kaskade_picture::receive::H264Receiver| match picture {
        Picture::Speaker => true,
        Picture::Grid => receiver
            .picture()
            .is_some_and(|p| tiles_show_video(p, 2) && speaker_framed(p, 2)),
    };
    let mut everyone_shown = false;
    while decoded < 20 || !seen(&receiver) {
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
                "SIP_FIRST_FRAME_AT_FAR_END picture={picture:?} ms={}",
                dialled.elapsed().as_millis()
            );
        }
        decoded += outcome.decoded;
        errors += outcome.errors;
        if picture == Picture::Grid && !everyone_shown && seen(&receiver) {
            everyone_shown = true;
            println!(
                "SIP_GRID_SHOWS_EVERYONE ms={}",
                dialled.elapsed().as_millis()
            );
        }
    }
    assert!(
        decoded >= 20,
        "the room system decodes the meeting: {decoded} frames"
    );
    assert_eq!(errors, 0);
    assert_eq!(ssrcs.len(), 1, "one stream");
    if picture == Picture::Grid {
        let grid = receiver.picture().expect("a picture");
        assert_eq!((grid.width, grid.height), (1280, 720), "level 3.1's 720p");
        assert!(
            tiles_show_video(grid, 2),
            "the chair's and the guest's tiles show their video"
        );
        assert!(speaker_framed(grid, 2), "the one who speaks is framed");
    }
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

/// Whether each of the `count` tiles of a grid shows a picture: its middle row holds many
/// shades (an empty tile is one flat grey).
fn tiles_show_video(grid: &kaskade_picture::Picture, count: usize) -> bool {
    let places = kaskade_picture::grid(count, grid.width as u32, grid.height as u32);
    places.iter().all(|place| {
        let row = (place.y + place.height / 2) as usize * grid.width;
        let line = &grid.y[row + place.x as usize..row + (place.x + place.width) as usize];
        line.iter().collect::<BTreeSet<_>>().len() >= 8
    })
}

/// Whether one of the `count` tiles of a grid is framed as the active speaker's: the margin
/// above it is the highlight's bright luma (a tile's margin is otherwise the dark background).
fn speaker_framed(grid: &kaskade_picture::Picture, count: usize) -> bool {
    let places = kaskade_picture::grid(count, grid.width as u32, grid.height as u32);
    places.iter().any(|place| {
        let (x, y) = (place.x + place.width / 2, place.y.saturating_sub(2));
        grid.y[y as usize * grid.width + x as usize].abs_diff(190) < 30
    })
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

/// Audio through the gateway both ways, timed: a far end (the test's own RTP socket, PCMU as
/// most phones and room systems) goes from silence to a tone and the chair, a kaskade client,
/// hears it in the room's Opus; then the chair, muted until now, unmutes its tone and the far
/// end hears it in the meeting's PCMU mix. Each figure is the whole path (transcoding, the
/// node, the 20 ms framing of both ends) without the receivers' jitter buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_crosses_the_gateway_both_ways_within_a_few_frames() {
    let _serial = SERIAL.lock().await;
    let node = node();
    let (audio, audio_port) = rtp_socket().await;
    let (_video, video_port) = rtp_socket().await;
    let room = Sipp::serve_with(
        "answer_av_to_ports",
        &[
            ("rtp_port", &audio_port),
            ("video_port", &video_port),
            ("mode", "1"),
        ],
    );
    // the chair's received audio, decoded, with its arrival
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let mut config = kaskade_e2e::small_media_config(node.http, "delay", "chair");
    config.sink = Some(kaskade_client::MediaSink(std::sync::Arc::new(move |p| {
        if p.kind == MediaKind::Audio {
            let _ = heard_tx.send((p.from, p.arrival, p.packet.payload.clone()));
        }
    })));
    let chair = kaskade_client::Participant::join(config).await.unwrap();
    chair.mute(Some(true), None).await.unwrap();
    let id = dial(&chair, &room.uri(), "room").await;
    live(&chair, id, "the room system answered").await;

    // kaskade's address for the far end's RTP: where its mix comes from (symmetric RTP)
    let mut buf = [0u8; 2_048];
    let (_, kaskade) = tokio::time::timeout(WAIT, audio.recv_from(&mut buf))
        .await
        .expect("the mix arrives")
        .unwrap();

    // far end -> meeting: a second of silence, then a tone
    let silence = [Law::MuLaw.compress(0); 160];
    let tone: Vec<u8> = (0..160)
        .map(|n| {
            let phase = f64::from(n) * 2.0 * std::f64::consts::PI * 1_000.0 / 8_000.0;
            Law::MuLaw.compress((phase.sin() * 8_000.0) as i16)
        })
        .collect();
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let mut tone_sent = None;
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm = vec![0i16; 5_760];
    let mut into_meeting = None;
    for n in 0u16..150 {
        ticks.tick().await;
        let payload: &[u8] = if n < 50 { &silence } else { &tone };
        if n == 50 {
            tone_sent = Some(std::time::Instant::now());
        }
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        packet[2..4].copy_from_slice(&n.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(n) * 160).to_be_bytes());
        packet.extend_from_slice(payload);
        audio.send_to(&packet, kaskade).await.unwrap();
        while let Ok((from, arrival, opus)) = heard.try_recv() {
            let Some(sent) = tone_sent.filter(|_| from == id && into_meeting.is_none()) else {
                continue;
            };
            let samples = decoder.decode(&opus, &mut pcm, false).unwrap_or(0);
            let rms = (pcm[..samples]
                .iter()
                .map(|&s| f64::from(s).powi(2))
                .sum::<f64>()
                / samples.max(1) as f64)
                .sqrt();
            if rms > 1_000.0 {
                into_meeting = Some(arrival.saturating_duration_since(sent));
            }
        }
        if into_meeting.is_some() {
            break;
        }
    }
    let into_meeting = into_meeting.expect("the chair hears the far end's tone");

    // meeting -> far end: the chair unmutes its tone
    while audio.try_recv(&mut buf).is_ok() {}
    let unmuted = std::time::Instant::now();
    chair.mute(Some(false), None).await.unwrap();
    let mut to_far_end = None;
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(end, audio.recv(&mut buf)).await {
        if n > 12 && buf[1] & 0x7f == 0 && pcmu_rms(&buf[12..n]) > 1_000.0 {
            to_far_end = Some(unmuted.elapsed());
            break;
        }
    }
    let to_far_end = to_far_end.expect("the far end hears the chair");
    println!(
        "SIP_AUDIO_DELAY into_meeting_ms={} to_far_end_ms={}",
        into_meeting.as_millis(),
        to_far_end.as_millis()
    );
    // a few 20 ms frames each way, not a jitter buffer's worth or more
    assert!(
        into_meeting < Duration::from_millis(200),
        "{into_meeting:?}"
    );
    assert!(to_far_end < Duration::from_millis(300), "{to_far_end:?}");

    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(room.finish(WAIT).is_some_and(|s| s.success()));
}
