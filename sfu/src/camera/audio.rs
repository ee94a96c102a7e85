//! A camera's G.711 audio (PCMU or PCMA, 8 kHz) transcoded to what every subscriber decodes:
//! Opus at 48 kHz in 20 ms frames. Samples are expanded from the G.711 companding, upsampled
//! six times by linear interpolation, gathered into frames and encoded; the RTP timestamp of
//! each Opus packet follows the camera's own, so a gap in the camera's audio stays a gap.

use bytes::BytesMut;
use opus::{Application, Channels, Encoder};
use rtc::shared::marshal::Marshal;

/// The payload type a camera's audio is published with.
pub const PAYLOAD_TYPE: u8 = 111;
/// Opus samples per 20 ms frame at 48 kHz.
const FRAME: usize = 960;
/// 48 kHz samples per 8 kHz sample.
const UPSAMPLE: usize = 6;
/// The largest Opus packet written.
const MAX_PACKET: usize = 1_500;
/// Opus bit rate for a camera's (speech) audio.
const BITRATE: i32 = 32_000;

/// The G.711 law a camera sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU (North America, Japan).
    MuLaw,
    /// PCMA (elsewhere).
    ALaw,
}

impl Law {
    /// The law of an RTP encoding name, if it is G.711.
    pub fn of(encoding: &str) -> Option<Self> {
        match encoding.to_ascii_lowercase().as_str() {
            "pcmu" => Some(Law::MuLaw),
            "pcma" => Some(Law::ALaw),
            _ => None,
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

/// G.711 in, Opus RTP packets out.
pub struct AudioTranscoder {
    law: Law,
    encoder: Encoder,
    ssrc: u32,
    seq: u16,
    /// 48 kHz samples waiting for a whole frame.
    pending: Vec<i16>,
    /// 48 kHz RTP timestamp of `pending[0]`.
    pending_start: Option<u32>,
    /// The last 8 kHz sample, for interpolating across packets.
    last: i16,
    encoded: Vec<u8>,
}

impl AudioTranscoder {
    /// A transcoder of `law` audio into an Opus stream with SSRC `ssrc`.
    pub fn new(law: Law, ssrc: u32, seq: u16) -> Result<Self, opus::Error> {
        let mut encoder = Encoder::new(48_000, Channels::Mono, Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(BITRATE))?;
        Ok(Self {
            law,
            encoder,
            ssrc,
            seq,
            pending: Vec::with_capacity(2 * FRAME),
            pending_start: None,
            last: 0,
            encoded: vec![0; MAX_PACKET],
        })
    }

    /// Takes one frame of G.711 bytes whose first sample has 8 kHz timestamp `timestamp`;
    /// appends the Opus packets completed to `out`.
    pub fn push(&mut self, timestamp: u32, samples: &[u8], out: &mut Vec<BytesMut>) {
        let start = timestamp.wrapping_mul(UPSAMPLE as u32);
        let expected = self
            .pending_start
            .map(|s| s.wrapping_add(self.pending.len() as u32));
        if expected != Some(start) {
            // the first packet, or a gap (loss, a camera that paused): start a new run so
            // the encoded timestamps stay the camera's
            self.pending.clear();
            self.pending_start = Some(start);
            self.last = samples.first().map(|b| self.law.expand(*b)).unwrap_or(0);
        }
        for &byte in samples {
            let next = i32::from(self.law.expand(byte));
            let prev = i32::from(self.last);
            for step in 1..=UPSAMPLE as i32 {
                self.pending
                    .push((prev + (next - prev) * step / UPSAMPLE as i32) as i16);
            }
            self.last = next as i16;
        }
        let mut consumed = 0;
        while self.pending.len() - consumed >= FRAME {
            let frame_start = self
                .pending_start
                .unwrap_or_default()
                .wrapping_add(consumed as u32);
            let frame = &self.pending[consumed..consumed + FRAME];
            if let Ok(len) = self.encoder.encode(frame, &mut self.encoded) {
                let packet = rtc::rtp::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        payload_type: PAYLOAD_TYPE,
                        sequence_number: self.seq,
                        timestamp: frame_start,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::copy_from_slice(&self.encoded[..len]),
                };
                self.seq = self.seq.wrapping_add(1);
                if let Ok(bytes) = packet.marshal() {
                    out.push(BytesMut::from(&bytes[..]));
                }
            }
            consumed += FRAME;
        }
        self.pending.drain(..consumed);
        if let Some(start) = &mut self.pending_start {
            *start = start.wrapping_add(consumed as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;

    #[test]
    fn g711_expands_as_the_itu_tables_say() {
        // (companded, linear) pairs from ITU-T G.711's tables
        assert_eq!(Law::MuLaw.expand(0xff), 0);
        assert_eq!(Law::MuLaw.expand(0x7f), 0);
        assert_eq!(Law::MuLaw.expand(0x80), 32_124);
        assert_eq!(Law::MuLaw.expand(0x00), -32_124);
        assert_eq!(Law::ALaw.expand(0xd5), 8);
        assert_eq!(Law::ALaw.expand(0x55), -8);
        assert_eq!(Law::ALaw.expand(0xaa), 32_256);
        assert_eq!(Law::ALaw.expand(0x2a), -32_256);
        assert_eq!(Law::of("PCMU"), Some(Law::MuLaw));
        assert_eq!(Law::of("pcma"), Some(Law::ALaw));
        assert_eq!(Law::of("mpeg4-generic"), None);
    }

    #[test]
    fn a_tone_becomes_20_ms_opus_packets_on_the_cameras_clock_that_decode_to_the_tone() {
        let mut t = AudioTranscoder::new(Law::MuLaw, 7, 100).unwrap();
        let mut out = Vec::new();
        // 1 s of a 440 Hz tone at 8 kHz, in 20 ms (160-sample) camera packets
        let mu = |x: f64| -> u8 {
            // the closest mu-law byte by search: exact enough for a test signal
            (0..=255u8)
                .min_by_key(|b| (f64::from(Law::MuLaw.expand(*b)) - x).abs() as i64)
                .unwrap()
        };
        let tone: Vec<u8> = (0..8_000)
            .map(|n| mu(8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 8_000.0).sin()))
            .collect();
        for (i, chunk) in tone.chunks(160).enumerate() {
            t.push(1_000 + (i * 160) as u32, chunk, &mut out);
        }
        assert_eq!(out.len(), 50);
        let packets: Vec<_> = out
            .iter()
            .map(|d| rtc::rtp::Packet::unmarshal(&mut &d[..]).unwrap())
            .collect();
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.header.timestamp, 6_000 + (i * FRAME) as u32);
            assert_eq!(p.header.sequence_number, 100 + i as u16);
            assert_eq!(p.header.payload_type, PAYLOAD_TYPE);
        }
        let mut decoder = opus::Decoder::new(48_000, Channels::Mono).unwrap();
        let mut pcm = vec![0i16; FRAME];
        let mut energy = 0f64;
        for p in &packets[10..] {
            let n = decoder.decode(&p.payload, &mut pcm, false).unwrap();
            assert_eq!(n, FRAME);
            energy += pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
        }
        let rms = (energy / (40.0 * FRAME as f64)).sqrt();
        assert!(
            (3_000.0..9_000.0).contains(&rms),
            "the tone came through: rms {rms}"
        );
    }

    #[test]
    fn a_gap_in_the_cameras_audio_restarts_the_run_at_the_cameras_timestamp() {
        let mut t = AudioTranscoder::new(Law::ALaw, 7, 0).unwrap();
        let mut out = Vec::new();
        t.push(0, &[0xd5; 160], &mut out);
        t.push(8_000, &[0xd5; 160], &mut out);
        let stamps: Vec<u32> = out
            .iter()
            .map(|d| {
                rtc::rtp::Packet::unmarshal(&mut &d[..])
                    .unwrap()
                    .header
                    .timestamp
            })
            .collect();
        assert_eq!(stamps, [0, 48_000]);
    }
}
