//! The limits a public node needs, tried against the real binary: a signaling client that stops
//! reading is disconnected (its queue is bounded, the node's memory does not grow), and one
//! address can hold only so many WebSockets and join only so fast.

use futures_util::{SinkExt, StreamExt};
use kaskade_e2e::{Node, start_node};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn node(args: &[&str]) -> Node {
    start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), args)
}

fn join_frame(meeting: &str, name: &str) -> Message {
    Message::text(json!({"type": "join", "meeting": meeting, "name": name}).to_string())
}

/// The next text frame as JSON, skipping pings.
async fn next_json(ws: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Joins `meeting` over a fresh WebSocket and returns it with the `welcome`.
async fn join(node: &Node, meeting: &str, name: &str) -> (Socket, Value) {
    let (mut ws, _) = connect_async(format!("ws://{}/ws", node.http))
        .await
        .expect("websocket connects");
    ws.send(join_frame(meeting, name)).await.expect("send join");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Polls `metric` until `done` holds for it, or fails after `within`.
async fn wait_metric(node: &Node, metric: &str, within: Duration, done: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let value = node.metric(metric).unwrap_or(f64::NAN);
        if done(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{metric} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kb(node: &Node) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_without_growing_the_node() {
    let node = node(&[]);
    // The slow client: a receive window of a few KB, and it never reads after its welcome.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let stream = socket.connect(node.http).await.expect("connect");
    let (mut slow, _) = client_async(
        format!("ws://{}/ws", node.http),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("websocket");
    slow.send(join_frame("slow", "sloth")).await.expect("join");
    let welcome = next_json(&mut slow).await;
    let slow_id = welcome["you"]["id"].clone();

    let (mut noisy, _) = join(&node, "slow", &"noisy ".repeat(10)).await;
    let rss_before = rss_kb(&node);
    // Every mute change is an `updated` frame to everyone in the room: soon more than the
    // socket buffers and the session queue hold for a client that reads nothing (or a frame
    // waits longer than the send timeout). The noisy one reads its own before the next
    // change, as a client that keeps up does.
    let mut left = None;
    for n in 0..200_000 {
        let frame = json!({"type": "mute", "audio": n % 2 == 0}).to_string();
        noisy.send(Message::text(frame)).await.expect("send");
        loop {
            let frame = next_json(&mut noisy).await;
            match frame["type"].as_str() {
                Some("updated") => break,
                Some("left") => left = Some(frame),
                _ => {}
            }
        }
        if left.is_some() {
            break;
        }
    }
    let left = left.expect("the slow one was disconnected");
    assert_eq!(left["id"], slow_id);
    assert_eq!(left["reason"], "disconnected");
    assert_eq!(
        node.metric("kaskade_sfu_refused_total{reason=\"slow_reader\"}")
            .expect("metric"),
        1.0
    );
    wait_metric(
        &node,
        "kaskade_sfu_participants",
        Duration::from_secs(10),
        |v| v == 1.0,
    )
    .await;
    let growth = rss_kb(&node).saturating_sub(rss_before);
    assert!(growth < 32 * 1024, "the node grew by {growth} KB");
    let (_again, welcome) = join(&node, "slow", "back").await;
    assert_eq!(welcome["participants"].as_array().map(Vec::len), Some(1));
}

/// Opens a WebSocket to the node: its welcome, or the HTTP status it was refused with.
async fn try_join(node: &Node, name: &str) -> Result<Socket, u16> {
    match connect_async(format!("ws://{}/ws", node.http)).await {
        Ok((mut ws, _)) => {
            ws.send(join_frame("limits", name)).await.expect("join");
            assert_eq!(next_json(&mut ws).await["type"], "welcome");
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("rate_limited"), "{body}");
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

/// Closes the last of `open` and waits until the node has let it go.
async fn close_one(node: &Node, open: &mut Vec<Socket>) {
    let mut closed = open.pop().expect("an open socket");
    closed.close(None).await.expect("close");
    let left = open.len() as f64;
    wait_metric(
        node,
        "kaskade_sfu_participants",
        Duration::from_secs(10),
        |v| v == left,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_a_bounded_number_of_sockets_and_joins_at_a_bounded_rate() {
    let node = node(&[
        "--limit-loopback",
        "--max-connections-per-ip",
        "3",
        "--max-joins-per-ip",
        "6",
    ]);
    let mut open = Vec::new();
    for n in 0..3 {
        open.push(
            try_join(&node, &format!("p{n}"))
                .await
                .expect("within the limit"),
        );
    }
    assert_eq!(try_join(&node, "p3").await.err(), Some(429));
    assert_eq!(
        node.metric("kaskade_sfu_refused_total{reason=\"connections_per_ip\"}")
            .expect("metric"),
        1.0
    );
    // a closed socket gives its slot back
    close_one(&node, &mut open).await;
    open.push(try_join(&node, "p4").await.expect("a slot again"));
    // five joins asked for so far (one refused); the sixth is the last of the minute's budget
    close_one(&node, &mut open).await;
    open.push(
        try_join(&node, "p5")
            .await
            .expect("the last join of the budget"),
    );
    close_one(&node, &mut open).await;
    assert_eq!(try_join(&node, "p6").await.err(), Some(429));
    assert_eq!(
        node.metric("kaskade_sfu_refused_total{reason=\"join_rate_per_ip\"}")
            .expect("metric"),
        1.0
    );
    // the join API shares the address's budget
    let refused = reqwest::Client::new()
        .post(format!("http://{}/api/meetings/limits/join", node.http))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"], "rate_limited");
}
