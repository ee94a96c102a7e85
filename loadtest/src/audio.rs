//! Synthetic Opus audio source: a 440 Hz tone, 20 ms frames at 48 kHz, looped.
//!
//! One second of tone (exactly 440 periods, so the loop is seamless) is encoded once per
//! process and shared. Each packet carries the RFC 6464 client-to-mixer audio level header
//! extension (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`); the level (0 = loudest,
//! 127 = silence, in -dBov) is what the SFU's active-speaker detection reads, so a test makes
//! one participant "speak" by giving it a low level. [`audio_level_payload`] returns the
//! one-byte extension value without allocating.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use bytes::Bytes;
use opus::{Application, Channels, Encoder};

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

/// A looped, pre-encoded Opus tone.
#[derive(Debug)]
pub struct OpusClip {
    frames: Vec<Bytes>,
}

impl OpusClip {
    /// Encodes one second of a 440 Hz mono tone into 50 Opus frames.
    pub fn encode() -> Result<Self> {
        let mut encoder = Encoder::new(OPUS_CLOCK_RATE, Channels::Mono, Application::Voip)
            .context("creating Opus encoder")?;
        let mut pcm = [0i16; OPUS_FRAME_SAMPLES as usize];
        let mut out = [0u8; 1500];
        let frames_per_second = OPUS_CLOCK_RATE / OPUS_FRAME_SAMPLES;
        let mut frames = Vec::with_capacity(frames_per_second as usize);
        for frame in 0..frames_per_second {
            for (i, sample) in pcm.iter_mut().enumerate() {
                let n = frame * OPUS_FRAME_SAMPLES + i as u32;
                let phase =
                    2.0 * std::f32::consts::PI * TONE_HZ * n as f32 / OPUS_CLOCK_RATE as f32;
                *sample = (phase.sin() * 8000.0) as i16;
            }
            let len = encoder.encode(&pcm, &mut out).context("encoding Opus")?;
            frames.push(Bytes::copy_from_slice(&out[..len]));
        }
        Ok(Self { frames })
    }

    /// The process-wide shared clip.
    pub fn shared() -> Result<Arc<Self>> {
        static CLIP: OnceLock<Arc<OpusClip>> = OnceLock::new();
        if let Some(clip) = CLIP.get() {
            return Ok(Arc::clone(clip));
        }
        let clip = Arc::new(Self::encode()?);
        Ok(Arc::clone(CLIP.get_or_init(|| clip)))
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

/// Parses an RFC 6464 extension value into `(level, voice)`.
pub fn parse_audio_level(payload: &[u8]) -> Option<(u8, bool)> {
    payload.first().map(|b| (b & 0x7F, b & 0x80 != 0))
}
