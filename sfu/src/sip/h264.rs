//! H.264 over RTP between packetization modes (RFC 6184) for SIP legs: a room system that takes
//! mode 0 only gets one whole NAL unit per packet (the meeting's STAP-A split, its FU-A put back
//! together), and a room system's NAL units larger than a datagram reach the meeting
//! as FU-A fragments. Also the few RTP header fields the legs read, without copying the payload.

/// NAL unit type of a single-time aggregation packet.
const STAP_A: u8 = 24;
/// NAL unit type of a fragmentation unit.
const FU_A: u8 = 28;
/// The largest NAL unit put back together (a 1080p keyframe fits).
const MAX_NAL: usize = 1 << 20;

/// The fields of an RTP packet a leg reads, and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpParts<'a> {
    /// The marker bit (the last packet of a frame).
    pub marker: bool,
    /// The payload type.
    pub payload_type: u8,
    /// The sequence number.
    pub seq: u16,
    /// The timestamp.
    pub timestamp: u32,
    /// The SSRC.
    pub ssrc: u32,
    /// The payload, without padding.
    pub payload: &'a [u8],
}

/// The parts of an RTP packet (version 2; CSRCs, a header extension and padding skipped), or
/// `None` for anything else.
pub fn rtp_parts(datagram: &[u8]) -> Option<RtpParts<'_>> {
    let first = *datagram.first()?;
    if first >> 6 != 2 || datagram.len() < 12 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = datagram.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = datagram.len();
    if first & 0x20 != 0 {
        end = end.checked_sub(usize::from(*datagram.last()?))?;
    }
    Some(RtpParts {
        marker: datagram[1] & 0x80 != 0,
        payload_type: datagram[1] & 0x7f,
        seq: u16::from_be_bytes([datagram[2], datagram[3]]),
        timestamp: u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
        ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
        payload: datagram.get(start..end)?,
    })
}

/// A 12-byte RTP header (no CSRC, no extension).
pub fn rtp_header(
    (marker, payload_type): (bool, u8),
    seq: u16,
    timestamp: u32,
    ssrc: u32,
) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = 0x80;
    header[1] = u8::from(marker) << 7 | payload_type;
    header[2..4].copy_from_slice(&seq.to_be_bytes());
    header[4..8].copy_from_slice(&timestamp.to_be_bytes());
    header[8..12].copy_from_slice(&ssrc.to_be_bytes());
    header
}

/// Whole NAL units out of mode 1 payloads: single ones as they are, STAP-A split, FU-A put
/// back together (a unit with a fragment lost is dropped).
#[derive(Debug, Default)]
pub struct Depacketizer {
    /// The fragmented unit being put back together, if its fragments keep coming.
    unit: Vec<u8>,
    assembling: bool,
}

impl Depacketizer {
    /// A packet was lost: the unit being put back together cannot be completed.
    pub fn lost(&mut self) {
        self.assembling = false;
        self.unit.clear();
    }

    /// The NAL units `payload` completes, each to `emit`.
    pub fn push(&mut self, payload: &[u8], mut emit: impl FnMut(&[u8])) {
        let Some(&indicator) = payload.first() else {
            return;
        };
        match indicator & 0x1f {
            1..=23 => emit(payload),
            STAP_A => {
                let mut rest = &payload[1..];
                while let [high, low, tail @ ..] = rest {
                    let len = usize::from(u16::from_be_bytes([*high, *low]));
                    let Some(unit) = tail.get(..len) else {
                        return;
                    };
                    if !unit.is_empty() {
                        emit(unit);
                    }
                    rest = &tail[len..];
                }
            }
            FU_A => self.fragment(indicator, &payload[1..], emit),
            _ => {}
        }
    }

    fn fragment(&mut self, indicator: u8, payload: &[u8], mut emit: impl FnMut(&[u8])) {
        let Some((&header, data)) = payload.split_first() else {
            return;
        };
        let (start, end) = (header & 0x80 != 0, header & 0x40 != 0);
        if start {
            self.unit.clear();
            self.unit.push(indicator & 0xe0 | header & 0x1f);
            self.assembling = true;
        }
        if !self.assembling || self.unit.len() + data.len() > MAX_NAL {
            self.lost();
            return;
        }
        self.unit.extend_from_slice(data);
        if end {
            emit(&self.unit);
            self.lost();
        }
    }
}

/// The payloads that carry `nal` within `max` bytes each: the unit itself when it fits, else
/// FU-A fragments; each to `emit` with whether it is the unit's last. `scratch` is reused.
pub fn fragments(nal: &[u8], max: usize, scratch: &mut Vec<u8>, mut emit: impl FnMut(&[u8], bool)) {
    let Some((&header, data)) = nal.split_first() else {
        return;
    };
    if nal.len() <= max {
        emit(nal, true);
        return;
    }
    let chunk = max.saturating_sub(2).max(1);
    let count = data.len().div_ceil(chunk);
    for (n, piece) in data.chunks(chunk).enumerate() {
        let (first, last) = (n == 0, n + 1 == count);
        scratch.clear();
        scratch.push(header & 0xe0 | FU_A);
        scratch.push(u8::from(first) << 7 | u8::from(last) << 6 | header & 0x1f);
        scratch.extend_from_slice(piece);
        emit(scratch, last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(depacketizer: &mut Depacketizer, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for payload in payloads {
            depacketizer.push(payload, |unit| out.push(unit.to_vec()));
        }
        out
    }

    #[test]
    fn rtp_parts_skip_csrcs_extensions_and_padding() {
        let mut packet = vec![0xb1, 0x80 | 96, 0, 7, 0, 0, 1, 0, 0, 0, 0, 9];
        packet.extend_from_slice(&[1, 2, 3, 4]); // a CSRC
        packet.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one extension word
        packet.extend_from_slice(&[0x65, 0xaa]); // the payload
        packet.extend_from_slice(&[0, 0, 3]); // padding
        let parts = rtp_parts(&packet).unwrap();
        assert_eq!(
            (
                parts.marker,
                parts.payload_type,
                parts.seq,
                parts.timestamp,
                parts.ssrc
            ),
            (true, 96, 7, 256, 9)
        );
        assert_eq!(parts.payload, &[0x65, 0xaa]);
        for bad in [
            &[][..],
            &[0x80, 96, 0],
            &[0x40; 12],
            &[0x90; 14],
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 99],
        ] {
            assert!(rtp_parts(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn aggregates_are_split_and_fragments_put_back_together() {
        let (sps, pps, idr) = (vec![0x67, 1, 2], vec![0x68, 3], vec![0x65; 3_000]);
        let mut stap = vec![0x78];
        for unit in [&sps, &pps] {
            stap.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            stap.extend_from_slice(unit);
        }
        let mut payloads = vec![stap];
        let mut scratch = Vec::new();
        fragments(&idr, 1_200, &mut scratch, |p, _| payloads.push(p.to_vec()));
        assert_eq!(payloads.len(), 4, "an aggregate and three fragments");
        assert!(payloads[1..].iter().all(|p| p.len() <= 1_200));
        let got = units(&mut Depacketizer::default(), &payloads);
        assert_eq!(got, vec![sps, pps, idr]);
    }

    #[test]
    fn a_unit_with_a_fragment_lost_is_dropped_and_the_next_comes_whole() {
        let idr = vec![0x65; 2_500];
        let mut payloads = Vec::new();
        let mut scratch = Vec::new();
        fragments(&idr, 1_000, &mut scratch, |p, _| payloads.push(p.to_vec()));
        let mut depacketizer = Depacketizer::default();
        assert!(units(&mut depacketizer, &payloads[..1]).is_empty());
        depacketizer.lost();
        assert!(
            units(&mut depacketizer, &payloads[1..]).is_empty(),
            "the rest of a lost unit"
        );
        assert_eq!(units(&mut depacketizer, &payloads), vec![idr]);
        assert!(
            units(
                &mut depacketizer,
                &[vec![], vec![0x7c], vec![0x78, 0, 9, 1]]
            )
            .is_empty()
        );
    }

    #[test]
    fn a_unit_that_fits_is_its_own_payload() {
        let mut got = Vec::new();
        fragments(&[0x41, 1, 2], 1_200, &mut Vec::new(), |p, last| {
            got.push((p.to_vec(), last))
        });
        assert_eq!(got, vec![(vec![0x41, 1, 2], true)]);
    }
}
