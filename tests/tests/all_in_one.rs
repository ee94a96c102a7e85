//! The `kaskade` binary as a new user starts it: with no secret and ephemeral ports it prints
//! its media address and then its URL (only once its node takes participants), serves the
//! page, the locator's API and the node under `/node`, lets anyone join (open joins) and places
//! that join on its own node.

use std::process::Command;

use kaskade_e2e::{Node, Scratch};

#[tokio::test]
async fn the_all_in_one_prints_where_it_runs_and_serves_page_api_and_node() {
    let scratch = Scratch::new("all-in-one");
    let db = scratch.path("cdr.sqlite");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kaskade-under-test"));
    command
        .env_remove("KASKADE_SECRET")
        .env_remove("KASKADE_API_KEY");
    let server = Node::start(
        command,
        &["--db", &db, "--recordings", &scratch.path("rec")],
    )
    .expect("the all-in-one starts and prints its URL");
    assert_ne!(server.udp_addr.port(), 0, "it printed its media address");
    let http = reqwest::Client::new();
    for path in [
        "/healthz",
        "/node/healthz",
        "/m/hello",
        "/static/client.js",
        "/api/openapi.json",
        "/r/hello",
    ] {
        let status = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{path}: {status}");
    }
    // no secret: a name is enough, and the join lands on the embedded node at once
    let answer = http
        .post(format!("{}/api/meetings/hello/join", server.url()))
        .json(&serde_json::json!({ "name": "Ann" }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        body["signaling_url"],
        format!("ws://{}/node/ws", server.http),
        "{body}"
    );
    assert_eq!(body["role"], "moderator", "the first participant moderates");
    assert!(
        std::path::Path::new(&db).exists(),
        "the CDR database is created"
    );
}
