//! RTP payloads to media samples: H.264 (RFC 6184, packetization mode 1) into access units of
//! AVCC length-prefixed NAL units, and the Opus helpers the writer needs.
//!
//! The H.264 depacketizer owns access-unit assembly, keyframe detection, the latest SPS/PPS,
//! and the rule that a track restarts only on a complete keyframe after any loss. It expects
//! packets in sequence order (see [`crate::timeline`]) and is told about losses through the
//! `discontinuity` flag; it never panics, whatever the payload bytes.

use std::collections::VecDeque;

/// Largest access unit accepted (bytes); a longer one is garbage and is dropped.
const MAX_ACCESS_UNIT: usize = 8 << 20;
/// Bytes of the AVCC length prefix written before every NAL unit.
const LENGTH_PREFIX: usize = 4;

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// One H.264 access unit (a picture) ready for MP4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// The timestamp its packets were pushed with.
    pub time: u64,
    /// Whether it holds an IDR slice (a sync sample). Keyframes always carry SPS and PPS.
    pub keyframe: bool,
    /// NAL units, each prefixed by its length as a 4-byte big-endian integer (AVCC).
    pub data: Vec<u8>,
}

/// Why access units were dropped, counted since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    /// Access units emitted.
    pub emitted: u64,
    /// Access units dropped because a packet of theirs was lost or malformed.
    pub dropped_incomplete: u64,
    /// Complete access units dropped while waiting for a keyframe (after loss or at start).
    pub dropped_waiting_for_keyframe: u64,
    /// Payloads of a kind packetization mode 1 does not use (STAP-B, MTAP, FU-B) or empty.
    pub unsupported_payloads: u64,
}

/// The access unit being assembled.
#[derive(Debug, Default)]
struct Assembly {
    time: u64,
    data: Vec<u8>,
    broken: bool,
    keyframe: bool,
    /// The first slice in the unit starts at macroblock 0 (the picture's head is present).
    starts_at_first_slice: Option<bool>,
    has_sps: bool,
    has_pps: bool,
    /// Offset of the length prefix of an FU-A NAL unit still being reassembled.
    open_fragment: Option<usize>,
}

/// Reassembles H.264 RTP payloads into access units.
///
/// Feed every packet in sequence order with [`push`](Self::push), then drain finished units
/// with [`pop`](Self::pop). An access unit ends on the marker bit or when the timestamp
/// changes. After a loss (or at the start) units are dropped until a complete keyframe
/// arrives; [`needs_keyframe`](Self::needs_keyframe) tells when to ask the sender for one.
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    current: Option<Assembly>,
    /// A spare buffer reused for the next access unit.
    spare: Vec<u8>,
    ready: VecDeque<AccessUnit>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    synced: bool,
    stats: DepacketizerStats,
}

impl H264Depacketizer {
    /// A depacketizer waiting for its first keyframe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one RTP payload. `time` is the packet's timestamp (RTP or already unwrapped);
    /// `marker` is the RTP marker bit; `discontinuity` says packets were lost just before
    /// this one.
    pub fn push(&mut self, time: u64, marker: bool, discontinuity: bool, payload: &[u8]) {
        if discontinuity {
            self.synced = false;
            if let Some(current) = &mut self.current {
                current.broken = true;
            }
        }
        if self.current.as_ref().is_some_and(|c| c.time != time) {
            self.complete();
        }
        let spare = &mut self.spare;
        let current = self.current.get_or_insert_with(|| Assembly {
            time,
            data: std::mem::take(spare),
            ..Assembly::default()
        });
        if !current.broken && !current.add_payload(payload) {
            current.broken = true;
            if matches!(payload.first().map(|b| b & 0x1f), None | Some(0 | 25..=27 | 29..=31)) {
                self.stats.unsupported_payloads += 1;
            }
        }
        if marker {
            self.complete();
        }
    }

    /// The next finished access unit, oldest first.
    pub fn pop(&mut self) -> Option<AccessUnit> {
        self.ready.pop_front()
    }

    /// Ends the unit being assembled (at stop), as if its marker bit had arrived.
    pub fn flush(&mut self) {
        self.complete();
    }

    /// True while units are being dropped for want of a keyframe: send a PLI.
    pub fn needs_keyframe(&self) -> bool {
        !self.synced
    }

    /// The latest sequence and picture parameter sets seen (NAL units without prefix).
    pub fn parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        (!self.sps.is_empty() && !self.pps.is_empty()).then_some((&self.sps, &self.pps))
    }

    /// Counters of emitted and dropped units.
    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    fn complete(&mut self) {
        let Some(mut unit) = self.current.take() else {
            return;
        };
        if unit.open_fragment.is_some() || unit.data.is_empty() {
            unit.broken = true;
        }
        if unit.broken {
            self.stats.dropped_incomplete += 1;
            self.synced = false;
        } else {
            self.capture_parameter_sets(&unit.data);
            let clean_keyframe = unit.keyframe
                && unit.starts_at_first_slice == Some(true)
                && self.parameter_sets().is_some();
            if self.synced || clean_keyframe {
                if unit.keyframe && !(unit.has_sps && unit.has_pps) {
                    self.prepend_parameter_sets(&mut unit.data);
                }
                self.synced = true;
                self.stats.emitted += 1;
                self.ready.push_back(AccessUnit {
                    time: unit.time,
                    keyframe: unit.keyframe,
                    data: unit.data,
                });
                return;
            }
            self.stats.dropped_waiting_for_keyframe += 1;
        }
        unit.data.clear();
        self.spare = unit.data;
    }

    fn capture_parameter_sets(&mut self, data: &[u8]) {
        for nal in nal_units(data) {
            let target = match nal[0] & 0x1f {
                NAL_SPS => &mut self.sps,
                NAL_PPS => &mut self.pps,
                _ => continue,
            };
            if target.as_slice() != nal {
                target.clear();
                target.extend_from_slice(nal);
            }
        }
    }

    fn prepend_parameter_sets(&self, data: &mut Vec<u8>) {
        let mut head = Vec::with_capacity(2 * LENGTH_PREFIX + self.sps.len() + self.pps.len());
        for nal in [&self.sps, &self.pps] {
            push_length(&mut head, nal.len());
            head.extend_from_slice(nal);
        }
        data.splice(0..0, head);
    }
}

impl Assembly {
    /// Appends one payload; false if it is malformed or of an unsupported kind.
    fn add_payload(&mut self, payload: &[u8]) -> bool {
        let Some(&header) = payload.first() else {
            return false;
        };
        match header & 0x1f {
            1..=23 => self.open_fragment.is_none() && self.add_nal(payload),
            NAL_STAP_A => self.open_fragment.is_none() && self.add_stap_a(&payload[1..]),
            NAL_FU_A => self.add_fu_a(header, &payload[1..]),
            _ => false,
        }
    }

    fn add_stap_a(&mut self, mut rest: &[u8]) -> bool {
        if rest.is_empty() {
            return false;
        }
        while !rest.is_empty() {
            let Some((size, tail)) = rest.split_first_chunk::<2>() else {
                return false;
            };
            let size = usize::from(u16::from_be_bytes(*size));
            if size == 0 || size > tail.len() || !self.add_nal(&tail[..size]) {
                return false;
            }
            rest = &tail[size..];
        }
        true
    }

    fn add_fu_a(&mut self, indicator: u8, rest: &[u8]) -> bool {
        let Some((&fu_header, fragment)) = rest.split_first() else {
            return false;
        };
        let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
        if start {
            // the reassembled NAL unit takes its forbidden bit from the indicator: refused as
            // for a single NAL unit
            if self.open_fragment.is_some() || indicator & 0x80 != 0 {
                return false;
            }
            let nal_header = (indicator & 0xe0) | (fu_header & 0x1f);
            self.open_fragment = Some(self.data.len());
            push_length(&mut self.data, 0);
            self.note_nal(nal_header, fragment.first().copied());
            self.data.push(nal_header);
        } else if self.open_fragment.is_none() {
            return false;
        }
        if self.data.len() + fragment.len() > MAX_ACCESS_UNIT {
            return false;
        }
        self.data.extend_from_slice(fragment);
        if end && let Some(offset) = self.open_fragment.take() {
            let len = self.data.len() - offset - LENGTH_PREFIX;
            let Ok(len) = u32::try_from(len) else {
                return false;
            };
            self.data[offset..offset + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
        }
        true
    }

    fn add_nal(&mut self, nal: &[u8]) -> bool {
        if nal[0] & 0x80 != 0 || self.data.len() + LENGTH_PREFIX + nal.len() > MAX_ACCESS_UNIT {
            return false;
        }
        self.note_nal(nal[0], nal.get(1).copied());
        push_length(&mut self.data, nal.len());
        self.data.extend_from_slice(nal);
        true
    }

    /// Records what a NAL unit tells about the access unit: IDR, parameter sets, and whether
    /// the first slice starts at macroblock 0 (`first_mb_in_slice` is ue(v): 0 is a lone 1 bit).
    fn note_nal(&mut self, header: u8, first_payload_byte: Option<u8>) {
        let kind = header & 0x1f;
        match kind {
            NAL_SPS => self.has_sps = true,
            NAL_PPS => self.has_pps = true,
            _ => {}
        }
        if (NAL_SLICE..=NAL_IDR).contains(&kind) {
            self.keyframe |= kind == NAL_IDR;
            self.starts_at_first_slice
                .get_or_insert(first_payload_byte.is_some_and(|b| b & 0x80 != 0));
        }
    }
}

/// Appends a 4-byte big-endian length (NAL units here never exceed [`MAX_ACCESS_UNIT`]).
fn push_length(data: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    data.extend_from_slice(&len.to_be_bytes());
}

/// Iterates over the NAL units of AVCC data with 4-byte lengths; stops at the first
/// malformed length.
pub fn nal_units(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<LENGTH_PREFIX>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len == 0 || len > rest.len() {
            data = &[];
            return None;
        }
        let (nal, tail) = rest.split_at(len);
        data = tail;
        Some(nal)
    })
}

/// Duration in 48 kHz ticks of one Opus packet (RFC 6716 section 3.1), or `None` if the
/// packet is malformed.
pub fn opus_packet_duration(packet: &[u8]) -> Option<u32> {
    let &toc = packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let ticks = frame * frames;
    (frames > 0 && ticks <= 5760).then_some(ticks)
}

/// A 20 ms Opus packet that decodes to silence (CELT, fullband, one frame).
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    /// IDR slice with first_mb_in_slice = 0.
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x21, 0xa0];
    /// Non-IDR slice with first_mb_in_slice = 0.
    const P: &[u8] = &[0x41, 0x9a, 0x02, 0x03];

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            push_length(&mut out, nal.len());
            out.extend_from_slice(nal);
        }
        out
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x78];
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out
    }

    fn fu_a(nal: &[u8], pieces: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let step = body.len().div_ceil(pieces);
        let chunks: Vec<&[u8]> = body.chunks(step).collect();
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut header = nal[0] & 0x1f;
                if i == 0 {
                    header |= 0x80;
                }
                if i + 1 == chunks.len() {
                    header |= 0x40;
                }
                let mut out = vec![(nal[0] & 0xe0) | NAL_FU_A, header];
                out.extend_from_slice(chunk);
                out
            })
            .collect()
    }

    fn drain(d: &mut H264Depacketizer) -> Vec<AccessUnit> {
        std::iter::from_fn(|| d.pop()).collect()
    }

    #[test]
    fn stap_a_keyframe_then_single_nal() {
        let mut d = H264Depacketizer::new();
        assert!(d.needs_keyframe());
        d.push(0, false, false, &stap_a(&[SPS, PPS]));
        d.push(0, true, false, IDR);
        d.push(3000, true, false, P);
        let units = drain(&mut d);
        assert_eq!(units.len(), 2);
        assert!(units[0].keyframe);
        assert_eq!(units[0].data, avcc(&[SPS, PPS, IDR]));
        assert_eq!(
            units[1],
            AccessUnit {
                time: 3000,
                keyframe: false,
                data: avcc(&[P])
            }
        );
        assert_eq!(d.parameter_sets(), Some((SPS, PPS)));
        assert!(!d.needs_keyframe());
    }

    #[test]
    fn fu_a_reassembles_a_large_nal() {
        let mut big = IDR.to_vec();
        big.extend((0..5000).map(|i| (i % 251) as u8));
        let mut d = H264Depacketizer::new();
        d.push(7, false, false, &stap_a(&[SPS, PPS]));
        let pieces = fu_a(&big, 5);
        for (i, piece) in pieces.iter().enumerate() {
            d.push(7, i + 1 == pieces.len(), false, piece);
        }
        assert_eq!(drain(&mut d)[0].data, avcc(&[SPS, PPS, &big]));
    }

    #[test]
    fn timestamp_change_completes_a_unit_without_marker() {
        let mut d = H264Depacketizer::new();
        d.push(0, false, false, &stap_a(&[SPS, PPS, IDR]));
        d.push(3000, true, false, P);
        let units = drain(&mut d);
        assert_eq!(units.iter().map(|u| u.time).collect::<Vec<_>>(), [0, 3000]);
    }

    #[test]
    fn lost_fragment_drops_the_unit_and_waits_for_a_keyframe() {
        let mut big = P.to_vec();
        big.extend([7u8; 3000]);
        let mut d = H264Depacketizer::new();
        d.push(0, true, false, &stap_a(&[SPS, PPS, IDR]));
        let pieces = fu_a(&big, 3);
        d.push(3000, false, false, &pieces[0]);
        d.push(3000, true, true, &pieces[2]);
        assert!(d.needs_keyframe());
        d.push(6000, true, false, P);
        d.push(9000, true, false, IDR);
        let units = drain(&mut d);
        assert_eq!(units.iter().map(|u| u.time).collect::<Vec<_>>(), [0, 9000]);
        assert_eq!(
            units[1].data,
            avcc(&[SPS, PPS, IDR]),
            "cached parameter sets prepended"
        );
        let stats = d.stats();
        assert_eq!(
            (stats.dropped_incomplete, stats.dropped_waiting_for_keyframe),
            (1, 1)
        );
    }

    #[test]
    fn keyframe_missing_its_first_slice_is_not_a_restart_point() {
        let second_slice = [0x65, 0x48, 0x11];
        let mut d = H264Depacketizer::new();
        d.push(0, true, false, &stap_a(&[SPS, PPS, IDR]));
        d.push(3000, true, true, &second_slice);
        d.push(6000, true, false, P);
        assert_eq!(drain(&mut d).len(), 1);
        assert!(d.needs_keyframe());
    }

    #[test]
    fn parameter_sets_refresh_when_they_change() {
        let sps2 = [0x67, 0x42, 0xc0, 0x1f, 0xaa];
        let mut d = H264Depacketizer::new();
        d.push(0, true, false, &stap_a(&[SPS, PPS, IDR]));
        d.push(1, true, false, &stap_a(&[&sps2, PPS, IDR]));
        assert_eq!(d.parameter_sets(), Some((&sps2[..], PPS)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut d = H264Depacketizer::new();
        let inputs: [&[u8]; 10] = [
            &[],
            &[0x78],
            &[0x78, 0x00],
            &[0x78, 0x00, 0x05, 0x67],
            &[0x7c],
            &[0x7c, 0x45, 1, 2],
            &[0x7c, 0x85],
            &[0x99, 1, 2],
            &[0x79, 1, 2],
            &[0x1f],
        ];
        for (i, input) in inputs.iter().enumerate() {
            d.push(i as u64 / 2, i % 3 == 0, i % 4 == 0, input);
        }
        d.flush();
        assert!(drain(&mut d).is_empty());
        assert!(d.stats().unsupported_payloads >= 2);
    }

    #[test]
    fn a_fragmented_nal_unit_with_its_forbidden_bit_set_is_refused() {
        // found by fuzz/fuzz_targets/recorder_depacketize.rs: an FU-A indicator with F = 1
        // made a NAL unit with its forbidden bit set, which single NAL units never give
        let mut d = H264Depacketizer::new();
        d.push(0, true, false, &stap_a(&[SPS, PPS, IDR]));
        let mut pieces = fu_a(&[0x41, 0x9a, 1, 2, 3, 4], 2);
        pieces[0][0] |= 0x80;
        d.push(3000, false, false, &pieces[0]);
        d.push(3000, true, false, &pieces[1]);
        let units = drain(&mut d);
        assert_eq!(units.len(), 1, "only the keyframe");
        assert_eq!(d.stats().dropped_incomplete, 1);
        for unit in units {
            assert!(nal_units(&unit.data).all(|nal| nal[0] & 0x80 == 0));
        }
    }

    #[test]
    fn opus_durations_follow_the_toc() {
        assert_eq!(opus_packet_duration(&OPUS_SILENCE), Some(960));
        assert_eq!(opus_packet_duration(&[0x78]), Some(960)); // hybrid, 20 ms
        assert_eq!(opus_packet_duration(&[0x08 | 1]), Some(1920)); // two 10 ms SILK frames
        assert_eq!(opus_packet_duration(&[0xfb, 0x03]), Some(2880)); // three 20 ms CELT frames
        assert_eq!(opus_packet_duration(&[0xfb]), None);
        assert_eq!(opus_packet_duration(&[0xfb, 0x3f]), None);
        assert_eq!(opus_packet_duration(&[]), None);
    }
}
