//! The locator's HTTP API over loopback, with simulated nodes sending real reports.

mod common;

use common::locator::{Options, SECRET, answer, placement, start, token};
use common::{RedisServer, report, with_meeting};
use kaskade_locator::api::ROUTES;
use kaskade_locator::state::{RedisStore, Store};
use kaskade_protocol::cluster::{CallRecord, node_credential};
use kaskade_protocol::signaling::Role;
use kaskade_protocol::token::{TokenKey, unix_now};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn every_route_in_the_table_is_served() {
    let locator = start(Options::default()).await;
    for (method, path) in ROUTES {
        let url = format!(
            "{}{}",
            locator.base,
            path.replace("{meeting}", "m")
                .replace("{node}", "n")
                .replace("{peer}", "p")
                .replace("{id}", "i")
        );
        let request = match *method {
            "get" => locator.http.get(url),
            "post" => locator.http.post(url),
            "delete" => locator.http.delete(url),
            "put" => locator.http.put(url),
            other => panic!("no test for method {other}"),
        };
        let (status, body) = answer(request.send().await.unwrap()).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(body["message"], "no such route", "{method} {path}");
    }
    let (status, body) = locator.get("/api/nowhere", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, openapi) = locator.get("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.1.0");
    let (status, page) = locator.get("/m/hello", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.as_str().is_some_and(|p| p.contains("<html")),
        "the web client is served"
    );
}

#[tokio::test]
async fn joins_are_checked_and_pinned_joins_need_a_live_node() {
    let locator = start(Options::default()).await;
    locator.send_report(&report("a", 10), SECRET).await;
    let (status, body) = locator.join("m", json!({"node": "ghost"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_node"))
    );
    let (status, body) = locator.join("bad%20name", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let malformed = locator
        .http
        .post(format!("{}/api/meetings/m/join", locator.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let (status, body) = locator.join("m", json!({"token": "nonsense"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_token"))
    );
    // an empty body is a join with no preferences
    let empty = locator
        .http
        .post(format!("{}/api/meetings/m/join", locator.base))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::OK);
    let (status, joined) = locator.join("m", json!({"node": "a", "name": "Ann"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(joined["signaling_url"], "ws://a.test/ws");
    let claims = TokenKey::from_secret(SECRET.as_bytes())
        .verify(joined["token"].as_str().unwrap(), "m", unix_now())
        .expect("the token verifies under the cluster secret");
    assert_eq!(claims.name, "Ann");
    assert!(claims.sub.starts_with("guest-"));
    assert!(claims.exp <= unix_now() + 300);
}

#[tokio::test]
async fn the_first_open_participant_is_the_moderator() {
    let locator = start(Options::default()).await;
    locator.send_report(&report("a", 10), SECRET).await;
    let (_, first) = locator.join("standup", json!({"name": "Ann"})).await;
    assert_eq!(first["role"], "moderator");
    let (_, second) = locator.join("standup", json!({"name": "Bob"})).await;
    assert_eq!(second["role"], "participant");
    let identity = TokenKey::from_secret(SECRET.as_bytes())
        .verify(first["token"].as_str().unwrap(), "standup", unix_now())
        .unwrap()
        .sub;
    let (_, meeting) = locator.get("/api/meetings/standup", None).await;
    assert_eq!(meeting["moderators"], json!([identity]));
    assert_eq!(meeting["participants"], 2);
    // a participant token of a known moderator identity joins as moderator again
    let again = token("standup", &identity, Role::Participant, true);
    let (_, back) = locator.join("standup", json!({"token": again})).await;
    assert_eq!(back["role"], "moderator");
}

#[tokio::test]
async fn a_locked_meeting_refuses_newcomers_but_not_rejoins_or_moderators() {
    let locator = start(Options::default()).await;
    let mut locked = with_meeting(report("a", 10), "board", 2);
    locked.meetings[0].locked = true;
    locator.send_report(&locked, SECRET).await;
    let (status, body) = locator.join("board", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::LOCKED, Some("meeting_locked"))
    );
    let rejoin = token("board", "carol", Role::Participant, true);
    let (status, joined) = locator.join("board", json!({"token": rejoin})).await;
    assert_eq!(status, StatusCode::OK);
    let claims = TokenKey::from_secret(SECRET.as_bytes())
        .verify(joined["token"].as_str().unwrap(), "board", unix_now())
        .unwrap();
    assert!(claims.rejoin, "the new token keeps the rejoin claim");
    let moderator = token("board", "dave", Role::Moderator, false);
    let (status, _) = locator.join("board", json!({"token": moderator})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_need_an_api_key_and_so_do_the_operator_endpoints() {
    let without = start(Options::default()).await;
    let body = json!({"meeting": "m", "identity": "alice", "role": "moderator"});
    let response = without
        .http
        .post(format!("{}/api/tokens", without.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, refused) = answer(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(refused["message"].as_str().unwrap().contains("--api-key"));

    let locator = start(Options {
        open: false,
        api_key: Some("k3y"),
        ..Options::default()
    })
    .await;
    let mint = |key: Option<&'static str>, body: Value| {
        let mut request = locator
            .http
            .post(format!("{}/api/tokens", locator.base))
            .json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(
        mint(None, body.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        mint(Some("nope"), body.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let bad = json!({"meeting": "no good", "identity": "alice"});
    assert_eq!(
        mint(Some("k3y"), bad).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let (status, minted) = answer(mint(Some("k3y"), body).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let token = minted["token"].as_str().unwrap();
    let claims = TokenKey::from_secret(SECRET.as_bytes())
        .verify(token, "m", unix_now())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.role),
        ("alice", Role::Moderator)
    );
    assert!(
        minted["join_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/m/m?token={token}"))
    );
    for path in ["/api/nodes", "/api/meetings", "/api/cdr.csv"] {
        let (status, body) = locator.get(path, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{path}"
        );
        assert_eq!(
            locator.get(path, Some("k3y")).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    // with a secret, open joins are off; the minted token admits
    locator.send_report(&report("a", 10), SECRET).await;
    let (status, body) = locator.join("m", json!({"name": "x"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_token"))
    );
    let response = locator
        .http
        .post(format!("{}/api/meetings/m/join", locator.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, joined) = answer(response).await;
    assert_eq!(
        (status, joined["role"].as_str()),
        (StatusCode::OK, Some("moderator"))
    );

    // the dial right goes from the minted token into the node's token
    let dialler = json!({"meeting": "m", "identity": "carol", "dial": true});
    let (status, minted) = answer(mint(Some("k3y"), dialler).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let verify = |token: &Value| {
        TokenKey::from_secret(SECRET.as_bytes())
            .verify(token.as_str().unwrap(), "m", unix_now())
            .unwrap()
    };
    assert!(verify(&minted["token"]).dial);
    let (status, joined) = locator.join("m", json!({"token": minted["token"]})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let node_claims = verify(&joined["token"]);
    assert_eq!(
        (node_claims.role, node_claims.dial),
        (Role::Participant, true)
    );
    let (_, joined) = locator.join("m", json!({"token": token})).await;
    assert!(!verify(&joined["token"]).dial, "no right, none granted");
}

fn record(session: &str, node: &str, joined_at_ms: u64) -> CallRecord {
    CallRecord {
        session: session.into(),
        meeting: "standup".into(),
        identity: "alice".into(),
        name: "Alice, \"Al\"".into(),
        node: node.into(),
        kind: "browser".into(),
        role: Role::Participant,
        joined_at_ms,
        left_at_ms: joined_at_ms + 90_000,
        bytes_sent: 10,
        bytes_received: 20,
        reason: "left".into(),
        caller: None,
        result: None,
    }
}

#[tokio::test]
async fn call_records_round_trip_to_csv_with_time_filters() {
    let locator = start(Options::default()).await;
    let day = 1_772_323_200_000; // 2026-03-01T00:00:00Z
    let records = vec![
        record("a/1", "a", day - 3_600_000),
        record("a/2", "a", day + 3_600_000),
        record("a/3", "a", day + 86_400_000 + 1),
    ];
    let post = |records: &Vec<CallRecord>, node: &str| {
        locator
            .http
            .post(format!("{}/api/nodes/{node}/cdr", locator.base))
            .header(
                "Authorization",
                node_credential(SECRET.as_bytes(), node, unix_now()),
            )
            .json(records)
            .send()
    };
    assert_eq!(
        post(&records, "a").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post(&records, "b").await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "a's records from b"
    );
    let csv = |query: &'static str| {
        let url = format!("{}/api/cdr.csv{query}", locator.base);
        let http = locator.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, all) = csv("").await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = all.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("session,meeting,identity,name,node,kind,role,joined_at"));
    assert!(lines[2].starts_with(
        "a/2,standup,alice,\"Alice, \"\"Al\"\"\",a,browser,participant,2026-03-01T01:00:00Z,"
    ));
    assert!(lines[2].contains(",90000,10,20,left"), "{}", lines[2]);
    let (_, one_day) = csv("?from=2026-03-01&to=2026-03-01").await;
    assert_eq!(one_day.matches("\r\n").count(), 2, "{one_day}");
    assert!(one_day.contains("a/2"));
    let (_, since) = csv("?from=2026-03-01T00:00:00Z").await;
    assert_eq!(since.matches("\r\n").count(), 3);
    let (_, until) = csv("?to=1772323200").await;
    assert!(until.contains("a/1") && !until.contains("a/2"));
    let (status, _) = csv("?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, metrics) = locator.get("/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("kaskade_locator_cdr_rows_total 3")
    );
}

#[tokio::test]
async fn two_locators_share_one_redis_and_either_answers_any_join() {
    let redis = RedisServer::start();
    let timeout = Duration::from_secs(3);
    let store = |url: String| async move {
        let store: Arc<dyn Store> = Arc::new(
            RedisStore::connect(&url, placement(timeout))
                .await
                .expect("redis"),
        );
        store
    };
    let a = start(Options {
        store: Some(store(redis.url.clone()).await),
        ..Options::default()
    })
    .await;
    let b = start(Options {
        store: Some(store(redis.url.clone()).await),
        ..Options::default()
    })
    .await;
    for node in ["n1", "n2", "n3"] {
        let (status, _) = a.send_report(&report(node, 10), SECRET).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, first) = a.join("shared", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["role"], "moderator");
    let node = first["node"].as_str().unwrap().to_string();
    drop(a);
    let (status, second) = b.join("shared", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        second["node"],
        node.as_str(),
        "B keeps the meeting on A's placement"
    );
    assert_eq!(second["role"], "participant", "B counts A's placement");
    let (_, nodes) = b.get("/api/nodes", None).await;
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    let (_, meeting) = b.get("/api/meetings/shared", None).await;
    assert_eq!(meeting["participants"], 2);
    // nodes go on reporting to B, and keep their indexes
    let (_, ack) = b.send_report(&report("n2", 10), SECRET).await;
    assert_eq!(ack["index"], 2);
}

#[tokio::test]
async fn one_address_joins_at_a_bounded_rate_and_oversized_bodies_are_refused() {
    let locator = start(Options {
        ip_limits: kaskade_limits::IpLimitsConfig {
            max_connections: 10,
            joins_per_minute: 3,
            limit_loopback: true,
        },
        ..Options::default()
    })
    .await;
    locator.send_report(&report("a", 10), SECRET).await;
    let post = |body: Vec<u8>| {
        locator
            .http
            .post(format!("{}/api/meetings/m/join", locator.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // too large to read: refused whatever the address's budget
    let huge = post(vec![b' '; 2 << 20]).await.unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let name = "x".repeat(20 << 10);
    let (status, body) = answer(
        post(json!({ "name": name }).to_string().into_bytes())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("bad_request"))
    );
    // the oversized one counted (it was read): two more in this minute, then 429
    for name in ["Ann", "Bob"] {
        let (status, _) = locator.join("m", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = locator.join("m", json!({"name": "Cy"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    let (_, metrics) = locator.get("/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("kaskade_locator_joins_total{result=\"rate_limited\"} 1"),
        "{metrics}"
    );
}
