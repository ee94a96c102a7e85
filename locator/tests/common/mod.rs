//! Helpers shared by the locator's integration tests: a real `redis-server` on a free port,
//! node reports, and a locator under test.

#![allow(dead_code)]

pub mod locator;

use kaskade_protocol::cluster::{MeetingLoad, NodeReport};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of this test only, killed when dropped.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl RedisServer {
    /// Starts `redis-server` without persistence on a free loopback port. Fails the test when
    /// the binary is missing: the Redis store is only tested against the real server.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis store tests need it \
                     (Debian: apt-get install redis-server)"
                )
            });
        let mut server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A report of an idle node named `node` with room for `capacity`.
pub fn report(node: &str, capacity: u32) -> NodeReport {
    NodeReport {
        node: node.into(),
        index: None,
        signaling_url: format!("ws://{node}.test/ws"),
        http_url: format!("http://{node}.test"),
        media_addr: "127.0.0.1:10000".parse().expect("an address"),
        region: None,
        capacity,
        max_bitrate_out_bps: None,
        participants: 0,
        meetings: Vec::new(),
        streams_in: 0,
        streams_out: 0,
        bitrate_in_bps: 0,
        bitrate_out_bps: 0,
        cpu_cores: 0.1,
        overloaded: false,
    }
}

/// `report` carrying one meeting with `participants`.
pub fn with_meeting(mut report: NodeReport, meeting: &str, participants: u32) -> NodeReport {
    report.participants += participants;
    report.meetings.push(MeetingLoad {
        meeting: meeting.into(),
        participants,
        locked: false,
        moderators: Vec::new(),
    });
    report
}
