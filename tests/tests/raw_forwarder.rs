//! The real `kaskade-raw-forwarder` on loopback under the real `kaskade-loadtest --target raw`,
//! in issue 5's CI run (see `kaskade_e2e::loadtest`: 2 rooms x 4 participants for 10 s, the
//! same run and report checks as the other targets). The report must show everyone joined, no
//! packet lost, every participant receiving (and decoding) from its 3 room-mates, bytes
//! received consistent with bytes sent, and latency measured; the forwarder's totals, printed
//! when SIGTERM stops it, must show nothing dropped. Performance is never asserted here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kaskade_e2e::loadtest::{Expect, check_report, run, u64_at};
use serde_json::Value;

const SECRET: &str = "raw-forwarder-e2e-secret";

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
    let mut command = Command::new(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"));
    command.args([
        "--target",
        "raw",
        "--raw-addr",
        &forwarder.addr,
        "--secret",
        SECRET,
        "--server-pid",
        &pid,
    ]);
    let report = run(command);
    let expect = Expect {
        max_loss: 0.0,
        bytes_tolerance: 0.05,
    };
    check_report(&report, expect);

    // the forwarder dropped nothing, and forwarded at least what the participants received
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
