//! Audio/video sync of a recording, measured on content whose instants are known.
//!
//! Three synthetic participants publish sync marks
//! ([`JoinConfig::sync_marks`](kaskade_client::JoinConfig::sync_marks)): dark video with one
//! white frame every 2 s and silence with a 100 ms, 1 kHz beep that starts at the same instant.
//! The meeting is recorded through the all-in-one default, one participant joining 2 s into
//! the recording. Then, with the real ffmpeg, every flash (a frame whose mean luma
//! stands far above the file's median) is paired with the nearest beep onset (where the RMS
//! over 5 ms windows jumps after quiet, refined to the sample), and every pair must be less
//! than 40 ms apart:
//!
//! - in each participant's file, every flash (at least two per file);
//! - in the composed file, where the mix holds everyone's beeps and a flash lights one tile,
//!   the first flash of every cluster (flashes less than [`CLUSTER`] apart, whose beeps
//!   overlap so that only the first has an onset after quiet) is paired with the nearest
//!   onset of the mix. The composed video is rendered at 15 fps, each frame showing every
//!   participant's nearest picture, so a flash there is up to half a frame (33 ms) off its
//!   true time: that is the bulk of the offsets measured in the composed file.
//!
//! The marks must also land where the wall clock says: a participant's marks are at 1 s, 3 s,
//! 5 s, ... after its connection came up, so a late joiner's first mark is late too (not
//! shifted to the start of the file).

mod common;

use common::{Recordings, WAIT, all_in_one, media_config};
use kaskade_client::Participant;
use kaskade_e2e::{Node, Scratch};
use kaskade_protocol::recording::RecordingInfo;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
/// The largest A/V offset allowed, in milliseconds.
const MAX_OFFSET_MS: f64 = 40.0;
/// Flashes closer than this are one cluster in the composed file, in seconds.
const CLUSTER: f64 = 0.15;
/// Mono 48 kHz PCM.
const RATE: f64 = 48_000.0;
/// The RMS window of beep detection: 5 ms.
const WINDOW: usize = 240;
/// Quiet needed before an onset: 30 ms of windows.
const QUIET_WINDOWS: usize = 6;
/// RMS above which a window is loud (the beep is about 11 000; Opus silence about 0).
const LOUD_RMS: f64 = 1500.0;
/// The mark period: the default clip length of 2 s.
const MARK_PERIOD: f64 = 2.0;
/// Where a mark falls in the loop: second 1 of 2.
const MARK_PHASE: f64 = 1.0;

/// Joins with sync marks (`JoinConfig::sync_marks`) and waits until the media flows.
async fn join(server: &Node, meeting: &str, name: &str) -> Participant {
    let mut cfg = media_config(server, meeting, name);
    cfg.sync_marks = true;
    let participant = Participant::join(cfg)
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"));
    participant
        .wait_connected(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"));
    participant
}

/// Runs ffmpeg on `file` with `args` after the input; its stdout. Timestamps stay those of
/// the file (`-copyts`: ffmpeg would otherwise shift them so that the file starts at 0, and a
/// late joiner's file does not).
fn ffmpeg(file: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-copyts", "-i"])
        .arg(file)
        .args(args)
        .output()
        .expect("ffmpeg is installed");
    assert!(
        output.status.success(),
        "ffmpeg {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Every video frame's presentation time and mean luma.
fn luma(file: &Path) -> Vec<(f64, f64)> {
    let out = ffmpeg(
        file,
        &[
            "-map",
            "0:v:0",
            "-vf",
            "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-",
            "-f",
            "null",
            "-",
        ],
    );
    let mut frames = Vec::new();
    let mut time = None;
    for line in String::from_utf8_lossy(&out).lines() {
        if let Some(t) = line.split("pts_time:").nth(1) {
            time = t.split_whitespace().next().and_then(|t| t.parse().ok());
        } else if let (Some(t), Some(y)) = (time.take(), line.split("YAVG=").nth(1)) {
            frames.push((t, y.trim().parse().expect("a YAVG value")));
        }
    }
    frames
}

/// The times of the flashes: the first frame of each run of frames whose mean luma is more
/// than `rise` above the file's median (runs closer than `merge` seconds are one flash).
fn flashes(frames: &[(f64, f64)], rise: f64, merge: f64) -> Vec<f64> {
    let mut lumas: Vec<f64> = frames.iter().map(|(_, y)| *y).collect();
    lumas.sort_by(f64::total_cmp);
    let median = lumas.get(lumas.len() / 2).copied().unwrap_or(0.0);
    let mut found: Vec<f64> = Vec::new();
    let mut last_bright = f64::NEG_INFINITY;
    for &(t, y) in frames {
        if y > median + rise {
            if t - last_bright >= merge {
                found.push(t);
            }
            last_bright = t;
        }
    }
    found
}

/// The audio decoded to mono 48 kHz with sample 0 at time 0 (a late start and any gap are
/// filled with silence).
fn pcm(file: &Path) -> Vec<i16> {
    let out = ffmpeg(
        file,
        &[
            "-map",
            "0:a:0",
            "-af",
            "aresample=async=1:first_pts=0",
            "-f",
            "s16le",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-",
        ],
    );
    out.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The times where a beep starts: a loud 5 ms window after [`QUIET_WINDOWS`] quiet ones,
/// refined to its first sample above [`LOUD_RMS`] (from the window before, for a beep that
/// starts late in a window).
fn beep_onsets(pcm: &[i16]) -> Vec<f64> {
    let loud: Vec<bool> = pcm
        .chunks(WINDOW)
        .map(|w| {
            let energy: f64 = w.iter().map(|s| f64::from(*s).powi(2)).sum();
            (energy / w.len() as f64).sqrt() > LOUD_RMS
        })
        .collect();
    (QUIET_WINDOWS..loud.len())
        .filter(|&i| loud[i] && loud[i - QUIET_WINDOWS..i].iter().all(|l| !l))
        .map(|i| {
            let from = (i - 1) * WINDOW;
            let first = pcm[from..]
                .iter()
                .position(|s| f64::from(s.unsigned_abs()) > LOUD_RMS)
                .map_or(i * WINDOW, |at| from + at);
            first as f64 / RATE
        })
        .collect()
}

/// For each flash, the nearest beep onset minus the flash time, in milliseconds.
fn offsets_ms(flashes: &[f64], beeps: &[f64]) -> Vec<f64> {
    flashes
        .iter()
        .filter_map(|&f| {
            beeps
                .iter()
                .map(|&b| (b - f) * 1000.0)
                .min_by(|a, b| a.abs().total_cmp(&b.abs()))
        })
        .collect()
}

/// Measures and prints the offsets of `file`; asserts at least `min_pairs` pairs, each within
/// [`MAX_OFFSET_MS`]. Returns the flash times.
fn check_sync(file: &Path, rise: f64, merge: f64, min_pairs: usize) -> Vec<f64> {
    let flashes = flashes(&luma(file), rise, merge);
    let beeps = beep_onsets(&pcm(file));
    let offsets = offsets_ms(&flashes, &beeps);
    let name = file.file_name().unwrap().to_string_lossy();
    let rounded: Vec<String> = offsets.iter().map(|o| format!("{o:.1}")).collect();
    println!(
        "AV_OFFSET file={name} offsets_ms=[{}] flashes_s={flashes:.3?} beeps_s={beeps:.3?}",
        rounded.join(", ")
    );
    assert!(
        offsets.len() >= min_pairs,
        "{name}: {} flash/beep pairs, flashes {flashes:?}, beeps {beeps:?}",
        offsets.len()
    );
    for offset in &offsets {
        assert!(
            offset.abs() < MAX_OFFSET_MS,
            "{name}: audio is {offset:.1} ms off the video (flashes {flashes:?}, beeps {beeps:?})"
        );
    }
    flashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_audio_and_video_stay_within_40_ms() {
    let scratch = Scratch::new("recording-sync");
    let server = all_in_one(&scratch, &scratch.path("recordings"));

    let chair = join(&server, "sync", "chair").await;
    let guest = join(&server, "sync", "guest").await;
    let api = Recordings::new(&server, "sync", &chair.welcome().token);

    let post_sent = Instant::now();
    let started = api.start().await;
    let post_answered = Instant::now();
    assert_eq!(started.status(), 201, "{:?}", started.text().await);
    let started: RecordingInfo = started.json().await.unwrap();
    for p in [&chair, &guest] {
        p.wait_until(WAIT, |s| s.recording)
            .await
            .expect("everyone sees the recording indicator");
    }
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(post_answered.elapsed())).await;
    let late = join(&server, "sync", "late").await;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(post_answered.elapsed())).await;
    assert_eq!(api.stop(&started.id).await.status(), 200);

    let done = api.wait_done(&started.id, Duration::from_secs(60)).await;
    assert_eq!(done.participants.len(), 3, "{done:?}");
    let dir = PathBuf::from(scratch.path("recordings"))
        .join("sync")
        .join(&done.id);

    // The recording's origin is between the start request and its answer: an instant is at
    // most `uncertainty` later on the recording's clock than its time since the answer.
    let since_answer = |at: Instant| match at.checked_duration_since(post_answered) {
        Some(after) => after.as_secs_f64(),
        None => -post_answered.duration_since(at).as_secs_f64(),
    };
    let uncertainty = post_answered.duration_since(post_sent).as_secs_f64();
    for p in &done.participants {
        let file = dir.join(format!("{}.mp4", p.id));
        let flashes = check_sync(&file, 50.0, 0.0, 2);
        // Every mark where the wall clock puts it: 1 s + 2k s after the connection came up.
        let who = match p.name.as_str() {
            "chair" => &chair,
            "guest" => &guest,
            "late" => &late,
            other => panic!("an unexpected participant {other}"),
        };
        let connected = who.state().connected_at.expect("connected");
        let first_mark = since_answer(connected) + MARK_PHASE;
        for flash in &flashes {
            let periods = ((flash - first_mark) / MARK_PERIOD).round();
            let expected = first_mark + periods * MARK_PERIOD;
            println!(
                "MARK file={} flash={flash:.3}s expected={expected:.3}s (+{:.3}s)",
                p.name, uncertainty
            );
            assert!(periods >= 0.0, "{}: a mark before it connected", p.name);
            assert!(
                flash - expected > -0.1 && flash - expected < uncertainty + 0.1,
                "{}: a flash at {flash:.3} s, expected at {expected:.3} s",
                p.name
            );
        }
        if p.name == "late" {
            assert!(
                since_answer(connected) > 1.5 && flashes[0] > since_answer(connected),
                "the late joiner's marks start after its join at {:.3} s: {flashes:?}",
                since_answer(connected)
            );
        }
    }

    assert!(done.composed.is_some(), "a composed video: {done:?}");
    check_sync(&dir.join("composed.mp4"), 20.0, CLUSTER, 2);
}
