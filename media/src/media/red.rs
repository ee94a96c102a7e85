//! Redundant audio (RED, RFC 2198) for Opus, in both directions.
//!
//! A RED packet carries its own Opus frame (the primary block) and copies of the frames of the
//! packets just before it (redundant blocks, each named by its payload type and its timestamp
//! offset from the primary), so one lost packet is made good by the next one to arrive.
//!
//! From a publisher: a browser that negotiated RED (the web client puts it first) sends its
//! audio as RED. [`RedUnwrap`] turns each RED packet back into Opus packets before the core
//! sees it: the primary block, and each redundant block whose packet did not arrive, as that
//! packet (its sequence number counted back from the primary's, as libwebrtc's encoder writes
//! them). Everything after it (speaker detection, recording, SIP, cascade links, kaskade's own
//! clients) gets plain Opus, with the publisher's uplink losses already filled.
//!
//! To a subscriber that negotiated RED: [`RedEncoder`] wraps each Opus packet of a slot with
//! the slot's one or two previous ones, only while the subscriber's path shows loss (its
//! congestion feedback or its receiver reports) and for a while after, so that a clean path
//! pays nothing for it; and never while the path is congested (a queue that grows or stands,
//! heavy loss, an estimate held under a ceiling): there the loss is the bottleneck's, and more
//! bytes would only deepen it.

use crate::media::arrival::ArrivalLog;
use crate::media::forwarder::seq_before;
use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp;
use std::ops::Range;
use std::time::{Duration, Instant};

/// RED's MIME type for audio.
pub const RED_MIME: &str = "audio/red";
/// The payload type a node offers for RED, as Chromium does.
pub const RED_PAYLOAD_TYPE: u8 = 63;
/// Redundant blocks one RED packet may carry that a node reads; a packet with more is
/// malformed for it (browsers send one or two).
const MAX_REDUNDANT: usize = 8;
/// Packets a RED encoder repeats at most (after heavy loss).
const MAX_REPEATED: usize = 2;
/// Loss of the subscriber's path over which the encoder repeats packets.
const SOME_LOSS: f64 = 0.002;
/// Loss over which it repeats two.
const HEAVY_LOSS: f64 = 0.05;
/// How long repetition goes on after the last loss seen: receiver reports come every few
/// seconds, and one loss is often followed by more.
const HOLD: Duration = Duration::from_secs(10);
/// The largest timestamp offset a redundant block header holds (14 bits).
const MAX_OFFSET: u32 = (1 << 14) - 1;
/// The largest block length a redundant block header holds (10 bits).
const MAX_BLOCK: usize = (1 << 10) - 1;
/// Bytes of wrapped payloads one allocation of a [`RedEncoder`] holds (a few seconds of a
/// voice's RED at 20-40 kbit/s).
const SCRATCH: usize = 16 * 1024;

/// Why a RED payload cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedError {
    /// The block headers run past the end of the payload.
    #[error("RED block headers run past the payload")]
    Truncated,
    /// More redundant blocks than a node reads.
    #[error("more than {MAX_REDUNDANT} redundant RED blocks")]
    TooManyBlocks,
    /// The blocks' lengths add up to more than the payload holds.
    #[error("RED block lengths exceed the payload")]
    LengthBeyondPayload,
}

/// One block of a RED payload: its payload type, its timestamp offset back from the primary
/// (0 for the primary) and where its data sits in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    /// The payload type of the data (Opus's).
    pub payload_type: u8,
    /// How far its timestamp lies before the primary's.
    pub timestamp_offset: u16,
    /// Its data's place in the RED payload.
    pub data: Range<usize>,
}

/// The blocks of one RED payload: the redundant ones, oldest first, and the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocks {
    redundant: [Block; MAX_REDUNDANT],
    count: usize,
    /// The packet's own frame.
    pub primary: Block,
}

impl Blocks {
    /// The redundant blocks, oldest first.
    pub fn redundant(&self) -> &[Block] {
        &self.redundant[..self.count]
    }
}

/// Reads the block headers of a RED payload (RFC 2198 section 3).
pub fn parse(payload: &[u8]) -> Result<Blocks, RedError> {
    let mut blocks = Blocks {
        redundant: Default::default(),
        count: 0,
        primary: Block::default(),
    };
    let mut at = 0;
    let mut data_len = 0;
    let primary_type = loop {
        let first = *payload.get(at).ok_or(RedError::Truncated)?;
        let payload_type = first & 0x7f;
        if first & 0x80 == 0 {
            at += 1;
            break payload_type;
        }
        let header = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
        let slot = blocks
            .redundant
            .get_mut(blocks.count)
            .ok_or(RedError::TooManyBlocks)?;
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]) & 0x3ff);
        *slot = Block {
            payload_type,
            timestamp_offset: u16::from(header[1]) << 6 | u16::from(header[2]) >> 2,
            data: data_len..data_len + length,
        };
        blocks.count += 1;
        data_len += length;
        at += 4;
    };
    if at + data_len > payload.len() {
        return Err(RedError::LengthBeyondPayload);
    }
    for block in &mut blocks.redundant[..blocks.count] {
        block.data = block.data.start + at..block.data.end + at;
    }
    blocks.primary = Block {
        payload_type: primary_type,
        timestamp_offset: 0,
        data: at + data_len..payload.len(),
    };
    Ok(blocks)
}

/// What one packet gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unwrapped {
    /// It came as RED.
    pub red: bool,
    /// Lost packets made good from its redundant blocks.
    pub recovered: usize,
}

/// Turns a publisher's RED packets into the Opus packets they carry.
#[derive(Debug)]
pub struct RedUnwrap {
    red_payload_type: u8,
    opus_payload_type: u8,
    /// The audio stream's SSRC and which of its packets arrived.
    stream: Option<(u32, ArrivalLog)>,
}

impl RedUnwrap {
    /// An unwrapper of packets of payload type `red_payload_type`, whose blocks are of
    /// `opus_payload_type` (so are the publisher's plain Opus packets).
    pub fn new(red_payload_type: u8, opus_payload_type: u8) -> Self {
        Self {
            red_payload_type,
            opus_payload_type,
            stream: None,
        }
    }

    /// Hands `packet` on to `out`: a RED packet as the Opus packets it carries that had not
    /// arrived (older first, then its own), anything else as it is. A RED packet that cannot
    /// be read goes nowhere.
    pub fn unwrap(
        &mut self,
        packet: rtp::Packet,
        mut out: impl FnMut(rtp::Packet),
    ) -> Result<Unwrapped, RedError> {
        let (ssrc, primary_seq) = (packet.header.ssrc, packet.header.sequence_number);
        let payload_type = packet.header.payload_type;
        if payload_type == self.opus_payload_type {
            self.arrivals(ssrc).note(primary_seq);
        }
        if payload_type != self.red_payload_type {
            out(packet);
            return Ok(Unwrapped::default());
        }
        let blocks = parse(&packet.payload)?;
        let opus = self.opus_payload_type;
        let arrived = self.arrivals(ssrc);
        let fresh = !arrived.has(primary_seq);
        let rtp::Packet {
            mut header,
            payload,
        } = packet;
        let mut unwrapped = Unwrapped {
            red: true,
            recovered: 0,
        };
        let redundant = blocks.redundant();
        for (back, block) in (1..=redundant.len()).rev().zip(redundant) {
            let seq = primary_seq.wrapping_sub(back as u16);
            if block.payload_type != opus
                || block.timestamp_offset == 0
                || block.data.is_empty()
                || arrived.has(seq)
            {
                continue;
            }
            arrived.note(seq);
            // a loss made good: the only place a header is copied
            let mut recovered = header.clone();
            recovered.sequence_number = seq;
            recovered.timestamp = header
                .timestamp
                .wrapping_sub(u32::from(block.timestamp_offset));
            recovered.marker = false;
            recovered.padding = false;
            recovered.payload_type = opus;
            out(rtp::Packet {
                header: recovered,
                payload: payload.slice(block.data.clone()),
            });
            unwrapped.recovered += 1;
        }
        if fresh && blocks.primary.payload_type == opus {
            arrived.note(primary_seq);
            header.payload_type = opus;
            header.padding = false;
            out(rtp::Packet {
                header,
                payload: payload.slice(blocks.primary.data.clone()),
            });
        }
        Ok(unwrapped)
    }

    /// Which packets of the audio stream `ssrc` arrived (a new SSRC starts over).
    fn arrivals(&mut self, ssrc: u32) -> &mut ArrivalLog {
        if self
            .stream
            .as_ref()
            .is_some_and(|(known, _)| *known != ssrc)
        {
            self.stream = None;
        }
        &mut self.stream.get_or_insert((ssrc, ArrivalLog::EMPTY)).1
    }
}

/// A packet a RED encoder may repeat.
#[derive(Debug, Clone)]
struct Past {
    seq: u16,
    timestamp: u32,
    payload: Bytes,
}

/// Wraps one slot's Opus packets as RED while its subscriber's path loses packets.
#[derive(Debug)]
pub struct RedEncoder {
    red_payload_type: u8,
    /// The slot's last packets, newest last.
    past: Vec<Past>,
    /// Packets repeated in each, and until when.
    repeat: usize,
    until: Option<Instant>,
    /// Where wrapped payloads are written: each is split off it, so one allocation serves
    /// [`SCRATCH`] bytes of them, not one per packet.
    scratch: BytesMut,
}

impl RedEncoder {
    /// An encoder writing payload type `red_payload_type`.
    pub fn new(red_payload_type: u8) -> Self {
        Self {
            red_payload_type,
            past: Vec::with_capacity(MAX_REPEATED + 1),
            repeat: 0,
            until: None,
            scratch: BytesMut::new(),
        }
    }

    /// Notes the loss (a fraction) the subscriber's path showed at `now`.
    pub fn observe_loss(&mut self, now: Instant, loss: f64) {
        if loss <= SOME_LOSS {
            return;
        }
        let repeat = if loss >= HEAVY_LOSS { MAX_REPEATED } else { 1 };
        let held = self.repeating(now) > 0;
        self.repeat = if held {
            self.repeat.max(repeat)
        } else {
            repeat
        };
        self.until = Some(now + HOLD);
    }

    /// Stops repeating at once: the path is congested.
    pub fn stand_down(&mut self) {
        self.until = None;
    }

    /// How many earlier packets go with each packet at `now`.
    pub fn repeating(&self, now: Instant) -> usize {
        match self.until {
            Some(until) if now < until => self.repeat,
            _ => 0,
        }
    }

    /// Wraps `packet` (Opus on the slot, sequence number and timestamp as the subscriber gets
    /// them) with the packets just before it, when the path calls for it; whether it did.
    pub fn encode(&mut self, now: Instant, packet: &mut rtp::Packet) -> bool {
        let repeat = self.repeating(now);
        let header = &packet.header;
        let this = Past {
            seq: header.sequence_number,
            timestamp: header.timestamp,
            payload: packet.payload.clone(),
        };
        // only the packets right before it, in order, whose offset and length fit a header
        let usable = |back: usize, past: &Past| {
            past.seq == this.seq.wrapping_sub(back as u16)
                && (1..=MAX_OFFSET).contains(&this.timestamp.wrapping_sub(past.timestamp))
                && !past.payload.is_empty()
                && past.payload.len() <= MAX_BLOCK
        };
        let mut take = 0;
        for (back, past) in self.past.iter().rev().enumerate().take(repeat) {
            if !usable(back + 1, past) {
                break;
            }
            take = back + 1;
        }
        let repeated = &self.past[self.past.len() - take..];
        let wrapped = !repeated.is_empty() && !packet.payload.is_empty();
        if wrapped {
            let size = repeated.iter().map(|p| 4 + p.payload.len()).sum::<usize>()
                + 1
                + packet.payload.len();
            if self.scratch.capacity() < size {
                self.scratch = BytesMut::with_capacity(SCRATCH.max(size));
            }
            let payload = &mut self.scratch;
            let opus = packet.header.payload_type;
            for past in repeated {
                let offset = this.timestamp.wrapping_sub(past.timestamp);
                payload.put_u8(0x80 | opus);
                // offset (14 bits) and length (10 bits), both checked to fit
                payload.put_u8((offset >> 6) as u8);
                payload.put_u8(((offset & 0x3f) << 2) as u8 | (past.payload.len() >> 8) as u8);
                payload.put_u8(past.payload.len() as u8);
            }
            payload.put_u8(opus & 0x7f);
            for past in repeated {
                payload.put_slice(&past.payload);
            }
            payload.put_slice(&packet.payload);
            packet.payload = payload.split().freeze();
            packet.header.payload_type = self.red_payload_type;
        }
        let newest = self.past.last().map(|p| p.seq);
        if newest.is_none_or(|newest| seq_before(newest, this.seq)) {
            if self.past.len() > MAX_REPEATED {
                self.past.remove(0);
            }
            self.past.push(this);
        }
        wrapped
    }
}

#[cfg(test)]
mod tests;
