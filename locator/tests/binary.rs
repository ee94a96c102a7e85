//! The `kaskade-locator` binary: serving without an embedded node, and the `token`, `cdr` and
//! `directory` tools.

mod common;

use kaskade_locator::cdr::CdrDb;
use kaskade_protocol::cluster::CallRecord;
use kaskade_protocol::signaling::Role;
use kaskade_protocol::token::{Claims, TokenKey, unix_now};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kaskade-locator");

fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kaskade-locator-bin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_locator_without_nodes_serves_the_page_and_the_api_and_places_nobody() {
    let dir = scratch("locator");
    let child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--secret", "s3cret"])
        .current_dir(&dir)
        .env_remove("KASKADE_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kaskade-locator");
    let mut child = Kill(child);
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next());
    let line = tokio::time::timeout(Duration::from_secs(20), line)
        .await
        .expect("ready within 20 s")
        .unwrap()
        .expect("a line")
        .unwrap();
    let base = line
        .strip_prefix("kaskade is running: open ")
        .and_then(|url| url.strip_suffix("/m/hello"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    let http = reqwest::Client::new();
    for path in [
        "/healthz",
        "/m/hello",
        "/static/client.js",
        "/api/openapi.json",
    ] {
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{path}: {status}");
    }
    let token = TokenKey::from_secret(b"s3cret").sign(&Claims {
        meeting: "standup".into(),
        sub: "ann".into(),
        name: "Ann".into(),
        role: Role::Participant,
        exp: unix_now() + 60,
        rejoin: false,
        jti: None,
        aud: None,
        dial: false,
    });
    let answer = http
        .post(format!("{base}/api/meetings/standup/join"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503, "no node registered: nowhere to place");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "no_capacity", "{body}");
    assert!(
        dir.join("kaskade-cdr.sqlite").exists(),
        "the CDR database is created"
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_locator_needs_a_secret() {
    let output = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("KASKADE_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("kaskade-locator needs --secret"),
        "{stderr}"
    );
    assert!(
        stderr.contains("runs `kaskade`, the all-in-one"),
        "{stderr}"
    );
}

#[test]
fn the_token_tool_prints_a_token_that_verifies() {
    let output = Command::new(BIN)
        .args([
            "token",
            "--meeting",
            "board",
            "--identity",
            "alice",
            "--role",
            "moderator",
        ])
        .args(["--ttl", "60", "--dial", "--secret", "s3cret"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = TokenKey::from_secret(b"s3cret")
        .verify(token.trim(), "board", unix_now())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.role),
        ("alice", Role::Moderator)
    );
    assert!(claims.exp <= unix_now() + 60);
    assert!(claims.dial, "--dial grants the dial right");
}

/// Runs `directory ARGS`: whether it succeeded, stdout and stderr.
fn directory(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .arg("directory")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_directory_tool_manages_rooms_in_sqlite_or_redis() {
    let dir = scratch("directory");
    let db = dir.join("kaskade.sqlite");
    let redis = common::RedisServer::start();
    let stores = [
        vec!["--db".to_string(), db.display().to_string()],
        vec!["--redis".to_string(), redis.url.clone()],
    ];
    for store in &stores {
        let with = |args: &[&str]| -> Vec<String> {
            args.iter()
                .map(|a| a.to_string())
                .chain(store.iter().cloned())
                .collect()
        };
        let run = |args: &[&str]| {
            let args = with(args);
            directory(&args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let (ok, out, err) = run(&[
            "set",
            "oslo",
            "--name",
            "Oslo MCU",
            "--uri",
            "sip:8001@mcu.example.org",
            "--credentials",
            "east",
        ]);
        assert!(ok, "{store:?}: {err}");
        assert_eq!(
            out.trim(),
            "added oslo: Oslo MCU <sip:8001@mcu.example.org>"
        );
        let (ok, _, err) = run(&["set", "bad", "--name", "Bad", "--uri", "tel:123"]);
        assert!(
            !ok && err.contains("not a sip: or sips: address"),
            "{store:?}: {err}"
        );
        let (ok, out, _) = run(&["list"]);
        assert!(ok);
        let rooms: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            rooms,
            serde_json::json!([{"id": "oslo", "name": "Oslo MCU", "uri": "sip:8001@mcu.example.org", "credentials": "east"}]),
            "{store:?}"
        );
        let (ok, out, _) = run(&["remove", "oslo"]);
        assert!(ok && out.trim() == "removed oslo", "{store:?}: {out}");
        let (ok, _, err) = run(&["remove", "oslo"]);
        assert!(
            !ok && err.contains("no directory entry"),
            "{store:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_cdr_tool_prints_the_records_of_a_range() {
    let dir = scratch("cdr");
    let db_path = dir.join("cdr.sqlite");
    let db = CdrDb::open(&db_path).unwrap();
    let day = 1_772_323_200_000; // 2026-03-01T00:00:00Z
    let records = [day - 1, day + 1].map(|joined_at_ms| CallRecord {
        session: format!("n/{joined_at_ms}"),
        meeting: "m".into(),
        identity: "i".into(),
        name: "N".into(),
        node: "n".into(),
        kind: "browser".into(),
        role: Role::Participant,
        joined_at_ms,
        left_at_ms: joined_at_ms + 1000,
        bytes_sent: 1,
        bytes_received: 2,
        reason: "left".into(),
        caller: None,
        result: None,
    });
    db.insert(records.to_vec()).await.unwrap();
    let output = Command::new(BIN)
        .args(["cdr", "--from", "2026-03-01", "--db"])
        .arg(&db_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let csv = String::from_utf8(output.stdout).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains(&format!("n/{}", day + 1)));
    let missing = Command::new(BIN)
        .args(["cdr", "--db"])
        .arg(dir.join("absent.sqlite"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
