//! Bad input from the network gets a clear error and harms no one: two participants keep
//! exchanging media while garbage datagrams and malformed signaling hit the same node.

use futures_util::{SinkExt, StreamExt};
use kaskade_client::{JoinConfig, Participant, ParticipantId};
use kaskade_e2e::{Node, start_node};
use kaskade_loadtest::LossyRelay;
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret-for-bad-input";

fn node(args: &[&str]) -> Node {
    start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), args)
}

/// Connects a raw WebSocket, sends `frames` in order and returns every frame the node answered
/// with until it closed the socket or went quiet.
async fn exchange(node: &Node, frames: Vec<Message>) -> Vec<Value> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.http))
        .await
        .expect("websocket connects");
    for frame in frames {
        if ws.send(frame).await.is_err() {
            break;
        }
    }
    let mut answers = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        match frame {
            Message::Text(text) => answers.push(serde_json::from_str(&text).expect("JSON")),
            Message::Close(_) => break,
            _ => {}
        }
    }
    answers
}

fn codes(answers: &[Value]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| a["type"] == "error")
        .map(|a| a["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn join_frame(meeting: &str, token: Option<&str>) -> Message {
    let mut frame = serde_json::json!({"type": "join", "meeting": meeting, "name": "x"});
    if let Some(token) = token {
        frame["token"] = token.into();
    }
    Message::text(frame.to_string())
}

/// A token signed with `secret`, built by hand (HS256), as an operator's backend would.
fn token(secret: &str, meeting: &str, exp: u64) -> String {
    use kaskade_sfu::token::{Claims, Role, TokenKey};
    TokenKey::from_secret(secret.as_bytes()).sign(&Claims {
        meeting: meeting.into(),
        sub: "someone".into(),
        name: "Someone".into(),
        role: Role::Participant,
        exp,
        rejoin: false,
        jti: None,
        aud: None,
        dial: false,
    })
}

async fn media_keeps_flowing(a: &Participant, b_id: ParticipantId) {
    let before = a.stats().remote(b_id).video_frames_decoded;
    a.wait_until(Duration::from_secs(10), |s| {
        s.stats.remote(b_id).video_frames_decoded >= before + 20
    })
    .await
    .expect("media between the others keeps flowing");
}

async fn pair(
    node: &Node,
    token_a: Option<String>,
    token_b: Option<String>,
) -> (Participant, Participant) {
    let mut cfg = JoinConfig::new(node.http, "victims", "a");
    cfg.token = token_a;
    let a = Participant::join(cfg).await.expect("a joins");
    let mut cfg = JoinConfig::new(node.http, "victims", "b");
    cfg.token = token_b;
    let b = Participant::join(cfg).await.expect("b joins");
    let b_id = b.id();
    a.wait_until(Duration::from_secs(15), |s| {
        s.stats.remote(b_id).video_frames_decoded >= 10
    })
    .await
    .expect("a receives b");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_harm_no_one() {
    let mut node = node(&[]);
    let (a, b) = pair(&node, None, None).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut stun_like = vec![0u8, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42];
    stun_like.extend_from_slice(&[7; 12]);
    stun_like.extend_from_slice(&[0, 6, 0, 200]); // USERNAME claims 200 bytes, has none
    let datagrams: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x80, 0x60, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef],
        vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2],
        stun_like,
        vec![0xff; 1500],
        (0..=255).collect(),
    ];
    for _ in 0..50 {
        for d in &datagrams {
            socket.send_to(d, node.udp_addr).unwrap();
        }
    }
    media_keeps_flowing(&a, b.id()).await;
    let dropped = |reason: &str| {
        node.metric(&format!(
            r#"kaskade_sfu_dropped_total{{reason="{reason}"}}"#
        ))
        .unwrap()
    };
    // 6 of the 7 kinds are non-empty: each is dropped with a named reason
    let named =
        dropped("empty") + dropped("truncated") + dropped("not_webrtc") + dropped("unroutable");
    assert!(named >= 300.0, "{named} datagrams dropped with a reason");
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_connected_participants_address_harms_no_one() {
    let mut node = node(&[]);
    let (relay, handle) = LossyRelay::start(node.udp_addr, 0.0, 7).await.unwrap();
    let mut cfg = JoinConfig::new(node.http, "victims", "a");
    cfg.media_via = Some(relay);
    let a = Participant::join(cfg)
        .await
        .expect("a joins through the relay");
    let b = Participant::join(JoinConfig::new(node.http, "victims", "b"))
        .await
        .expect("b joins");
    let (a_id, b_id) = (a.id(), b.id());
    a.wait_until(Duration::from_secs(15), |s| {
        s.stats.remote(b_id).video_frames_decoded >= 10
    })
    .await
    .expect("a receives b");
    // truncated and forged RTP, RTCP, DTLS and STUN, from a's own 5-tuple
    let datagrams: Vec<Vec<u8>> = vec![
        vec![0x80],
        vec![0x80, 0x66, 0, 1],
        [
            vec![0x80, 0x66, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4],
            vec![0xab; 200],
        ]
        .concat(),
        vec![0x81, 0xc8, 0, 6, 1, 2, 3, 4],
        vec![0x8f, 0xce, 0xff, 0xff],
        vec![22, 254, 253],
        [
            vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff],
            vec![1; 40],
        ]
        .concat(),
        vec![0, 1, 0, 200, 0x21, 0x12, 0xa4, 0x42],
        (0..=255).collect(),
    ];
    for _ in 0..30 {
        for d in &datagrams {
            assert_eq!(handle.inject_upstream(d).await, 1);
        }
    }
    media_keeps_flowing(&a, b_id).await;
    media_keeps_flowing(&b, a_id).await;
    assert!(
        node.metric(r#"kaskade_sfu_dropped_total{reason="truncated"}"#)
            .unwrap()
            >= 150.0
    );
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signaling_gets_clear_errors_and_harms_no_one() {
    let mut node = node(&[]);
    let (a, b) = pair(&node, None, None).await;
    let cases: Vec<(Vec<Message>, &str)> = vec![
        (vec![Message::text("{not json")], "bad_request"),
        (vec![Message::text(r#"{"type":"dance"}"#)], "unknown_type"),
        (vec![Message::binary(vec![1, 2, 3])], "bad_request"),
        (vec![join_frame("no spaces allowed", None)], "bad_request"),
        (vec![join_frame(&"m".repeat(65), None)], "bad_request"),
    ];
    for (frames, want) in cases {
        let answers = exchange(&node, frames).await;
        assert_eq!(codes(&answers), [want], "{answers:?}");
    }
    // after a welcome: errors are not fatal, and name what is wrong
    let answers = exchange(
        &node,
        vec![
            join_frame("other", None),
            Message::text(r#"{"type":"dance"}"#),
            Message::text(r#"{"type":"moderate","action":"remove","target":999}"#),
            Message::text(r#"{"type":"offer","sdp":"v=0 garbage"}"#),
            Message::text(r#"{"type":"mute","audio":"loud"}"#),
        ],
    )
    .await;
    assert_eq!(answers[0]["type"], "welcome", "{answers:?}");
    // requests the core answers and requests the session answers may interleave
    let mut got = codes(&answers);
    got.sort();
    assert_eq!(
        got,
        ["bad_request", "bad_request", "not_found", "unknown_type"],
        "{answers:?}"
    );
    // an oversized frame closes that socket only
    let huge = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(300 * 1024));
    exchange(&node, vec![join_frame("other", None), Message::text(huge)]).await;
    media_keeps_flowing(&a, b.id()).await;
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let mut node = node(&["--secret", SECRET]);
    let far = kaskade_sfu::token::unix_now() + 3600;
    let (a, b) = pair(
        &node,
        Some(token(SECRET, "victims", far)),
        Some(token(SECRET, "victims", far)),
    )
    .await;
    let cases = [
        (join_frame("victims", None), "bad_token"),
        (join_frame("victims", Some("not.a.token")), "bad_token"),
        (
            join_frame("victims", Some(&token("wrong", "victims", far))),
            "bad_token",
        ),
        (
            join_frame("victims", Some(&token(SECRET, "victims", 1_000))),
            "bad_token",
        ),
        (
            join_frame("victims", Some(&token(SECRET, "elsewhere", far))),
            "bad_token",
        ),
    ];
    for (frame, want) in cases {
        let answers = exchange(&node, vec![frame]).await;
        assert_eq!(codes(&answers), [want], "{answers:?}");
        let message = answers[0]["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("victims"),
            "the error reveals nothing: {message}"
        );
    }
    media_keeps_flowing(&a, b.id()).await;
    assert!(node.is_running());
}
