//! Recorded files as ffprobe and ffmpeg see them: streams, codecs, start and end, video
//! packets and gaps, and decode errors.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// ffprobe's JSON view of a file's streams and format.
pub struct Probe(Value);

/// Probes `file` (panics when ffprobe cannot read it).
pub fn probe(file: &Path) -> Probe {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(file)
        .output()
        .expect("ffprobe is installed");
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Probe(serde_json::from_slice(&output.stdout).expect("ffprobe JSON"))
}

/// Probes a recorded participant's file and checks that it holds H.264 video and Opus audio.
pub fn probe_h264_and_opus(file: &Path) -> Probe {
    let probe = probe(file);
    let codecs = probe.codecs();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"opus"),
        "{}: {codecs:?}",
        file.display()
    );
    probe
}

impl Probe {
    /// Its streams.
    pub fn streams(&self) -> impl Iterator<Item = &Value> {
        self.0["streams"].as_array().expect("streams").iter()
    }

    /// The codec of each stream.
    pub fn codecs(&self) -> Vec<&str> {
        self.streams()
            .filter_map(|s| s["codec_name"].as_str())
            .collect()
    }

    /// Where the earliest stream starts, in seconds.
    pub fn start(&self) -> f64 {
        self.streams()
            .filter_map(|s| seconds(&s["start_time"]))
            .fold(f64::MAX, f64::min)
    }

    /// Where the file ends, in seconds.
    pub fn end(&self) -> f64 {
        seconds(&self.0["format"]["duration"]).expect("a duration")
    }
}

fn seconds(v: &Value) -> Option<f64> {
    v.as_str().and_then(|t| t.parse().ok())
}

/// The longest time between two consecutive video frames of a file, in seconds.
pub fn largest_video_gap(file: &Path) -> f64 {
    let mut times: Vec<f64> = video_packets(file).iter().map(|p| p.0).collect();
    times.sort_by(f64::total_cmp);
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// Each video packet of `file` as (presentation time, size), in file order.
pub fn video_packets(file: &Path) -> Vec<(f64, u64)> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time,size",
        ])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe is installed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let (pts, size) = l.trim().trim_end_matches(',').split_once(',')?;
            Some((pts.parse().ok()?, size.parse().ok()?))
        })
        .collect()
}

/// `ffmpeg -v error -i FILE -f null -` prints nothing for a clean file.
pub fn decode_errors(file: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
