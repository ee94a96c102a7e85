//! The real `kaskade-loadtest --target janus` against a real Janus (Debian's `janus` 1.x with
//! the VideoRoom plugin, started by loadtest/janus/run-janus.sh with that directory's
//! configuration): the CI run of `kaskade_e2e::loadtest`, 2 rooms x 4 participants for 10 s,
//! with the same synthetic participants and media as against kaskade. Its report must show
//! everyone joined, everyone receiving (and decoding) from its 3 room-mates, next to no loss,
//! bytes received consistent with bytes sent, latency measured, and Janus's CPU measured.
//!
//! libnice (Janus's ICE) never gathers candidates on loopback, so Janus and the load generator
//! run in a private network namespace with a veth pair, Janus's end at [`JANUS_IP`] (and a
//! default route through it, from which Janus takes its own address).

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kaskade_e2e::loadtest::{Expect, check_report, run};
use kaskade_e2e::{Netns, Scratch};

/// Janus's address in the namespace.
const JANUS_IP: &str = "10.99.0.1";
/// Its WebSocket API port (run-janus.sh's default).
const WS_PORT: u16 = 8188;
/// How long Janus may take to open its WebSocket port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Janus; killed on drop, its log printed if the test failed.
struct Janus {
    child: Child,
    log: String,
}

impl Janus {
    /// Starts Janus in `ns` with the load generator's configuration, written into `scratch`,
    /// and waits until its WebSocket port accepts connections.
    fn start(ns: &Netns, scratch: &Scratch) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../loadtest/janus/run-janus.sh"
        );
        let log = scratch.path("janus.log");
        let out = File::create(&log).expect("a Janus log file");
        let child = ns
            .command("bash")
            .args([script, &scratch.path("janus-config")])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log file"))
            .stderr(out)
            .spawn()
            .expect("Janus starts (apt-get install janus)");
        let mut janus = Self { child, log };
        let deadline = Instant::now() + START_TIMEOUT;
        let probe = format!("exec 3<>/dev/tcp/{JANUS_IP}/{WS_PORT}");
        loop {
            if let Ok(Some(status)) = janus.child.try_wait() {
                panic!("Janus exited at start ({status})");
            }
            let open = ns
                .command("bash")
                .args(["-c", &probe])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if open {
                return janus;
            }
            assert!(Instant::now() < deadline, "Janus did not open its port");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- Janus log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

#[test]
fn two_rooms_of_four_through_janus_account_for_every_byte() {
    let ns = Netns::new("kj").expect("network namespace (needs root)");
    ns.add_veth(&format!("{JANUS_IP}/24"))
        .expect("a veth pair for Janus's libnice");
    let scratch = Scratch::new("janus");
    let janus = Janus::start(&ns, &scratch);
    let pid = janus.pid().to_string();
    let url = format!("ws://{JANUS_IP}:{WS_PORT}");
    let mut command = ns.command(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"));
    command.args([
        "--target",
        "janus",
        "--janus-url",
        &url,
        "--server-pid",
        &pid,
    ]);
    let report = run(command);
    let expect = Expect {
        max_loss: 0.01,
        bytes_tolerance: 0.05,
    };
    check_report(&report, expect);
}
