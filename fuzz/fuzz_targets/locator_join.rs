//! The locator's client-facing API (locator/src/api/join.rs, operator.rs) through the real
//! router of an in-process locator with three live nodes: `POST /api/meetings/{meeting}/join`
//! (the meeting in the path, the `JoinRequest` body, tokens in the body or as `Authorization:
//! Bearer`, region, pinned and avoided nodes) on an open locator and on one that requires
//! tokens, and the operator's endpoints (`/api/meetings`, `/api/nodes`, `/api/tokens`,
//! `/api/cdr.csv?from=&to=`, `Host` and `X-Forwarded-Proto` for join links).
//!
//! Input: records `op | len | body`. Op 0: a join on the open locator, `body = meeting \0
//! JSON`. 1: a join on the closed locator with a token the locator's secret signed for claims
//! taken from the body (`role | expiry offset (i16, s) | flags (rejoin, a token id, an audience)
//! | name length | name | meeting \0 JSON`). 2: a join on the closed locator with `body = header length | Authorization |
//! meeting \0 JSON`. 3: an operator read (`which | meeting`). 4: `POST /api/tokens` with the
//! API key (`host length | Host | JSON`). 5: `GET /api/cdr.csv` with `from \0 to`.
//! Every answer must be well-formed (an `ApiError` for each error, no 5xx but 503); an accepted
//! join names a live node, its signaling URL, and a token that verifies for the meeting with
//! the role it says.
#![no_main]

use std::cell::RefCell;

use axum::body::Body;
use kaskade_fuzz::locator::{
    API_KEY, Locator, NODES, SECRET, check_answer, node_report, path_segment, query_value,
};
use kaskade_fuzz::ops::{Fields, Records};
use kaskade_protocol::cluster::JoinResponse;
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use libfuzzer_sys::fuzz_target;

/// Inputs after which the locators are made anew (their state only grows under fuzzing).
const FRESH_EVERY: u32 = 5_000;

thread_local! {
    static LOCATOR: RefCell<(Option<Locator>, u32)> = const { RefCell::new((None, 0)) };
}

fn split_nul(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().position(|&b| b == 0) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[]),
    }
}

fn join(meeting: &[u8], authorization: Option<&[u8]>, body: &[u8]) -> Option<http::Request<Body>> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("/api/meetings/{}/join", path_segment(meeting)));
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fn operator(
    method: &str,
    uri: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Option<http::Request<Body>> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {API_KEY}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fn check_join(meeting: &[u8], body: &[u8]) {
    let answer: JoinResponse = serde_json::from_slice(body).expect("a join response");
    assert_eq!(answer.meeting.as_bytes(), meeting);
    let i = NODES
        .iter()
        .position(|n| *n == answer.node)
        .expect("placed on a live node");
    assert_eq!(answer.signaling_url, node_report(i).signaling_url);
    let claims = TokenKey::from_secret(SECRET)
        .verify(&answer.token, &answer.meeting, unix_now())
        .expect("the handed-out token verifies");
    assert_eq!(claims.role, answer.role);
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
        locator.refresh();
        for (op, body) in Records::new(data) {
            let mut joined = None;
            let (instance, req) = match op % 6 {
                0 => {
                    let (meeting, json) = split_nul(body);
                    joined = Some(meeting);
                    (&locator.open, join(meeting, None, json))
                }
                1 => {
                    let mut f = Fields::new(body);
                    let role = match f.u8() % 3 {
                        0 => Role::Participant,
                        1 => Role::Moderator,
                        _ => Role::Recorder,
                    };
                    let offset = f.u16() as i16;
                    let flags = f.u8();
                    let n = usize::from(f.u8() % 64);
                    let name = String::from_utf8_lossy(f.bytes(n)).into_owned();
                    let (meeting, json) = split_nul(f.rest());
                    let claims = Claims {
                        meeting: String::from_utf8_lossy(meeting).into_owned(),
                        sub: format!("fuzz-{}", name.len()),
                        name,
                        role,
                        exp: unix_now().saturating_add_signed(i64::from(offset)),
                        rejoin: flags & 1 != 0,
                        // a one-time token (admitted once), or one for a node's signaling
                        jti: (flags & 2 != 0).then(|| format!("jti-{}", flags >> 3)),
                        aud: (flags & 4 != 0).then(|| NODES[0].to_string()),
                        dial: false,
                    };
                    let token = TokenKey::from_secret(SECRET).sign(&claims);
                    let bearer = format!("Bearer {token}").into_bytes();
                    joined = Some(meeting);
                    (&locator.closed, join(meeting, Some(&bearer), json))
                }
                2 => {
                    let mut f = Fields::new(body);
                    let n = usize::from(f.u8());
                    let header = f.bytes(n);
                    let (meeting, json) = split_nul(f.rest());
                    joined = Some(meeting);
                    (&locator.closed, join(meeting, Some(header), json))
                }
                3 => {
                    let mut f = Fields::new(body);
                    let which = f.u8();
                    let meeting = path_segment(f.rest());
                    let uri = match which % 3 {
                        0 => format!("/api/meetings/{meeting}"),
                        1 => "/api/meetings".to_string(),
                        _ => "/api/nodes".to_string(),
                    };
                    (&locator.closed, operator("GET", &uri, &[], b""))
                }
                4 => {
                    let mut f = Fields::new(body);
                    let n = usize::from(f.u8());
                    let host = f.bytes(n);
                    let forwarded: &[u8] = if n % 2 == 0 { b"https" } else { b"http" };
                    let headers = [("host", host), ("x-forwarded-proto", forwarded)];
                    (
                        &locator.closed,
                        operator("POST", "/api/tokens", &headers, f.rest()),
                    )
                }
                _ => {
                    let (from, to) = split_nul(body);
                    let uri = format!(
                        "/api/cdr.csv?from={}&to={}",
                        query_value(from),
                        query_value(to)
                    );
                    (&locator.closed, operator("GET", &uri, &[], b""))
                }
            };
            let Some(req) = req else {
                continue;
            };
            let (status, answer) = locator.send(instance, req);
            check_answer(status, &answer);
            if let Some(meeting) = joined
                && status.is_success()
            {
                check_join(meeting, &answer);
            }
        }
    });
});
