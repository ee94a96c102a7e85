//! The mixed audio: every participant's Opus decoded at 48 kHz mono, placed at its timeline
//! position (gaps are silence), summed with clipping, and re-encoded as 20 ms Opus frames.
//! Each frame also reports every participant's level, from which [`SpeakerDetector`] picks
//! the active speaker.
//!
//! The output file declares no Opus pre-skip, so the encoder's lookahead is absorbed by
//! feeding it the mix that many samples early: decoded, the mix lands at its true time.

use std::collections::VecDeque;

use opus::{Application, Bitrate, Channels};

use super::source::{SourceError, Track};
use crate::depacketize::opus_packet_duration;

/// Samples per second of the mix.
pub(super) const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub(super) const FRAME: usize = 960;
/// The longest Opus packet (120 ms) in samples.
const MAX_PACKET: usize = 5_760;
/// Largest encoded frame accepted from the encoder.
const MAX_ENCODED: usize = 4_000;

/// One participant's audio, decoded just ahead of the mix.
pub(super) struct AudioLane {
    track: Track,
    decoder: opus::Decoder,
    /// Timeline position (samples) of `pending[0]`.
    position: i64,
    pending: VecDeque<i16>,
    packet: Vec<u8>,
    pcm: Vec<i16>,
    /// Packets that did not decode (replaced by silence).
    pub errors: u64,
}

impl AudioLane {
    pub fn new(track: Track) -> Result<Self, opus::Error> {
        Ok(Self {
            track,
            decoder: opus::Decoder::new(SAMPLE_RATE, Channels::Mono)?,
            position: 0,
            pending: VecDeque::new(),
            packet: Vec::new(),
            pcm: vec![0; MAX_PACKET],
            errors: 0,
        })
    }

    /// Adds the lane's samples of `[start, start + FRAME)` to `mix`; returns their RMS level
    /// (0 to 1).
    fn mix_into(&mut self, start: i64, mix: &mut [i32]) -> Result<f32, SourceError> {
        self.decode_until(start + FRAME as i64)?;
        let stale = usize::try_from(start.saturating_sub(self.position))
            .unwrap_or(0)
            .min(self.pending.len());
        self.pending.drain(..stale);
        self.position = start.max(self.position + stale as i64);
        let count = FRAME.min(self.pending.len());
        let mut energy = 0f64;
        for (sum, sample) in mix.iter_mut().zip(self.pending.drain(..count)) {
            *sum += i32::from(sample);
            energy += f64::from(sample) * f64::from(sample);
        }
        self.position = start + FRAME as i64;
        Ok(((energy / FRAME as f64).sqrt() / 32_768.0) as f32)
    }

    /// Decodes packets until the pending samples reach `end` or the next packet starts later.
    fn decode_until(&mut self, end: i64) -> Result<(), SourceError> {
        let timescale = i128::from(self.track.timescale());
        while self.position + (self.pending.len() as i64) < end {
            let Some(sample) = self.track.peek() else {
                break;
            };
            let start = i128::from(sample.time) * i128::from(SAMPLE_RATE) / timescale;
            let start = i64::try_from(start).unwrap_or(i64::MAX);
            if start >= end {
                break;
            }
            self.track.advance();
            self.track.read(&sample, &mut self.packet)?;
            let decoded = match self.decoder.decode(&self.packet, &mut self.pcm, false) {
                Ok(count) => count,
                Err(_) => {
                    self.errors += 1;
                    let silence = opus_packet_duration(&self.packet).map_or(FRAME, |d| d as usize);
                    self.pcm[..silence].fill(0);
                    silence
                }
            };
            let cursor = self.position + self.pending.len() as i64;
            let gap = usize::try_from(start.saturating_sub(cursor)).unwrap_or(0);
            self.pending.extend(std::iter::repeat_n(0, gap));
            // a packet after a gap (start past the cursor) overlaps nothing: keep all of it
            let overlap = usize::try_from(cursor - start).unwrap_or(0).min(decoded);
            self.pending.extend(&self.pcm[overlap..decoded]);
        }
        Ok(())
    }
}

/// One encoded frame of the mix.
pub(super) struct MixedFrame {
    /// Frame start, in samples from the timeline's zero.
    pub time: u64,
    /// The Opus packet.
    pub packet: Vec<u8>,
    /// Each lane's RMS level (0 to 1) during this frame, by lane index; 0 for no audio.
    pub levels: Vec<f32>,
}

/// Mixes the lanes frame by frame and encodes the result.
pub(super) struct Mixer {
    lanes: Vec<Option<AudioLane>>,
    encoder: opus::Encoder,
    /// Mixed samples still to drop so the encoder's lookahead is absorbed.
    discard: usize,
    ready: VecDeque<i16>,
    levels: VecDeque<Vec<f32>>,
    next_mix: i64,
    next_frame: u64,
    frames: u64,
    sum: Vec<i32>,
    pcm: Vec<i16>,
}

impl Mixer {
    /// A mixer of `lanes` (`None` for a participant without audio) producing `frames`
    /// frames at `bitrate` bits per second.
    pub fn new(
        lanes: Vec<Option<AudioLane>>,
        frames: u64,
        bitrate: u32,
    ) -> Result<Self, opus::Error> {
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Audio)?;
        encoder.set_bitrate(Bitrate::Bits(i32::try_from(bitrate).unwrap_or(i32::MAX)))?;
        let discard = usize::try_from(encoder.get_lookahead()?).unwrap_or(0);
        Ok(Self {
            lanes,
            encoder,
            discard,
            ready: VecDeque::new(),
            levels: VecDeque::new(),
            next_mix: 0,
            next_frame: 0,
            frames,
            sum: vec![0; FRAME],
            pcm: vec![0; FRAME],
        })
    }

    /// The lanes, e.g. for their error counters.
    pub fn lanes(&self) -> &[Option<AudioLane>] {
        &self.lanes
    }

    /// The next encoded frame, or `None` after the last. A failure names the lane's index.
    pub fn next_frame(&mut self) -> Result<Option<MixedFrame>, MixError> {
        if self.next_frame >= self.frames {
            return Ok(None);
        }
        while self.ready.len() < FRAME || self.levels.is_empty() {
            self.mix_one()?;
        }
        self.pcm.clear();
        self.pcm.extend(self.ready.drain(..FRAME));
        let mut packet = vec![0; MAX_ENCODED];
        let size = self
            .encoder
            .encode(&self.pcm, &mut packet)
            .map_err(MixError::Encode)?;
        packet.truncate(size);
        let time = self.next_frame * FRAME as u64;
        self.next_frame += 1;
        Ok(Some(MixedFrame {
            time,
            packet,
            levels: self.levels.pop_front().unwrap_or_default(),
        }))
    }

    fn mix_one(&mut self) -> Result<(), MixError> {
        self.sum.fill(0);
        let mut levels = Vec::with_capacity(self.lanes.len());
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            let level = match lane {
                Some(lane) => lane
                    .mix_into(self.next_mix, &mut self.sum)
                    .map_err(|e| MixError::Input(index, e))?,
                None => 0.0,
            };
            levels.push(level);
        }
        self.levels.push_back(levels);
        self.next_mix += FRAME as i64;
        let skip = self.discard.min(FRAME);
        self.discard -= skip;
        let clipped = self.sum[skip..]
            .iter()
            .map(|&s| s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16);
        self.ready.extend(clipped);
        Ok(())
    }
}

/// Why the mix failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum MixError {
    /// Reading lane `.0`'s input failed.
    #[error("lane {0}: {1}")]
    Input(usize, SourceError),
    /// The Opus encoder failed.
    #[error("encoding Opus: {0}")]
    Encode(opus::Error),
}

/// RMS level below which a participant is not speaking (about -40 dBFS).
const SPEAKING: f32 = 0.01;
/// Weight of the newest frame in the smoothed level (about 200 ms time constant).
const SMOOTHING: f32 = 0.1;
/// A speaker keeps the emphasis at least this many frames (500 ms).
const HOLD_FRAMES: u32 = 25;
/// A challenger takes over when this much louder than the current speaker.
const TAKE_OVER: f32 = 1.5;

/// Picks the active speaker from per-frame levels: the loudest smoothed level above
/// [`SPEAKING`], held for at least [`HOLD_FRAMES`] so the emphasis does not flicker.
#[derive(Debug, Default)]
pub(super) struct SpeakerDetector {
    smoothed: Vec<f32>,
    current: Option<usize>,
    held: u32,
}

impl SpeakerDetector {
    /// Takes one frame's levels (by lane) and returns the active speaker.
    pub fn update(&mut self, levels: &[f32]) -> Option<usize> {
        self.smoothed.resize(levels.len(), 0.0);
        for (smoothed, &level) in self.smoothed.iter_mut().zip(levels) {
            *smoothed += (level - *smoothed) * SMOOTHING;
        }
        self.held = self.held.saturating_add(1);
        let loudest = self
            .smoothed
            .iter()
            .enumerate()
            .filter(|(_, l)| **l >= SPEAKING)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, l)| (i, *l));
        let current = self.current.map_or(0.0, |i| self.smoothed[i]);
        match loudest {
            Some((index, level))
                if Some(index) != self.current
                    && self.held >= HOLD_FRAMES
                    && (current < SPEAKING || level > current * TAKE_OVER) =>
            {
                self.current = Some(index);
                self.held = 0;
            }
            None if self.held >= HOLD_FRAMES => self.current = None,
            _ => {}
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loudest_speaker_wins_and_is_held() {
        let mut detector = SpeakerDetector::default();
        let mut speaker = None;
        for _ in 0..30 {
            speaker = detector.update(&[0.2, 0.0, 0.05]);
        }
        assert_eq!(speaker, Some(0));
        for _ in 0..10 {
            speaker = detector.update(&[0.0, 0.3, 0.0]);
        }
        assert_eq!(
            speaker,
            Some(0),
            "held, the new voice is not yet loud enough"
        );
        for _ in 0..40 {
            speaker = detector.update(&[0.0, 0.3, 0.0]);
        }
        assert_eq!(speaker, Some(1));
        for _ in 0..100 {
            speaker = detector.update(&[0.0, 0.0, 0.0]);
        }
        assert_eq!(speaker, None, "silence clears the emphasis");
    }
}
