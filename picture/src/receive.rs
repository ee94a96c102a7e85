//! Receive side of H.264 over RTP: frame reassembly with reordering and loss handling
//! (RFC 6184 packetization mode 1), and openh264 decoding.
//!
//! [`FrameAssembler`] keeps a small ring of packets indexed by extended sequence number, so
//! retransmissions (NACK/RTX arriving late and out of order) are slotted back in. A frame is
//! emitted once every packet from its first to its marker packet is present. When a gap is not
//! repaired within `max_wait`, the broken frame is dropped and the next frame is flagged so the
//! caller can wait for a keyframe and ask for one. [`H264Receiver`] adds the decoder and the
//! "decode only from a keyframe after a loss" rule, like a real client, and keeps the last
//! decoded picture when asked to (a compositor shows it).

use std::time::{Duration, Instant};

use bytes::Bytes;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::formats::YUVSource;

use crate::canvas::Picture;

const RING: usize = 1024;
const START_CODE: [u8; 4] = [0, 0, 0, 1];

#[derive(Debug, Clone)]
struct Slot {
    ext: u64,
    timestamp: u32,
    marker: bool,
    payload: Bytes,
}

/// What [`FrameAssembler::pop`] produced (the Annex B data is in the caller's buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssembledFrame {
    /// The RTP timestamp of the frame.
    pub timestamp: u32,
    /// The frame contains an IDR slice.
    pub keyframe: bool,
    /// The frame carries a sequence parameter set.
    pub has_sps: bool,
    /// One or more frames before this one were lost.
    pub after_loss: bool,
    /// The payloads were malformed (the buffer content is unusable).
    pub malformed: bool,
}

/// Reorders RTP packets of one H.264 stream and reassembles access units.
#[derive(Debug)]
pub struct FrameAssembler {
    ring: Vec<Option<Slot>>,
    next: Option<u64>,
    highest: Option<u64>,
    blocked_since: Option<Instant>,
    max_wait: Duration,
    loss_pending: bool,
    /// Frames given up on because packets never arrived.
    pub frames_lost: u64,
}

impl FrameAssembler {
    /// A new assembler that waits at most `max_wait` for a missing packet.
    pub fn new(max_wait: Duration) -> Self {
        Self {
            ring: vec![None; RING],
            next: None,
            highest: None,
            blocked_since: None,
            max_wait,
            loss_pending: false,
            frames_lost: 0,
        }
    }

    fn extend(&self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            return (1 << 32) + u64::from(seq);
        };
        let base = highest & !0xFFFF;
        let candidates = [
            base.wrapping_sub(1 << 16) | u64::from(seq),
            base | u64::from(seq),
            (base + (1 << 16)) | u64::from(seq),
        ];
        *candidates
            .iter()
            .min_by_key(|c| c.abs_diff(highest))
            .expect("three candidates")
    }

    fn slot(&self, ext: u64) -> Option<&Slot> {
        self.ring[(ext % RING as u64) as usize]
            .as_ref()
            .filter(|s| s.ext == ext)
    }

    fn clear(&mut self, from: u64, to_exclusive: u64) {
        let mut e = from;
        while e < to_exclusive {
            let idx = (e % RING as u64) as usize;
            if self.ring[idx].as_ref().is_some_and(|s| s.ext == e) {
                self.ring[idx] = None;
            }
            e += 1;
        }
    }

    /// Adds one RTP packet.
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: Bytes) {
        let ext = self.extend(seq);
        if let Some(next) = self.next {
            if ext < next {
                return; // late duplicate or a packet of a frame already given up on
            }
            if ext >= next + RING as u64 {
                // Far ahead: everything buffered is hopeless.
                let highest = self.highest.unwrap_or(next);
                self.clear(next, highest + 1);
                self.next = None;
                self.loss_pending = true;
                self.frames_lost += 1;
            }
        }
        if self.next.is_none() {
            if !is_partition_head(&payload) {
                return;
            }
            self.next = Some(ext);
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.ring[(ext % RING as u64) as usize] = Some(Slot {
            ext,
            timestamp,
            marker,
            payload,
        });
    }

    /// Emits the next complete frame as Annex B into `out` (cleared first), if there is one.
    pub fn pop(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<AssembledFrame> {
        let (Some(mut start), Some(highest)) = (self.next, self.highest) else {
            return None;
        };
        // padding-only packets (a sender probing the path, between two frames) hold a sequence
        // number and nothing else
        while start <= highest && self.slot(start).is_some_and(|s| s.payload.is_empty()) {
            self.clear(start, start + 1);
            start += 1;
            self.next = Some(start);
        }
        if start > highest {
            return None;
        }
        let mut end = None;
        let mut ext = start;
        let first_ts = self.slot(start).map(|s| s.timestamp);
        while ext <= highest {
            match self.slot(ext) {
                Some(s) if Some(s.timestamp) != first_ts => {
                    end = Some(ext - 1); // a new frame started without a marker
                    break;
                }
                Some(s) if s.marker => {
                    end = Some(ext);
                    break;
                }
                Some(_) => ext += 1,
                None => break,
            }
        }
        if let (Some(end), Some(timestamp)) = (end, first_ts) {
            out.clear();
            let mut flags = 0;
            let mut malformed = false;
            for e in start..=end {
                let payload = &self.slot(e).expect("present").payload;
                match depacketize_into(payload, out) {
                    Some(f) => flags |= f,
                    None => malformed = true,
                }
            }
            self.clear(start, end + 1);
            self.next = Some(end + 1);
            self.blocked_since = None;
            let after_loss = std::mem::take(&mut self.loss_pending);
            return Some(AssembledFrame {
                timestamp,
                keyframe: flags & NAL_IDR != 0,
                has_sps: flags & NAL_SPS != 0,
                after_loss,
                malformed,
            });
        }
        // Blocked on a missing packet (or waiting for the rest of the frame).
        if ext > highest {
            return None; // frame incomplete but nothing after it is missing yet
        }
        let since = *self.blocked_since.get_or_insert(now);
        if now.duration_since(since) < self.max_wait && highest - start < RING as u64 / 2 {
            return None;
        }
        self.skip_broken(start, ext, highest, first_ts);
        self.pop(now, out)
    }

    fn skip_broken(&mut self, start: u64, gap: u64, highest: u64, first_ts: Option<u32>) {
        let broken_ts = first_ts.or_else(|| {
            (gap + 1..=highest)
                .find_map(|e| self.slot(e))
                .filter(|s| !is_partition_head(&s.payload))
                .map(|s| s.timestamp)
        });
        let resume = (gap + 1..=highest).find(|&e| {
            self.slot(e)
                .is_some_and(|s| Some(s.timestamp) != broken_ts && is_partition_head(&s.payload))
        });
        let resume = resume.unwrap_or(highest + 1);
        self.clear(start, resume);
        self.next = Some(resume);
        self.blocked_since = None;
        self.loss_pending = true;
        self.frames_lost += 1;
    }
}

/// Whether an RTP payload starts a NAL unit (single NAL, STAP-A, or FU-A start fragment).
pub fn is_partition_head(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1F) {
        Some(1..=24) => true,
        Some(28) => payload.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Whether an RTP payload starts a keyframe, as a receiver that does not decode sees it: it
/// carries an SPS or an IDR slice, whole, inside a STAP-A, or as the first FU-A fragment.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let key = |nal_header: u8| nal_flags(nal_header & 0x1F) != 0;
    match payload.first().map(|b| b & 0x1F) {
        Some(24) => {
            let mut rest = &payload[1..];
            while let [high, low, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*high, *low]));
                match tail.get(..len) {
                    Some(nal) if nal.first().is_some_and(|h| key(*h)) => return true,
                    Some(_) => rest = &tail[len..],
                    None => return false,
                }
            }
            false
        }
        Some(28) => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && key(*fu)),
        Some(nal_type) => key(nal_type),
        None => false,
    }
}

/// Flag returned by [`depacketize_into`]: the payload carried (the start of) an IDR slice.
pub const NAL_IDR: u8 = 1;
/// Flag returned by [`depacketize_into`]: the payload carried an SPS.
pub const NAL_SPS: u8 = 2;

fn nal_flags(nal_type: u8) -> u8 {
    match nal_type {
        5 => NAL_IDR,
        7 => NAL_SPS,
        _ => 0,
    }
}

/// Appends one RTP payload to an Annex B buffer; returns [`NAL_IDR`] / [`NAL_SPS`] flags of
/// what it carried, or `None` if the payload is malformed or of an unsupported type.
pub fn depacketize_into(payload: &[u8], out: &mut Vec<u8>) -> Option<u8> {
    let header = *payload.first()?;
    let nal_type = header & 0x1F;
    match nal_type {
        1..=23 => {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(payload);
            Some(nal_flags(nal_type))
        }
        24 => {
            let mut rest = &payload[1..];
            let mut key = 0;
            while rest.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + len)?;
                key |= nal.first().map_or(0, |b| nal_flags(b & 0x1F));
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(nal);
                rest = &rest[2 + len..];
            }
            Some(key)
        }
        28 => {
            let fu = *payload.get(1)?;
            let inner = fu & 0x1F;
            if fu & 0x80 != 0 {
                out.extend_from_slice(&START_CODE);
                out.push((header & 0xE0) | inner);
            }
            out.extend_from_slice(payload.get(2..)?);
            Some(if fu & 0x80 != 0 { nal_flags(inner) } else { 0 })
        }
        _ => None,
    }
}

/// Result of feeding one packet to an [`H264Receiver`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOutcome {
    /// Frames decoded into pictures.
    pub decoded: u32,
    /// Frames the decoder rejected (or malformed payloads).
    pub errors: u32,
    /// Frames lost in the network or skipped while waiting for a keyframe.
    pub dropped: u32,
    /// The receiver wants a keyframe (send a PLI).
    pub want_keyframe: bool,
    /// The size (width, height) of the last picture decoded.
    pub picture_size: Option<(u32, u32)>,
}

/// Reassembles and decodes one H.264 RTP stream.
pub struct H264Receiver {
    assembler: FrameAssembler,
    decoder: Option<Decoder>,
    buf: Vec<u8>,
    waiting_for_keyframe: bool,
    have_parameter_sets: bool,
    /// The last decoded picture, when pictures are kept.
    picture: Option<Picture>,
    keep_pictures: bool,
}

impl std::fmt::Debug for H264Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Receiver")
            .field("assembler", &self.assembler)
            .field("waiting_for_keyframe", &self.waiting_for_keyframe)
            .finish()
    }
}

impl Default for H264Receiver {
    fn default() -> Self {
        Self::new(Duration::from_millis(400))
    }
}

impl H264Receiver {
    /// A receiver that waits at most `max_wait` for a missing packet before giving up on a
    /// frame.
    pub fn new(max_wait: Duration) -> Self {
        Self {
            assembler: FrameAssembler::new(max_wait),
            decoder: None,
            buf: Vec::with_capacity(64 * 1024),
            waiting_for_keyframe: true,
            have_parameter_sets: false,
            picture: None,
            keep_pictures: false,
        }
    }

    /// The receiver, keeping a copy of each decoded picture for [`Self::picture`].
    pub fn keeping_pictures(mut self) -> Self {
        self.keep_pictures = true;
        self
    }

    /// The last decoded picture (only when [`Self::keeping_pictures`]).
    pub fn picture(&self) -> Option<&Picture> {
        self.picture.as_ref()
    }

    /// Feeds one RTP packet; decodes every frame it completes.
    pub fn push(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
    ) -> ReceiveOutcome {
        let mut outcome = ReceiveOutcome::default();
        self.assembler.push(seq, timestamp, marker, payload);
        while let Some(frame) = self.assembler.pop(now, &mut self.buf) {
            if frame.after_loss {
                outcome.dropped += 1;
                self.waiting_for_keyframe = true;
            }
            if frame.malformed {
                outcome.errors += 1;
                self.waiting_for_keyframe = true;
                continue;
            }
            // After a loss (or at the start) only an IDR can be decoded, and before the first
            // parameter sets only an IDR that brings them (its SPS/PPS packet may be the one
            // that was lost).
            let decodable = frame.keyframe && (frame.has_sps || self.have_parameter_sets);
            if self.waiting_for_keyframe && !decodable {
                outcome.dropped += 1;
                outcome.want_keyframe = true;
                continue;
            }
            self.waiting_for_keyframe = false;
            self.have_parameter_sets |= frame.has_sps;
            match self.decode_buffer() {
                Ok(Some(size)) => {
                    outcome.decoded += 1;
                    outcome.picture_size = Some(size);
                }
                Ok(None) => {}
                Err(()) => {
                    outcome.errors += 1;
                    outcome.want_keyframe = true;
                    self.waiting_for_keyframe = true;
                }
            }
        }
        outcome.want_keyframe |= self.waiting_for_keyframe;
        outcome
    }

    /// Decodes the frame in the buffer: the picture's size, if it gave one.
    fn decode_buffer(&mut self) -> Result<Option<(u32, u32)>, ()> {
        if self.decoder.is_none() {
            let decoder =
                Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
                    .map_err(|e| tracing::warn!("openh264 decoder: {e}"))?;
            self.decoder = Some(decoder);
        }
        let decoder = self.decoder.as_mut().expect("decoder");
        match decoder.decode(&self.buf) {
            Ok(Some(yuv)) => {
                if self.keep_pictures {
                    self.picture
                        .get_or_insert_with(Picture::default)
                        .copy_from(&yuv);
                }
                let (width, height) = yuv.dimensions();
                Ok(Some((width as u32, height as u32)))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::debug!("H.264 decode error ({} bytes): {e}", self.buf.len());
                Err(())
            }
        }
    }

    /// Frames given up on by the reassembly.
    pub fn frames_lost(&self) -> u64 {
        self.assembler.frames_lost
    }
}
