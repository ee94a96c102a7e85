//! Real-time media senders of a participant: the looped H.264 clip at its frame rate (with
//! keyframes on PLI/FIR) and the Opus tone at 50 packets/s with the RFC 6464 audio level.
//!
//! Packets are built directly from the pre-packetized clips (a `Bytes` clone per payload, no
//! copying) and written through `TrackLocalStaticRTP`, so the interceptor chain (NACK
//! responder buffer, sender reports) sees every one of them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rtc::rtp;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::audio::{OPUS_FRAME_SAMPLES, OpusClip, audio_level_payload};
use crate::peer::{Shared, random_u32};
use crate::video::{VIDEO_CLOCK_RATE, VideoClip, VideoCursor};

/// Sends the looped H.264 clip in real time; serves keyframe requests.
pub(crate) async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    clip: Arc<VideoClip>,
    shared: Arc<Shared>,
) {
    shared.connected().await;
    let fps = clip.config().fps;
    let mut cursor = VideoCursor::new(clip);
    let mut seq = random_u32() as u16;
    let ts0 = random_u32();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / fps);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut was_sending = false;
    loop {
        ticker.tick().await;
        let sending = shared.send_video.load(Ordering::Relaxed);
        if !sending {
            was_sending = false;
            continue;
        }
        let forced = shared.force_keyframe.swap(false, Ordering::Relaxed);
        if forced || !was_sending {
            cursor.force_keyframe();
        }
        was_sending = true;
        let elapsed = start.elapsed().as_secs_f64();
        let timestamp = ts0.wrapping_add((elapsed * f64::from(VIDEO_CLOCK_RATE)) as u32);
        let frame = cursor.next_frame();
        let last = frame.payloads.len().saturating_sub(1);
        let mut bytes = 0u64;
        for (i, payload) in frame.payloads.iter().enumerate() {
            bytes += payload.len() as u64;
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i == last,
                    payload_type,
                    sequence_number: seq,
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            seq = seq.wrapping_add(1);
            if let Err(e) = track.write_rtp(packet).await {
                tracing::debug!("video write_rtp: {e}");
            }
        }
        let c = &shared.sent;
        c.packets
            .fetch_add(frame.payloads.len() as u64, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        c.video_frames.fetch_add(1, Ordering::Relaxed);
        if frame.keyframe {
            c.keyframes.fetch_add(1, Ordering::Relaxed);
            if forced {
                c.keyframes_forced.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Turns PLI/FIR delivered to the local video track into a keyframe at the next frame.
pub(crate) async fn watch_keyframe_requests(track: Arc<TrackLocalStaticRTP>, shared: Arc<Shared>) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(_packets)) => {
                // Only PLI/FIR reach here (see rtcp_tap); counting happens in the tap.
                shared.force_keyframe.store(true, Ordering::Relaxed);
            }
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(100)).await, // not bound yet
        }
    }
}

/// Sends the looped Opus tone in real time with the current audio level.
pub(crate) async fn send_audio(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    level_ext: Option<u8>,
    clip: Arc<OpusClip>,
    shared: Arc<Shared>,
) {
    shared.connected().await;
    let mut seq = random_u32() as u16;
    let ts0 = random_u32();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        ticker.tick().await;
        if !shared.send_audio.load(Ordering::Relaxed) {
            continue;
        }
        let frame_no = (start.elapsed().as_millis() / 20) as u64;
        let timestamp = ts0.wrapping_add((frame_no as u32).wrapping_mul(OPUS_FRAME_SAMPLES));
        let payload = clip.frame(n).clone();
        n += 1;
        let len = payload.len() as u64;
        let mut header = rtp::header::Header {
            version: 2,
            payload_type,
            sequence_number: seq,
            timestamp,
            ssrc,
            ..Default::default()
        };
        if let Some(id) = level_ext {
            let level = shared.audio_level.load(Ordering::Relaxed);
            if let Err(e) = header.set_extension(id, audio_level_payload(level)) {
                tracing::debug!("audio level extension: {e}");
            }
        }
        seq = seq.wrapping_add(1);
        if let Err(e) = track.write_rtp(rtp::Packet { header, payload }).await {
            tracing::debug!("audio write_rtp: {e}");
        }
        let c = &shared.sent;
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(len, Ordering::Relaxed);
        c.audio_packets.fetch_add(1, Ordering::Relaxed);
    }
}
