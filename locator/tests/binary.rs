//! The `kaskade-locator` binary: the all-in-one start, and the `token` and `cdr` tools.

use kaskade_locator::cdr::CdrDb;
use kaskade_protocol::cluster::CallRecord;
use kaskade_protocol::signaling::Role;
use kaskade_protocol::token::{TokenKey, unix_now};
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
async fn the_all_in_one_prints_where_it_runs_and_serves_page_api_and_node() {
    let dir = scratch("all-in-one");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(BIN)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--udp-port",
            "0",
            "--tcp-port",
            "0",
        ])
        .current_dir(&dir)
        .env_remove("KASKADE_SECRET")
        .env_remove("KASKADE_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kaskade-locator");
    let mut child = Kill(child);
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(2)
            .collect::<Result<Vec<_>, _>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .expect("ready within 20 s")
        .unwrap()
        .unwrap();
    assert!(
        lines[0].starts_with("kaskade media: udp 127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!("kaskade is running: open http://127.0.0.1:{port}/m/hello")
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for path in ["/healthz", "/node/healthz", "/m/hello", "/api/openapi.json"] {
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{path}: {status}");
    }
    assert!(
        dir.join("kaskade-cdr.sqlite").exists(),
        "the CDR database is created"
    );
    drop(child);
    let log = std::io::read_to_string(stderr).unwrap();
    assert!(log.contains("open joins are allowed"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_mode_needs_a_secret() {
    let output = Command::new(BIN)
        .args(["--cluster", "--listen", "127.0.0.1:0"])
        .env_remove("KASKADE_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cluster needs --secret"));
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
        .args(["--ttl", "60", "--secret", "s3cret"])
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
