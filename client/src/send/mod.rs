//! Real-time media senders of a participant: the looped H.264 clip at its frame rate (with
//! keyframes on PLI/FIR), as one stream or simulcast layers ([`camera`]), and the Opus tone at
//! 50 packets/s with the RFC 6464 audio level.
//!
//! Packets are built directly from the pre-packetized clips (a `Bytes` clone per payload, no
//! copying) and written through `TrackLocalStaticRTP`, so the interceptor chain (NACK
//! responder buffer, sender reports) sees every one of them.
//!
//! With sync-mark clips (see [`crate::JoinConfig::sync_marks`]) both senders run on one
//! [`SyncClock`] each, with the same origin (the moment the session's connection came up):
//! video frame `n` of the loop and audio frame `m` leave at `origin + n / fps` and
//! `origin + m x 20 ms`, with RTP timestamps of exactly those instants, so the white frame and
//! the beep's first frame leave together and carry timestamps of the same instant.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaskade_rtcp_tap::keyframe_wanted_of;
use rtc::rtp;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

mod camera;

use camera::count_encoding;
pub use camera::{SimulcastExtensions, VideoEncodings, VideoSource};

use crate::audio::{OPUS_FRAME_SAMPLES, OPUS_FRAMES_PER_SECOND, OpusClip, audio_level_payload};
use crate::latency;
use crate::peer::{Shared, random_u32};
use crate::video::{EncodedFrame, VIDEO_CLOCK_RATE, VideoClip};

/// Numbers the media units (frames) of one track from a common origin: unit `n` is due at
/// `origin + n / rate`. Time is an argument, so it is tested without sleeping.
#[derive(Debug)]
pub(crate) struct SyncClock {
    origin: Instant,
    rate: u32,
    last: Option<u64>,
}

impl SyncClock {
    /// A clock of `rate` units per second from `origin`.
    pub fn new(origin: Instant, rate: u32) -> Self {
        Self {
            origin,
            rate: rate.max(1),
            last: None,
        }
    }

    /// The unit whose instant is nearest to `now`, unless it (or a later one) was already
    /// taken; units whose instant passed unsent are skipped.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.origin).as_secs_f64();
        let unit = (elapsed * f64::from(self.rate)).round() as u64;
        if self.last.is_some_and(|last| unit <= last) {
            return None;
        }
        self.last = Some(unit);
        Some(unit)
    }

    /// The RTP timestamp offset of `unit` at `clock_rate` (wrapping like RTP time).
    pub fn rtp_offset(&self, unit: u64, clock_rate: u32) -> u32 {
        (u128::from(unit) * u128::from(clock_rate) / u128::from(self.rate)) as u32
    }

    /// A ticker that fires at the units' instants (skipping missed ones).
    pub fn ticker(&self) -> tokio::time::Interval {
        let period = Duration::from_secs(1) / self.rate;
        let mut ticker = tokio::time::interval_at(self.origin.into(), period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    }
}

/// The common origin of a session's sync-mark senders: when its connection came up.
async fn media_origin(shared: &Shared) -> Instant {
    shared.connected().await;
    shared
        .with_state(|s| s.connected_at)
        .unwrap_or_else(Instant::now)
}

/// Sends the `camera`'s frames in real time at `fps`: the layers the node wants (`layers`),
/// a keyframe of the layer each request (`keyframes`, media SSRCs) names.
pub async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    mut camera: VideoEncodings,
    fps: u32,
    shared: Arc<Shared>,
    mut keyframes: mpsc::UnboundedReceiver<u32>,
) {
    shared.connected().await;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / fps.max(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // the frame's instant is its tick's, not when the task got to run: a camera's capture
        // times are regular even when the sender is late
        let tick = ticker.tick().await;
        while let Ok(ssrc) = keyframes.try_recv() {
            camera.request_keyframe(ssrc);
        }
        for packet in camera.frame(tick.into_std(), &shared) {
            if let Err(e) = track.write_rtp(packet).await {
                tracing::debug!("video write_rtp: {e}");
            }
        }
    }
}

/// [`send_video`] of a sync-mark clip (all IDRs), on `ssrc`: frame `n` of the loop at its
/// instant on the session's [`SyncClock`]; keyframe requests need nothing, every frame is one
/// (they are only counted).
pub async fn send_video_sync_marks(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    clip: Arc<VideoClip>,
    shared: Arc<Shared>,
    mut keyframes: mpsc::UnboundedReceiver<u32>,
) {
    let mut clock = SyncClock::new(media_origin(&shared).await, clip.config().fps);
    let mut seq = random_u32() as u16;
    let ts0 = random_u32();
    let mut ticker = clock.ticker();
    loop {
        ticker.tick().await;
        let Some(unit) = clock.due(Instant::now()) else {
            continue;
        };
        if !shared.send_video.load(Ordering::Relaxed) {
            continue;
        }
        let mut forced = shared.force_keyframe.swap(false, Ordering::Relaxed);
        while keyframes.try_recv().is_ok() {
            forced = true;
        }
        let frames = clip.frames();
        let frame = &frames[(unit % frames.len() as u64) as usize];
        let timestamp = ts0.wrapping_add(clock.rtp_offset(unit, VIDEO_CLOCK_RATE));
        let stamp = shared.latency_stamps.then(latency::clock_us);
        let written = write_frame(
            &track,
            frame,
            stamp,
            ssrc,
            payload_type,
            &mut seq,
            timestamp,
        )
        .await;
        count_encoding(&shared, frame, written, forced);
        shared.sent.video_frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes one frame's RTP packets ([`frame_packets`]), advancing `seq`.
async fn write_frame(
    track: &TrackLocalStaticRTP,
    frame: &EncodedFrame,
    stamp: Option<u64>,
    ssrc: u32,
    payload_type: u8,
    seq: &mut u16,
    timestamp: u32,
) -> (u64, u64) {
    let (mut packets, mut bytes) = (0, 0);
    for packet in frame_packets(frame, stamp, ssrc, payload_type, seq, timestamp) {
        packets += 1;
        bytes += packet.payload.len() as u64;
        if let Err(e) = track.write_rtp(packet).await {
            tracing::debug!("video write_rtp: {e}");
        }
    }
    (packets, bytes)
}

/// One frame's RTP packets (marker on the last), numbered from `seq` on (which they advance);
/// with a latency stamp (microseconds on [`latency::clock_us`]), a stamp packet goes first.
/// Payloads are shared, not copied.
pub fn frame_packets<'a>(
    frame: &'a EncodedFrame,
    stamp: Option<u64>,
    ssrc: u32,
    payload_type: u8,
    seq: &'a mut u16,
    timestamp: u32,
) -> impl Iterator<Item = rtp::Packet> + 'a {
    let stamp = stamp.map(latency::stamp_payload);
    let last = frame.payloads.len() + usize::from(stamp.is_some()) - 1;
    stamp
        .into_iter()
        .chain(frame.payloads.iter().cloned())
        .enumerate()
        .map(move |(i, payload)| {
            let header = rtp::header::Header {
                version: 2,
                marker: i == last,
                payload_type,
                sequence_number: *seq,
                timestamp,
                ssrc,
                ..Default::default()
            };
            *seq = seq.wrapping_add(1);
            rtp::Packet { header, payload }
        })
}

/// Hands the media SSRC of each PLI/FIR delivered to the local video track to its sender
/// (`keyframes`), until the sender is gone.
pub(crate) async fn watch_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    keyframes: mpsc::UnboundedSender<u32>,
) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                // Only PLI/FIR reach here (see rtcp_tap); counting happens in the tap.
                let wanted = packets
                    .iter()
                    .filter_map(|p| keyframe_wanted_of(p.as_ref()));
                for ssrc in wanted {
                    if keyframes.send(ssrc).is_err() {
                        return;
                    }
                }
            }
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(100)).await, // not bound yet
        }
    }
}

/// Sends the looped Opus clip in real time with the current audio level: the tone frame after
/// frame, or a sync-mark clip frame by frame of its [`SyncClock`].
pub async fn send_audio(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    level_ext: Option<u8>,
    clip: Arc<OpusClip>,
    shared: Arc<Shared>,
) {
    let mut clock = if clip.is_sync_marked() {
        let origin = media_origin(&shared).await;
        Some(SyncClock::new(origin, OPUS_FRAMES_PER_SECOND))
    } else {
        shared.connected().await;
        None
    };
    let mut source = AudioSource::new(ssrc, payload_type, level_ext);
    let mut ticker = match &clock {
        Some(clock) => clock.ticker(),
        None => {
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticker
        }
    };
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        ticker.tick().await;
        if !shared.send_audio.load(Ordering::Relaxed) {
            continue;
        }
        let (frame_no, payload) = match &mut clock {
            Some(clock) => {
                let Some(unit) = clock.due(Instant::now()) else {
                    continue;
                };
                (unit, clip.frame(unit).clone())
            }
            None => {
                let frame_no = (start.elapsed().as_millis() / 20) as u64;
                n += 1;
                (frame_no, clip.frame(n - 1).clone())
            }
        };
        if let Err(e) = track
            .write_rtp(source.packet(frame_no, payload, &shared))
            .await
        {
            tracing::debug!("audio write_rtp: {e}");
        }
    }
}

/// The RTP side of one Opus sender: its SSRC, payload type, audio level extension, sequence
/// numbers and RTP time.
pub struct AudioSource {
    ssrc: u32,
    payload_type: u8,
    level_ext: Option<u8>,
    seq: u16,
    ts0: u32,
}

impl AudioSource {
    /// A sender on `ssrc` with `payload_type` (and the audio level as extension `level_ext`),
    /// from a random sequence number and timestamp.
    pub fn new(ssrc: u32, payload_type: u8, level_ext: Option<u8>) -> Self {
        Self {
            ssrc,
            payload_type,
            level_ext,
            seq: random_u32() as u16,
            ts0: random_u32(),
        }
    }

    /// The packet of 20 ms frame number `frame_no` (its RTP time), carrying `payload` and the
    /// participant's current audio level, counted as sent.
    pub fn packet(&mut self, frame_no: u64, payload: Bytes, shared: &Shared) -> rtp::Packet {
        let timestamp = self
            .ts0
            .wrapping_add((frame_no as u32).wrapping_mul(OPUS_FRAME_SAMPLES));
        let mut header = rtp::header::Header {
            version: 2,
            payload_type: self.payload_type,
            sequence_number: self.seq,
            timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        if let Some(id) = self.level_ext {
            let level = shared.audio_level.load(Ordering::Relaxed);
            if let Err(e) = header.set_extension(id, audio_level_payload(level)) {
                tracing::debug!("audio level extension: {e}");
            }
        }
        self.seq = self.seq.wrapping_add(1);
        let c = &shared.sent;
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
        c.audio_packets.fetch_add(1, Ordering::Relaxed);
        rtp::Packet { header, payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_clock_takes_the_nearest_unit_once_and_skips_missed_ones() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let mut clock = SyncClock::new(origin, 50);
        assert_eq!(clock.due(at(0)), Some(0));
        assert_eq!(clock.due(at(21)), Some(1), "a late tick is still its unit");
        assert_eq!(clock.due(at(29)), None, "unit 1 is taken");
        assert_eq!(clock.due(at(101)), Some(5), "units 2 to 4 passed unsent");
        assert_eq!(clock.rtp_offset(5, 48_000), 5 * 960);
    }

    #[test]
    fn video_and_audio_clocks_agree_on_the_mark_instant() {
        let origin = Instant::now();
        let mut video = SyncClock::new(origin, 15);
        let mut audio = SyncClock::new(origin, OPUS_FRAMES_PER_SECOND);
        let mark = origin + Duration::from_secs(1) + Duration::from_millis(2);
        assert_eq!(video.due(mark), Some(15));
        assert_eq!(audio.due(mark), Some(50));
        assert_eq!(video.rtp_offset(15, VIDEO_CLOCK_RATE), VIDEO_CLOCK_RATE);
        assert_eq!(audio.rtp_offset(50, 48_000), 48_000);
        // RTP time wraps like a u32
        let far = 1u64 << 33;
        assert_eq!(audio.rtp_offset(far, 48_000), (far * 960) as u32);
    }
}
