//! The real `kaskade-raw-forwarder` on loopback under the real `kaskade-loadtest --target raw`:
//! 2 rooms x 4 participants for 5 s. The load generator's JSON report must show everyone
//! joined, no packet lost, every participant receiving (and decoding) from its 3 room-mates,
//! bytes received consistent with bytes sent, and latency measured; the forwarder's totals,
//! printed when SIGTERM stops it, must show nothing dropped. Performance is never asserted.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Bytes received may differ from bytes sent by what was in flight when the window opened.
const BYTES_TOLERANCE: f64 = 0.05;
const SECRET: &str = "raw-forwarder-e2e-secret";

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {value}"))
}

/// The forwarder process (killed on drop) and the lines it prints.
struct Forwarder {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: String,
}

impl Forwarder {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kaskade-raw-forwarder-under-test"))
            .args(["--listen", "127.0.0.1:0", "--secret", SECRET])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the forwarder starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a ready line");
        let addr = ready
            .strip_prefix("kaskade raw forwarder ready: udp ")
            .unwrap_or_else(|| panic!("not a ready line: {ready:?}"))
            .to_owned();
        Self { child, lines, addr }
    }

    /// Stops it with SIGTERM; returns its totals line's JSON.
    fn stop(mut self) -> Value {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("the forwarder exits");
        assert!(exit.success(), "the forwarder exits cleanly: {exit}");
        let totals = self
            .lines
            .iter()
            .find_map(|line| {
                line.strip_prefix("raw-forwarder totals ")
                    .map(str::to_owned)
            })
            .expect("a totals line");
        serde_json::from_str(&totals).expect("the totals are JSON")
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_rooms_of_four_through_the_raw_forwarder_lose_nothing() {
    let forwarder = Forwarder::start();
    let pid = forwarder.child.id().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"))
        .args([
            "--target",
            "raw",
            "--raw-addr",
            &forwarder.addr,
            "--secret",
            SECRET,
            "--rooms",
            "2",
            "--participants",
            "4",
            "--duration",
            "5",
            "--resolution",
            "320x240",
            "--fps",
            "15",
            "--video-bitrate",
            "200",
            "--decode",
            "--server-pid",
            &pid,
            "--json",
            "-",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("the load generator runs");
    assert!(
        output.status.success(),
        "kaskade-loadtest: {}",
        output.status
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });

    assert_eq!(u64_at(&report, "/participants_total"), 8);
    assert_eq!(u64_at(&report, "/participants_joined"), 8, "{report:#}");
    assert!(u64_at(&report, "/loss/expected") > 0, "{report:#}");
    assert_eq!(u64_at(&report, "/loss/lost"), 0, "{report:#}");
    // every frame carries a latency stamp: 8 receivers x 3 senders x 15 fps x 5 s
    assert_eq!(report["latency"]["measured"], true, "{report:#}");
    assert!(
        u64_at(&report, "/latency/samples") > 8 * 3 * 15 * 4,
        "{report:#}"
    );
    let p50 = report["latency"]["p50_ms"].as_f64().expect("latency p50");
    assert!(p50 > 0.0, "{report:#}");

    let participants = report["participants"].as_array().expect("participants");
    assert_eq!(participants.len(), 8);
    for p in participants {
        let name = p["name"].as_str().unwrap_or_default();
        let remotes = p["remotes"].as_object().expect("remotes");
        assert_eq!(
            remotes.len(),
            3,
            "{name} receives from its 3 room-mates: {p:#}"
        );
        for (mate, r) in remotes {
            let expected = u64_at(r, "/bytes_expected") as f64;
            let received = u64_at(r, "/bytes_received") as f64;
            assert!(expected > 0.0, "{mate} sent nothing: {p:#}");
            assert!(
                (received - expected).abs() <= expected * BYTES_TOLERANCE,
                "{name} received {received} of the {expected} bytes {mate} sent"
            );
            assert_eq!(u64_at(r, "/packets_lost"), 0, "{name} from {mate}: {p:#}");
            assert!(
                u64_at(r, "/frames_decoded") > 0,
                "{name} decoded nothing of {mate}: {p:#}"
            );
        }
    }
    // in a room of 4, each participant's bytes reach 3 others
    let sent = u64_at(&report, "/bytes/sent") as f64;
    let expected = u64_at(&report, "/bytes/expected") as f64;
    let received = u64_at(&report, "/bytes/received") as f64;
    assert!((expected - 3.0 * sent).abs() <= 1.0, "{report:#}");
    assert!(
        (received - expected).abs() <= expected * BYTES_TOLERANCE,
        "received {received} of {expected} bytes"
    );
    let server_cpu = report["server"]["cpu_seconds"]
        .as_f64()
        .expect("server CPU");
    assert!(server_cpu > 0.0, "server CPU {server_cpu}");

    // the forwarder dropped nothing, and forwarded at least what the window received
    let totals = forwarder.stop();
    eprintln!("raw forwarder totals: {totals}");
    for reason in [
        "dropped_malformed",
        "dropped_unauthentic",
        "dropped_replayed",
        "dropped_unknown",
        "dropped_refused",
        "dropped_overflow",
        "send_errors",
    ] {
        assert_eq!(u64_at(&totals, &format!("/{reason}")), 0, "{totals}");
    }
    assert_eq!(u64_at(&totals, "/joins"), 8, "{totals}");
    assert_eq!(u64_at(&totals, "/byes"), 8, "{totals}");
    // (a packet reaches 3 room-mates once all have joined, fewer before)
    let forwarded = u64_at(&totals, "/forwarded");
    assert!(forwarded <= 3 * u64_at(&totals, "/media_in"), "{totals}");
    assert!(forwarded >= u64_at(&report, "/loss/expected"), "{totals}");
}
