//! Synthetic Opus audio source: a 440 Hz tone, 20 ms frames at 48 kHz, looped.
//!
//! One second of tone (exactly 440 periods, so the loop is seamless) is encoded once per
//! process and shared. Each packet carries the RFC 6464 client-to-mixer audio level header
//! extension (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`); the level (0 = loudest,
//! 127 = silence, in -dBov) is what the SFU's active-speaker detection reads, so a test makes
//! one participant "speak" by giving it a low level. [`audio_level_payload`] returns the
//! one-byte extension value without allocating.
//!
//! A sync-mark clip ([`OpusClip::sync_marks`]) is silence except a 100 ms, 1 kHz beep that
//! starts at the same instant of the loop as the white frame of a sync-mark video clip.

use std::sync::{Arc, OnceLock};

use crate::clip_cache::ClipCache;

use anyhow::{Context, Result};
use bytes::Bytes;
use opus::{Application, Channels, Encoder};

use crate::video::sync_mark_second;

/// URI of the RFC 6464 audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// The RTP clock rate of Opus.
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// Samples per 20 ms frame at 48 kHz.
pub const OPUS_FRAME_SAMPLES: u32 = 960;
/// Tone frequency.
pub const TONE_HZ: f32 = 440.0;
/// Audio level for a loud speaker (-10 dBov).
pub const LEVEL_LOUD: u8 = 10;
/// Audio level for silence (-127 dBov).
pub const LEVEL_SILENT: u8 = 127;
/// 20 ms frames per second.
pub const OPUS_FRAMES_PER_SECOND: u32 = OPUS_CLOCK_RATE / OPUS_FRAME_SAMPLES;
/// Frequency of the sync-mark beep.
pub const BEEP_HZ: f32 = 1000.0;
/// Length of the sync-mark beep in 20 ms frames (100 ms).
pub const BEEP_FRAMES: u32 = 5;
/// Amplitude of the sync-mark beep (about -6 dBFS).
const BEEP_AMPLITUDE: f32 = 16_000.0;

/// A looped, pre-encoded Opus clip: the tone, or silence with sync-mark beeps.
#[derive(Debug)]
pub struct OpusClip {
    frames: Vec<Bytes>,
    sync_marks: bool,
}

impl OpusClip {
    /// Encodes one second of a 440 Hz mono tone into 50 Opus frames.
    pub fn encode() -> Result<Self> {
        let mut encoder = Encoder::new(OPUS_CLOCK_RATE, Channels::Mono, Application::Voip)
            .context("creating Opus encoder")?;
        let mut pcm = [0i16; OPUS_FRAME_SAMPLES as usize];
        let mut out = [0u8; 1500];
        let mut frames = Vec::with_capacity(OPUS_FRAMES_PER_SECOND as usize);
        for frame in 0..OPUS_FRAMES_PER_SECOND {
            for (i, sample) in pcm.iter_mut().enumerate() {
                let n = frame * OPUS_FRAME_SAMPLES + i as u32;
                let phase =
                    2.0 * std::f32::consts::PI * TONE_HZ * n as f32 / OPUS_CLOCK_RATE as f32;
                *sample = (phase.sin() * 8000.0) as i16;
            }
            let len = encoder.encode(&pcm, &mut out).context("encoding Opus")?;
            frames.push(Bytes::copy_from_slice(&out[..len]));
        }
        Ok(Self {
            frames,
            sync_marks: false,
        })
    }

    /// Encodes `loop_seconds` (at least 1) of silence with a [`BEEP_FRAMES`]-frame, [`BEEP_HZ`]
    /// beep whose decoded sound starts at the first frame of second [`sync_mark_second`],
    /// within [`MARK_TOLERANCE`] (the codec's delay, measured by decoding, is compensated: the
    /// beep is fed that many samples early).
    pub fn sync_marks(loop_seconds: u32) -> Result<Self> {
        let loop_seconds = loop_seconds.max(1);
        let mut encoder = Encoder::new(OPUS_CLOCK_RATE, Channels::Mono, Application::Voip)
            .context("creating Opus encoder")?;
        // Start from the lookahead the encoder reports, then correct by where the beep is
        // really heard: an encoder's real delay may differ from what it reports, and where
        // it places an onset moves in steps (the 5 ms subframes of SILK). The closest of a few
        // corrections is kept.
        let mut delay = i64::from(encoder.get_lookahead().context("Opus lookahead")?);
        let mut best: Option<(i64, Vec<Bytes>)> = None;
        for _ in 0..4 {
            let frames = encode_sync_loop(loop_seconds, delay)?;
            let late = beep_lateness(&frames, loop_seconds)?;
            if best.as_ref().is_none_or(|(b, _)| late.abs() < b.abs()) {
                best = Some((late, frames));
            }
            if late == 0 {
                break;
            }
            delay += late;
        }
        match best {
            Some((late, frames)) if late.abs() <= i64::from(MARK_TOLERANCE) => Ok(Self {
                frames,
                sync_marks: true,
            }),
            _ => anyhow::bail!("the sync-mark beep could not be placed on its mark"),
        }
    }

    /// The process-wide shared sync-mark clip of `loop_seconds`.
    pub fn shared_sync_marks(loop_seconds: u32) -> Result<Arc<Self>> {
        static CACHE: OnceLock<ClipCache<u32, OpusClip>> = OnceLock::new();
        CACHE
            .get_or_init(ClipCache::default)
            .get_or_encode(loop_seconds, || Self::sync_marks(loop_seconds))
    }

    /// Whether this is a sync-mark clip, whose frames must be sent by wall-clock time (frame
    /// `n` of the loop at `n` x 20 ms after the participant's media origin).
    pub fn is_sync_marked(&self) -> bool {
        self.sync_marks
    }

    /// The process-wide shared clip.
    pub fn shared() -> Result<Arc<Self>> {
        static CACHE: OnceLock<ClipCache<(), OpusClip>> = OnceLock::new();
        CACHE
            .get_or_init(ClipCache::default)
            .get_or_encode((), Self::encode)
    }

    /// The encoded 20 ms frames.
    pub fn frames(&self) -> &[Bytes] {
        &self.frames
    }

    /// The frame for packet number `n` of the loop.
    pub fn frame(&self, n: u64) -> &Bytes {
        &self.frames[(n % self.frames.len() as u64) as usize]
    }
}

static LEVEL_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i as u8;
        i += 1;
    }
    table
};

/// The RFC 6464 one-byte extension value for `level` (clamped to 0..=127) with the voice
/// activity bit set when `level < 127`; a static slice, so no allocation per packet.
pub fn audio_level_payload(level: u8) -> Bytes {
    let level = level.min(LEVEL_SILENT);
    let byte = if level < LEVEL_SILENT {
        0x80 | level
    } else {
        level
    } as usize;
    Bytes::from_static(&LEVEL_BYTES[byte..byte + 1])
}

/// Samples in one window of [`onsets`] (1 ms).
const ONSET_WINDOW: usize = 48;
/// How far from its mark the decoded beep may start: one 5 ms SILK subframe, the step in which
/// the encoder places an onset.
pub const MARK_TOLERANCE: u32 = OPUS_CLOCK_RATE / 200;

/// One loop of the sync-mark clip, the beep fed `delay` samples ahead of its mark. The loop is
/// encoded twice and the second pass kept, so that its start follows its end seamlessly.
fn encode_sync_loop(loop_seconds: u32, delay: i64) -> Result<Vec<Bytes>> {
    let mut encoder = Encoder::new(OPUS_CLOCK_RATE, Channels::Mono, Application::Voip)
        .context("creating Opus encoder")?;
    let loop_frames = loop_seconds * OPUS_FRAMES_PER_SECOND;
    let loop_samples = i64::from(loop_frames * OPUS_FRAME_SAMPLES);
    let beep_start = i64::from(sync_mark_second(loop_seconds) * OPUS_CLOCK_RATE);
    let beep_len = i64::from(BEEP_FRAMES * OPUS_FRAME_SAMPLES);
    let mut pcm = [0i16; OPUS_FRAME_SAMPLES as usize];
    let mut out = [0u8; 1500];
    let mut frames = Vec::with_capacity(loop_frames as usize);
    for pass in 0..2 {
        for frame in 0..loop_frames {
            for (i, sample) in pcm.iter_mut().enumerate() {
                let n = i64::from(frame * OPUS_FRAME_SAMPLES) + i as i64;
                // Where this input sample is heard once decoded, relative to the beep.
                let heard = (n + delay - beep_start).rem_euclid(loop_samples);
                *sample = if heard < beep_len {
                    let phase = 2.0 * std::f32::consts::PI * BEEP_HZ * heard as f32
                        / OPUS_CLOCK_RATE as f32;
                    (phase.sin() * BEEP_AMPLITUDE) as i16
                } else {
                    0
                };
            }
            let len = encoder.encode(&pcm, &mut out).context("encoding Opus")?;
            if pass == 1 {
                frames.push(Bytes::copy_from_slice(&out[..len]));
            }
        }
    }
    Ok(frames)
}

/// How many samples after its mark the beep of the loop's second play is heard (negative:
/// before it), decoding two plays of `frames`.
fn beep_lateness(frames: &[Bytes], loop_seconds: u32) -> Result<i64> {
    let mut decoder =
        opus::Decoder::new(OPUS_CLOCK_RATE, Channels::Mono).context("creating Opus decoder")?;
    let mut pcm = [0i16; OPUS_FRAME_SAMPLES as usize];
    let mut decoded = Vec::with_capacity(2 * frames.len() * OPUS_FRAME_SAMPLES as usize);
    for frame in frames.iter().chain(frames) {
        let n = decoder
            .decode(frame, &mut pcm, false)
            .context("decoding Opus")?;
        decoded.extend_from_slice(&pcm[..n]);
    }
    let mark = i64::from((loop_seconds + sync_mark_second(loop_seconds)) * OPUS_CLOCK_RATE);
    onsets(&decoded)
        .into_iter()
        .map(|at| at as i64 - mark)
        .min_by_key(|late| late.abs())
        .context("the sync-mark beep is not heard")
}

/// Start samples of the 1 ms windows where a sound (above a quarter of the beep's amplitude)
/// turns on after at least 10 ms of quiet.
fn onsets(pcm: &[i16]) -> Vec<usize> {
    let loud: Vec<bool> = pcm
        .chunks(ONSET_WINDOW)
        .map(|w| w.iter().map(|s| i32::from(*s).abs()).max().unwrap_or(0) > 4000)
        .collect();
    (10..loud.len())
        .filter(|&i| loud[i] && loud[i - 10..i].iter().all(|l| !l))
        .map(|i| i * ONSET_WINDOW)
        .collect()
}

/// Parses an RFC 6464 extension value into `(level, voice)`.
pub fn parse_audio_level(payload: &[u8]) -> Option<(u8, bool)> {
    payload.first().map(|b| (b & 0x7F, b & 0x80 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded clip, looped `loops` times.
    fn decode(clip: &OpusClip, loops: usize) -> Vec<i16> {
        let mut decoder = opus::Decoder::new(OPUS_CLOCK_RATE, Channels::Mono).unwrap();
        let mut pcm = [0i16; OPUS_FRAME_SAMPLES as usize];
        let mut all = Vec::new();
        for frame in clip
            .frames()
            .iter()
            .cycle()
            .take(clip.frames().len() * loops)
        {
            let n = decoder.decode(frame, &mut pcm, false).unwrap();
            all.extend_from_slice(&pcm[..n]);
        }
        all
    }

    #[test]
    fn the_beep_is_heard_at_the_marked_second_of_every_loop() {
        for seconds in [1, 2, 3] {
            let clip = OpusClip::sync_marks(seconds).unwrap();
            assert!(clip.is_sync_marked());
            assert_eq!(clip.frames().len() as u32, seconds * OPUS_FRAMES_PER_SECOND);
            let loop_samples = (seconds * OPUS_CLOCK_RATE) as usize;
            let mark = (sync_mark_second(seconds) * OPUS_CLOCK_RATE) as usize;
            let expected: Vec<usize> = (0..3)
                .map(|l| l * loop_samples + mark)
                .filter(|&t| t >= 480)
                .collect();
            let found = onsets(&decode(&clip, 3));
            assert_eq!(found.len(), expected.len(), "{seconds} s: {found:?}");
            for (f, e) in found.iter().zip(&expected) {
                // within one 5 ms subframe, plus one 1 ms detection window
                assert!(
                    f.abs_diff(*e) <= (MARK_TOLERANCE as usize) + 48,
                    "{seconds} s: heard at {f}, marked at {e}"
                );
            }
        }
    }

    #[test]
    fn the_tone_clip_is_not_sync_marked() {
        assert!(!OpusClip::shared().unwrap().is_sync_marked());
    }
}
