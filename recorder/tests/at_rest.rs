//! Encryption at rest, end to end: a recording written with a key leaves no MP4 bytes on disk,
//! is finalized and recovered encrypted, and is served decrypted with range requests; without
//! the key, or with a damaged chunk, reading it is an error.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Recorded, Scenario, assert_close, assert_decodes_cleanly, probe, record, scratch};
use kaskade_recorder::at_rest::{self, AtRestError, Expect, Keyring, Layout};
use kaskade_recorder::finalize::{FinalizeError, finalize, finalize_with};
use kaskade_recorder::recover::recover_with;
use kaskade_recorder::service::{Recorder, RecorderConfig};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

const KEY: &str = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5";
const MEETING: &str = "secret-meeting";
const RECORDING: &str = "1700000000-abcd";

fn keys() -> Keyring {
    Keyring::parse(KEY).expect("a key")
}

/// Writes `recorded` as the writer thread does with a key: encrypted, flushed and synced at
/// every fragment. Returns the encrypted file's size after each fragment.
fn write_encrypted(recorded: &Recorded, path: &Path) -> Vec<u64> {
    let keys = keys();
    let mut file = at_rest::create(path, Some(&keys), Layout::Streaming).expect("create");
    let mut written = 0;
    let mut ends = Vec::new();
    for fragment in &recorded.fragments {
        let end = fragment.file_size as usize;
        file.write_all(&recorded.bytes[written..end])
            .expect("write");
        file.flush().expect("flush");
        file.sync_data().expect("sync");
        ends.push(std::fs::metadata(path).expect("size").len());
        written = end;
    }
    file.write_all(&recorded.bytes[written..]).expect("write");
    file.finish().expect("finish");
    ends
}

/// A recording directory `OUT/{MEETING}/{RECORDING}/` holding `1.mp4.part` (encrypted) and
/// `1.mp4` (finalized with the key); returns OUT, the plain MP4 the same media makes, and
/// its duration in seconds.
fn encrypted_recording(name: &str, recorded: &Recorded) -> (PathBuf, Vec<u8>, f64) {
    let out = scratch(name);
    let dir = out.join(MEETING).join(RECORDING);
    std::fs::create_dir_all(&dir).expect("recording dir");
    let part = dir.join("1.mp4.part");
    write_encrypted(recorded, &part);
    let summary = finalize_with(&part, &dir.join("1.mp4"), Some(&keys())).expect("finalize");
    let plain_part = scratch(&format!("{name}.plain.fmp4"));
    let plain = scratch(&format!("{name}.plain.mp4"));
    std::fs::write(&plain_part, &recorded.bytes).expect("write");
    finalize(&plain_part, &plain).expect("finalize plain");
    let plain = std::fs::read(&plain).expect("read");
    assert_eq!(summary.bytes, plain.len() as u64);
    (out, plain, summary.duration.as_secs_f64())
}

/// Asserts what holds for a file encrypted at rest every time, whatever its random nonces: it
/// decrypts with the key to an MP4, none of whose box headers (size and type, 8 bytes) occurs at
/// any offset of the file, and its bytes are spread as evenly as random bytes of that length.
/// Returns the decrypted MP4.
fn assert_encrypted_at_rest(path: &Path) -> Vec<u8> {
    let sealed = std::fs::read(path).expect("read");
    let mut plain = Vec::new();
    at_rest::open(path, Some(&keys()), Expect::Complete)
        .expect("open")
        .read_to_end(&mut plain)
        .expect("decrypt");
    let headers = box_headers(&plain);
    assert!(
        headers.first().is_some_and(|h| &h[4..] == b"ftyp"),
        "{} decrypts to an MP4",
        path.display()
    );
    for header in &headers {
        assert!(
            !sealed.windows(8).any(|w| w == header),
            "{} shows the box header {:?}",
            path.display(),
            String::from_utf8_lossy(&header[4..])
        );
    }
    // For n random bytes the entropy estimate falls short of 8 bits by chi2 / (2 n ln 2), with
    // chi2 of 255 degrees of freedom: 255 on average, below 481 (ten standard deviations) with
    // overwhelming probability.
    let floor = 8.0 - 481.0 / (2.0 * sealed.len() as f64 * std::f64::consts::LN_2);
    let entropy = entropy_bits(&sealed);
    assert!(
        entropy > floor,
        "{}: {entropy:.4} bits per byte, random bytes give more than {floor:.4}",
        path.display()
    );
    plain
}

/// The 8-byte headers (size, type) of an MP4's top-level boxes.
fn box_headers(mp4: &[u8]) -> Vec<[u8; 8]> {
    let mut headers = Vec::new();
    let mut at = 0;
    while let Some(header) = mp4.get(at..at + 8) {
        let size = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        headers.push(header.try_into().expect("8 bytes"));
        if size < 8 {
            break;
        }
        at += size;
    }
    headers
}

/// Shannon entropy of `bytes`, in bits per byte.
fn entropy_bits(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Serves `out` as a recorder with `keys` would; returns the URL of the recording's file.
async fn serve(out: PathBuf, keys: Option<Keyring>) -> String {
    let recorder = Recorder::new(RecorderConfig {
        out,
        secret: b"test secret".to_vec(),
        open: true,
        public_url: None,
        encryption: keys,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("address");
    let router = kaskade_recorder::api::router(Arc::new(recorder));
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/r/{MEETING}/{RECORDING}/1.mp4")
}

async fn get(url: &str, range: Option<&str>) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(range) = range {
        request = request.header(RANGE, range);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let content_range = response
        .headers()
        .get(CONTENT_RANGE)
        .map(|v| v.to_str().expect("ascii").to_string());
    (
        status,
        content_range,
        response.bytes().await.expect("body").to_vec(),
    )
}

#[tokio::test]
async fn encrypted_recordings_are_unreadable_on_disk_and_play_through_the_server() {
    let recorded = record(&Scenario::continuous(12.0));
    let (out, plain, expected) = encrypted_recording("at-rest-served", &recorded);
    let dir = out.join(MEETING).join(RECORDING);
    assert_eq!(
        assert_encrypted_at_rest(&dir.join("1.mp4.part")),
        recorded.bytes
    );
    assert_eq!(assert_encrypted_at_rest(&dir.join("1.mp4")), plain);

    let url = serve(out, Some(keys())).await;
    let len = plain.len();
    let chunk = 64 << 10;
    assert!(
        len > 2 * chunk + 5,
        "a recording of several chunks, not {len} bytes"
    );
    let ranges = [
        (0, 99),
        (chunk - 10, chunk + 10),
        (1000, 2 * chunk + 5),
        (len - 1, len - 1),
        (len / 2, len - 1),
    ];
    for (start, end) in ranges {
        let (status, content_range, body) = get(&url, Some(&format!("bytes={start}-{end}"))).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(content_range, Some(format!("bytes {start}-{end}/{len}")));
        assert_eq!(body, &plain[start..=end], "bytes {start}-{end}");
    }
    let (status, _, tail) = get(&url, Some("bytes=-500")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail, &plain[len - 500..]);

    let (status, _, whole) = get(&url, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whole, plain);
    let served = scratch("at-rest-served.mp4");
    std::fs::write(&served, &whole).expect("write");
    let (streams, duration) = probe(&served);
    assert_eq!(streams.len(), 2);
    assert_close("served duration", duration, expected);
    assert_decodes_cleanly(&served);
}

#[tokio::test]
async fn without_the_key_or_with_a_damaged_chunk_reading_fails() {
    let recorded = record(&Scenario::continuous(8.0));
    let (out, plain, _) = encrypted_recording("at-rest-refused", &recorded);
    let dir = out.join(MEETING).join(RECORDING);

    let url = serve(out.clone(), None).await;
    let (status, _, body) = get(&url, Some("bytes=0-99")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(String::from_utf8_lossy(&body).contains("no recording key"));
    let elsewhere = scratch("at-rest-refused-again.mp4");
    assert!(matches!(
        finalize(&dir.join("1.mp4.part"), &elsewhere),
        Err(FinalizeError::AtRest(AtRestError::KeyRequired))
    ));
    let other = Keyring::parse(&"07".repeat(32)).expect("a key");
    assert!(matches!(
        recover_with(&dir.join("1.mp4.part"), &elsewhere, Some(&other)),
        Err(FinalizeError::AtRest(AtRestError::UnknownKey(_)))
    ));

    // a flipped byte in the first chunk: ranges over it fail, the others still play
    let mp4 = dir.join("1.mp4");
    let mut bytes = std::fs::read(&mp4).expect("read");
    bytes[40 + 4 + 1000] ^= 1;
    std::fs::write(&mp4, &bytes).expect("write");
    let url = serve(out, Some(keys())).await;
    let (status, _, body) = get(&url, Some("bytes=900-1100")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(String::from_utf8_lossy(&body).contains("fails authentication"));
    let (status, _, body) = get(&url, Some("bytes=70000-70100")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &plain[70000..=70100]);
}

#[test]
fn an_encrypted_file_cut_by_a_crash_recovers_to_its_last_synced_fragment() {
    let recorded = record(&Scenario::continuous(5.0));
    let part = scratch("at-rest-crash.fmp4");
    let ends = write_encrypted(&recorded, &part);
    let whole = std::fs::read(&part).expect("read");
    let keys = keys();
    let output = scratch("at-rest-crash.mp4");
    let mut mp4 = Vec::new();
    for (n, pair) in ends.windows(2).enumerate() {
        // the crash tears the next fragment: anything between two syncs
        for cut in [pair[0], (pair[0] + pair[1]) / 2, pair[1] - 1] {
            std::fs::write(&part, &whole[..cut as usize]).expect("write cut file");
            let report = recover_with(&part, &output, Some(&keys)).expect("recover");
            let kept = recorded.fragments[n];
            assert_eq!(report.kept_bytes, kept.file_size, "cut at {cut}");
            assert_close(
                "recovered duration",
                report.summary.duration.as_secs_f64(),
                kept.media_end.as_secs_f64(),
            );
            mp4 = assert_encrypted_at_rest(&output);
        }
    }
    let decrypted = scratch("at-rest-crash.decrypted.mp4");
    std::fs::write(&decrypted, &mp4).expect("write");
    let (streams, _) = probe(&decrypted);
    assert_eq!(streams.len(), 2);
    assert_decodes_cleanly(&decrypted);
}
