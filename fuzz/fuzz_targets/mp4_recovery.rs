//! Crash recovery and finalization of recordings on arbitrary file contents
//! (`recover::recover`, `finalize::finalize`: `finalize::scan` of the fragmented MP4's boxes,
//! `moov` and `moof` decoding, sample placement, then the progressive file written with sample
//! entries from in-band SPS/PPS): a recording's file holds whatever the network sent, and a
//! crash can cut it anywhere.
//!
//! Input: the file. It is written to a tmpfs directory (the API takes paths) and both
//! functions must return, with an error or a summary. A file that finalizes also recovers,
//! losing nothing.
#![no_main]

use std::path::PathBuf;

use kaskade_fuzz::scratch;

use kaskade_recorder::finalize::finalize;
use kaskade_recorder::recover::recover;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SCRATCH: PathBuf = scratch::dir("mp4");
}

fuzz_target!(|data: &[u8]| {
    let dir = SCRATCH.with(Clone::clone);
    let input = dir.join("in.mp4.part");
    let output = dir.join("out.mp4");
    std::fs::write(&input, data).expect("writing the scratch file");
    let finalized = finalize(&input, &output);
    let recovered = recover(&input, &output);
    if let Ok(summary) = finalized {
        let report = recovered.expect("a file that finalizes recovers");
        assert!(!report.lost_data(), "recovery of a whole file lost data");
        assert_eq!(report.summary.duration, summary.duration);
    }
});
