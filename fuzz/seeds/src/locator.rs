//! Seeds of the locator's targets: node reports and join requests.

use super::*;

pub(super) fn locator(c: &mut Corpus) {
    let t = "locator_node_report";
    let mut report = node_report(0);
    report.node = "node-x".into();
    let records_json = json(&vec![CallRecord {
        session: "node-x/1048577/1700000000000".into(),
        meeting: "standup".into(),
        identity: "alice@example.com".into(),
        name: "Alice".into(),
        node: "node-x".into(),
        kind: "browser".into(),
        role: Role::Moderator,
        joined_at_ms: 1_700_000_000_000,
        left_at_ms: 1_700_000_060_000,
        bytes_sent: 1_000_000,
        bytes_received: 2_000_000,
        reason: "left".into(),
        caller: None,
        result: None,
    }]);
    let recorder = json(&RecorderReport {
        name: "recorder-x".into(),
        url: "http://127.0.0.1:9".into(),
        recordings: 1,
    });
    c.add(
        t,
        "report-then-node-requests",
        records(&[
            (0, &json(&report)),
            (2, &split(b"node-x", &records_json)),
            (3, &split(b"node-x", b"standup")),
            (4, &split(b"node-x", b"node-a")),
            (5, &recorder),
        ]),
    );
    let mut indexed = node_report(1);
    indexed.index = Some(7);
    indexed.region = None;
    c.add(t, "report-with-index", records(&[(0, &json(&indexed))]));
    let stale = node_credential(kaskade_fuzz::locator::SECRET, "node-x", 1_000);
    let mut with_header = vec![stale.len() as u8];
    with_header.extend_from_slice(stale.as_bytes());
    with_header.extend_from_slice(&json(&report));
    c.add(t, "stale-credential", records(&[(1, &with_header)]));
    c.add(
        t,
        "credential-text",
        records(&[(3, b"Kaskade-Node node-a:1700000000:00ff")]),
    );

    let t = "locator_join";
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "named",
            json(&JoinRequest {
                name: "Alice".into(),
                ..JoinRequest::default()
            }),
        ),
        (
            "region",
            json(&JoinRequest {
                name: "Bob".into(),
                region: Some("us".into()),
                ..JoinRequest::default()
            }),
        ),
        (
            "pinned",
            json(&JoinRequest {
                node: Some("node-b".into()),
                ..JoinRequest::default()
            }),
        ),
        (
            "avoid",
            json(&JoinRequest {
                avoid_node: Some("node-a".into()),
                ..JoinRequest::default()
            }),
        ),
    ];
    for (name, body) in &bodies {
        c.add(
            t,
            format!("open-{name}"),
            records(&[(0, &split(b"standup", body))]),
        );
    }
    let token_join = |role: u8, rejoin: bool, body: &[u8]| {
        let mut seed = vec![role];
        seed.extend_from_slice(&600u16.to_be_bytes());
        seed.push(u8::from(rejoin));
        seed.push(5);
        seed.extend_from_slice(b"Carol");
        seed.extend_from_slice(&split(b"standup", body));
        seed
    };
    c.add(
        t,
        "token-joins",
        records(&[
            (1, &token_join(1, false, &bodies[1].1)),
            (1, &token_join(0, true, b"")),
            (1, &token_join(2, false, &bodies[2].1)),
        ]),
    );
    let bearer = b"Bearer not.a.token";
    let mut header = vec![bearer.len() as u8];
    header.extend_from_slice(bearer);
    header.extend_from_slice(&split(b"standup", b""));
    c.add(t, "bad-bearer", records(&[(2, &header)]));
    c.add(
        t,
        "operator-reads",
        records(&[
            (0, &split(b"standup", b"")),
            (3, b"\x00standup"),
            (3, b"\x01"),
            (3, b"\x02"),
        ]),
    );
    let host = b"locator.example.com:8443";
    let mut tokens = vec![host.len() as u8];
    tokens.extend_from_slice(host);
    tokens.extend_from_slice(
        br#"{"meeting":"standup","identity":"dave","name":"Dave","role":"moderator","ttl_seconds":600}"#,
    );
    c.add(t, "operator-token", records(&[(4, &tokens)]));
    c.add(
        t,
        "cdr-csv",
        records(&[
            (5, b"2026-03-01\x002026-03-02"),
            (5, b"1772366400\x00"),
            (5, b"2026-03-01T12:00:00Z\x002026-03-01T13:00:00+01:00"),
        ]),
    );
}
