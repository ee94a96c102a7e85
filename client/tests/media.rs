//! The synthetic media sources: the H.264 clip decodes cleanly (directly and through RTP
//! packetization, reordering and loss), and the Opus tone decodes.

use std::time::{Duration, Instant};

use kaskade_client::audio::{OpusClip, audio_level_payload, parse_audio_level};
use kaskade_client::video::{VideoClip, VideoClipConfig, VideoCursor};
use kaskade_picture::receive::H264Receiver;
use openh264::decoder::Decoder;

fn clip() -> std::sync::Arc<VideoClip> {
    VideoClip::shared(VideoClipConfig::new(320, 240, 20, 300_000)).expect("encode clip")
}

#[test]
fn clip_has_one_idr_and_decodes_without_error() {
    let clip = clip();
    assert_eq!(clip.frames().len(), 40);
    assert!(clip.frames()[0].keyframe);
    assert!(clip.frames()[1..].iter().all(|f| !f.keyframe));
    // Constrained baseline: SPS profile_idc 66 with constraint_set1.
    let sps = clip.frames()[0]
        .annexb
        .windows(5)
        .find(|w| w[..4] == [0, 0, 0, 1] && w[4] & 0x1F == 7);
    assert!(sps.is_some(), "IDR frame carries an SPS");
    let mut decoder = Decoder::new().unwrap();
    let mut pictures = 0;
    for _loop in 0..2 {
        for frame in clip.frames() {
            let picture = decoder.decode(&frame.annexb).expect("decodes");
            if let Some(p) = picture {
                assert_eq!(openh264::formats::YUVSource::dimensions(&p), (320, 240));
                pictures += 1;
            }
        }
    }
    assert_eq!(pictures, 80);
    let total: usize = clip.frames().iter().map(|f| f.annexb.len()).sum();
    let kbps = total as f64 * 8.0 / 2.0 / 1000.0;
    assert!(kbps > 50.0 && kbps < 900.0, "bitrate {kbps} kbit/s");
}

#[test]
fn sps_is_constrained_baseline() {
    let clip = clip();
    let data = &clip.frames()[0].annexb;
    let pos = data
        .windows(5)
        .position(|w| w[..4] == [0, 0, 0, 1] && w[4] & 0x1F == 7)
        .unwrap();
    let profile_idc = data[pos + 5];
    let constraints = data[pos + 6];
    assert_eq!(profile_idc, 66, "baseline");
    assert!(
        constraints & 0x40 != 0,
        "constraint_set1 (constrained baseline): {constraints:#x}"
    );
}

struct Sent {
    seq: u16,
    ts: u32,
    marker: bool,
    payload: bytes::Bytes,
}

fn packetize(cursor: &mut VideoCursor, frames: usize, seq0: u16) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut seq = seq0;
    for i in 0..frames {
        let frame = cursor.next_frame();
        let last = frame.payloads.len() - 1;
        for (j, p) in frame.payloads.iter().enumerate() {
            out.push(Sent {
                seq,
                ts: 1000 + i as u32 * 4500,
                marker: j == last,
                payload: p.clone(),
            });
            seq = seq.wrapping_add(1);
        }
    }
    out
}

/// Frames decoded and decode errors of `packets` fed to a receiver in this order.
fn decode(packets: Vec<Sent>) -> (u32, u32) {
    let mut rx = H264Receiver::default();
    let (mut decoded, mut errors) = (0, 0);
    let now = Instant::now();
    for p in packets {
        let o = rx.push(now, p.seq, p.ts, p.marker, p.payload);
        decoded += o.decoded;
        errors += o.errors;
    }
    (decoded, errors)
}

#[test]
fn rtp_roundtrip_decodes_every_frame_across_sequence_wrap() {
    let mut cursor = VideoCursor::new(clip());
    let packets = packetize(&mut cursor, 80, 65_500);
    assert!(packets.len() > 80, "some frames need several packets");
    assert_eq!(decode(packets), (80, 0));
}

#[test]
fn padding_between_frames_is_passed_over() {
    let mut cursor = VideoCursor::new(clip());
    // after each frame, two padding-only packets (a bandwidth probe): the frame's timestamp,
    // no marker, an empty payload, each a sequence number of its own
    let mut packets = Vec::new();
    let mut seq = 100u16;
    for p in packetize(&mut cursor, 30, 0) {
        let (ts, marker) = (p.ts, p.marker);
        packets.push(Sent { seq, ..p });
        seq = seq.wrapping_add(1);
        if marker {
            for _ in 0..2 {
                packets.push(Sent {
                    seq,
                    ts,
                    marker: false,
                    payload: bytes::Bytes::new(),
                });
                seq = seq.wrapping_add(1);
            }
        }
    }
    assert_eq!(decode(packets), (30, 0));
}

#[test]
fn reordered_packets_are_reassembled() {
    let mut cursor = VideoCursor::new(clip());
    let mut packets = packetize(&mut cursor, 40, 100);
    // Swap neighbours throughout (like a retransmission arriving late).
    for i in (1..packets.len() - 1).step_by(7) {
        packets.swap(i, i + 1);
    }
    let mut rx = H264Receiver::default();
    let now = Instant::now();
    let decoded: u32 = packets
        .into_iter()
        .map(|p| rx.push(now, p.seq, p.ts, p.marker, p.payload).decoded)
        .sum();
    assert_eq!(decoded, 40);
}

#[test]
fn loss_drops_frames_until_the_next_keyframe() {
    let mut cursor = VideoCursor::new(clip());
    let first = packetize(&mut cursor, 10, 0);
    let next_seq = first.last().unwrap().seq.wrapping_add(1);
    cursor.force_keyframe(); // what a PLI does
    let second = packetize(&mut cursor, 10, next_seq);
    let mut rx = H264Receiver::new(Duration::from_millis(100));
    let t0 = Instant::now();
    let (mut decoded, mut errors, mut wanted) = (0, 0, false);
    let lost = first[first.len() / 2].seq;
    for (i, p) in first.into_iter().chain(second).enumerate() {
        if p.seq == lost {
            continue;
        }
        let now = t0 + Duration::from_millis(i as u64 * 10);
        let o = rx.push(now, p.seq, p.ts, p.marker, p.payload);
        decoded += o.decoded;
        errors += o.errors;
        wanted |= o.want_keyframe;
    }
    assert_eq!(errors, 0);
    assert!(wanted, "a loss asks for a keyframe");
    assert!(rx.frames_lost() >= 1);
    assert!((10..20).contains(&decoded), "decoded {decoded}");
}

#[test]
fn opus_tone_decodes_and_level_extension_encodes() {
    let clip = OpusClip::shared().unwrap();
    assert_eq!(clip.frames().len(), 50);
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm = [0i16; 960];
    let mut energy = 0f64;
    for frame in clip.frames() {
        let n = decoder.decode(frame, &mut pcm, false).unwrap();
        assert_eq!(n, 960);
        energy += pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
    }
    assert!(energy > 0.0, "the tone is audible");
    assert_eq!(audio_level_payload(10).as_ref(), &[0x80 | 10]);
    assert_eq!(audio_level_payload(127).as_ref(), &[127]);
    assert_eq!(audio_level_payload(200).as_ref(), &[127]);
    assert_eq!(parse_audio_level(&[0x8A]), Some((10, true)));
}

#[test]
fn stream_joined_after_the_parameter_sets_waits_for_the_next_idr() {
    let mut cursor = VideoCursor::new(clip());
    let packets = packetize(&mut cursor, 80, 7);
    // The first packet of the IDR is the STAP-A with SPS/PPS: lose it.
    assert_eq!(packets[0].payload[0] & 0x1F, 24, "IDR starts with STAP-A");
    let mut rx = H264Receiver::default();
    let now = Instant::now();
    let (mut decoded, mut errors) = (0, 0);
    for p in packets.into_iter().skip(1) {
        let o = rx.push(now, p.seq, p.ts, p.marker, p.payload);
        decoded += o.decoded;
        errors += o.errors;
    }
    assert_eq!(
        (decoded, errors),
        (40, 0),
        "decoding starts at the second loop's IDR"
    );
}
