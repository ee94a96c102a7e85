//! A camera's encodings: the looped clip as one stream, or as simulcast layers each on its own
//! SSRC and naming its rid, paused and resumed as the node says (`layers`), a keyframe of the
//! one layer a request names.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use rtc::rtp;

use super::frame_packets;
use crate::latency;
use crate::peer::{Shared, random_u32};
use crate::video::{EncodedFrame, VIDEO_CLOCK_RATE, VideoClip, VideoCursor};

/// One encoding of a camera ([`VideoEncodings`]): the looped H.264 clip, a frame per tick (a
/// latency stamp packet first when the participant sends them), RTP time from the tick's
/// instant, a keyframe when asked for ([`VideoSource::request_keyframe`]) and when sending
/// resumes.
pub struct VideoSource {
    cursor: VideoCursor,
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    ts0: u32,
    start: Instant,
    was_sending: bool,
    active: bool,
    keyframe_asked: bool,
    extensions: Vec<(u8, Bytes)>,
}

impl VideoSource {
    /// The clip's frames from now on, on `ssrc` with `payload_type`, from a random sequence
    /// number and timestamp.
    pub fn new(clip: Arc<VideoClip>, ssrc: u32, payload_type: u8) -> Self {
        Self {
            cursor: VideoCursor::new(clip),
            ssrc,
            payload_type,
            seq: random_u32() as u16,
            ts0: random_u32(),
            start: Instant::now(),
            was_sending: false,
            active: true,
            keyframe_asked: false,
            extensions: Vec::new(),
        }
    }

    /// Makes its next frame a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframe_asked = true;
    }

    /// The packets of this encoding's frame due at `tick` (none while video is stopped or the
    /// encoding paused), its packets, bytes and keyframes counted as sent (not the frame:
    /// one frame may go out in several encodings).
    fn encoding(&mut self, tick: Instant, shared: &Shared) -> Vec<rtp::Packet> {
        if !self.active || !shared.send_video.load(Ordering::Relaxed) {
            self.was_sending = false;
            return Vec::new();
        }
        let forced = std::mem::take(&mut self.keyframe_asked);
        if forced || !self.was_sending {
            self.cursor.force_keyframe();
        }
        self.was_sending = true;
        let elapsed = tick.saturating_duration_since(self.start).as_secs_f64();
        let timestamp = self
            .ts0
            .wrapping_add((elapsed * f64::from(VIDEO_CLOCK_RATE)) as u32);
        let frame = self.cursor.next_frame();
        let stamp = shared.latency_stamps.then(|| latency::instant_us(tick));
        let (ssrc, pt) = (self.ssrc, self.payload_type);
        let mut packets: Vec<rtp::Packet> =
            frame_packets(frame, stamp, ssrc, pt, &mut self.seq, timestamp).collect();
        for packet in &mut packets {
            for (id, value) in &self.extensions {
                if let Err(e) = packet.header.set_extension(*id, value.clone()) {
                    tracing::debug!("video header extension {id}: {e}");
                }
            }
        }
        let bytes = packets.iter().map(|p| p.payload.len() as u64).sum();
        count_encoding(shared, frame, (packets.len() as u64, bytes), forced);
        packets
    }
}

/// A camera's encodings: one stream, or simulcast layers (lowest first), each a
/// [`VideoSource`] of its own clip on its own SSRC whose packets name the m-line's mid and the
/// layer's rid (RFC 8852) in header extensions, as a browser sends them. A layer the node
/// wants nobody to receive (`layers`) is paused, and starts again at a keyframe; a keyframe
/// request names the one layer it wants a keyframe of.
pub struct VideoEncodings {
    layers: Vec<VideoSource>,
}

/// The header extension ids of a simulcast publisher's video, as negotiated.
#[derive(Debug, Clone, Copy)]
pub struct SimulcastExtensions {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub mid: u8,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`.
    pub rid: u8,
}

impl VideoEncodings {
    /// One stream.
    pub fn single(source: VideoSource) -> Self {
        Self {
            layers: vec![source],
        }
    }

    /// One layer per `(clip, ssrc, rid)`, lowest first, with `payload_type`, on the m-line
    /// `mid`.
    pub fn simulcast(
        layers: Vec<(Arc<VideoClip>, u32, &str)>,
        payload_type: u8,
        mid: &str,
        ids: SimulcastExtensions,
    ) -> Self {
        let mid = Bytes::copy_from_slice(mid.as_bytes());
        let layers = layers
            .into_iter()
            .map(|(clip, ssrc, rid)| {
                let rid = Bytes::copy_from_slice(rid.as_bytes());
                let mut layer = VideoSource::new(clip, ssrc, payload_type);
                layer.extensions = vec![(ids.mid, mid.clone()), (ids.rid, rid)];
                layer
            })
            .collect();
        Self { layers }
    }

    /// Pauses the layers whose entry in `active` (the node's `layers`, lowest first) is
    /// false, and resumes the others (a layer without an entry sends).
    fn set_active(&mut self, active: &[bool]) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.active = active.get(i).copied().unwrap_or(true);
        }
    }

    /// Asks the layer on `ssrc` for a keyframe; false if no layer sends on it.
    pub fn request_keyframe(&mut self, ssrc: u32) -> bool {
        let layer = self.layers.iter_mut().find(|l| l.ssrc == ssrc);
        layer.map(VideoSource::request_keyframe).is_some()
    }

    /// The packets of every sending layer's frame due at `tick`, counted as sent (one frame,
    /// whatever the number of layers it went out in): the layers the node last wanted
    /// (`MeetingState::active_layers`), a keyframe of every layer when the participant asked
    /// for one (`Shared::force_keyframe`).
    pub fn frame(&mut self, tick: Instant, shared: &Shared) -> Vec<rtp::Packet> {
        if self.layers.len() > 1 {
            shared.with_state(|s| self.set_active(&s.active_layers));
        }
        if shared.force_keyframe.swap(false, Ordering::Relaxed) {
            self.layers
                .iter_mut()
                .for_each(VideoSource::request_keyframe);
        }
        let mut packets = Vec::new();
        for layer in &mut self.layers {
            packets.extend(layer.encoding(tick, shared));
        }
        if !packets.is_empty() {
            shared.sent.video_frames.fetch_add(1, Ordering::Relaxed);
        }
        packets
    }
}

/// Counts one encoding of a sent frame, `written` (packets, bytes) (`forced`: it answered a
/// keyframe request); the frame itself is counted by the caller.
pub(super) fn count_encoding(
    shared: &Shared,
    frame: &EncodedFrame,
    written: (u64, u64),
    forced: bool,
) {
    let c = &shared.sent;
    c.packets.fetch_add(written.0, Ordering::Relaxed);
    c.bytes.fetch_add(written.1, Ordering::Relaxed);
    if frame.keyframe {
        c.keyframes.fetch_add(1, Ordering::Relaxed);
        if forced {
            c.keyframes_forced.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::VideoClipConfig;
    use std::time::Duration;

    /// Three layers of a small clip (IDR at frame 0 of 10), rids q, h and f on SSRCs 1 to 3,
    /// on m-line "1" with mid extension 4 and rid extension 5.
    fn three_layers() -> VideoEncodings {
        let mut config = VideoClipConfig::new(128, 96, 10, 100_000);
        config.frames = 10;
        let layers = config
            .simulcast_layers()
            .into_iter()
            .zip([(1, "q"), (2, "h"), (3, "f")])
            .map(|(c, (ssrc, rid))| (VideoClip::shared(c).expect("a clip"), ssrc, rid))
            .collect();
        let ids = SimulcastExtensions { mid: 4, rid: 5 };
        VideoEncodings::simulcast(layers, 102, "1", ids)
    }

    /// Per SSRC: whether the frame's packets on it began a keyframe.
    fn keyframes(packets: &[rtp::Packet]) -> Vec<(u32, bool)> {
        let mut seen: Vec<(u32, bool)> = Vec::new();
        for p in packets {
            if !seen.iter().any(|(ssrc, _)| *ssrc == p.header.ssrc) {
                let idr = kaskade_picture::receive::starts_keyframe(&p.payload);
                seen.push((p.header.ssrc, idr));
            }
        }
        seen
    }

    #[test]
    fn simulcast_layers_name_themselves_pause_and_come_back_at_a_keyframe() {
        let shared = Shared::new(&crate::JoinConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            "m",
            "n",
        ));
        let mut camera = three_layers();
        // what the node's `layers` frames leave in the participant's state
        let tell = |active: &[bool]| shared.with_state(|s| s.active_layers = active.to_vec());
        let t0 = Instant::now();
        let tick = |n: u64| t0 + Duration::from_millis(100 * n);
        let first = camera.frame(tick(0), &shared);
        assert_eq!(
            keyframes(&first),
            [(1, true), (2, true), (3, true)],
            "every layer starts at a keyframe"
        );
        for p in &first {
            let rid = &[b"q", b"h", b"f"][p.header.ssrc as usize - 1][..];
            assert_eq!(p.header.get_extension(4).as_deref(), Some(&b"1"[..]));
            assert_eq!(p.header.get_extension(5).as_deref(), Some(rid));
        }
        assert_eq!(keyframes(&camera.frame(tick(1), &shared)).len(), 3);

        tell(&[true, false, false]);
        assert_eq!(keyframes(&camera.frame(tick(2), &shared)), [(1, false)]);
        assert!(camera.request_keyframe(1));
        assert!(!camera.request_keyframe(9), "no layer sends on SSRC 9");
        assert_eq!(
            keyframes(&camera.frame(tick(3), &shared)),
            [(1, true)],
            "a keyframe of the layer asked, the paused ones still silent"
        );
        tell(&[true, true, false]);
        assert_eq!(
            keyframes(&camera.frame(tick(4), &shared)),
            [(1, false), (2, true)],
            "a resumed layer starts at a keyframe"
        );
        tell(&[]);
        assert_eq!(
            keyframes(&camera.frame(tick(5), &shared)),
            [(1, false), (2, false), (3, true)],
            "no word on the layers: all of them send"
        );

        let sent = &shared.sent;
        assert_eq!(
            sent.video_frames.load(Ordering::Relaxed),
            6,
            "one frame per tick, whatever the layers it went out in"
        );
        assert_eq!(sent.keyframes_forced.load(Ordering::Relaxed), 1);
    }
}
