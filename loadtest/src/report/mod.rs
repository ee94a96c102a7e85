//! The load generator's measurements and its final report: pure bookkeeping over counters the
//! participants collect, free of I/O and of the clock (times come in as offsets from the start
//! of the run), so every figure is unit-tested with fixed numbers.
//!
//! - [`crate::measure`]'s counters (loss, frames, freezes, percentiles) fill it.
//! - [`Latency`]: end-to-end latency percentiles from the stamps receivers read.
//! - [`Report`]: the final report, serialized as JSON and printed as a table.
//!
//! With churn (`--churn-every`) participants come and go during the window: a pair of
//! room-mates that was not together for the whole window is *partial*; its loss and frames
//! count like any pair's, its bytes are not compared (what one sent before the other was there,
//! or after it left, was never meant for it).

use std::time::Duration;

use serde::Serialize;

use crate::churn::ChurnReport;
use crate::measure::{Summary, loss_percent};

/// What one participant received from one room-mate during the measurement window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RemoteReport {
    /// The room-mate's name.
    pub name: String,
    /// The room-mate's payload bytes sent during the window (0 for a partial pair).
    pub bytes_expected: u64,
    /// Payload bytes received from it during the window.
    pub bytes_received: u64,
    /// RTP packets expected from it (sequence numbers, whole run).
    pub packets_expected: u64,
    /// RTP packets lost from it (whole run).
    pub packets_lost: u64,
    /// Complete video frames of it received (whole run).
    pub frames_received: u64,
    /// Video frames of it decoded (whole run; only with decoding on).
    pub frames_decoded: u64,
    /// Decode errors on its video (whole run).
    pub decode_errors: u64,
    /// The size (width, height) of the last picture of it decoded (only with decoding on):
    /// which simulcast layer it sent.
    pub picture: Option<(u32, u32)>,
    /// Milliseconds from the moment both were joined to its first complete frame.
    pub first_frame_ms: Option<f64>,
    /// Freezes of its video.
    pub freezes: u64,
    /// The longest gap between two of its complete frames, in milliseconds.
    pub longest_gap_ms: f64,
    /// The two were not together for the whole window (one joined or left during it): bytes
    /// not compared.
    pub partial: bool,
}

/// One synthetic participant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ParticipantReport {
    /// Its name (`r{room}p{index}`).
    pub name: String,
    /// Its room (0-based).
    pub room: usize,
    /// Whether it joined.
    pub joined: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// How long the join took (join API, signaling, offer/answer), in milliseconds.
    pub join_ms: Option<f64>,
    /// Payload bytes it sent during the window.
    pub bytes_sent: u64,
    /// RTP packets it received during the window.
    pub packets_received: u64,
    /// NACK packets it sent (whole run).
    pub nacks_sent: u64,
    /// PLIs it sent (whole run).
    pub plis_sent: u64,
    /// What it received from each room-mate, by room-mate name.
    pub remotes: std::collections::BTreeMap<String, RemoteReport>,
    /// It joined during the window, replacing a participant that left (churn).
    pub churn_joined: bool,
    /// It left during the window (churn).
    pub churn_left: bool,
}

/// Bytes received against bytes expected, over every receiver and room-mate that were together
/// for the whole window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Delivery {
    /// Payload bytes sent by all participants during the window.
    pub sent: u64,
    /// Sum over receivers of their room-mates' bytes sent.
    pub expected: u64,
    /// Payload bytes received from room-mates.
    pub received: u64,
    /// received / expected (1.0 is perfect; `None` when nothing was expected).
    pub ratio: Option<f64>,
}

/// Packet loss over every received stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Loss {
    /// Packets expected (from sequence numbers).
    pub expected: u64,
    /// Packets lost.
    pub lost: u64,
    /// lost / expected in percent.
    pub percent: f64,
}

/// CPU and memory of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessUsage {
    /// User + system CPU seconds used during the measurement window.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM) in bytes, over the process's life.
    pub peak_rss_bytes: Option<u64>,
    /// Resident set size (VmRSS) in bytes at the end of the window.
    pub rss_bytes: Option<u64>,
}

/// What forwarding cost during the measurement window: the packets every participant
/// received (what the server forwarded, whatever the server) against the CPU time of the
/// server and of the generator, and the server's memory per participant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Forwarding {
    /// RTP packets received by all participants in the window.
    pub packets: u64,
    /// The same per second.
    pub packets_per_second: f64,
    /// Server CPU microseconds per forwarded packet (with `--server-pid`).
    pub server_cpu_us_per_packet: Option<f64>,
    /// Forwarded packets per server CPU-second (with `--server-pid`).
    pub packets_per_server_cpu_second: Option<f64>,
    /// Generator CPU microseconds per received packet (it must stay below the server's).
    pub generator_cpu_us_per_packet: Option<f64>,
    /// Server RSS growth from before the first join to the end of the window, per joined
    /// participant, in bytes (with `--server-pid`).
    pub server_bytes_per_participant: Option<f64>,
}

impl Forwarding {
    /// The figures for `packets` forwarded in `window`, with the processes' usage in it and
    /// the server's RSS before anyone joined.
    pub fn of(
        packets: u64,
        window: Duration,
        server: Option<&ProcessUsage>,
        server_idle_rss: Option<u64>,
        generator: &ProcessUsage,
        participants: usize,
    ) -> Self {
        let per_packet = |cpu: f64| (packets > 0).then(|| cpu * 1e6 / packets as f64);
        let seconds = window.as_secs_f64();
        Self {
            packets,
            packets_per_second: if seconds > 0.0 {
                packets as f64 / seconds
            } else {
                0.0
            },
            server_cpu_us_per_packet: server.and_then(|s| per_packet(s.cpu_seconds)),
            packets_per_server_cpu_second: server
                .filter(|s| s.cpu_seconds > 0.0)
                .map(|s| packets as f64 / s.cpu_seconds),
            generator_cpu_us_per_packet: per_packet(generator.cpu_seconds),
            server_bytes_per_participant: server
                .and_then(|s| s.rss_bytes)
                .zip(server_idle_rss)
                .filter(|_| participants > 0)
                .map(|(end, idle)| end.saturating_sub(idle) as f64 / participants as f64),
        }
    }
}

/// End-to-end latency of video frames: from the publisher's send instant (stamped in the
/// media, see `kaskade_client::latency`) to the receiver's read, over every stamp received
/// in the measurement window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Whether any stamp arrived.
    pub measured: bool,
    /// Stamps received.
    pub samples: usize,
    /// p50 in milliseconds.
    pub p50_ms: Option<f64>,
    /// p99 in milliseconds.
    pub p99_ms: Option<f64>,
    /// The largest, in milliseconds.
    pub max_ms: Option<f64>,
}

impl Latency {
    /// Percentiles of `samples_ms`.
    pub fn of(samples_ms: &[f64]) -> Self {
        let summary = Summary::of(samples_ms);
        Self {
            measured: !samples_ms.is_empty(),
            samples: samples_ms.len(),
            p50_ms: summary.p50,
            p99_ms: summary.p99,
            max_ms: summary.max,
        }
    }
}

/// The run's parameters, echoed in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunParams {
    /// Rooms.
    pub rooms: usize,
    /// Participants per room.
    pub participants_per_room: usize,
    /// Video bitrate, kbit/s.
    pub video_bitrate_kbps: u32,
    /// Video width.
    pub width: u32,
    /// Video height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Measurement window, seconds.
    pub duration_s: f64,
    /// Joins per second.
    pub ramp: f64,
    /// The join API's base URL.
    pub target: String,
}

/// The final report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The run's parameters.
    pub params: RunParams,
    /// Participants that should have joined.
    pub participants_total: usize,
    /// Participants that joined.
    pub participants_joined: usize,
    /// Join times, milliseconds.
    pub join_ms: Summary,
    /// First-frame times (per receiver and room-mate), milliseconds.
    pub first_frame_ms: Summary,
    /// Receiver/room-mate pairs without a single decoded frame.
    pub missing_first_frames: usize,
    /// End-to-end latency.
    pub latency: Latency,
    /// Packet loss.
    pub loss: Loss,
    /// NACK packets sent by receivers.
    pub nacks_sent: u64,
    /// PLIs sent by receivers.
    pub plis_sent: u64,
    /// Freezes (gaps over 500 ms between complete frames of a sending room-mate).
    pub freezes: u64,
    /// Complete video frames received.
    pub frames_received: u64,
    /// Video frames decoded (with decoding on).
    pub frames_decoded: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Bytes received against bytes expected during the measurement window.
    pub bytes: Delivery,
    /// Seconds of the measurement window.
    pub window_s: f64,
    /// The server during the window (with `--server-pid`).
    pub server: Option<ProcessUsage>,
    /// The load generator itself during the window.
    pub generator: ProcessUsage,
    /// Forwarding cost during the window.
    pub forwarding: Forwarding,
    /// Churn during the window (with `--churn-every`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    /// Every participant.
    pub participants: Vec<ParticipantReport>,
}

impl Report {
    /// Fills in the totals from `participants` (and the parameters given).
    pub fn new(
        params: RunParams,
        participants: Vec<ParticipantReport>,
        latency_ms: &[f64],
        window: Duration,
        server: Option<ProcessUsage>,
        server_idle_rss: Option<u64>,
        generator: ProcessUsage,
    ) -> Self {
        let joined: Vec<&ParticipantReport> = participants.iter().filter(|p| p.joined).collect();
        let join_times: Vec<f64> = joined.iter().filter_map(|p| p.join_ms).collect();
        let remotes = || joined.iter().flat_map(|p| p.remotes.values());
        let first_frames: Vec<f64> = remotes().filter_map(|r| r.first_frame_ms).collect();
        let expected: u64 = remotes().map(|r| r.packets_expected).sum();
        let lost: u64 = remotes().map(|r| r.packets_lost).sum();
        let whole = || remotes().filter(|r| !r.partial);
        let bytes_expected: u64 = whole().map(|r| r.bytes_expected).sum();
        let bytes_received: u64 = whole().map(|r| r.bytes_received).sum();
        let present_at_end = joined.iter().filter(|p| !p.churn_left).count();
        Self {
            params,
            participants_total: participants.len(),
            participants_joined: joined.len(),
            join_ms: Summary::of(&join_times),
            first_frame_ms: Summary::of(&first_frames),
            missing_first_frames: remotes().filter(|r| r.first_frame_ms.is_none()).count(),
            latency: Latency::of(latency_ms),
            loss: Loss {
                expected,
                lost,
                percent: loss_percent(expected, lost),
            },
            nacks_sent: joined.iter().map(|p| p.nacks_sent).sum(),
            plis_sent: joined.iter().map(|p| p.plis_sent).sum(),
            freezes: remotes().map(|r| r.freezes).sum(),
            frames_received: remotes().map(|r| r.frames_received).sum(),
            frames_decoded: remotes().map(|r| r.frames_decoded).sum(),
            decode_errors: remotes().map(|r| r.decode_errors).sum(),
            bytes: Delivery {
                sent: joined.iter().map(|p| p.bytes_sent).sum(),
                expected: bytes_expected,
                received: bytes_received,
                ratio: (bytes_expected > 0).then(|| bytes_received as f64 / bytes_expected as f64),
            },
            window_s: window.as_secs_f64(),
            forwarding: Forwarding::of(
                joined.iter().map(|p| p.packets_received).sum(),
                window,
                server.as_ref(),
                server_idle_rss,
                &generator,
                present_at_end,
            ),
            server,
            generator,
            churn: None,
            participants,
        }
    }
}

/// CPU seconds (utime + stime) from the text of `/proc/PID/stat` (USER_HZ = 100).
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Peak RSS (`VmHWM`) in bytes from the text of `/proc/PID/status`.
pub fn parse_peak_rss(status: &str) -> Option<u64> {
    status_bytes(status, "VmHWM:")
}

/// Current RSS (`VmRSS`) in bytes from the text of `/proc/PID/status`.
pub fn parse_rss(status: &str) -> Option<u64> {
    status_bytes(status, "VmRSS:")
}

fn status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

mod table;
#[cfg(test)]
mod tests;
