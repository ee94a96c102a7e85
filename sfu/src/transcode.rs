//! A source's audio (an RTSP camera's, a SIP call's) transcoded to what every subscriber
//! decodes: Opus at 48 kHz in 20 ms frames (a source that sends Opus is published as it is).
//! G.711 (PCMU, PCMA) is expanded from its companding, G.722 and AAC-LC are decoded (ezk-g722,
//! symphonia); each is mixed down to mono, resampled to 48 kHz by linear interpolation, gathered into frames and
//! encoded. The RTP timestamp of each Opus packet follows the source's own clock, so a gap in
//! the source's audio stays a gap. Each packet carries the frame's loudness as an RFC 6464
//! audio level ([`AUDIO_LEVEL_EXT`]), so the meeting sees the source talk.

use bytes::BytesMut;
use ezk_g722::libg722::Bitrate;
use ezk_g722::libg722::decoder::Decoder as G722Decoder;
use opus::{Application, Channels, Encoder};
use rtc::shared::marshal::Marshal;
use std::panic::AssertUnwindSafe;
use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::SampleBuffer;
use symphonia_core::codecs::{CODEC_TYPE_AAC, CodecParameters, Decoder as _, DecoderOptions};
use symphonia_core::formats::Packet;
use tracing::warn;

/// The payload type a source's audio is published with.
pub const PAYLOAD_TYPE: u8 = 111;
/// The one-byte header extension id of the audio level in a source's transcoded Opus.
pub const AUDIO_LEVEL_EXT: u8 = 1;
/// The level of digital silence (-127 dBov).
const SILENT: u8 = 127;
/// Opus's clock and sample rate.
const OPUS_RATE: u32 = 48_000;
/// Opus samples per 20 ms frame at 48 kHz.
const FRAME: usize = 960;
/// The largest Opus packet written.
const MAX_PACKET: usize = 1_500;
/// Opus bit rate for a source's (speech) audio.
const BITRATE: i32 = 32_000;
/// Timestamps this close (48 kHz samples) to the expected one continue the run: rounding of
/// rates that do not divide 48 kHz.
const JITTER: u64 = 2;

/// The G.711 law a source sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU (North America, Japan).
    MuLaw,
    /// PCMA (elsewhere).
    ALaw,
}

impl Law {
    /// One 16-bit linear PCM sample companded (ITU-T G.711), the inverse of [`Law::expand`].
    pub fn compress(self, sample: i16) -> u8 {
        let negative = sample < 0;
        let magnitude = i32::from(sample).unsigned_abs().min(32_635);
        match self {
            Law::MuLaw => {
                let biased = magnitude + 0x84;
                let exponent = (31 - biased.leading_zeros()).saturating_sub(7).min(7);
                let mantissa = (biased >> (exponent + 3)) & 0x0f;
                !((u32::from(negative) << 7) | (exponent << 4) | mantissa) as u8
            }
            Law::ALaw => {
                let (exponent, mantissa) = if magnitude < 256 {
                    (0, (magnitude >> 4) & 0x0f)
                } else {
                    let exponent = (31 - magnitude.leading_zeros()) - 7;
                    (exponent, (magnitude >> (exponent + 3)) & 0x0f)
                };
                (((u32::from(!negative) << 7) | (exponent << 4) | mantissa) as u8) ^ 0x55
            }
        }
    }

    /// One companded sample as 16-bit linear PCM (ITU-T G.711).
    pub fn expand(self, byte: u8) -> i16 {
        match self {
            Law::MuLaw => {
                let b = !byte;
                let exponent = (b >> 4) & 0x07;
                let mantissa = i32::from(b & 0x0f);
                let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
                (if b & 0x80 != 0 { -magnitude } else { magnitude }) as i16
            }
            Law::ALaw => {
                let b = byte ^ 0x55;
                let exponent = (b >> 4) & 0x07;
                let mantissa = i32::from(b & 0x0f);
                let magnitude = if exponent == 0 {
                    (mantissa << 4) + 8
                } else {
                    ((mantissa << 4) + 0x108) << (exponent - 1)
                };
                (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
            }
        }
    }
}

/// A source's audio codec kaskade transcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAudio {
    /// G.711 at 8 kHz.
    G711(Law),
    /// G.722 at 64 kbit/s (16 kHz wideband).
    G722,
    /// AAC-LC, with its AudioSpecificConfig (from the SDP's `config`).
    Aac {
        /// The AudioSpecificConfig.
        config: Vec<u8>,
        /// The sample rate (the RTP clock rate).
        rate: u32,
    },
}

impl SourceAudio {
    /// The codec of an RTSP audio stream by its encoding name, clock rate and parameters'
    /// extra data (AAC's AudioSpecificConfig), when kaskade takes it.
    pub fn of(encoding: &str, rate: u32, extra_data: Option<&[u8]>) -> Option<Self> {
        match encoding.to_ascii_lowercase().as_str() {
            "pcmu" => Some(SourceAudio::G711(Law::MuLaw)),
            "pcma" => Some(SourceAudio::G711(Law::ALaw)),
            "g722" => Some(SourceAudio::G722),
            "mpeg4-generic" => Some(SourceAudio::Aac {
                config: extra_data?.to_vec(),
                rate,
            }),
            _ => None,
        }
    }

    /// The sample rate it decodes to.
    fn rate(&self) -> u32 {
        match self {
            SourceAudio::G711(_) => 8_000,
            SourceAudio::G722 => 16_000,
            SourceAudio::Aac { rate, .. } => *rate,
        }
    }

    /// The rate its RTP timestamps count: G.722's is 8 kHz though it samples at 16 (RFC 3551).
    fn clock_rate(&self) -> u32 {
        match self {
            SourceAudio::G722 => 8_000,
            other => other.rate(),
        }
    }
}

/// Turns one frame of a source's codec into mono samples.
enum Decoder {
    G711(Law),
    G722(Box<G722Decoder>),
    Aac(Box<AacDecoder>, Option<SampleBuffer<i16>>),
}

impl Decoder {
    fn new(codec: &SourceAudio) -> Result<Self, String> {
        Ok(match codec {
            SourceAudio::G711(law) => Decoder::G711(*law),
            SourceAudio::G722 => Decoder::G722(Box::new(G722Decoder::new(
                Bitrate::Mode1_64000,
                false,
                false,
            ))),
            SourceAudio::Aac { config, rate } => {
                let mut params = CodecParameters::new();
                params
                    .for_codec(CODEC_TYPE_AAC)
                    .with_sample_rate(*rate)
                    .with_extra_data(config.clone().into_boxed_slice());
                let decoder = AacDecoder::try_new(&params, &DecoderOptions::default())
                    .map_err(|e| format!("the source's AAC: {e}"))?;
                Decoder::Aac(Box::new(decoder), None)
            }
        })
    }

    /// Appends the mono samples of `data` to `pcm`.
    fn decode(&mut self, data: &[u8], pcm: &mut Vec<i16>) -> Result<(), String> {
        match self {
            Decoder::G711(law) => pcm.extend(data.iter().map(|b| law.expand(*b))),
            Decoder::G722(decoder) => pcm.extend(decoder.decode(data)),
            Decoder::Aac(decoder, buffer) => {
                let decoded = decoder
                    .decode(&Packet::new_from_slice(0, 0, 1_024, data))
                    .map_err(|e| e.to_string())?;
                let spec = *decoded.spec();
                let channels = spec.channels.count().max(1);
                let buffer = buffer
                    .get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
                if buffer.capacity() < decoded.capacity() * channels {
                    *buffer = SampleBuffer::new(decoded.capacity() as u64, spec);
                }
                buffer.copy_interleaved_ref(decoded);
                pcm.extend(buffer.samples().chunks(channels).map(|frame| {
                    (frame.iter().map(|s| i32::from(*s)).sum::<i32>() / channels as i32) as i16
                }));
            }
        }
        Ok(())
    }
}

/// Linear interpolation from one sample rate to 48 kHz, continuous across calls.
struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Where the next output sample falls after `last`, in input samples (0 to 1].
    phase: f64,
    last: Option<i16>,
}

impl Resampler {
    fn new(input_rate: u32) -> Self {
        let step = f64::from(input_rate) / f64::from(OPUS_RATE);
        Self {
            step,
            phase: step,
            last: None,
        }
    }

    fn reset(&mut self) {
        self.phase = self.step;
        self.last = None;
    }

    fn push(&mut self, input: &[i16], out: &mut Vec<i16>) {
        for &next in input {
            let last = *self.last.get_or_insert(next);
            while self.phase <= 1.0 {
                let value = f64::from(last) + (f64::from(next) - f64::from(last)) * self.phase;
                out.push(value.round() as i16);
                self.phase += self.step;
            }
            self.phase -= 1.0;
            self.last = Some(next);
        }
    }
}

/// A source's audio in, Opus RTP packets out.
pub struct AudioTranscoder {
    decoder: Decoder,
    /// The rate of the source's RTP timestamps.
    clock_rate: u32,
    resampler: Resampler,
    encoder: Encoder,
    ssrc: u32,
    seq: u16,
    /// Decoded samples at the source's rate, reused.
    pcm: Vec<i16>,
    /// 48 kHz samples waiting for a whole frame.
    pending: Vec<i16>,
    /// 48 kHz timestamp of `pending[0]`.
    pending_start: Option<u64>,
    encoded: Vec<u8>,
}

impl AudioTranscoder {
    /// A transcoder of `codec` audio into an Opus stream with SSRC `ssrc`.
    pub fn new(codec: &SourceAudio, ssrc: u32, seq: u16) -> Result<Self, String> {
        Ok(Self {
            decoder: Decoder::new(codec)?,
            clock_rate: codec.clock_rate(),
            resampler: Resampler::new(codec.rate()),
            encoder: speech_encoder()?,
            ssrc,
            seq,
            pcm: Vec::new(),
            pending: Vec::with_capacity(2 * FRAME),
            pending_start: None,
            encoded: vec![0; MAX_PACKET],
        })
    }

    /// The sequence number of the next packet it writes.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// Takes one frame of the source's audio whose first sample has timestamp `timestamp` (the
    /// source's clock, extended); appends the Opus packets completed to `out`. A frame that does
    /// not decode is left out (a gap).
    pub fn push(&mut self, timestamp: i64, data: &[u8], out: &mut Vec<BytesMut>) {
        self.pcm.clear();
        if self.decoder.decode(data, &mut self.pcm).is_err() {
            return;
        }
        let start = (timestamp.max(0) as u64) * u64::from(OPUS_RATE) / u64::from(self.clock_rate);
        let expected = self.pending_start.map(|s| s + self.pending.len() as u64);
        if expected.is_none_or(|e| e.abs_diff(start) > JITTER) {
            // the first frame, or a gap (loss, a source that paused): start a new run so the
            // encoded timestamps stay the source's
            self.pending.clear();
            self.pending_start = Some(start);
            self.resampler.reset();
        }
        self.resampler.push(&self.pcm, &mut self.pending);
        let mut consumed = 0;
        while self.pending.len() - consumed >= FRAME {
            let frame_start = self.pending_start.unwrap_or_default() + consumed as u64;
            let frame = &self.pending[consumed..consumed + FRAME];
            let level = audio_level(frame);
            let encoder = &mut self.encoder;
            let encoded = &mut self.encoded;
            match std::panic::catch_unwind(AssertUnwindSafe(|| encoder.encode(frame, encoded))) {
                Ok(Ok(len)) => self.write(frame_start as u32, (len, level), out),
                Ok(Err(_)) => {}
                // mousiki (the pure-Rust Opus) asserts on some loud frames that libopus takes
                // (its SILK pitch analysis divides by an energy that wrapped to zero): the frame
                // is dropped and the encoder, in a state nobody knows, made anew
                Err(_) => {
                    warn!(
                        ssrc = self.ssrc,
                        "the Opus encoder failed on a frame: dropped"
                    );
                    if let Ok(encoder) = speech_encoder() {
                        self.encoder = encoder;
                    }
                }
            }
            consumed += FRAME;
        }
        self.pending.drain(..consumed);
        if let Some(start) = &mut self.pending_start {
            *start += consumed as u64;
        }
    }

    fn write(&mut self, timestamp: u32, (len, level): (usize, u8), out: &mut Vec<BytesMut>) {
        let header = OpusHeader {
            ssrc: self.ssrc,
            seq: self.seq,
            timestamp,
            level: Some(level),
        };
        self.seq = self.seq.wrapping_add(1);
        out.extend(header.packet(&self.encoded[..len]));
    }
}

/// The RFC 6464 level of `frame`: its loudness in -dBov (0 the loudest, 127 silence).
fn audio_level(frame: &[i16]) -> u8 {
    let energy: f64 = frame.iter().map(|&s| f64::from(s).powi(2)).sum();
    let rms = (energy / frame.len().max(1) as f64).sqrt() / f64::from(i16::MAX);
    if rms <= 0.0 {
        return SILENT;
    }
    (-20.0 * rms.log10()).clamp(0.0, f64::from(SILENT)) as u8
}

/// The RTP header fields of one Opus packet a source publishes.
#[derive(Debug, Clone, Copy)]
pub struct OpusHeader {
    /// The source's audio SSRC.
    pub ssrc: u32,
    /// The packet's sequence number.
    pub seq: u16,
    /// Its 48 kHz timestamp.
    pub timestamp: u32,
    /// The frame's audio level (-dBov), when it is known.
    pub level: Option<u8>,
}

impl OpusHeader {
    /// The RTP packet of the Opus packet `payload`, published with [`PAYLOAD_TYPE`] (and its
    /// level as [`AUDIO_LEVEL_EXT`]).
    pub fn packet(self, payload: &[u8]) -> Option<BytesMut> {
        let mut header = rtc::rtp::header::Header {
            version: 2,
            payload_type: PAYLOAD_TYPE,
            sequence_number: self.seq,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        if let Some(level) = self.level {
            // RFC 6464: the voice activity bit, then the level
            let byte = if level < SILENT { 0x80 | level } else { SILENT };
            header
                .set_extension(AUDIO_LEVEL_EXT, bytes::Bytes::copy_from_slice(&[byte]))
                .ok()?;
        }
        let packet = rtc::rtp::Packet {
            header,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        let bytes = packet.marshal().ok()?;
        Some(BytesMut::from(&bytes[..]))
    }
}

/// The Opus encoder of transcoded speech: mono, VoIP, [`BITRATE`].
fn speech_encoder() -> Result<Encoder, String> {
    let mut encoder =
        Encoder::new(OPUS_RATE, Channels::Mono, Application::Voip).map_err(|e| e.to_string())?;
    encoder
        .set_bitrate(opus::Bitrate::Bits(BITRATE))
        .map_err(|e| e.to_string())?;
    Ok(encoder)
}

#[cfg(test)]
mod tests;
