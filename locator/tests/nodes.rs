//! The locator's side of its nodes: who may report, what a report may say, and when a node
//! stops being offered (overload, silence, a failed health check); peers and links over HTTP.

mod common;

use common::locator::{Options, SECRET, answer, start};
use common::{report, with_meeting};
use kaskade_protocol::cluster::node_credential;
use kaskade_protocol::token::unix_now;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;

#[tokio::test]
async fn a_node_with_a_wrong_secret_is_refused_and_not_listed() {
    let locator = start(Options::default()).await;
    let (status, body) = locator.send_report(&report("intruder", 10), "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "bad_node_credentials");
    assert!(
        body["message"].as_str().unwrap().contains("secret"),
        "{body}"
    );
    let unsigned = locator
        .http
        .post(format!("{}/api/nodes/report", locator.base))
        .json(&report("intruder", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    // a credential of one node cannot speak for another
    let forged = locator
        .http
        .post(format!("{}/api/nodes/report", locator.base))
        .header(
            "Authorization",
            node_credential(SECRET.as_bytes(), "a", unix_now()),
        )
        .json(&report("b", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let (_, nodes) = locator.get("/api/nodes", None).await;
    assert_eq!(nodes, json!([]));
    let (status, body) = locator.join("m", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_capacity"))
    );
    let (_, metrics) = locator.get("/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("kaskade_locator_node_reports_rejected_total{reason=\"credentials\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_reports_are_refused_and_do_no_harm() {
    let locator = start(Options::default()).await;
    let (status, ack) = locator.send_report(&report("a", 10), SECRET).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack, json!({"index": 1, "node_timeout_ms": 3000}));
    let credential = node_credential(SECRET.as_bytes(), "a", unix_now());
    for garbage in ["", "{", "[]", "{\"node\":\"a\"}", "{\"node\": 5}"] {
        let response = locator
            .http
            .post(format!("{}/api/nodes/report", locator.base))
            .header("Authorization", &credential)
            .body(garbage)
            .send()
            .await
            .unwrap();
        let (status, body) = answer(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{garbage:?}");
        assert_eq!(body["error"], "bad_request");
    }
    let mut invalid = Vec::new();
    let mut r = report("a", 0);
    invalid.push(("capacity", r.clone()));
    r = report("a", 10);
    r.http_url = "ftp://a".into();
    invalid.push(("http_url", r.clone()));
    r = report("a", 10);
    r.signaling_url = "ws://".into();
    invalid.push(("signaling_url", r.clone()));
    r = with_meeting(report("a", 10), "bad name!", 1);
    invalid.push(("meeting", r.clone()));
    r = report("a", 10);
    r.index = Some(5000);
    invalid.push(("index", r.clone()));
    r = report("a", 10);
    r.cpu_cores = -1.0;
    invalid.push(("cpu", r));
    for (what, bad) in invalid {
        let (status, body) = locator.send_report(&bad, SECRET).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{what}");
    }
    let (_, nodes) = locator.get("/api/nodes", None).await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["capacity"], 10, "the bad reports changed nothing");
    assert_eq!(nodes[0]["state"], "up");
    let (status, joined) = locator.join("m", json!({})).await;
    assert_eq!(
        (status, joined["node"].as_str()),
        (StatusCode::OK, Some("a"))
    );
}

#[tokio::test]
async fn an_overloaded_node_gets_no_new_participants() {
    let locator = start(Options::default()).await;
    let mut busy = report("busy", 100);
    busy.overloaded = true;
    locator.send_report(&busy, SECRET).await;
    let (status, _) = locator.join("m", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    locator.send_report(&report("idle", 100), SECRET).await;
    for i in 0..10 {
        let (status, joined) = locator.join(&format!("m{i}"), json!({})).await;
        assert_eq!(
            (status, joined["node"].as_str()),
            (StatusCode::OK, Some("idle"))
        );
    }
    let (_, nodes) = locator.get("/api/nodes", None).await;
    let busy = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "busy")
        .unwrap();
    assert_eq!(busy["state"], "overloaded");
}

#[tokio::test]
async fn a_node_whose_reports_stop_is_dropped_after_the_timeout() {
    let locator = start(Options {
        timeout: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let (_, ack) = locator.send_report(&report("a", 10), SECRET).await;
    assert_eq!(ack["node_timeout_ms"], 400);
    let (status, _) = locator.join("m", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = locator.join("m", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_capacity"))
    );
    let (_, nodes) = locator.get("/api/nodes", None).await;
    assert_eq!(nodes, json!([]));
    let (_, meeting) = locator.get("/api/meetings/m", None).await;
    assert_eq!(meeting["nodes"], json!([]), "its placements are gone");
}

#[tokio::test]
async fn a_lost_node_that_fails_its_health_check_is_dropped_at_once() {
    let locator = start(Options::default()).await;
    // nothing listens on the lost node's port
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut lost = with_meeting(report("lost", 10), "m", 3);
    lost.http_url = dead_url;
    locator.send_report(&lost, SECRET).await;
    // a node that still answers its health check is avoided for this join only
    let alive = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alive_url = format!("http://{}", alive.local_addr().unwrap());
    let health = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let alive_server = tokio::spawn(async move { axum::serve(alive, health).await });
    let mut shaky = report("shaky", 10);
    shaky.http_url = alive_url;
    locator.send_report(&shaky, SECRET).await;
    locator.send_report(&report("spare", 10), SECRET).await;
    let (status, joined) = locator.join("m", json!({"avoid_node": "lost"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(joined["node"], "lost");
    let (_, nodes) = locator.get("/api/nodes", None).await;
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(
        names,
        ["shaky", "spare"],
        "lost is dropped before its timeout"
    );
    for _ in 0..5 {
        let (_, joined) = locator.join("x", json!({"avoid_node": "shaky"})).await;
        assert_eq!(joined["node"], "spare");
    }
    let (_, nodes) = locator.get("/api/nodes", None).await;
    assert_eq!(
        nodes.as_array().unwrap().len(),
        2,
        "shaky answered its health check"
    );
    alive_server.abort();
}

#[tokio::test]
async fn nodes_learn_their_peers_and_links_over_http() {
    let locator = start(Options::default()).await;
    for node in ["a", "b"] {
        locator.send_report(&report(node, 10), SECRET).await;
    }
    let (status, info) = locator.node_get("a", "/api/nodes/a/meetings/m").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info, json!({"meeting": "m", "locked": false, "peers": []}));
    let (_, info) = locator.node_get("b", "/api/nodes/b/meetings/m").await;
    assert_eq!(info["peers"][0]["node"], "a");
    assert_eq!(info["peers"][0]["index"], 1);
    let key = info["peers"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 64);
    let (status, link) = locator.node_get("a", "/api/nodes/a/links/b").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (link["node"].as_str(), link["key"].as_str()),
        (Some("b"), Some(key.as_str()))
    );
    let (status, body) = locator.node_get("a", "/api/nodes/a/links/ghost").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_node"))
    );
    let (status, _) = locator.node_get("a", "/api/nodes/b/links/a").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = locator.node_get("c", "/api/nodes/c/meetings/m").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an unregistered node hosts nothing"
    );
    // the meeting now spans both nodes: a join stays on one of them
    let (_, joined) = locator.join("m", json!({})).await;
    let node = joined["node"].as_str().unwrap();
    assert!(node == "a" || node == "b");
}
