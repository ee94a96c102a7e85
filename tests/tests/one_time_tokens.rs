//! One-time tokens against the all-in-one: a token with a `jti` admits once, and neither it nor
//! anything handed out for its session (the node token, the reconnect tokens) admits a second
//! time, even once its participant has left.

use futures_util::{SinkExt, StreamExt};
use kaskade_client::Participant;
use kaskade_e2e::{Node, Scratch, small_media_config};
use kaskade_sfu::token::{Claims, Role, TokenKey};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "one-time-token-secret";

fn all_in_one(scratch: &Scratch) -> Node {
    Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-under-test")),
        &[
            "--secret",
            SECRET,
            "--db",
            &scratch.path("cdr.sqlite"),
            "--recordings",
            &scratch.path("recordings"),
        ],
    )
    .expect("all-in-one starts")
}

fn one_time_token(meeting: &str, name: &str) -> String {
    let claims = Claims {
        jti: Some(Claims::new_jti()),
        ..kaskade_e2e::claims(meeting, name, Role::Participant)
    };
    TokenKey::from_secret(SECRET.as_bytes()).sign(&claims)
}

/// `POST /api/meetings/{meeting}/join` with `token`: the status and the JSON answer.
async fn place(server: &Node, meeting: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/meetings/{meeting}/join", server.url()))
        .json(&json!({"token": token, "name": "x"}))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Opens the signaling socket of a placement and joins with its token: the first frame back.
async fn signal(placement: &Value, meeting: &str) -> (Value, impl Sized) {
    let url = placement["signaling_url"].as_str().expect("signaling_url");
    let (mut ws, _) = connect_async(url).await.expect("websocket");
    let join = json!({"type": "join", "meeting": meeting, "name": "x",
                      "token": placement["token"]});
    ws.send(Message::text(join.to_string()))
        .await
        .expect("join");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return (serde_json::from_str(&text).expect("JSON"), ws);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_token_and_the_tokens_of_its_session_admit_once_each() {
    let scratch = Scratch::new("one-time");
    let server = all_in_one(&scratch);
    let token = one_time_token("once", "ann");

    let (status, placement) = place(&server, "once", &token).await;
    assert_eq!(status, 200, "{placement}");
    let (status, again) = place(&server, "once", &token).await;
    assert_eq!((status, again["error"].as_str()), (401, Some("token_used")));

    // the node token it was given admits once, on its node, and not at the locator
    let (welcome, socket) = signal(&placement, "once").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (replayed, _) = signal(&placement, "once").await;
    assert_eq!(replayed["code"], "bad_token", "{replayed}");
    assert!(
        replayed["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used")),
        "{replayed}"
    );
    let node_token = placement["token"].as_str().expect("token");
    let (status, at_locator) = place(&server, "once", node_token).await;
    assert_eq!(
        (status, at_locator["error"].as_str()),
        (401, Some("bad_token"))
    );

    // the participant leaves: its reconnect token still brings it back once, then never
    drop(socket);
    let reconnect = welcome["token"].as_str().expect("reconnect token");
    let (status, back) = place(&server, "once", reconnect).await;
    assert_eq!(status, 200, "{back}");
    let (status, again) = place(&server, "once", reconnect).await;
    assert_eq!((status, again["error"].as_str()), (401, Some("token_used")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_meets_with_a_one_time_token_and_cannot_come_back_with_it() {
    let scratch = Scratch::new("one-time-meet");
    let server = all_in_one(&scratch);
    let join = |name: &str, token: String| {
        let mut cfg = small_media_config(server.http, "invite", name);
        cfg.locator = Some(server.url());
        cfg.token = Some(token);
        Participant::join(cfg)
    };
    let ann_token = one_time_token("invite", "ann");
    let ann = join("ann", ann_token.clone()).await.expect("ann joins");
    let bob = join("bob", one_time_token("invite", "bob"))
        .await
        .expect("bob joins");
    let bob_id = bob.id();
    ann.wait_until(Duration::from_secs(20), |s| {
        s.stats.remote(bob_id).video_frames_decoded >= 10
    })
    .await
    .expect("ann sees bob");
    ann.leave().await.expect("ann leaves");
    let refused = join("ann", ann_token).await.err().expect("refused");
    assert!(
        refused.to_string().contains("token_used") || refused.to_string().contains("already"),
        "{refused}"
    );
    bob.leave().await.expect("bob leaves");
}
