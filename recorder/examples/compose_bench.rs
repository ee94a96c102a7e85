//! Rendering speed of the composed meeting video: ten participants of 10 s each (320x240 at
//! 30 fps with a moving picture, Opus speech-like tone bursts taking turns) are recorded into
//! finalized MP4s, then composed at the default settings (1280x720, 15 fps). Prints the
//! speed as a multiple of real time and the CPU seconds spent.
//!
//! `cargo run -p recorder --release --example compose_bench [participants] [seconds]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kaskade_recorder::compose::{ComposeConfig, ComposeInput, compose};
use kaskade_recorder::finalize::finalize;
use kaskade_recorder::fmp4::Fmp4Writer;
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType};
use openh264::formats::YUVBuffer;

const WIDTH: usize = 320;
const HEIGHT: usize = 240;
const FPS: u64 = 30;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let participants: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("kaskade-compose-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let inputs = (0..participants)
        .map(|index| {
            let path = record(&dir, index, participants, seconds)?;
            Ok(ComposeInput {
                path,
                label: format!("Participant {}", index + 1),
            })
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    println!(
        "recorded {participants} inputs of {seconds} s ({WIDTH}x{HEIGHT}, {FPS} fps) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let output = dir.join("composed.mp4");
    let config = ComposeConfig::default();
    let (cpu_before, wall_before) = (cpu_time()?, Instant::now());
    let summary = compose(&inputs, &output, config, None)?;
    let (cpu, wall) = (cpu_time()? - cpu_before, wall_before.elapsed());
    let media = summary.duration.as_secs_f64();
    println!(
        "composed {participants} participants, {media:.1} s at {}x{} {} fps: {:.2} s wall = {:.1}x real time; \
         {:.2} CPU s ({:.2} CPU s per media second, {:.0}% of one core); {} video frames, {} bytes",
        config.width,
        config.height,
        config.fps,
        wall.as_secs_f64(),
        media / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / media,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        summary.video_frames,
        summary.file.bytes,
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Participant `index`'s finalized MP4: a moving pattern, and a tone during their turn.
fn record(
    dir: &Path,
    index: usize,
    count: usize,
    seconds: u64,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(300_000))
        .max_frame_rate(FrameRate::from_hz(FPS as f32));
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
    let mut writer = Fmp4Writer::new(Vec::new());
    for frame in 0..seconds * FPS {
        let mut yuv = vec![128u8; WIDTH * HEIGHT * 3 / 2];
        for (y, row) in yuv[..WIDTH * HEIGHT].chunks_exact_mut(WIDTH).enumerate() {
            for (x, pixel) in row.iter_mut().enumerate() {
                *pixel = ((x + y * 2 + frame as usize * 3 + index * 40) % 200 + 20) as u8;
            }
        }
        let stream = encoder.encode(&YUVBuffer::from_vec(yuv, WIDTH, HEIGHT))?;
        let keyframe = stream.frame_type() == FrameType::IDR;
        let mut avcc = Vec::new();
        for layer in (0..stream.num_layers()).filter_map(|l| stream.layer(l)) {
            for nal in (0..layer.nal_count()).filter_map(|n| layer.nal_unit(n)) {
                let nal = nal
                    .strip_prefix(&[0, 0, 0, 1])
                    .or_else(|| nal.strip_prefix(&[0, 0, 1]))
                    .unwrap_or(nal);
                avcc.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                avcc.extend_from_slice(nal);
            }
        }
        writer.push_video(frame * 90_000 / FPS, keyframe, &avcc)?;
    }
    let mut opus = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
    let pitch = 200.0 + 30.0 * index as f64;
    for packet in 0..seconds * 50 {
        let speaking = (packet / 50) as usize % count == index;
        let pcm: Vec<i16> = (0..960)
            .map(|i| {
                let t = (packet * 960 + i) as f64 / 48_000.0;
                let level = if speaking { 9_000.0 } else { 150.0 };
                ((t * pitch * std::f64::consts::TAU).sin() * level) as i16
            })
            .collect();
        writer.push_audio(packet * 960, &opus.encode_vec(&pcm, 1500)?)?;
    }
    let fragmented = dir.join(format!("{index}.fmp4"));
    let finalized = dir.join(format!("{index}.mp4"));
    std::fs::write(&fragmented, writer.finish()?)?;
    finalize(&fragmented, &finalized)?;
    std::fs::remove_file(&fragmented)?;
    Ok(finalized)
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`.
fn cpu_time() -> Result<Duration, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("unexpected /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // Linux reports these in USER_HZ, which is 100 on every mainstream architecture.
    Ok(Duration::from_millis(ticks * 10))
}
