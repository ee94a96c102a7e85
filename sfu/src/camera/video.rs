//! A camera's H.264 access units (Annex B, parameter sets before every keyframe, as retina
//! hands them over) into RTP packets of packetization mode 1: single NAL units, SPS and PPS
//! aggregated in one STAP-A, larger NAL units split into FU-A fragments; the marker on the
//! last packet of each access unit.

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::shared::marshal::Marshal;

/// Largest RTP payload written (room for the RTP header, SRTP's tag and a TURN or TCP frame
/// within a 1280-byte path MTU).
pub const MAX_PAYLOAD: usize = 1_100;
/// The payload type a camera's video is published with.
pub const PAYLOAD_TYPE: u8 = 96;

/// RTP packetization of one camera video stream.
pub struct VideoPacketizer {
    payloader: H264Payloader,
    ssrc: u32,
    seq: u16,
}

impl VideoPacketizer {
    /// A stream with SSRC `ssrc` whose first packet has sequence number `seq`.
    pub fn new(ssrc: u32, seq: u16) -> Self {
        Self {
            payloader: H264Payloader::default(),
            ssrc,
            seq,
        }
    }

    /// Appends the RTP packets of one access unit with RTP timestamp `timestamp` (90 kHz) to
    /// `out`.
    pub fn packetize(&mut self, timestamp: u32, access_unit: &[u8], out: &mut Vec<BytesMut>) {
        let payloads = self
            .payloader
            .payload(MAX_PAYLOAD, &Bytes::copy_from_slice(access_unit))
            .unwrap_or_default();
        let last = payloads.len().saturating_sub(1);
        for (index, payload) in payloads.into_iter().enumerate() {
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker: index == last,
                    payload_type: PAYLOAD_TYPE,
                    sequence_number: self.seq,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload,
            };
            self.seq = self.seq.wrapping_add(1);
            if let Ok(bytes) = packet.marshal() {
                out.push(BytesMut::from(&bytes[..]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;

    fn parse(datagram: &BytesMut) -> rtc::rtp::Packet {
        rtc::rtp::Packet::unmarshal(&mut &datagram[..]).unwrap()
    }

    /// An access unit of SPS, PPS and an IDR slice of `idr_len` bytes, Annex B.
    fn keyframe(idr_len: usize) -> Vec<u8> {
        let mut au = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        au.extend([0, 0, 0, 1, 0x65]);
        au.extend((0..idr_len - 1).map(|i| (i % 251) as u8 | 1));
        au
    }

    #[test]
    fn a_keyframe_becomes_stap_a_then_fu_a_fragments_with_the_marker_on_the_last() {
        let mut p = VideoPacketizer::new(0xcafe, 65_534);
        let mut out = Vec::new();
        p.packetize(9_000, &keyframe(3_000), &mut out);
        let packets: Vec<_> = out.iter().map(parse).collect();
        assert_eq!(
            packets.len(),
            1 + 3,
            "STAP-A, then 3,000 bytes in three fragments"
        );
        assert_eq!(
            packets[0].payload[0] & 0x1f,
            24,
            "SPS and PPS in one STAP-A"
        );
        for fragment in &packets[1..] {
            assert_eq!(fragment.payload[0] & 0x1f, 28, "FU-A");
            assert_eq!(fragment.payload[1] & 0x1f, 5, "of an IDR slice");
            assert!(fragment.payload.len() <= MAX_PAYLOAD);
        }
        assert_eq!(packets[1].payload[1] & 0x80, 0x80, "start bit");
        assert_eq!(packets[3].payload[1] & 0x40, 0x40, "end bit");
        let seqs: Vec<u16> = packets.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, [65_534, 65_535, 0, 1], "wraps");
        let markers: Vec<bool> = packets.iter().map(|p| p.header.marker).collect();
        assert_eq!(markers, [false, false, false, true]);
        assert!(packets.iter().all(|p| p.header.timestamp == 9_000
            && p.header.ssrc == 0xcafe
            && p.header.payload_type == PAYLOAD_TYPE));
        assert!(crate::media::keyframe::h264_keyframe_start(
            &packets[0].payload
        ));
    }

    #[test]
    fn a_small_frame_is_one_packet_and_nothing_is_no_packet() {
        let mut p = VideoPacketizer::new(1, 10);
        let mut out = Vec::new();
        p.packetize(3_000, &[0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x03], &mut out);
        assert_eq!(out.len(), 1);
        let packet = parse(&out[0]);
        assert!(packet.header.marker);
        assert_eq!(&packet.payload[..], &[0x41, 0x9a, 0x02, 0x03]);
        p.packetize(6_000, &[], &mut out);
        assert_eq!(out.len(), 1);
        p.packetize(6_000, &[0, 0, 0, 1, 0x41, 0x9a], &mut out);
        assert_eq!(parse(&out[1]).header.sequence_number, 11);
    }
}
