//! Real media for the recorder tests: openh264 video and Opus audio, packetized into RTP
//! here (STAP-A for parameter sets, FU-A for large NAL units), sent through a simulated
//! network (delay, reordering, loss) into a `ParticipantRecorder`, and checked with the real
//! `ffprobe` and `ffmpeg`.
// Each test crate compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kaskade_recorder::fmp4::Fragment;
use kaskade_recorder::participant::{MediaKind, ParticipantRecorder};
use kaskade_recorder::timeline::RtpPacket;
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::YUVBuffer;

pub const FPS: u32 = 15;
pub const WIDTH: usize = 320;
pub const HEIGHT: usize = 240;
/// RTP payload budget per packet; larger NAL units are split into FU-A fragments.
const MTU: usize = 1000;
/// One-way network delay of every packet.
const DELAY: Duration = Duration::from_millis(50);

/// One encoded video frame: its NAL units (no start codes).
pub struct VideoFrame {
    pub nals: Vec<Vec<u8>>,
}

/// `count` frames of a moving test pattern, 320x240, an IDR every 2 s.
pub fn encode_video(count: usize) -> Vec<VideoFrame> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(300_000))
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Bitrate)
        .profile(Profile::Baseline)
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(2 * FPS));
    let mut encoder =
        Encoder::with_api_config(OpenH264API::from_source(), config).expect("openh264 encoder");
    (0..count)
        .map(|index| {
            let yuv = YUVBuffer::from_vec(pattern(index), WIDTH, HEIGHT);
            let annexb = encoder.encode(&yuv).expect("encode").to_vec();
            VideoFrame {
                nals: split_annexb(&annexb)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
            }
        })
        .collect()
}

fn pattern(index: usize) -> Vec<u8> {
    let mut yuv = vec![128u8; WIDTH * HEIGHT * 3 / 2];
    for (y, row) in yuv[..WIDTH * HEIGHT].chunks_exact_mut(WIDTH).enumerate() {
        for (x, px) in row.iter_mut().enumerate() {
            *px = ((x + y * 2 + index * 5) % 200 + 20) as u8;
        }
    }
    yuv
}

/// The NAL units of an Annex B stream, without their start codes.
pub fn split_annexb(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
            while end > start && data[end - 1] == 0 {
                end -= 1;
            }
            &data[start..end]
        })
        .filter(|nal| !nal.is_empty())
        .collect()
}

/// `count` 20 ms Opus packets of a 440 Hz tone, 48 kHz mono.
pub fn encode_audio(count: usize) -> Vec<Vec<u8>> {
    let mut encoder =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("opus");
    (0..count)
        .map(|frame| {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (frame * 960 + i) as f32 / 48_000.0;
                    ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let mut out = vec![0u8; 1500];
            let len = encoder.encode(&pcm, &mut out).expect("opus encode");
            out.truncate(len);
            out
        })
        .collect()
}

/// RTP payloads of one frame (RFC 6184 mode 1) with their marker bits.
pub fn packetize_h264(frame: &VideoFrame) -> Vec<(Vec<u8>, bool)> {
    let mut payloads = Vec::new();
    let mut small = Vec::new();
    for nal in &frame.nals {
        if matches!(nal[0] & 0x1f, 7 | 8) {
            small.push(nal.clone());
            continue;
        }
        if !small.is_empty() {
            let mut stap = vec![0x78];
            for n in small.drain(..) {
                stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
                stap.extend_from_slice(&n);
            }
            payloads.push(stap);
        }
        if nal.len() <= MTU {
            payloads.push(nal.clone());
            continue;
        }
        let chunks: Vec<&[u8]> = nal[1..].chunks(MTU).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut header = nal[0] & 0x1f;
            if i == 0 {
                header |= 0x80;
            }
            if i + 1 == chunks.len() {
                header |= 0x40;
            }
            let mut fu = vec![(nal[0] & 0xe0) | 28, header];
            fu.extend_from_slice(chunk);
            payloads.push(fu);
        }
    }
    let last = payloads.len().saturating_sub(1);
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i == last))
        .collect()
}

/// What one participant sends and how the network treats it.
pub struct Scenario {
    /// (clip frame, send time in seconds) of every video frame sent.
    pub video: Vec<(usize, f64)>,
    /// (clip packet, send time in seconds) of every audio packet sent.
    pub audio: Vec<(usize, f64)>,
    pub video_timestamp0: u32,
    pub audio_timestamp0: u32,
    pub video_sequence0: u16,
    pub audio_sequence0: u16,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a packet is delayed by 30 ms (arrives after later ones).
    pub reorder: f64,
    pub seed: u64,
}

impl Scenario {
    /// Continuous audio and video for `seconds`, sent from time 0.
    pub fn continuous(seconds: f64) -> Self {
        let frames = (seconds * f64::from(FPS)).round() as usize;
        let packets = (seconds * 50.0).round() as usize;
        Self {
            video: (0..frames)
                .map(|i| (i, i as f64 / f64::from(FPS)))
                .collect(),
            audio: (0..packets).map(|i| (i, i as f64 * 0.02)).collect(),
            video_timestamp0: 1000,
            audio_timestamp0: 7000,
            video_sequence0: 100,
            audio_sequence0: 30_000,
            loss: 0.0,
            reorder: 0.0,
            seed: 1,
        }
    }
}

/// A recording made from a scenario: the fragmented file and the fragments written.
pub struct Recorded {
    pub bytes: Vec<u8>,
    pub fragments: Vec<Fragment>,
}

struct Arrival {
    at: Duration,
    kind: MediaKind,
    packet: RtpPacket<Vec<u8>>,
}

/// Sends the scenario through the network into a recorder whose origin is the arrival of
/// a packet sent at time 0.
pub fn record(scenario: &Scenario) -> Recorded {
    let max_video = scenario.video.iter().map(|v| v.0 + 1).max().unwrap_or(0);
    let max_audio = scenario.audio.iter().map(|a| a.0 + 1).max().unwrap_or(0);
    let video = encode_video(max_video);
    let audio = encode_audio(max_audio);
    let mut random = Lcg(scenario.seed);
    let mut arrivals = Vec::new();
    let mut network = |at: f64, kind, packet, random: &mut Lcg| {
        if random.chance(scenario.loss) {
            return;
        }
        let extra = if random.chance(scenario.reorder) {
            0.03
        } else {
            0.0
        };
        arrivals.push(Arrival {
            at: Duration::from_secs_f64(at + extra) + DELAY,
            kind,
            packet,
        });
    };
    let mut sequence = scenario.video_sequence0;
    for &(index, at) in &scenario.video {
        let timestamp = scenario
            .video_timestamp0
            .wrapping_add((at * 90_000.0).round() as u32);
        for (n, (payload, marker)) in packetize_h264(&video[index]).into_iter().enumerate() {
            let packet = rtp(0x1111, sequence, timestamp, marker, payload);
            network(at + n as f64 * 1e-4, MediaKind::Video, packet, &mut random);
            sequence = sequence.wrapping_add(1);
        }
    }
    let mut sequence = scenario.audio_sequence0;
    for &(index, at) in &scenario.audio {
        let timestamp = scenario
            .audio_timestamp0
            .wrapping_add((at * 48_000.0).round() as u32);
        let packet = rtp(0x2222, sequence, timestamp, true, audio[index].clone());
        network(at, MediaKind::Audio, packet, &mut random);
        sequence = sequence.wrapping_add(1);
    }
    arrivals.sort_by_key(|a| a.at);
    let base = Instant::now();
    let mut recorder = ParticipantRecorder::new(base + DELAY, Vec::new());
    let mut fragments = Vec::new();
    for arrival in arrivals {
        let now = base + arrival.at;
        while let Some(deadline) = recorder.poll_timeout().filter(|&d| d <= now) {
            fragments.extend(recorder.handle_timeout(deadline).expect("timeout"));
        }
        fragments.extend(
            recorder
                .push(arrival.kind, arrival.packet, now)
                .expect("push"),
        );
    }
    let end = base + Duration::from_secs(3600);
    let bytes = recorder.finish(end).expect("finish");
    Recorded { bytes, fragments }
}

fn rtp(
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
) -> RtpPacket<Vec<u8>> {
    RtpPacket {
        ssrc,
        sequence,
        timestamp,
        marker,
        payload,
    }
}

/// A small deterministic random source.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        (self.next() as f64 / (1u64 << 31) as f64) < probability
    }
}

/// A fresh scratch path for `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recorder-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// One stream as ffprobe sees it.
#[derive(Debug)]
pub struct Stream {
    pub codec: String,
    pub start: f64,
    pub duration: f64,
}

/// ffprobe's streams and format duration of `path`.
pub fn probe(path: &Path) -> (Vec<Stream>, f64) {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,start_time,duration",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(output.status.success(), "ffprobe failed: {output:?}");
    let streams = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            Stream {
                codec: fields[0].to_string(),
                start: fields[1].parse().unwrap_or(f64::NAN),
                duration: fields[2].parse().unwrap_or(f64::NAN),
            }
        })
        .collect();
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let duration = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    (streams, duration)
}

/// Decodes `path` completely with ffmpeg and asserts it reports nothing.
pub fn assert_decodes_cleanly(path: &Path) {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && errors.is_empty(),
        "ffmpeg on {path:?}: {errors}"
    );
}

/// Asserts `actual` is within 0.1 s of `expected`.
pub fn assert_close(what: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= 0.1,
        "{what}: {actual} s, expected {expected} s"
    );
}
