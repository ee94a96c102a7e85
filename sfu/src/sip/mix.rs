//! The meeting's sound for a SIP call's far end: what the node delivers (every other
//! participant's Opus, one consumer SSRC each) decoded and mixed every 20 ms, and encoded in
//! the codec the call agreed (Opus, G.722 at 16 kHz, or G.711 at 8 kHz), with DTMF events
//! taking the audio's place while they sound.
//!
//! The mix is a plain sum, clipped; each talker's decoded samples wait in a short queue (at
//! most [`MAX_QUEUED`]) so that late packets neither pile up latency nor leave holes. The far
//! end always receives a packet every 20 ms (silence when nobody talks): room systems hang up
//! on a call whose RTP stops.

use crate::sip::dtmf::{EventStream, Timed};
use crate::sip::h264::rtp_parts;
use crate::sip::sdp::{AudioCodec, AudioLine};
use crate::transcode::Law;
use ezk_g722::libg722::Bitrate;
use ezk_g722::libg722::encoder::Encoder as G722Encoder;
use opus::{Application, Channels, Decoder, Encoder};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Samples of one 20 ms frame at 48 kHz.
const FRAME: usize = 960;
/// 48 kHz samples per G.711 sample.
const DOWNSAMPLE: usize = 6;
/// The most decoded samples a talker keeps waiting (100 ms): older ones are dropped.
const MAX_QUEUED: usize = 5 * FRAME;
/// The payload type of what the node delivers.
const DELIVERED_OPUS: u8 = kaskade_media::media::ingest::DELIVERED_AUDIO;
/// A talker silent this long is forgotten (its decoder freed).
const FORGET: Duration = Duration::from_secs(10);
/// Opus bit rate of the mix.
const OPUS_BITRATE: i32 = 32_000;
/// The largest encoded frame.
const MAX_PACKET: usize = 1_500;

/// One participant heard in the mix.
struct Talker {
    decoder: Decoder,
    queued: VecDeque<i16>,
    heard: Instant,
}

/// How the mix is encoded for the far end.
enum Encoding {
    Opus(Box<Encoder>),
    /// G.722 at 64 kbit/s, from 16 kHz samples.
    G722(Box<G722Encoder>),
    G711(Law),
}

/// The meeting's audio for one call, and the call's outgoing RTP stream.
pub struct Mixer {
    talkers: HashMap<u32, Talker>,
    encoding: Encoding,
    payload_type: u8,
    /// RTP clock ticks per frame (960 for Opus, 160 for G.711).
    ticks: u32,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    events: Option<crate::sip::sdp::TelephoneEvent>,
    /// DTMF packets to send, each at its time.
    keys: VecDeque<(Instant, Vec<u8>)>,
    /// The RTP timestamp after the last key scheduled.
    keys_timestamp: u32,
    /// A recorded prompt being played (the voice menu), 48 kHz samples, mixed in like a
    /// talker.
    prompt: VecDeque<i16>,
    mixed: Vec<i32>,
    pcm: Vec<i16>,
    encoded: Vec<u8>,
}

impl Mixer {
    /// A mixer for the agreed `line`, sending as `ssrc` from sequence number `seq` and
    /// timestamp `timestamp`.
    pub fn new(line: &AudioLine, ssrc: u32, seq: u16, timestamp: u32) -> Result<Self, String> {
        let (encoding, ticks) = match line.codec {
            AudioCodec::Opus => {
                let mut encoder = Encoder::new(48_000, Channels::Mono, Application::Voip)
                    .map_err(|e| e.to_string())?;
                encoder
                    .set_bitrate(opus::Bitrate::Bits(OPUS_BITRATE))
                    .map_err(|e| e.to_string())?;
                (Encoding::Opus(Box::new(encoder)), FRAME as u32)
            }
            AudioCodec::G722 => {
                let encoder = G722Encoder::new(Bitrate::Mode1_64000, false, false);
                // 20 ms is 160 ticks of G.722's 8 kHz RTP clock
                (
                    Encoding::G722(Box::new(encoder)),
                    (FRAME / DOWNSAMPLE) as u32,
                )
            }
            AudioCodec::Pcmu => (Encoding::G711(Law::MuLaw), (FRAME / DOWNSAMPLE) as u32),
            AudioCodec::Pcma => (Encoding::G711(Law::ALaw), (FRAME / DOWNSAMPLE) as u32),
        };
        Ok(Self {
            talkers: HashMap::new(),
            encoding,
            payload_type: line.send_payload_type,
            ticks,
            ssrc,
            seq,
            timestamp,
            events: line.telephone_event,
            keys: VecDeque::new(),
            keys_timestamp: timestamp,
            prompt: VecDeque::new(),
            mixed: vec![0; FRAME],
            pcm: vec![0; FRAME],
            encoded: vec![0; MAX_PACKET],
        })
    }

    /// The sequence number and timestamp of the stream's next packet (a new mixer for a
    /// changed agreement continues from there).
    pub fn position(&self) -> (u16, u32) {
        (self.seq, self.timestamp)
    }

    /// Plays `pcm` (8 kHz samples) after what is playing, resampled to 48 kHz.
    pub fn say(&mut self, pcm: &[i16]) {
        for pair in pcm.windows(2) {
            let (from, to) = (i32::from(pair[0]), i32::from(pair[1]));
            let step = DOWNSAMPLE as i32;
            self.prompt
                .extend((0..step).map(|i| (from + (to - from) * i / step) as i16));
        }
    }

    /// Whether a prompt is still playing.
    pub fn saying(&self) -> bool {
        !self.prompt.is_empty()
    }

    /// Stops the prompt playing (a key pressed over it).
    pub fn hush(&mut self) {
        self.prompt.clear();
    }

    /// The SSRC of its stream.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// A datagram the node delivered: one participant's Opus packet, decoded into its queue.
    /// Anything else is dropped.
    pub fn push(&mut self, now: Instant, datagram: &[u8]) {
        let Some(packet) = rtp_parts(datagram).filter(|p| p.payload_type == DELIVERED_OPUS) else {
            return;
        };
        let talker = match self.talkers.entry(packet.ssrc) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Ok(decoder) = Decoder::new(48_000, Channels::Mono) else {
                    return;
                };
                e.insert(Talker {
                    decoder,
                    queued: VecDeque::new(),
                    heard: now,
                })
            }
        };
        talker.heard = now;
        let mut decoded = [0i16; 5_760];
        if let Ok(n) = talker.decoder.decode(packet.payload, &mut decoded, false) {
            talker.queued.extend(&decoded[..n]);
            let excess = talker.queued.len().saturating_sub(MAX_QUEUED);
            talker.queued.drain(..excess);
        }
    }

    /// Schedules DTMF `digits` (checked) from `start`: their events take the audio's place while
    /// they sound. False when the call took no telephone events (send them by SIP INFO).
    pub fn schedule_keys(&mut self, start: Instant, digits: &str) -> bool {
        let Some(events) = self.events else {
            return false;
        };
        // after the keys still queued (and their gap), with timestamps after theirs
        let (after, timestamp) = match self.keys.back() {
            Some((last, _)) => (
                (*last + crate::sip::dtmf::GAP).max(start),
                self.keys_timestamp,
            ),
            None => (start, self.timestamp),
        };
        let mut stream = EventStream {
            ssrc: self.ssrc,
            seq: 0,
            timestamp,
            events,
        };
        for Timed { at, packet } in stream.packets(digits) {
            self.keys.push_back((after + at, packet));
        }
        self.keys_timestamp = stream.timestamp;
        true
    }

    /// The packets to send for the 20 ms frame due at `now`: due DTMF events (numbered in the
    /// stream), else one packet of the mix.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        self.talkers
            .retain(|_, t| now.duration_since(t.heard) < FORGET || !t.queued.is_empty());
        self.mix();
        if !self.keys.is_empty() {
            while self.keys.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, mut packet)) = self.keys.pop_front() else {
                    break;
                };
                packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
                self.seq = self.seq.wrapping_add(1);
                out.push(packet);
            }
        } else if let Some(payload) = self.encode() {
            out.push(self.rtp(payload));
        }
        self.timestamp = self.timestamp.wrapping_add(self.ticks);
    }

    /// Sums one frame of every talker (and the prompt) into `pcm`, clipped.
    fn mix(&mut self) {
        self.mixed.fill(0);
        let queues = self.talkers.values_mut().map(|t| &mut t.queued);
        for queued in queues.chain(std::iter::once(&mut self.prompt)) {
            let n = queued.len().min(FRAME);
            for (sum, sample) in self.mixed.iter_mut().zip(queued.drain(..n)) {
                *sum += i32::from(sample);
            }
        }
        for (out, sum) in self.pcm.iter_mut().zip(&self.mixed) {
            *out = (*sum).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
    }

    /// The frame in the far end's codec: its length in `encoded`.
    fn encode(&mut self) -> Option<usize> {
        match &mut self.encoding {
            Encoding::Opus(encoder) => encoder.encode(&self.pcm, &mut self.encoded).ok(),
            Encoding::G722(encoder) => {
                let wideband: Vec<i16> = decimated(&self.pcm, DOWNSAMPLE / 2).collect();
                let bytes = encoder.encode(&wideband);
                self.encoded[..bytes.len()].copy_from_slice(&bytes);
                Some(bytes.len())
            }
            Encoding::G711(law) => {
                for (byte, sample) in self
                    .encoded
                    .iter_mut()
                    .zip(decimated(&self.pcm, DOWNSAMPLE))
                {
                    *byte = law.compress(sample);
                }
                Some(FRAME / DOWNSAMPLE)
            }
        }
    }

    fn rtp(&mut self, len: usize) -> Vec<u8> {
        let mut packet = Vec::with_capacity(12 + len);
        packet.extend_from_slice(&[0x80, self.payload_type]);
        packet.extend_from_slice(&self.seq.to_be_bytes());
        packet.extend_from_slice(&self.timestamp.to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.extend_from_slice(&self.encoded[..len]);
        self.seq = self.seq.wrapping_add(1);
        packet
    }
}

/// `pcm` at a rate `factor` times lower: each output sample the mean of `factor` inputs (a
/// crude low-pass, enough for speech at 8 and 16 kHz).
fn decimated(pcm: &[i16], factor: usize) -> impl Iterator<Item = i16> + '_ {
    pcm.chunks(factor)
        .map(move |group| (group.iter().map(|&s| i32::from(s)).sum::<i32>() / factor as i32) as i16)
}

#[cfg(test)]
mod tests;
