//! The real `kaskade-loadtest` binary against a real standalone node on loopback (issue 5's CI
//! run): 2 rooms x 4 participants for 10 s. Its JSON report must show everyone joined, no
//! packet lost, every participant receiving (and decoding) from its 3 room-mates, bytes
//! received consistent with bytes sent, latency measured from the stamps, and the server's CPU
//! measured. Performance is never asserted here.

use std::process::{Command, Stdio};

use serde_json::Value;

/// Bytes received may differ from bytes sent by what was in flight when the window opened.
const BYTES_TOLERANCE: f64 = 0.05;

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {value}"))
}

#[test]
fn two_rooms_of_four_on_loopback_lose_nothing_and_account_for_every_byte() {
    let node = kaskade_e2e::start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), &[]);
    let pid = node.pid().to_string();
    let url = node.url();
    let output = Command::new(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"))
        .args([
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
            "--sfu",
            &url,
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
    assert_eq!(u64_at(&report, "/missing_first_frames"), 0, "{report:#}");
    // every frame carries a latency stamp: 8 receivers x 3 senders x 15 fps x 10 s
    assert_eq!(report["latency"]["measured"], true, "{report:#}");
    assert!(u64_at(&report, "/latency/samples") > 8 * 3 * 15 * 9, "{report:#}");
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
    // the totals agree with the sum of the pairs and with what was sent: in a room of 4,
    // each participant's bytes reach 3 others
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
    assert!(u64_at(&report, "/server/peak_rss_bytes") > 0);
    assert!(
        report["generator"]["cpu_seconds"]
            .as_f64()
            .expect("generator CPU")
            > 0.0
    );
}
