//! The composed meeting video from real per-participant files: each participant's frames are
//! one flat colour and their audio a tone burst at a known instant, so the composed grid and
//! mix can be checked pixel by pixel and window by window after decoding with the real
//! `ffmpeg`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_decodes_cleanly, probe, scratch, split_annexb};
use kaskade_picture::layout::{Tile, grid};
use kaskade_recorder::compose::{ComposeConfig, ComposeError, ComposeInput, compose};
use kaskade_recorder::finalize::finalize;
use kaskade_recorder::fmp4::Fmp4Writer;
use openh264::OpenH264API;
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, FrameType};
use openh264::formats::YUVBuffer;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const FPS: u32 = 15;

/// BT.601 limited-range YUV of pure red, green and blue.
const RED: (u8, u8, u8) = (81, 90, 240);
const GREEN: (u8, u8, u8) = (145, 54, 34);
const BLUE: (u8, u8, u8) = (41, 240, 110);

/// One synthetic participant: a flat colour from `start` for `seconds`, and a loud 440 Hz
/// tone during `[tone.0, tone.1)` seconds of their own media (silence otherwise).
struct Participant {
    name: &'static str,
    colour: (u8, u8, u8),
    start: f64,
    seconds: f64,
    tone: (f64, f64),
}

/// Writes the participant's fragmented MP4 through the recorder's writer and finalizes it,
/// as a recording does; returns the finalized file.
fn record(participant: &Participant) -> PathBuf {
    let config = EncoderConfig::new().max_frame_rate(FrameRate::from_hz(FPS as f32));
    let mut encoder =
        Encoder::with_api_config(OpenH264API::from_source(), config).expect("openh264");
    let (w, h) = (320usize, 240usize);
    let (y, u, v) = participant.colour;
    let mut yuv = vec![y; w * h];
    yuv.extend(std::iter::repeat_n(u, w * h / 4));
    yuv.extend(std::iter::repeat_n(v, w * h / 4));
    let picture = YUVBuffer::from_vec(yuv, w, h);
    let mut writer = Fmp4Writer::new(Vec::new());
    let frames = (participant.seconds * f64::from(FPS)).round() as u64;
    let start_90k = (participant.start * 90_000.0).round() as u64;
    for frame in 0..frames {
        let stream = encoder.encode(&picture).expect("encode");
        let keyframe = stream.frame_type() == FrameType::IDR;
        let mut avcc = Vec::new();
        for nal in split_annexb(&stream.to_vec()) {
            avcc.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            avcc.extend_from_slice(nal);
        }
        let time = start_90k + frame * u64::from(90_000 / FPS);
        writer.push_video(time, keyframe, &avcc).expect("video");
    }
    let mut opus =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("opus");
    let start_48k = (participant.start * 48_000.0).round() as u64;
    let packets = (participant.seconds * 50.0).round() as u64;
    for packet in 0..packets {
        let pcm: Vec<i16> = (0..960)
            .map(|i| {
                let t = (packet * 960 + i) as f64 / 48_000.0;
                let on = (participant.tone.0..participant.tone.1).contains(&t);
                if on {
                    ((t * 440.0 * std::f64::consts::TAU).sin() * 12_000.0) as i16
                } else {
                    0
                }
            })
            .collect();
        let data = opus.encode_vec(&pcm, 1500).expect("opus encode");
        writer
            .push_audio(start_48k + packet * 960, &data)
            .expect("audio");
    }
    let fragmented = scratch(&format!("compose-{}.fmp4", participant.name));
    let output = scratch(&format!("compose-{}.mp4", participant.name));
    std::fs::write(&fragmented, writer.finish().expect("finish")).expect("write");
    finalize(&fragmented, &output).expect("finalize");
    output
}

/// Every frame of `path` as raw YUV 4:2:0, as ffmpeg decodes it.
fn decode_frames(path: &Path) -> Vec<Vec<u8>> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success(), "ffmpeg: {output:?}");
    let size = (WIDTH * HEIGHT * 3 / 2) as usize;
    output
        .stdout
        .chunks_exact(size)
        .map(<[u8]>::to_vec)
        .collect()
}

/// The mixed audio of `path` as 48 kHz mono samples, as ffmpeg decodes it.
fn decode_audio(path: &Path) -> Vec<i16> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success(), "ffmpeg: {output:?}");
    output
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The central quarter of `tile`.
fn centre(tile: Tile) -> Tile {
    Tile {
        x: tile.x + tile.width * 3 / 8,
        y: tile.y + tile.height * 3 / 8,
        width: tile.width / 4,
        height: tile.height / 4,
    }
}

/// Mean (Y, U, V) of `rect` in `frame`.
fn mean(frame: &[u8], rect: Tile) -> (f64, f64, f64) {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut sums = [0f64; 3];
    let mut count = 0f64;
    for y in rect.y as usize..(rect.y + rect.height) as usize {
        for x in rect.x as usize..(rect.x + rect.width) as usize {
            let chroma = (y / 2) * (w / 2) + x / 2;
            sums[0] += f64::from(frame[y * w + x]);
            sums[1] += f64::from(frame[w * h + chroma]);
            sums[2] += f64::from(frame[w * h * 5 / 4 + chroma]);
            count += 1.0;
        }
    }
    (sums[0] / count, sums[1] / count, sums[2] / count)
}

/// Mean (Y, U, V) of the central quarter of `tile` in `frame`.
fn mean_colour(frame: &[u8], tile: Tile) -> (f64, f64, f64) {
    mean(frame, centre(tile))
}

fn assert_colour(what: &str, actual: (f64, f64, f64), expected: (u8, u8, u8)) {
    let close = |a: f64, e: u8| (a - f64::from(e)).abs() <= 12.0;
    assert!(
        close(actual.0, expected.0) && close(actual.1, expected.1) && close(actual.2, expected.2),
        "{what}: {actual:?}, expected {expected:?}"
    );
}

fn assert_not(what: &str, actual: (f64, f64, f64), unexpected: (u8, u8, u8)) {
    let far = |a: f64, e: u8| (a - f64::from(e)).abs() > 30.0;
    assert!(
        far(actual.0, unexpected.0) || far(actual.1, unexpected.1) || far(actual.2, unexpected.2),
        "{what}: {actual:?} looks like {unexpected:?}"
    );
}

fn assert_dark(what: &str, actual: (f64, f64, f64)) {
    assert!(
        actual.0 < 50.0 && (actual.1 - 128.0).abs() < 12.0 && (actual.2 - 128.0).abs() < 12.0,
        "{what}: {actual:?}, expected the dark background"
    );
}

/// Mean luma of the highlight band just above `tile`.
fn band_luma(frame: &[u8], tile: Tile) -> f64 {
    let y = (tile.y - 2) as usize;
    let row = &frame[y * WIDTH as usize..][..WIDTH as usize];
    let band = &row[(tile.x + tile.width / 4) as usize..(tile.x + tile.width * 3 / 4) as usize];
    band.iter().map(|&p| f64::from(p)).sum::<f64>() / band.len() as f64
}

/// RMS of `pcm` between `from` and `to` seconds.
fn rms(pcm: &[i16], from: f64, to: f64) -> f64 {
    let window = &pcm[(from * 48_000.0) as usize..(to * 48_000.0) as usize];
    let energy: f64 = window.iter().map(|&s| f64::from(s).powi(2)).sum();
    (energy / window.len() as f64).sqrt()
}

fn config() -> ComposeConfig {
    ComposeConfig {
        width: WIDTH,
        height: HEIGHT,
        video_bitrate: 800_000,
        ..ComposeConfig::default()
    }
}

#[test]
fn three_participants_with_a_late_joiner() {
    let participants = [
        Participant {
            name: "red",
            colour: RED,
            start: 0.0,
            seconds: 6.0,
            tone: (1.0, 1.6),
        },
        Participant {
            name: "green",
            colour: GREEN,
            start: 0.0,
            seconds: 6.0,
            tone: (9.0, 9.0),
        },
        Participant {
            name: "blue",
            colour: BLUE,
            start: 2.0,
            seconds: 6.0,
            tone: (1.0, 1.6),
        },
    ];
    let inputs: Vec<ComposeInput> = participants
        .iter()
        .map(|p| ComposeInput {
            path: record(p),
            label: p.name.to_string(),
        })
        .collect();
    let output = scratch("composed.mp4");
    let summary = compose(&inputs, &output, config(), None).expect("compose");

    assert!(
        (summary.duration.as_secs_f64() - 8.0).abs() < 0.1,
        "{summary:?}"
    );
    assert_eq!(summary.video_frames, 120);
    assert_eq!(summary.audio_frames, 400);
    let late = &summary.participants[2];
    assert!((late.start.as_secs_f64() - 2.0).abs() < 0.01, "{late:?}");
    assert!(summary.participants.iter().all(|p| p.decode_errors == 0));
    assert!(summary.participants.iter().all(|p| p.frames_decoded == 90));
    assert!(summary.participants[0].speaking.as_secs_f64() > 0.5);
    assert!(summary.participants[1].speaking.is_zero());

    assert_decodes_cleanly(&output);
    let (streams, duration) = probe(&output);
    let mut codecs: Vec<&str> = streams.iter().map(|s| s.codec.as_str()).collect();
    codecs.sort_unstable();
    assert_eq!(codecs, ["h264", "opus"]);
    assert!((duration - 8.0).abs() <= 0.5, "duration {duration}");
    for stream in &streams {
        assert!((stream.duration - 8.0).abs() <= 0.5, "{stream:?}");
    }

    let frames = decode_frames(&output);
    assert_eq!(frames.len(), 120);
    let two = grid(2, WIDTH, HEIGHT);
    let three = grid(3, WIDTH, HEIGHT);
    let one = grid(1, WIDTH, HEIGHT);
    // Before the late joiner: red and green side by side, blue nowhere.
    for frame in [FPS as usize, 2 * FPS as usize - 1] {
        let at = &frames[frame];
        assert_colour("red before 2 s", mean_colour(at, two[0]), RED);
        assert_colour("green before 2 s", mean_colour(at, two[1]), GREEN);
        for tile in three.iter().chain(&two) {
            assert_not("any tile before 2 s", mean_colour(at, *tile), BLUE);
        }
    }
    // From 2 s on, the late joiner has the third tile.
    for frame in [2 * FPS as usize, 5 * FPS as usize] {
        let at = &frames[frame];
        assert_colour("red after 2 s", mean_colour(at, three[0]), RED);
        assert_colour("green after 2 s", mean_colour(at, three[1]), GREEN);
        assert_colour("blue after 2 s", mean_colour(at, three[2]), BLUE);
    }
    // After the first two left, the late joiner fills the picture.
    let alone = &frames[7 * FPS as usize];
    assert_colour("blue alone at 7 s", mean_colour(alone, one[0]), BLUE);
    let pillar = Tile {
        x: one[0].x + 8,
        y: one[0].y + 8,
        width: 32,
        height: 64,
    };
    assert_dark("beside the 4:3 picture at 7 s", mean(alone, pillar));

    // The active speaker is highlighted: red while its tone plays, then blue during its own.
    let speaking_red = &frames[(1.5 * f64::from(FPS)) as usize];
    assert!(band_luma(speaking_red, two[0]) > 120.0, "red highlighted");
    assert!(
        band_luma(speaking_red, two[1]) < 60.0,
        "green not highlighted"
    );
    let speaking_blue = &frames[(3.5 * f64::from(FPS)) as usize];
    assert!(
        band_luma(speaking_blue, three[2]) > 120.0,
        "blue highlighted"
    );
    assert!(
        band_luma(speaking_blue, three[0]) < 60.0,
        "red no longer highlighted"
    );

    // The mix: red's tone at 1.0-1.6 s, the late joiner's at its own 1.0 s = 3.0-3.6 s.
    let pcm = decode_audio(&output);
    assert!(
        (pcm.len() as f64 / 48_000.0 - 8.0).abs() < 0.1,
        "{} samples",
        pcm.len()
    );
    for (from, to, loud) in [
        (0.2, 0.9, false),
        (1.1, 1.5, true),
        (1.8, 2.9, false),
        (3.1, 3.5, true),
        (3.8, 7.8, false),
    ] {
        let level = rms(&pcm, from, to);
        assert_eq!(level > 1000.0, loud, "{from}-{to} s: RMS {level}");
    }
    // The tone starts within 20 ms of where it should.
    let onset = pcm
        .iter()
        .position(|s| s.unsigned_abs() > 3000)
        .expect("tone present") as f64
        / 48_000.0;
    assert!((onset - 1.0).abs() < 0.02, "tone onset at {onset} s");
}

#[test]
fn a_corrupt_input_is_an_error_naming_the_file() {
    let good = record(&Participant {
        name: "good",
        colour: RED,
        start: 0.0,
        seconds: 1.0,
        tone: (0.0, 0.0),
    });
    let garbage = scratch("compose-garbage.mp4");
    std::fs::write(&garbage, b"this is not an MP4 file at all").expect("write");
    let truncated = scratch("compose-truncated.mp4");
    let bytes = std::fs::read(&good).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let missing = scratch("compose-missing.mp4");
    let _ = std::fs::remove_file(&missing);
    let output = scratch("compose-never.mp4");
    let _ = std::fs::remove_file(&output);
    for bad in [&garbage, &truncated, &missing] {
        let inputs = [
            ComposeInput {
                path: good.clone(),
                label: "good".into(),
            },
            ComposeInput {
                path: bad.clone(),
                label: "bad".into(),
            },
        ];
        let error = compose(&inputs, &output, config(), None).expect_err("bad input refused");
        assert!(
            matches!(&error, ComposeError::Input { path, .. } if path == bad),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&*bad.to_string_lossy()),
            "{error}"
        );
        assert!(!output.exists(), "no output for {bad:?}");
    }
}

#[test]
fn no_inputs_and_bad_settings_are_refused() {
    let output = scratch("compose-refused.mp4");
    assert!(matches!(
        compose(&[], &output, config(), None),
        Err(ComposeError::NoInputs)
    ));
    let input = [ComposeInput {
        path: scratch("compose-unused.mp4"),
        label: String::new(),
    }];
    for bad in [
        ComposeConfig {
            width: 641,
            ..config()
        },
        ComposeConfig { fps: 0, ..config() },
        ComposeConfig {
            audio_bitrate: 0,
            ..config()
        },
    ] {
        assert!(matches!(
            compose(&input, &output, bad, None),
            Err(ComposeError::InvalidConfig(_))
        ));
    }
}
