//! One participant's recording pipeline: RTP packets of their audio and video in, one
//! fragmented MP4 out.
//!
//! [`ParticipantRecorder`] owns a [`Timeline`] per track, the H.264 depacketizer and the
//! [`Fmp4Writer`]; it is sans-IO apart from writing to `W`. Both timelines share one origin
//! (the recording start), which keeps the participant's audio and video in sync and places a
//! late joiner at their true offset.

use std::io::Write;
use std::time::Instant;

use crate::depacketize::{DepacketizerStats, H264Depacketizer};
use crate::fmp4::{AUDIO_TIMESCALE, Fmp4Error, Fmp4Writer, Fragment, VIDEO_TIMESCALE, WriterStats};
use crate::timeline::{RtpPacket, Timeline, TimelineStats};

/// Which of a participant's tracks a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Opus audio, 48 kHz RTP clock.
    Audio,
    /// H.264 video (packetization mode 1), 90 kHz RTP clock.
    Video,
}

/// Counters of every stage, for metrics and the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParticipantStats {
    /// Audio packets: received, lost, late, reordered.
    pub audio: TimelineStats,
    /// Video packets: received, lost, late, reordered.
    pub video: TimelineStats,
    /// Video access units emitted and dropped.
    pub depacketizer: DepacketizerStats,
    /// Samples, silence and fragments written.
    pub writer: WriterStats,
}

/// Records one participant. Feed it every RTP packet with [`push`](Self::push), call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout), and
/// [`finish`](Self::finish) at stop. Payloads stay in the caller's buffer type `P`.
#[derive(Debug)]
pub struct ParticipantRecorder<W: Write, P = Vec<u8>> {
    audio: Timeline<P>,
    video: Timeline<P>,
    depacketizer: H264Depacketizer,
    writer: Fmp4Writer<W>,
}

impl<W: Write, P: AsRef<[u8]>> ParticipantRecorder<W, P> {
    /// A recorder whose media time 0 is `origin` (the recording start), writing to `out`.
    pub fn new(origin: Instant, out: W) -> Self {
        Self {
            audio: Timeline::new(origin, AUDIO_TIMESCALE),
            video: Timeline::new(origin, VIDEO_TIMESCALE),
            depacketizer: H264Depacketizer::new(),
            writer: Fmp4Writer::new(out),
        }
    }

    /// Takes one RTP packet that arrived at `arrival` and writes whatever became ready.
    /// Returns the last fragment written: when `Some`, sync the file for crash safety.
    pub fn push(
        &mut self,
        kind: MediaKind,
        packet: RtpPacket<P>,
        arrival: Instant,
    ) -> Result<Option<Fragment>, Fmp4Error> {
        match kind {
            MediaKind::Audio => self.audio.push(packet, arrival),
            MediaKind::Video => self.video.push(packet, arrival),
        }
        self.handle_timeout(arrival)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run although no packet arrives
    /// (a reordering hole is given up then); `None` when nothing waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.audio.poll_timeout(), self.video.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Releases the packets due at `now` into the file; see [`push`](Self::push).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<Option<Fragment>, Fmp4Error> {
        let mut fragment = None;
        while let Some(packet) = self.audio.poll(now) {
            let payload = packet.payload.as_ref();
            if !payload.is_empty() {
                fragment = self.writer.push_audio(packet.time, payload)?.or(fragment);
            }
        }
        while let Some(packet) = self.video.poll(now) {
            let payload = packet.payload.as_ref();
            self.depacketizer
                .push(packet.time, packet.marker, packet.discontinuity, payload);
            fragment = self.write_video()?.or(fragment);
        }
        Ok(fragment)
    }

    /// True while video waits for a keyframe (at start, after loss): send the publisher a
    /// PLI, throttled.
    pub fn needs_keyframe(&self) -> bool {
        self.depacketizer.needs_keyframe()
    }

    /// Counters of every stage.
    pub fn stats(&self) -> ParticipantStats {
        ParticipantStats {
            audio: self.audio.stats(),
            video: self.video.stats(),
            depacketizer: self.depacketizer.stats(),
            writer: self.writer.stats(),
        }
    }

    /// The output, e.g. to `sync_data` it after a fragment.
    pub fn output(&self) -> &W {
        self.writer.get_ref()
    }

    /// Writes everything still held at `now` and returns the output (at stop). Finalize the
    /// file afterwards with [`crate::finalize::finalize`].
    pub fn finish(mut self, now: Instant) -> Result<W, Fmp4Error> {
        self.audio.flush();
        self.video.flush();
        self.handle_timeout(now)?;
        self.depacketizer.flush();
        self.write_video()?;
        self.writer.finish()
    }

    fn write_video(&mut self) -> Result<Option<Fragment>, Fmp4Error> {
        let mut fragment = None;
        while let Some(unit) = self.depacketizer.pop() {
            fragment = self
                .writer
                .push_video(unit.time, unit.keyframe, &unit.data)?
                .or(fragment);
        }
        Ok(fragment)
    }
}
