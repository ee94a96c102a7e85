//! A fragmented recording cut at arbitrary byte offsets (as by kill -9) is recovered into a
//! valid file holding everything up to the last complete fragment; damaged or empty files
//! give errors, never panics.

mod common;

use common::{Lcg, Scenario, assert_close, assert_decodes_cleanly, probe, record, scratch};
use kaskade_recorder::finalize::{FinalizeError, finalize};
use kaskade_recorder::recover::recover;

#[test]
fn truncated_files_recover_to_their_last_complete_fragment() {
    let recorded = record(&Scenario::continuous(6.0));
    let fragmented = scratch("truncated.fmp4");
    let output = scratch("truncated.mp4");
    let first_fragment_end = recorded.fragments[0].file_size as usize;
    let mut random = Lcg(42);
    let mut cuts: Vec<usize> = (0..10)
        .map(|_| {
            first_fragment_end
                + random.next() as usize % (recorded.bytes.len() - first_fragment_end)
        })
        .collect();
    cuts.extend(
        recorded
            .fragments
            .iter()
            .map(|f| f.file_size as usize)
            .take(3),
    );
    for (n, cut) in cuts.into_iter().enumerate() {
        std::fs::write(&fragmented, &recorded.bytes[..cut]).expect("write cut file");
        let kept = recorded
            .fragments
            .iter()
            .rev()
            .find(|f| f.file_size as usize <= cut)
            .expect("the first fragment is complete");
        if kept.file_size as usize != cut {
            assert!(matches!(
                finalize(&fragmented, &output),
                Err(FinalizeError::Incomplete { .. })
            ));
        }
        let report = recover(&fragmented, &output).expect("recover");
        assert_eq!(report.kept_bytes, kept.file_size);
        assert_eq!(report.lost_data(), kept.file_size as usize != cut);
        let expected = kept.media_end.as_secs_f64();
        assert_close(
            "recovered duration",
            report.summary.duration.as_secs_f64(),
            expected,
        );
        if n % 4 == 0 {
            assert_decodes_cleanly(&output);
            let (streams, duration) = probe(&output);
            assert_eq!(streams.len(), 2);
            assert_close("ffprobe duration", duration, expected);
        }
    }
}

#[test]
fn a_crash_loses_at_most_two_seconds() {
    let recorded = record(&Scenario::continuous(6.0));
    for pair in recorded.fragments.windows(2) {
        let lost = pair[1].media_end.saturating_sub(pair[0].media_end);
        assert!(lost.as_secs_f64() <= 2.0, "{lost:?} between fragments");
    }
}

#[test]
fn damaged_and_empty_files_are_errors() {
    let recorded = record(&Scenario::continuous(2.0));
    let path = scratch("damaged.fmp4");
    let output = scratch("damaged.mp4");
    let init_end = 40;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "not mp4",
            b"hello, this is not a video file at all".to_vec(),
        ),
        ("cut inside the header", recorded.bytes[..init_end].to_vec()),
        (
            "no fragment",
            recorded.bytes[..first_moof(&recorded.bytes)].to_vec(),
        ),
        ("zeroed header", {
            let mut bytes = recorded.bytes.clone();
            bytes[..64].fill(0);
            bytes
        }),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).expect("write");
        let error = recover(&path, &output).expect_err(what);
        assert!(!error.to_string().is_empty(), "{what}");
    }
    let mut random = Lcg(9);
    for _ in 0..200 {
        let mut bytes = recorded.bytes.clone();
        for _ in 0..8 {
            let at = random.next() as usize % bytes.len();
            bytes[at] = random.next() as u8;
        }
        std::fs::write(&path, &bytes).expect("write");
        let _ = recover(&path, &output);
    }
}

#[test]
fn a_fragment_time_at_the_end_of_the_range_is_no_panic() {
    // found by the mp4_recovery fuzz target: the end of a track whose last sample's decode
    // time is near u64::MAX overflowed when the next fragment was read
    let recorded = record(&Scenario::continuous(6.0));
    assert!(recorded.fragments.len() >= 2, "two fragments or more");
    let tfdt = recorded
        .bytes
        .windows(4)
        .position(|w| w == b"tfdt")
        .expect("a tfdt box");
    assert_eq!(recorded.bytes[tfdt + 4], 1, "version 1: a 64-bit time");
    let mut bytes = recorded.bytes.clone();
    bytes[tfdt + 8..tfdt + 16].copy_from_slice(&(u64::MAX - 5).to_be_bytes());
    let path = scratch("time-at-the-end.fmp4");
    let output = scratch("time-at-the-end.mp4");
    std::fs::write(&path, &bytes).expect("write");
    let finalized = finalize(&path, &output).map(|s| s.duration);
    let recovered = recover(&path, &output).map(|r| r.summary.duration);
    if let Ok(duration) = finalized {
        assert_eq!(
            recovered.ok(),
            Some(duration),
            "what finalizes also recovers"
        );
    }
}

fn first_moof(bytes: &[u8]) -> usize {
    bytes.windows(4).position(|w| w == b"moof").expect("a moof") - 4
}

/// Found by fuzz/fuzz_targets/mp4_recovery.rs: a fragment whose `trun` claims billions of
/// samples of no bytes each kept recovery busy for minutes; it is now refused before it is
/// decoded, and recovery keeps what came before it.
#[test]
fn a_fragment_claiming_billions_of_samples_is_cut_off_at_once() {
    let damaged = scratch("trun-of-billions.fmp4");
    let output = scratch("trun-of-billions.mp4");
    std::fs::write(&damaged, include_bytes!("data/trun-of-billions.fmp4")).unwrap();
    let recovered = recover(&damaged, &output);
    assert!(
        finalize(&damaged, &output).is_err(),
        "a damaged file does not finalize"
    );
    if let Ok(report) = recovered {
        assert!(report.lost_data(), "the damaged fragment is not kept");
    }
}
