//! One participant's recording pipeline as the recorder runs it on the RTP it receives
//! (`participant::ParticipantRecorder`): per-track timelines (reordering, sequence and
//! timestamp unwrapping, loss, re-anchoring), the H.264 depacketizer, and the fragmented MP4
//! writer (sample entries built from in-band SPS/PPS, Opus durations, silence for gaps); then
//! what becomes of the file: finalized, and recovered as after a crash.
//!
//! Input: records `op | len | body`. Op bit 0: audio or video; ops 0-1 push a packet `arrival
//! step (u16, ms) | ssrc (u8) | sequence (u16) | timestamp (u32) | marker | payload`, op 2 runs
//! the timers at `arrival step`. At the end the recording is finished and the file written to
//! a tmpfs directory: what the writer produced must finalize (or be empty, or hold no media),
//! and recovery of it, and of it cut at a point taken from the input, must succeed or fail with
//! an error.
#![no_main]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kaskade_fuzz::ops::{Fields, Records};
use kaskade_fuzz::scratch;
use kaskade_recorder::finalize::{FinalizeError, finalize};
use kaskade_recorder::participant::{MediaKind, ParticipantRecorder};
use kaskade_recorder::recover::recover;
use kaskade_recorder::timeline::RtpPacket;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SCRATCH: PathBuf = scratch::dir("participant");
}

fuzz_target!(|data: &[u8]| {
    let origin = Instant::now();
    let mut now = origin;
    let mut recorder = ParticipantRecorder::new(origin, Vec::new());
    let mut cut = 0usize;
    for (op, body) in Records::new(data) {
        let mut f = Fields::new(body);
        now += Duration::from_millis(u64::from(f.u16()));
        if op % 3 == 2 {
            cut = usize::from(f.u16());
            if recorder.handle_timeout(now).is_err() {
                return;
            }
            continue;
        }
        let kind = if op & 1 == 0 {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let packet = RtpPacket {
            ssrc: u32::from(f.u8()),
            sequence: f.u16(),
            timestamp: f.u32(),
            marker: f.bool(),
            payload: f.rest().to_vec(),
        };
        if recorder.push(kind, packet, now).is_err() {
            return;
        }
        if let Some(at) = recorder.poll_timeout() {
            assert!(at >= origin);
        }
    }
    let Ok(file) = recorder.finish(now) else {
        return;
    };
    let dir = SCRATCH.with(Clone::clone);
    let fragmented = dir.join("in.mp4.part");
    let output = dir.join("out.mp4");
    std::fs::write(&fragmented, &file).expect("writing the scratch file");
    match finalize(&fragmented, &output) {
        Ok(_) | Err(FinalizeError::NoMedia | FinalizeError::Empty) => {}
        Err(e) => panic!("the writer's own file does not finalize: {e}"),
    }
    let _ = recover(&fragmented, &output);
    if !file.is_empty() {
        std::fs::write(&fragmented, &file[..cut % file.len()]).expect("writing the scratch file");
        let _ = recover(&fragmented, &output);
    }
});
