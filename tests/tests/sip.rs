//! The SIP gateway against real SIP peers on loopback and a real `kaskade-sfu`: a moderator
//! dials baresip (a room system that sends real H.264 and audio) and the meeting decodes it;
//! sipp scenarios for digest authentication with an answer of PCMU only, busy, ringing then
//! hung up, a far end that holds with a re-INVITE, one that hangs up, one that goes silent and
//! one that loses the call; a registrar. The tile shows each call's
//! progress, every failure reaches the moderator in words, and DTMF keys reach the room system.
//! Phones and diallers are in `sip_phones.rs`, what the far end gets of the meeting in
//! `sip_far_end.rs`, SRTP and TLS in `sip_secure.rs`.

#[allow(dead_code)]
mod sip_common;

use kaskade_client::{
    ClientMessage, DialRequest, ErrorCode, ModerateAction, Participant, SourceKind, SourceState,
};
use kaskade_e2e::sip_peers::{Baresip, BaresipAudio, Sipp};
use kaskade_e2e::{Node, free_port};
use sip_common::*;
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
