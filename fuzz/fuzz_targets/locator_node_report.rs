//! The locator's node protocol as nodes and recorders reach it over HTTP (locator/src/api/
//! nodes.rs, recordings.rs): node credentials (`verify_node_credential`, `unhex`), the JSON
//! bodies (`NodeReport`, call records, `RecorderReport`) and the checks the locator applies to
//! them, then the store they update, through the real router of an in-process locator. The node's
//! own client parses the locator's answers with the same types (`ReportAck`, `MeetingInfo`,
//! `LinkInfo`), and the locator and recorders each other's recording bodies (`StartRecording`,
//! `RecordingInfo`): they are parsed from the same bytes.
//!
//! Input: records `op | len | body`. Op 0: a report (`body` is the JSON) with a valid credential
//! for the node it names; 1: a report with `body = header length (u8) | Authorization | JSON`;
//! 2: call records of the node named before a NUL byte, JSON after it; 3: meeting info of
//! `node \0 meeting`; 4: link info of `node \0 peer`; 5: a recorder's report with a valid
//! credential. Every answer must be well-formed: an `ApiError` for every error, no 5xx but 503;
//! an accepted report gets an index in 1..=4095. A header the fuzzer writes never authenticates.
#![no_main]

use std::cell::RefCell;

use axum::body::Body;
use kaskade_fuzz::locator::{Locator, SECRET, check_answer, path_segment};
use kaskade_fuzz::ops::{Fields, Records};
use kaskade_protocol::cluster::{
    CallRecord, LinkInfo, MAX_NODE_INDEX, MeetingInfo, NodeReport, ReportAck, hex, node_credential,
    unhex, verify_node_credential,
};
use kaskade_protocol::recording::{RecorderReport, RecordingInfo, StartRecording};
use kaskade_protocol::token::unix_now;
use libfuzzer_sys::fuzz_target;

/// Inputs after which the locators are made anew (their state only grows under fuzzing).
const FRESH_EVERY: u32 = 5_000;

thread_local! {
    static LOCATOR: RefCell<(Option<Locator>, u32)> = const { RefCell::new((None, 0)) };
}

fn named(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

fn split_nul(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().position(|&b| b == 0) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[]),
    }
}

fn check_pure(body: &[u8]) {
    let _ = serde_json::from_slice::<NodeReport>(body);
    let _ = serde_json::from_slice::<Vec<CallRecord>>(body);
    let _ = serde_json::from_slice::<RecorderReport>(body);
    let _ = serde_json::from_slice::<ReportAck>(body);
    let _ = serde_json::from_slice::<MeetingInfo>(body);
    let _ = serde_json::from_slice::<LinkInfo>(body);
    let _ = serde_json::from_slice::<StartRecording>(body);
    let _ = serde_json::from_slice::<Vec<RecordingInfo>>(body);
    let text = String::from_utf8_lossy(body);
    assert!(
        verify_node_credential(SECRET, &text, unix_now()).is_err(),
        "a credential not made with the secret verified"
    );
    if let Some(bytes) = unhex(&text) {
        assert_eq!(
            hex(&bytes),
            text.to_ascii_lowercase(),
            "unhex accepted non-hex"
        );
    }
    let name = text.trim();
    if !name.is_empty() {
        let now = unix_now();
        let credential = node_credential(SECRET, name, now);
        assert_eq!(
            verify_node_credential(SECRET, &credential, now).as_deref(),
            Ok(name)
        );
    }
}

fn request(
    method: &str,
    path: &str,
    authorization: Option<&[u8]>,
    body: &[u8],
) -> Option<http::Request<Body>> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    LOCATOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (locator, runs) = &mut *cell;
        *runs += 1;
        if *runs % FRESH_EVERY == 1 {
            *locator = None;
        }
        let locator = locator.get_or_insert_with(Locator::new);
        for (op, body) in Records::new(data) {
            check_pure(body);
            let credential = |name: &str| node_credential(SECRET, name, unix_now()).into_bytes();
            let req = match op % 6 {
                0 => {
                    let name = named(body, "node").unwrap_or_else(|| "node-x".into());
                    request("POST", "/api/nodes/report", Some(&credential(&name)), body)
                }
                1 => {
                    let mut f = Fields::new(body);
                    let n = usize::from(f.u8());
                    let header = f.bytes(n);
                    request("POST", "/api/nodes/report", Some(header), f.rest())
                }
                2 => {
                    let (node, json) = split_nul(body);
                    let name = String::from_utf8_lossy(node);
                    let path = format!("/api/nodes/{}/cdr", path_segment(node));
                    request("POST", &path, Some(&credential(&name)), json)
                }
                3 | 4 => {
                    let (node, other) = split_nul(body);
                    let name = String::from_utf8_lossy(node);
                    let what = if op % 6 == 3 { "meetings" } else { "links" };
                    let path = format!(
                        "/api/nodes/{}/{what}/{}",
                        path_segment(node),
                        path_segment(other)
                    );
                    request("GET", &path, Some(&credential(&name)), b"")
                }
                _ => {
                    let name = named(body, "name").unwrap_or_else(|| "recorder-x".into());
                    request(
                        "POST",
                        "/api/recorders/report",
                        Some(&credential(&name)),
                        body,
                    )
                }
            };
            let Some(req) = req else {
                continue;
            };
            let is_report = req.uri().path() == "/api/nodes/report";
            let (status, answer) = locator.send(&locator.open, req);
            check_answer(status, &answer);
            if is_report && status.is_success() {
                let ack: ReportAck = serde_json::from_slice(&answer).expect("a report ack");
                assert!((1..=MAX_NODE_INDEX).contains(&ack.index));
            }
        }
    });
});
