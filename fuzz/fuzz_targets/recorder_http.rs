//! The recorder's HTTP surface (recorder/src/api.rs) through its real router in-process, over
//! a recordings directory with one plain and one encrypted file: playback
//! (`GET /r/{meeting}/{id}/{file}` with the `Range` header (`api::parse_range`), the `token`
//! query, the path checks of `Recorder::open_file`, decryption of the ranges served), the
//! recordings list and page, and the locator-only control endpoints with whatever
//! `Authorization` the input holds.
//!
//! Input: records `op | len | body`, `op % 6`: 0 a range request of a file of the recording
//! (`file (bit 0: encrypted) | token (bit 1: a valid one; bit 2: no Range header) | Range
//! value`); 1 a file request with any path (`meeting \0 id \0 file \0 token`); 2 the list
//! (`meeting \0 token`); 3 the control endpoints with `Authorization` = body; 4 `parse_range(
//! length (u64) | shift | value)`; 5 `POST /recordings` with the body as its JSON (a
//! `StartRecording`, read before the credential is checked): refused, never started.
//! A range answered 206 must be the bytes its `Content-Range` names, 200 the whole file, and a
//! 416 says the length; `parse_range` only yields non-empty ranges inside the file.
#![no_main]

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use kaskade_fuzz::locator::{path_segment, query_value};
use kaskade_fuzz::ops::{Fields, Records};
use kaskade_fuzz::scratch;
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use kaskade_recorder::api::{parse_range, router};
use kaskade_recorder::at_rest::{EncryptingWriter, Keyring, Layout};
use kaskade_recorder::service::{Recorder, RecorderConfig};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const SECRET: &[u8] = b"fuzz-recorder-secret";
const KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const MEETING: &str = "fuzz";
const RECORDING: &str = "rec-1";
const FILES: [&str; 2] = ["plain.mp4", "sealed.mp4"];

struct Served {
    runtime: tokio::runtime::Runtime,
    router: Router,
    contents: [Vec<u8>; 2],
    token: String,
    _dir: PathBuf,
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

impl Served {
    fn new() -> Self {
        let dir = scratch::dir("recorder");
        let recording = dir.join(MEETING).join(RECORDING);
        std::fs::create_dir_all(&recording).expect("a scratch directory");
        let keys = Keyring::parse(KEY).expect("a key");
        // the encrypted file spans several chunks (64 KiB each), the last one partial
        let contents = [content(70_001, 1), content(200_003, 7)];
        std::fs::write(recording.join(FILES[0]), &contents[0]).expect("writing a file");
        let mut writer = EncryptingWriter::new(Vec::new(), &keys, Layout::Fixed).expect("a writer");
        writer.write_all(&contents[1]).expect("encrypting");
        std::fs::write(
            recording.join(FILES[1]),
            writer.finish().expect("encrypting"),
        )
        .expect("writing a file");
        let recorder = Arc::new(Recorder::new(RecorderConfig {
            out: dir.clone(),
            secret: SECRET.to_vec(),
            open: false,
            public_url: None,
            encryption: Some(keys),
        }));
        let token = TokenKey::from_secret(SECRET).sign(&Claims {
            meeting: MEETING.into(),
            sub: "viewer".into(),
            name: "Viewer".into(),
            role: Role::Participant,
            exp: unix_now() + 365 * 24 * 3600,
            rejoin: false,
            jti: None,
            aud: None,
            dial: false,
        });
        Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            router: router(recorder),
            contents,
            token,
            _dir: dir,
        }
    }

    fn send(&self, request: http::Request<Body>) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
        self.runtime.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            (parts.status, parts.headers, body)
        })
    }
}

fn split_nul(body: &[u8]) -> Vec<&[u8]> {
    body.split(|&b| b == 0).collect()
}

fn get(uri: &str, headers: &[(&str, &[u8])]) -> Option<http::Request<Body>> {
    let mut builder = http::Request::builder().method("GET").uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).ok()
}

fn check_range(
    served: &Served,
    file: usize,
    range: Option<&str>,
    answer: &(http::StatusCode, http::HeaderMap, Vec<u8>),
) {
    let content = &served.contents[file];
    let (status, headers, body) = answer;
    match status.as_u16() {
        200 => assert_eq!(body, content, "a whole file answered with other bytes"),
        206 => {
            let value = headers
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .expect("a 206 names its range");
            let spec = value.strip_prefix("bytes ").expect("a byte range");
            let (span, len) = spec.split_once('/').expect("a length");
            let (start, end) = span.split_once('-').expect("a span");
            let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
            assert_eq!(len.parse::<usize>().unwrap(), content.len());
            assert!(start <= end && end < content.len(), "{value}");
            assert_eq!(&body[..], &content[start..=end], "{value} of {range:?}");
        }
        416 => {
            let value = headers.get("content-range").and_then(|v| v.to_str().ok());
            assert_eq!(value, Some(format!("bytes */{}", content.len()).as_str()));
        }
        other => panic!("a range request of a file that exists answered {other}"),
    }
}

thread_local! {
    static SERVED: RefCell<Option<Served>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    SERVED.with(|cell| {
        let mut cell = cell.borrow_mut();
        let served = cell.get_or_insert_with(Served::new);
        for (op, body) in Records::new(data) {
            match op % 6 {
                0 => {
                    let mut f = Fields::new(body);
                    let flags = f.u8();
                    let file = usize::from(flags & 1);
                    let range = f.rest();
                    let token = if flags & 2 != 0 {
                        served.token.clone()
                    } else {
                        "x".into()
                    };
                    let uri = format!("/r/{MEETING}/{RECORDING}/{}?token={token}", FILES[file]);
                    let headers: Vec<(&str, &[u8])> = if flags & 4 == 0 {
                        vec![("range", range)]
                    } else {
                        Vec::new()
                    };
                    let Some(request) = get(&uri, &headers) else {
                        continue;
                    };
                    let answer = served.send(request);
                    if flags & 2 == 0 {
                        assert_eq!(answer.0, http::StatusCode::UNAUTHORIZED);
                        continue;
                    }
                    let text = std::str::from_utf8(range).ok();
                    check_range(served, file, text.filter(|_| flags & 4 == 0), &answer);
                }
                1 => {
                    let parts = split_nul(body);
                    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
                    let uri = format!(
                        "/r/{}/{}/{}?token={}",
                        path_segment(part(0)),
                        path_segment(part(1)),
                        path_segment(part(2)),
                        query_value(part(3)),
                    );
                    if let Some(request) = get(&uri, &[]) {
                        let (status, _, _) = served.send(request);
                        assert!(!status.is_server_error(), "{status} for {uri}");
                    }
                }
                2 => {
                    let parts = split_nul(body);
                    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
                    for uri in [
                        format!(
                            "/r/{}/recordings.json?token={}",
                            path_segment(part(0)),
                            query_value(part(1))
                        ),
                        format!("/r/{}", path_segment(part(0))),
                    ] {
                        if let Some(request) = get(&uri, &[]) {
                            let (status, _, _) = served.send(request);
                            assert!(!status.is_server_error(), "{status} for {uri}");
                        }
                    }
                }
                3 => {
                    for uri in [
                        format!("/recordings?meeting={MEETING}"),
                        format!("/recordings/{RECORDING}"),
                    ] {
                        let method = if uri.contains('?') { "GET" } else { "DELETE" };
                        let request = http::Request::builder()
                            .method(method)
                            .uri(&uri)
                            .header("authorization", body)
                            .body(Body::empty());
                        if let Ok(request) = request {
                            let (status, _, _) = served.send(request);
                            assert_eq!(status, http::StatusCode::UNAUTHORIZED, "{uri}");
                        }
                    }
                }
                5 => {
                    // the JSON body is read before the credential is checked
                    let request = http::Request::builder()
                        .method("POST")
                        .uri("/recordings")
                        .header("content-type", "application/json")
                        .body(Body::from(body.to_vec()));
                    if let Ok(request) = request {
                        let (status, _, _) = served.send(request);
                        assert!(status.is_client_error(), "{status} for a recording start");
                    }
                }
                _ => {
                    let mut f = Fields::new(body);
                    let len = f.u64() >> (f.u8() % 64);
                    let text = String::from_utf8_lossy(f.rest());
                    if let Some((start, end)) = parse_range(&text, len) {
                        assert!(
                            start < end && end <= len,
                            "{text:?} of {len}: {start}..{end}"
                        );
                    }
                }
            }
        }
    });
});
