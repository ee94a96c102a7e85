//! Unit tests of the report's bookkeeping, with fixed numbers.

use super::*;

fn remote(expected: u64, received: u64, first: Option<f64>) -> RemoteReport {
    RemoteReport {
        bytes_expected: expected,
        bytes_received: received,
        packets_expected: 100,
        packets_lost: 1,
        first_frame_ms: first,
        freezes: 1,
        ..RemoteReport::default()
    }
}

#[test]
fn report_totals_expected_against_received() {
    let a = ParticipantReport {
        name: "r0p0".into(),
        joined: true,
        join_ms: Some(100.0),
        bytes_sent: 1000,
        nacks_sent: 2,
        remotes: [("r0p1".into(), remote(2000, 1990, Some(300.0)))].into(),
        ..ParticipantReport::default()
    };
    let b = ParticipantReport {
        name: "r0p1".into(),
        joined: true,
        join_ms: Some(200.0),
        bytes_sent: 2000,
        remotes: [("r0p0".into(), remote(1000, 1000, None))].into(),
        ..ParticipantReport::default()
    };
    let failed = ParticipantReport {
        name: "r0p2".into(),
        error: Some("refused".into()),
        ..ParticipantReport::default()
    };
    let r = Report::new(
        RunParams::default(),
        vec![a, b, failed],
        &[2.0, 1.0, 9.0],
        Duration::from_secs(10),
        None,
        None,
        ProcessUsage::default(),
    );
    assert_eq!((r.participants_total, r.participants_joined), (3, 2));
    assert_eq!(r.join_ms.p50, Some(100.0));
    assert_eq!(r.join_ms.p99, Some(200.0));
    assert_eq!((r.first_frame_ms.count, r.missing_first_frames), (1, 1));
    assert_eq!(
        (r.loss.expected, r.loss.lost, r.loss.percent),
        (200, 2, 1.0)
    );
    assert_eq!((r.nacks_sent, r.freezes), (2, 2));
    assert_eq!(
        (r.bytes.sent, r.bytes.expected, r.bytes.received),
        (3000, 3000, 2990)
    );
    assert!((r.bytes.ratio.unwrap() - 0.99667).abs() < 1e-4);
    assert!(r.latency.measured);
    assert_eq!(
        (r.latency.samples, r.latency.p50_ms, r.latency.max_ms),
        (3, Some(2.0), Some(9.0))
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["bytes"]["expected"], 3000);
    assert_eq!(json["latency"]["p99_ms"], 9.0);
    let table = r.to_string();
    assert!(table.contains("joined                     2/3"), "{table}");
    assert!(
        table.contains("2.0 ms / 9.0 ms / 9.0 ms (3 stamps)"),
        "{table}"
    );
    assert!(!Latency::of(&[]).measured);
}

#[test]
fn partial_pairs_count_their_loss_but_not_their_bytes() {
    let stayed = ParticipantReport {
        name: "r0p0".into(),
        joined: true,
        join_ms: Some(100.0),
        remotes: [
            ("r0p1".into(), remote(2000, 2000, Some(300.0))),
            (
                "r0p4".into(),
                RemoteReport {
                    partial: true,
                    ..remote(0, 700, Some(250.0))
                },
            ),
        ]
        .into(),
        ..ParticipantReport::default()
    };
    let left = ParticipantReport {
        name: "r0p1".into(),
        joined: true,
        churn_left: true,
        ..ParticipantReport::default()
    };
    let newcomer = ParticipantReport {
        name: "r0p4".into(),
        joined: true,
        churn_joined: true,
        ..ParticipantReport::default()
    };
    let server = ProcessUsage {
        rss_bytes: Some(3000),
        ..ProcessUsage::default()
    };
    let r = Report::new(
        RunParams::default(),
        vec![stayed, left, newcomer],
        &[],
        Duration::from_secs(10),
        Some(server),
        Some(1000),
        ProcessUsage::default(),
    );
    assert_eq!(r.participants_joined, 3);
    assert_eq!((r.loss.expected, r.loss.lost), (200, 2));
    assert_eq!((r.bytes.expected, r.bytes.received), (2000, 2000));
    // memory per participant present at the end (the leaver is not)
    assert_eq!(r.forwarding.server_bytes_per_participant, Some(1000.0));
    let json = serde_json::to_value(&r).unwrap();
    assert!(json.get("churn").is_none());
    assert_eq!(json["participants"][0]["remotes"]["r0p4"]["partial"], true);
}

#[test]
fn forwarding_cost_is_cpu_over_packets() {
    let server = ProcessUsage {
        cpu_seconds: 2.0,
        peak_rss_bytes: None,
        rss_bytes: Some(30 << 20),
    };
    let generator = ProcessUsage {
        cpu_seconds: 1.0,
        ..ProcessUsage::default()
    };
    let f = Forwarding::of(
        400_000,
        Duration::from_secs(10),
        Some(&server),
        Some(10 << 20),
        &generator,
        20,
    );
    assert_eq!(f.packets_per_second, 40_000.0);
    assert_eq!(f.server_cpu_us_per_packet, Some(5.0));
    assert_eq!(f.packets_per_server_cpu_second, Some(200_000.0));
    assert_eq!(f.generator_cpu_us_per_packet, Some(2.5));
    assert_eq!(f.server_bytes_per_participant, Some(1024.0 * 1024.0));
    let idle = Forwarding::of(0, Duration::ZERO, None, None, &generator, 0);
    assert_eq!(idle.server_cpu_us_per_packet, None);
    assert_eq!(idle.packets_per_second, 0.0);
}

#[test]
fn proc_files_parse() {
    let stat = "1234 (kaskade sfu) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0";
    assert_eq!(parse_cpu_seconds(stat), Some(3.0));
    assert_eq!(parse_cpu_seconds("garbage"), None);
    let status = "Name:\tkaskade\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
    assert_eq!(parse_peak_rss(status), Some(2048 * 1024));
    assert_eq!(parse_rss(status), Some(1000 * 1024));
    assert_eq!(parse_peak_rss("Name: x\n"), None);
}
