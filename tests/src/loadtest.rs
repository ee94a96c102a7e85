//! The CI run of the real `kaskade-loadtest` (issue 5), whatever the server under test: the
//! run's options ([`CI_RUN`]: 2 rooms x 4 participants for 10 s), running it ([`run`]) and
//! checking its JSON report ([`check_report`]): everyone joined, everyone receives (and
//! decodes) from its 3 room-mates, loss within bounds, bytes received consistent with bytes
//! sent, latency measured from the stamps, the server's CPU measured. Performance is never
//! asserted.

use std::process::{Command, Stdio};

use serde_json::Value;

/// Rooms of the CI run.
const ROOMS: u64 = 2;
/// Participants per room of the CI run.
const PER_ROOM: u64 = 4;
/// Video frames per second of the CI run.
const FPS: u64 = 15;
/// Seconds of the CI run's measurement window.
const SECONDS: u64 = 10;

/// The options of the CI run (the target's options come on top): 2 rooms x 4 participants,
/// 10 s of 320x240 video at 15 fps and 200 kbit/s, decoded, the report as JSON on stdout.
pub const CI_RUN: &[&str] = &[
    "--rooms",
    "2",
    "--participants",
    "4",
    "--duration",
    "10",
    "--resolution",
    "320x240",
    "--fps",
    "15",
    "--video-bitrate",
    "200",
    "--decode",
    "--json",
    "-",
];

/// What a report must show beyond everyone joining and receiving from everyone.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// The largest share of packets that may be lost (0: none).
    pub max_loss: f64,
    /// How far bytes received may be from bytes sent (as a share of what was sent): what was
    /// in flight when the window opened.
    pub bytes_tolerance: f64,
}

/// The number at `pointer` in `value`; panics (failing the test) if there is none.
pub fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {value}"))
}

/// Runs `command` (the load generator with its target's options) with [`CI_RUN`] and returns
/// its JSON report; panics if it fails or prints no JSON.
pub fn run(mut command: Command) -> Value {
    let output = command
        .args(CI_RUN)
        .stderr(Stdio::inherit())
        .output()
        .expect("the load generator runs");
    assert!(
        output.status.success(),
        "kaskade-loadtest: {}",
        output.status
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Checks the report of a [`CI_RUN`] (see the module documentation); panics with the report
/// on the first failure.
pub fn check_report(report: &Value, expect: Expect) {
    let total = ROOMS * PER_ROOM;
    assert_eq!(u64_at(report, "/participants_total"), total);
    assert_eq!(u64_at(report, "/participants_joined"), total, "{report:#}");
    let expected_packets = u64_at(report, "/loss/expected");
    assert!(expected_packets > 0, "{report:#}");
    let lost = u64_at(report, "/loss/lost");
    assert!(
        lost as f64 <= expected_packets as f64 * expect.max_loss,
        "{lost} of {expected_packets} packets lost: {report:#}"
    );
    assert_eq!(u64_at(report, "/missing_first_frames"), 0, "{report:#}");
    // every frame carries a latency stamp: each receiver x its room-mates x fps x seconds
    assert_eq!(report["latency"]["measured"], true, "{report:#}");
    let stamps = total * (PER_ROOM - 1) * FPS * (SECONDS - 1);
    assert!(u64_at(report, "/latency/samples") > stamps, "{report:#}");
    let p50 = report["latency"]["p50_ms"].as_f64().expect("latency p50");
    assert!(p50 > 0.0, "{report:#}");

    let participants = report["participants"].as_array().expect("participants");
    assert_eq!(participants.len() as u64, total);
    for p in participants {
        check_participant(p, expect);
    }
    // the totals agree with the sum of the pairs and with what was sent: in a room of 4,
    // each participant's bytes reach 3 others
    let sent = u64_at(report, "/bytes/sent") as f64;
    let expected = u64_at(report, "/bytes/expected") as f64;
    let received = u64_at(report, "/bytes/received") as f64;
    assert!(
        (expected - (PER_ROOM - 1) as f64 * sent).abs() <= 1.0,
        "{report:#}"
    );
    assert!(
        (received - expected).abs() <= expected * expect.bytes_tolerance,
        "received {received} of {expected} bytes"
    );

    let server_cpu = report["server"]["cpu_seconds"]
        .as_f64()
        .expect("server CPU");
    assert!(server_cpu > 0.0, "server CPU {server_cpu}");
    assert!(u64_at(report, "/server/peak_rss_bytes") > 0);
    assert!(
        report["generator"]["cpu_seconds"]
            .as_f64()
            .expect("generator CPU")
            > 0.0
    );
    // the forwarding figures are the window's packets over the window's CPU time: each of
    // the 8 participants receives 3 room-mates' audio (50/s) and video for the whole window
    let packets = u64_at(report, "/forwarding/packets");
    let window = report["window_s"].as_f64().expect("window");
    assert!(
        packets as f64 >= (PER_ROOM * ROOMS * (PER_ROOM - 1)) as f64 * 50.0 * window * 0.95,
        "{report:#}"
    );
    let per_packet = report["forwarding"]["server_cpu_us_per_packet"]
        .as_f64()
        .expect("server CPU per packet");
    assert!(
        (per_packet - server_cpu * 1e6 / packets as f64).abs() < 1e-6 * per_packet,
        "{report:#}"
    );
}

/// One participant of the report received, and decoded, what each room-mate sent.
fn check_participant(p: &Value, expect: Expect) {
    let name = p["name"].as_str().unwrap_or_default();
    let remotes = p["remotes"].as_object().expect("remotes");
    assert_eq!(
        remotes.len() as u64,
        PER_ROOM - 1,
        "{name} receives from its {} room-mates: {p:#}",
        PER_ROOM - 1
    );
    for (mate, r) in remotes {
        let expected = u64_at(r, "/bytes_expected") as f64;
        let received = u64_at(r, "/bytes_received") as f64;
        assert!(expected > 0.0, "{mate} sent nothing: {p:#}");
        assert!(
            (received - expected).abs() <= expected * expect.bytes_tolerance,
            "{name} received {received} of the {expected} bytes {mate} sent"
        );
        assert!(
            u64_at(r, "/frames_decoded") > 0,
            "{name} decoded nothing of {mate}"
        );
        assert!(
            u64_at(r, "/frames_received") >= u64_at(r, "/frames_decoded"),
            "{name} decoded more frames of {mate} than arrived complete: {p:#}"
        );
    }
}
