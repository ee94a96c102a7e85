//! CPU of one SIP video leg's grid: `participants` others each send 640x360 H.264 at 30 fps
//! (a moving picture, about 500 kbit/s); the leg's compositor decodes them all and composes and
//! encodes its 1280x720 picture at 15 fps, as `--sip-picture grid` does for a room system at
//! level 3.1. Media time runs as fast as the CPU allows; the thread's CPU time is split into
//! decoding and composing plus encoding, and given per second of call (a share of one core).
//!
//! `cargo run -p sfu --release --example sip_grid_bench [participants] [seconds]`

use kaskade_media::media::ingest::DELIVERED_VIDEO;
use kaskade_picture::Picture;
use kaskade_picture::encode::{EncoderSettings, H264Encoder};
use kaskade_sfu::sip::grid::format::PictureFormat;
use kaskade_sfu::sip::grid::{Compositor, GridTile};
use kaskade_sfu::sip::h264::rtp_header;
use std::time::{Duration, Instant};

const SOURCE: (usize, usize) = (640, 360);
const SOURCE_FPS: u32 = 30;
/// Pictures in each source's loop (two seconds).
const LOOP: u32 = 2 * SOURCE_FPS;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let participants: u32 = args.next().map_or(Ok(9), |a| a.parse())?;
    let seconds: u32 = args.next().map_or(Ok(20), |a| a.parse())?;
    let sources: Vec<Vec<Vec<Vec<u8>>>> =
        (0..participants).map(source).collect::<Result<_, _>>()?;
    let format = PictureFormat {
        width: 1280,
        height: 720,
        fps: 15,
        bitrate: 1_000_000,
    };
    let start = Instant::now();
    let mut compositor = Compositor::new(format, (1, 109), (0, 0), start)?;
    compositor.lay_out(
        (0..participants)
            .map(|n| GridTile {
                owner: (n + 1).into(),
                label: format!("Participant {}", n + 1),
                video: Some(0x100 + n),
                speaking: n == 0,
            })
            .collect(),
    );
    let (mut decoding, mut composing) = (Duration::ZERO, Duration::ZERO);
    let (mut packets_out, mut bytes_out) = (0usize, 0usize);
    let mut out = Vec::new();
    let mut seqs = vec![0u16; sources.len()];
    for tick in 0..seconds * SOURCE_FPS {
        let now = start + Duration::from_secs(1) * tick / SOURCE_FPS;
        let began = thread_cpu();
        for (index, frames) in sources.iter().enumerate() {
            let frame = &frames[(tick % LOOP) as usize];
            for (n, nal) in frame.iter().enumerate() {
                let marker = n + 1 == frame.len();
                let ssrc = 0x100 + index as u32;
                let timestamp = tick * (90_000 / SOURCE_FPS);
                let mut packet =
                    rtp_header((marker, DELIVERED_VIDEO), seqs[index], timestamp, ssrc).to_vec();
                packet.extend_from_slice(nal);
                seqs[index] = seqs[index].wrapping_add(1);
                compositor.packet(now, &bytes::Bytes::from(packet));
            }
        }
        decoding += thread_cpu() - began;
        if tick % (SOURCE_FPS / format.fps) == 0 {
            let began = thread_cpu();
            out.clear();
            compositor.render(now, &mut out)?;
            composing += thread_cpu() - began;
            packets_out += out.len();
            bytes_out += out.iter().map(Vec::len).sum::<usize>();
        }
    }
    let per_second = |d: Duration| d.as_secs_f64() * 1_000.0 / f64::from(seconds);
    println!(
        "{participants} participants of {}x{} at {SOURCE_FPS} fps, grid 1280x720 at 15 fps, {seconds} s of call",
        SOURCE.0, SOURCE.1
    );
    println!(
        "decoding: {:.0} ms of CPU per second of call",
        per_second(decoding)
    );
    println!(
        "composing and encoding: {:.0} ms of CPU per second of call",
        per_second(composing)
    );
    println!(
        "in all: {:.0} % of one core; sent {:.0} kbit/s in {} packets",
        per_second(decoding + composing) / 10.0,
        bytes_out as f64 * 8.0 / 1_000.0 / f64::from(seconds),
        packets_out
    );
    Ok(())
}

/// One participant's loop of pictures, each as its NAL units.
fn source(index: u32) -> Result<Vec<Vec<Vec<u8>>>, kaskade_picture::CodecError> {
    let mut encoder = H264Encoder::new(EncoderSettings {
        fps: SOURCE_FPS,
        bitrate: 500_000,
        keyframe_interval: LOOP,
        max_nal_size: Some(1_200),
    })?;
    let (width, height) = SOURCE;
    let mut picture = Picture::filled(width, height, (0, 128, 128));
    (0..LOOP)
        .map(|frame| {
            let shift = (frame * 4 + index * 40) as usize;
            for (y, row) in picture.y.chunks_exact_mut(width).enumerate() {
                for (x, pixel) in row.iter_mut().enumerate() {
                    *pixel = (((x + y + shift) * 255 / (width + height)) % 224 + 16) as u8;
                }
            }
            let mut units = Vec::new();
            encoder.encode(&picture, |nal| units.push(nal.to_vec()))?;
            Ok(units)
        })
        .collect()
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and reads nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}
