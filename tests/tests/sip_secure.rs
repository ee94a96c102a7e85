//! Encrypted calls against real SIP peers on loopback and a real `kaskade-sfu`: room systems
//! that take SRTP keyed by SDES (only, or when offered), and one reached over TLS (`sips:`)
//! whose certificate the node checks.

#[allow(dead_code)]
mod sip_common;

use kaskade_client::ModerateAction;
use kaskade_e2e::Scratch;
use kaskade_e2e::sip_peers::{Baresip, BaresipAudio, self_signed};
use sip_common::*;
use std::process::Command;
use std::time::Duration;

/// Room systems that encrypt get SRTP keyed by SDES: one that takes only `RTP/SAVP` refuses
/// kaskade's first (best-effort) offer and takes the second, one that does best-effort SRTP
/// takes the first. The meeting decodes each, and each decodes the meeting's picture, which
/// neither would from packets it cannot authenticate. A node with SRTP off cannot reach the
/// first and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_systems_that_encrypt_get_srtp_keyed_by_sdes() {
    let _serial = SERIAL.lock().await;
    let room = Baresip::start(Command::new("baresip"), BaresipAudio::Opus);
    {
        let node = node();
        let chair = join(&node, "srtp", "chair").await;
        for (calls, user) in (1..).zip(["srtp", "srtp-optional"]) {
            let id = dial(&chair, &room.uri_of(user), user).await;
            chair
                .wait_until(WAIT, |s| decodes(s, id, 30))
                .await
                .unwrap_or_else(|e| panic!("the meeting decodes {user}: {e}"));
            for kind in ["audio", "video"] {
                let keyed = format!("srtp: {kind}: SRTP is Enabled");
                let seen = room.wait_for_lines(&keyed, calls, Duration::from_secs(5));
                assert!(seen, "{user} takes the {kind} by SRTP");
            }
            let decoding = "video: receiving with resolution";
            let seen = room.wait_for_lines(decoding, calls, Duration::from_secs(10));
            assert!(seen, "{user} decodes the meeting's picture");
            assert_eq!(node.metric("kaskade_sfu_sip_calls").unwrap(), 1.0);
            chair.moderate(ModerateAction::Remove, id).await.unwrap();
            wait_gone(&chair, id).await;
        }
        // the operator sees both calls answered, their media by SRTP, and none running
        let answered = r#"kaskade_sfu_sip_call_outcomes_total{direction="out",result="answered"}"#;
        assert_eq!(node.metric(answered).unwrap(), 2.0);
        let srtp = r#"kaskade_sfu_sip_media_total{protection="srtp"}"#;
        assert_eq!(node.metric(srtp).unwrap(), 2.0);
        let rtp = r#"kaskade_sfu_sip_media_total{protection="rtp"}"#;
        assert_eq!(node.metric(rtp).unwrap(), 0.0, "no call was plain RTP");
        // the call's task gives its seat back just after the participant left
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while node.metric("kaskade_sfu_sip_calls").unwrap() != 0.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no call runs any more"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let node = node_with(&["--sip-srtp", "off"]);
    let chair = join(&node, "srtp-off", "chair").await;
    dial(&chair, &room.uri_of("srtp"), "").await;
    let why = failure(&chair, 0).await;
    assert!(why.contains("no common codec"), "{why}");
    let refused =
        r#"kaskade_sfu_sip_call_outcomes_total{direction="out",result="no common codec"}"#;
    assert_eq!(node.metric(refused).unwrap(), 1.0);
}

/// A room system reached over TLS (`sips:`), its media by SRTP: the node checks the room's
/// certificate against the roots it was given, and gives its own TLS listener as the call's
/// Contact, so the room's requests in the call come over TLS too. A node that does not trust
/// the room's certificate says why the call failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_is_reached_over_tls_with_its_certificate_checked() {
    let _serial = SERIAL.lock().await;
    let room = Baresip::start(Command::new("baresip"), BaresipAudio::Opus);
    let scratch = Scratch::new("sip-tls");
    let (certificate, key) = self_signed(&scratch, "kaskade");
    let listen = format!("127.0.0.1:{}", kaskade_e2e::free_port());
    let roots = room.certificate();
    let node = node_with(&[
        "--sip-tls-listen",
        &listen,
        "--sip-tls-cert",
        &certificate,
        "--sip-tls-key",
        &key,
        "--sip-tls-ca",
        &roots,
    ]);
    let chair = join(&node, "tls", "chair").await;
    let id = dial(&chair, &room.tls_uri_of("srtp"), "TLS room").await;
    chair
        .wait_until(WAIT, |s| decodes(s, id, 30))
        .await
        .expect("the meeting decodes the room reached over TLS");
    // the room's TLS port (its SIP port plus one) takes nothing but TLS: no UDP is bound
    // there, and plain TCP fails its handshake
    let established = room.wait_for_line("Call established", Duration::from_secs(5));
    assert!(established.is_some(), "the room has the call");
    for kind in ["audio", "video"] {
        let keyed = format!("srtp: {kind}: SRTP is Enabled");
        assert!(
            room.wait_for_line(&keyed, Duration::from_secs(5)).is_some(),
            "{kind} by SRTP"
        );
    }
    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    let ended = room.wait_for_line("terminated", Duration::from_secs(5));
    assert!(ended.is_some(), "the BYE reached the room over TLS");

    // a node that trusts only other roots cannot reach it, and says so
    let stranger = node_with(&["--sip-tls-ca", &certificate]);
    let chair = join(&stranger, "tls-untrusted", "chair").await;
    dial(&chair, &room.tls_uri_of("srtp"), "").await;
    let why = failure(&chair, 0).await;
    assert!(
        why.contains("unreachable") && why.contains("invalid peer certificate"),
        "{why}"
    );

    // nor does a node that sends SIP through a proxy over UDP: the call would not be TLS
    let proxied = node_with(&["--sip-tls-ca", &roots, "--sip-proxy", "127.0.0.1:9"]);
    let chair = join(&proxied, "tls-proxied", "chair").await;
    dial(&chair, &room.tls_uri_of("srtp"), "").await;
    let why = failure(&chair, 0).await;
    assert!(why.contains("UDP proxy"), "{why}");
}
