//! The SIP directory through the locator's API over loopback: the operator sets, lists and
//! removes rooms (with the API key), nodes read them with their credential, bad entries are
//! refused in words; the SQLite directory outlives the locator, and locators sharing a real
//! `redis-server` share one directory. Meetings' dial-in numbers and PINs likewise, in SQLite
//! and shared through Redis.

mod common;

use common::RedisServer;
use common::locator::{Locator, Options, answer, start};
use kaskade_locator::dial_in::DialIns;
use kaskade_locator::directory::Directory;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

const KEY: &str = "operator-key";

impl Locator {
    async fn put_room(&self, id: &str, body: Value, key: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .put(format!("{}/api/directory/{id}", self.base))
            .json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        answer(request.send().await.expect("put")).await
    }

    async fn delete_room(&self, id: &str) -> StatusCode {
        self.http
            .delete(format!("{}/api/directory/{id}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("delete")
            .status()
    }

    async fn rooms(&self) -> Value {
        let (status, rooms) = self.get("/api/directory", Some(KEY)).await;
        assert_eq!(status, StatusCode::OK, "{rooms}");
        rooms
    }
}

fn options(directory: Option<Directory>) -> Options {
    Options {
        api_key: Some(KEY),
        directory,
        ..Options::default()
    }
}

fn scratch_db(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "kaskade-directory-{name}-{}.sqlite",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test]
async fn the_operator_manages_rooms_and_nodes_read_them() {
    let locator = start(options(None)).await;
    let oslo =
        json!({"name": "Oslo MCU", "uri": "sip:8001@mcu.example.org", "credentials": "east"});
    let (status, body) = locator.put_room("oslo", oslo.clone(), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the key guards it: {body}"
    );
    let (status, body) = locator.put_room("oslo", oslo, Some(KEY)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "oslo");
    let bergen = json!({"name": " Bergen room ", "uri": "sip:room@192.0.2.7"});
    let (status, _) = locator.put_room("bergen", bergen, Some(KEY)).await;
    assert_eq!(status, StatusCode::CREATED);
    let renamed = json!({"name": "Oslo MCU (8001)", "uri": "sip:8001@mcu.example.org", "credentials": "east"});
    let (status, _) = locator.put_room("oslo", renamed, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "a second PUT replaces");
    assert_eq!(
        locator.rooms().await,
        json!([
            {"id": "bergen", "name": "Bergen room", "uri": "sip:room@192.0.2.7"},
            {"id": "oslo", "name": "Oslo MCU (8001)", "uri": "sip:8001@mcu.example.org", "credentials": "east"},
        ]),
        "by name, trimmed, credentials references kept"
    );

    // a node reads the whole directory with its own credential, and only with it
    let (status, rooms) = locator.node_get("n1", "/api/nodes/n1/directory").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rooms, locator.rooms().await);
    let (status, _) = locator.node_get("n1", "/api/nodes/n2/directory").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = locator.get("/api/nodes/n1/directory", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // bad rooms are refused in words, and nothing changes
    let cases = [
        (
            "oslo",
            json!({"name": "x", "uri": "tel:+4722000000"}),
            "sip:",
        ),
        ("oslo", json!({"name": "", "uri": "sip:a@b"}), "names"),
        ("a%20b", json!({"name": "x", "uri": "sip:a@b"}), "ids"),
        (
            "oslo",
            json!({"name": "x", "uri": "sip:a@b", "credentials": "a b"}),
            "credentials",
        ),
        ("oslo", json!({"name": "x"}), "uri"),
        (
            "oslo",
            json!({"name": "x", "uri": "sip:a@b", "password": "p"}),
            "password",
        ),
    ];
    for (id, body, says) in cases {
        let (status, answer) = locator.put_room(id, body.clone(), Some(KEY)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(locator.rooms().await.as_array().unwrap().len(), 2);

    assert_eq!(locator.delete_room("bergen").await, StatusCode::NO_CONTENT);
    assert_eq!(locator.delete_room("bergen").await, StatusCode::NOT_FOUND);
    assert_eq!(locator.rooms().await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_directory_outlives_the_locator_in_its_sqlite_file() {
    let db = scratch_db("restart");
    let first = start(options(Some(Directory::sqlite(&db).unwrap()))).await;
    let room = json!({"name": "Oslo MCU", "uri": "sip:8001@mcu.example.org"});
    assert_eq!(
        first.put_room("oslo", room, Some(KEY)).await.0,
        StatusCode::CREATED
    );
    drop(first);
    let second = start(options(Some(Directory::sqlite(&db).unwrap()))).await;
    assert_eq!(
        second.rooms().await,
        json!([{"id": "oslo", "name": "Oslo MCU", "uri": "sip:8001@mcu.example.org"}])
    );
    let _ = std::fs::remove_file(&db);
}

#[tokio::test]
async fn locators_sharing_redis_share_the_directory() {
    let redis = RedisServer::start();
    let a = start(options(Some(Directory::redis(&redis.url).await.unwrap()))).await;
    let b = start(options(Some(Directory::redis(&redis.url).await.unwrap()))).await;
    let room =
        json!({"name": "Oslo MCU", "uri": "sip:8001@mcu.example.org", "credentials": "east"});
    assert_eq!(
        a.put_room("oslo", room, Some(KEY)).await.0,
        StatusCode::CREATED
    );
    let (status, rooms) = b.node_get("n1", "/api/nodes/n1/directory").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rooms[0]["credentials"], "east", "{rooms}");
    assert_eq!(b.delete_room("oslo").await, StatusCode::NO_CONTENT);
    assert_eq!(a.rooms().await, json!([]));
}

/// A node's `PUT /api/nodes/{node}/meetings/{meeting}/dial-in`.
async fn set_pin(locator: &Locator, meeting: &str, pin: Value) -> (StatusCode, Value) {
    let response = locator
        .http
        .put(format!(
            "{}/api/nodes/n1/meetings/{meeting}/dial-in",
            locator.base
        ))
        .header(
            "Authorization",
            kaskade_protocol::cluster::node_credential(
                common::locator::SECRET.as_bytes(),
                "n1",
                kaskade_protocol::token::unix_now(),
            ),
        )
        .json(&json!({ "pin": pin }))
        .send()
        .await
        .unwrap();
    answer(response).await
}

/// Numbers and PINs through one locator, read back through `reader` (the same one, or
/// another sharing its Redis).
async fn meetings_get_numbers_and_pins(locator: &Locator, reader: &Locator) {
    let (status, board) = locator
        .node_get("n1", "/api/nodes/n1/meetings/board/dial-in")
        .await;
    assert_eq!(status, StatusCode::OK, "{board}");
    let number = board["number"].as_str().unwrap().to_string();
    assert!(
        kaskade_protocol::directory::valid_dial_in_number(&number),
        "{number}"
    );
    assert!(board.get("pin").is_none(), "no PIN until one is set");
    let (_, again) = reader.get("/api/meetings/board/dial-in", Some(KEY)).await;
    assert_eq!(
        again["number"],
        number.as_str(),
        "a meeting keeps its number"
    );
    let (_, other) = reader
        .node_get("n1", "/api/nodes/n1/meetings/standup/dial-in")
        .await;
    assert_ne!(other["number"], number.as_str(), "one number per meeting");

    let (status, _) = set_pin(locator, "board", json!("12")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a PIN is 4 to 8 digits");
    let (status, set) = set_pin(locator, "board", json!("4321")).await;
    assert_eq!(
        (status, set["pin"].as_str()),
        (StatusCode::OK, Some("4321"))
    );
    let path = format!("/api/nodes/n1/dial-in/{number}");
    let (status, found) = reader.node_get("n1", &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found,
        json!({"meeting": "board", "number": number, "pin": "4321"})
    );
    let (_, cleared) = set_pin(locator, "board", Value::Null).await;
    assert!(cleared.get("pin").is_none(), "{cleared}");
    for unknown in ["100000000", "12", "abcdefghi"] {
        let path = format!("/api/nodes/n1/dial-in/{unknown}");
        assert_eq!(
            reader.node_get("n1", &path).await.0,
            StatusCode::NOT_FOUND,
            "{unknown}"
        );
    }
    let (status, _) = reader.node_get("n2", &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another node's path");
}

#[tokio::test]
async fn meetings_get_dial_in_numbers_and_pins_kept_in_sqlite() {
    let locator = start(options(None)).await;
    meetings_get_numbers_and_pins(&locator, &locator).await;
}

#[tokio::test]
async fn locators_sharing_redis_share_dial_in_numbers() {
    let redis = RedisServer::start();
    let with_redis = |dial_ins| Options {
        api_key: Some(KEY),
        dial_ins: Some(dial_ins),
        ..Options::default()
    };
    let a = start(with_redis(
        DialIns::open(Some(&redis.url), Path::new(""))
            .await
            .unwrap(),
    ))
    .await;
    let b = start(with_redis(
        DialIns::open(Some(&redis.url), Path::new(""))
            .await
            .unwrap(),
    ))
    .await;
    meetings_get_numbers_and_pins(&a, &b).await;
}
