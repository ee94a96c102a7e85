//! RTP of real H.264 and Opus through depacketize, timeline, fmp4 and finalize, checked with
//! ffprobe and ffmpeg.

mod common;

use common::{Scenario, Stream, assert_close, assert_decodes_cleanly, probe, record, scratch};
use kaskade_recorder::finalize::{Summary, finalize};

/// Writes the recording, finalizes it, and checks it decodes cleanly and lasts `duration`.
fn finalize_and_check(name: &str, scenario: &Scenario, duration: f64) -> (Summary, Vec<Stream>) {
    let recorded = record(scenario);
    let fragmented = scratch(&format!("{name}.fmp4"));
    let output = scratch(&format!("{name}.mp4"));
    std::fs::write(&fragmented, &recorded.bytes).expect("write fragmented file");
    assert_decodes_cleanly(&fragmented);
    let summary = finalize(&fragmented, &output).expect("finalize");
    assert_decodes_cleanly(&output);
    let (streams, format_duration) = probe(&output);
    let mut codecs: Vec<&str> = streams.iter().map(|s| s.codec.as_str()).collect();
    codecs.sort_unstable();
    assert_eq!(codecs, ["h264", "opus"], "{name}");
    assert_close(
        &format!("{name} format duration"),
        format_duration,
        duration,
    );
    assert_close(
        &format!("{name} summary duration"),
        summary.duration.as_secs_f64(),
        duration,
    );
    let start = [summary.video, summary.audio]
        .into_iter()
        .flatten()
        .map(|t| t.start.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let fragments = recorded.fragments.len() as f64;
    assert!(
        fragments >= duration - start - 1.0,
        "{name}: a fragment at least every second"
    );
    (summary, streams)
}

fn stream<'a>(streams: &'a [Stream], codec: &str) -> &'a Stream {
    streams
        .iter()
        .find(|s| s.codec == codec)
        .expect("stream present")
}

#[test]
fn in_order() {
    let (summary, streams) = finalize_and_check("in_order", &Scenario::continuous(10.0), 10.0);
    for stream in &streams {
        assert_close(&format!("{} start", stream.codec), stream.start, 0.0);
        assert_close(&format!("{} duration", stream.codec), stream.duration, 10.0);
    }
    assert_eq!(summary.video.map(|v| v.samples), Some(150));
    assert_eq!(summary.audio.map(|a| a.samples), Some(500));
}

#[test]
fn reordered_and_lost_packets() {
    let scenario = Scenario {
        loss: 0.01,
        reorder: 0.05,
        seed: 7,
        ..Scenario::continuous(10.0)
    };
    let (summary, _) = finalize_and_check("reordered_and_lost", &scenario, 10.0);
    let video = summary.video.expect("video kept");
    assert!(video.samples < 150 && video.samples > 30, "{video:?}");
}

#[test]
fn timestamp_and_sequence_wrap_around() {
    let scenario = Scenario {
        video_timestamp0: u32::MAX - 200_000,
        audio_timestamp0: u32::MAX - 100_000,
        video_sequence0: u16::MAX - 40,
        audio_sequence0: u16::MAX - 20,
        ..Scenario::continuous(10.0)
    };
    finalize_and_check("wrap_around", &scenario, 10.0);
}

#[test]
fn video_mute_gap_stays_a_gap() {
    let mut scenario = Scenario::continuous(10.0);
    scenario.video.retain(|&(_, at)| !(3.0..8.0).contains(&at));
    let (summary, streams) = finalize_and_check("mute_gap", &scenario, 10.0);
    let video = summary.video.expect("video kept");
    assert_close("video span", video.duration.as_secs_f64(), 10.0);
    assert_eq!(video.samples, 75);
    assert_close(
        "ffprobe video duration",
        stream(&streams, "h264").duration,
        10.0,
    );
}

#[test]
fn late_video() {
    let mut scenario = Scenario::continuous(10.0);
    scenario.video = (0..105).map(|i| (i, 3.0 + i as f64 / 15.0)).collect();
    let (summary, streams) = finalize_and_check("late_video", &scenario, 10.0);
    let video = summary.video.expect("video kept");
    assert_close("video start", video.start.as_secs_f64(), 3.0);
    assert_close("ffprobe video start", stream(&streams, "h264").start, 3.0);
    assert_close("ffprobe audio start", stream(&streams, "opus").start, 0.0);
}

#[test]
fn late_joiner_starts_at_its_offset() {
    let mut scenario = Scenario::continuous(4.0);
    for (_, at) in scenario.video.iter_mut().chain(scenario.audio.iter_mut()) {
        *at += 6.0;
    }
    let (summary, streams) = finalize_and_check("late_joiner", &scenario, 10.0);
    assert_close(
        "audio start",
        summary.audio.expect("audio").start.as_secs_f64(),
        6.0,
    );
    for stream in &streams {
        assert_close(&format!("{} start", stream.codec), stream.start, 6.0);
    }
}
