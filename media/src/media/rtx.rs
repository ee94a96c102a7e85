//! Retransmissions on a repair stream of their own (RTX, RFC 4588), in both directions.
//!
//! To a subscriber: each video slot announces a repair SSRC beside its media SSRC
//! (`a=ssrc-group:FID`), and the node answers a NACK with an RTX packet on it (the packet from
//! the publisher's ring, `media::repair`, wrapped by the peer), so
//! the subscriber's receive statistics and its jitter buffer tell a retransmission from a late
//! original. What binds streams for transport-wide congestion control binds each repair SSRC
//! too (`bwe::TwccStreamsOnly`), so retransmissions carry TWCC sequence numbers and count in
//! the estimate like any byte sent.
//!
//! From a publisher: a browser that negotiated RTX resends what the node NACKs on its repair
//! SSRC. `rtc` resolves a repair SSRC the offer declared only after the interceptor chain, and
//! one a simulcast layer names by its `repaired-rtp-stream-id` not at all. [`RtxUnwrap`] sits
//! in the chain under the NACK generator and turns each RTX packet back into the packet it
//! repairs: the generator stops asking for it and the forwarder gets it as the original.
//! Chromium also probes its uplink with RTX copies of packets it already sent (redundant
//! padding); a repair of a packet that already arrived is emptied instead, so that it still
//! reaches the TWCC receiver (its arrival is feedback the browser's estimate needs) and goes no
//! further: `rtc` drops an RTX packet with no original sequence number.

use crate::media::arrival::ArrivalLog;
use crate::metrics::Metrics;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// The RTP stream id header extension (RFC 8852): which simulcast layer a packet belongs to.
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// The repaired RTP stream id header extension: which layer an RTX packet repairs.
pub const REPAIRED_RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
/// Streams (and repair flows) one publisher may have: three layers of video and audio, with room
/// to spare. Later ones are not tracked.
const MAX_STREAMS: usize = 16;
/// The longest rid tracked (RFC 8851 allows 255; browsers use one or two characters).
const MAX_RID: usize = 16;

/// A publisher's media stream that a repair flow may name.
#[derive(Debug, Clone, Copy)]
struct Primary {
    ssrc: u32,
    payload_type: u8,
    /// Its rid, for a simulcast layer.
    rid: Option<Rid>,
    arrived: ArrivalLog,
}

/// A rid kept inline, so learning one allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rid {
    len: u8,
    bytes: [u8; MAX_RID],
}

impl Rid {
    fn new(value: &[u8]) -> Option<Self> {
        let mut bytes = [0; MAX_RID];
        bytes.get_mut(..value.len())?.copy_from_slice(value);
        Some(Self {
            len: u8::try_from(value.len()).ok()?,
            bytes,
        })
    }
}

/// A repair SSRC and the stream it repairs.
#[derive(Debug, Clone, Copy)]
struct Flow {
    rtx_ssrc: u32,
    primary_ssrc: u32,
    primary_payload_type: u8,
}

/// The interceptor that unwraps a publisher's RTX packets into the packets they repair.
pub struct RtxUnwrap {
    rid_ext: Option<u8>,
    repaired_rid_ext: Option<u8>,
    primaries: Vec<Primary>,
    flows: Vec<Flow>,
    metrics: Arc<Metrics>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RtxUnwrap {
    /// An unwrapper counting what it unwraps into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            rid_ext: None,
            repaired_rid_ext: None,
            primaries: Vec::new(),
            flows: Vec::new(),
            metrics,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// Notes a media packet's arrival; the first packet of a stream that names its rid makes
    /// the stream one a repair flow may name.
    fn note_media(&mut self, header: &rtp::header::Header) {
        if let Some(primary) = self.primaries.iter_mut().find(|p| p.ssrc == header.ssrc) {
            primary.arrived.note(header.sequence_number);
            return;
        }
        let Some(id) = self.rid_ext else {
            return;
        };
        if self.primaries.len() >= MAX_STREAMS {
            return;
        }
        if let Some(rid) = header.get_extension(id).and_then(|v| Rid::new(&v)) {
            let mut arrived = ArrivalLog::EMPTY;
            arrived.note(header.sequence_number);
            self.primaries.push(Primary {
                ssrc: header.ssrc,
                payload_type: header.payload_type,
                rid: Some(rid),
                arrived,
            });
        }
    }

    /// Unwraps a packet of `flow`, or empties one that repairs what already arrived.
    fn repair(&mut self, packet: &mut rtp::Packet, flow: Flow) {
        let Some(primary) = self
            .primaries
            .iter_mut()
            .find(|p| p.ssrc == flow.primary_ssrc)
        else {
            return;
        };
        let Some(osn) = original_seq(packet) else {
            return;
        };
        if primary.arrived.has(osn) {
            packet.payload.clear();
            self.metrics.rtx_redundant.inc();
        } else {
            primary.arrived.note(osn);
            unwrap(packet, osn, flow);
            self.metrics.rtx_unwrapped.inc();
        }
    }

    /// The repair flow `header` belongs to: declared, or named by its repaired rid.
    fn flow_of(&mut self, header: &rtp::header::Header) -> Option<Flow> {
        if let Some(flow) = self.flows.iter().find(|f| f.rtx_ssrc == header.ssrc) {
            return Some(*flow);
        }
        let rid = Rid::new(&header.get_extension(self.repaired_rid_ext?)?)?;
        let primary = self.primaries.iter().find(|p| p.rid == Some(rid))?;
        let flow = Flow {
            rtx_ssrc: header.ssrc,
            primary_ssrc: primary.ssrc,
            primary_payload_type: primary.payload_type,
        };
        if self.flows.len() < MAX_STREAMS {
            self.flows.push(flow);
        }
        Some(flow)
    }
}

/// The sequence number an RTX packet repairs: its payload's first two bytes. `None` for padding
/// sent to probe the path.
fn original_seq(packet: &rtp::Packet) -> Option<u16> {
    let osn = packet.payload.get(..2)?;
    Some(u16::from_be_bytes([osn[0], osn[1]]))
}

/// Turns an RTX packet into the one it repairs: the original sequence number `osn`, SSRC and
/// payload type, timestamp and marker as they are.
fn unwrap(packet: &mut rtp::Packet, osn: u16, flow: Flow) {
    packet.header.sequence_number = osn;
    packet.header.ssrc = flow.primary_ssrc;
    packet.header.payload_type = flow.primary_payload_type;
    packet.header.padding = false;
    packet.payload = packet.payload.slice(2..);
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxUnwrap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            match self.flow_of(&packet.header) {
                Some(flow) => self.repair(packet, flow),
                None => self.note_media(&packet.header),
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }

    fn close(&mut self) -> Result<(), Error> {
        self.read.clear();
        self.write.clear();
        Ok(())
    }
}

impl Interceptor for RtxUnwrap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        for extension in &info.rtp_header_extensions {
            let id = u8::try_from(extension.id).ok();
            match extension.uri.as_str() {
                RID_URI => self.rid_ext = id,
                REPAIRED_RID_URI => self.repaired_rid_ext = id,
                _ => {}
            }
        }
        if let Some(rtx_ssrc) = info.ssrc_rtx
            && self.flows.len() < MAX_STREAMS
            && !self.flows.iter().any(|f| f.rtx_ssrc == rtx_ssrc)
        {
            self.flows.push(Flow {
                rtx_ssrc,
                primary_ssrc: info.ssrc,
                primary_payload_type: info.payload_type,
            });
            if !self.primaries.iter().any(|p| p.ssrc == info.ssrc) {
                self.primaries.push(Primary {
                    ssrc: info.ssrc,
                    payload_type: info.payload_type,
                    rid: None,
                    arrived: ArrivalLog::EMPTY,
                });
            }
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.flows.retain(|f| f.primary_ssrc != info.ssrc);
        self.primaries.retain(|p| p.ssrc != info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::shared::TransportContext;

    const RID_EXT: u8 = 10;
    const RRID_EXT: u8 = 11;
    const H264: u8 = 102;
    const RTX: u8 = 103;

    fn tagged(packet: rtp::Packet) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: Packet::Rtp(packet).into(),
        }
    }

    fn packet(
        ssrc: u32,
        payload_type: u8,
        seq: u16,
        ext: Option<(u8, &str)>,
        payload: &[u8],
    ) -> rtp::Packet {
        let mut header = rtp::header::Header {
            version: 2,
            ssrc,
            payload_type,
            sequence_number: seq,
            timestamp: 9_000,
            marker: true,
            ..Default::default()
        };
        if let Some((id, value)) = ext {
            header
                .set_extension(id, Bytes::copy_from_slice(value.as_bytes()))
                .unwrap();
        }
        rtp::Packet {
            header,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn through(unwrapper: &mut RtxUnwrap, packet: rtp::Packet) -> rtp::Packet {
        unwrapper.handle_read(tagged(packet)).unwrap();
        let Packet::Rtp(out) = unwrapper
            .poll_read()
            .expect("every packet goes on")
            .message
            .packet
        else {
            panic!("rtp");
        };
        out
    }

    fn simulcast_publisher() -> RtxUnwrap {
        let mut unwrapper = RtxUnwrap::new(Arc::new(Metrics::default()));
        unwrapper.bind_remote_stream(&StreamInfo {
            ssrc: 1_000,
            payload_type: H264,
            rtp_header_extensions: vec![
                RTPHeaderExtension {
                    uri: RID_URI.into(),
                    id: RID_EXT.into(),
                },
                RTPHeaderExtension {
                    uri: REPAIRED_RID_URI.into(),
                    id: RRID_EXT.into(),
                },
            ],
            ..Default::default()
        });
        unwrapper
    }

    #[test]
    fn a_layers_retransmission_named_by_its_repaired_rid_becomes_the_original() {
        let mut unwrapper = simulcast_publisher();
        through(
            &mut unwrapper,
            packet(1_000, H264, 7, Some((RID_EXT, "f")), b"top"),
        );
        through(
            &mut unwrapper,
            packet(2_000, H264, 70, Some((RID_EXT, "h")), b"mid"),
        );

        let repaired = through(
            &mut unwrapper,
            packet(3_000, RTX, 1, Some((RRID_EXT, "h")), b"\x00\x45mid"),
        );
        assert_eq!(repaired.header.ssrc, 2_000, "the layer the rid names");
        assert_eq!(
            repaired.header.sequence_number, 0x45,
            "the original sequence number"
        );
        assert_eq!(repaired.header.payload_type, H264);
        assert_eq!(
            (repaired.header.timestamp, repaired.header.marker),
            (9_000, true)
        );
        assert_eq!(&repaired.payload[..], b"mid");

        // the flow is remembered once the sender stops naming the rid
        let later = through(&mut unwrapper, packet(3_000, RTX, 2, None, b"\x00\x44more"));
        assert_eq!(
            (later.header.ssrc, later.header.sequence_number),
            (2_000, 0x44)
        );
        assert_eq!(unwrapper.metrics.rtx_unwrapped.get(), 2);

        // a copy of a packet that arrived (a browser's probe, or a second repair) goes no
        // further than the chain: emptied, it is an RTX packet with nothing to repair
        for osn in [b"\x00\x46", b"\x00\x45"] {
            let copy = through(
                &mut unwrapper,
                packet(3_000, RTX, 3, None, &[&osn[..], b"mid"].concat()),
            );
            assert_eq!(copy.header.ssrc, 3_000);
            assert!(copy.payload.is_empty());
        }
        assert_eq!(unwrapper.metrics.rtx_redundant.get(), 2);
        assert_eq!(unwrapper.metrics.rtx_unwrapped.get(), 2);
    }

    #[test]
    fn a_declared_repair_flow_is_unwrapped_and_probe_padding_left_alone() {
        let mut unwrapper = RtxUnwrap::new(Arc::new(Metrics::default()));
        unwrapper.bind_remote_stream(&StreamInfo {
            ssrc: 1_000,
            ssrc_rtx: Some(1_001),
            payload_type: H264,
            payload_type_rtx: Some(RTX),
            ..Default::default()
        });
        let repaired = through(&mut unwrapper, packet(1_001, RTX, 5, None, b"\x12\x34x"));
        assert_eq!(
            (repaired.header.ssrc, repaired.header.sequence_number),
            (1_000, 0x1234)
        );

        let padding = through(&mut unwrapper, packet(1_001, RTX, 6, None, b""));
        assert_eq!(
            (padding.header.ssrc, padding.header.sequence_number),
            (1_001, 6)
        );
        assert_eq!(unwrapper.metrics.rtx_unwrapped.get(), 1);

        unwrapper.unbind_remote_stream(&StreamInfo {
            ssrc: 1_000,
            ..Default::default()
        });
        let after = through(&mut unwrapper, packet(1_001, RTX, 7, None, b"\x12\x35x"));
        assert_eq!(after.header.ssrc, 1_001, "forgotten with its stream");
    }

    #[test]
    fn media_and_unknown_repair_rids_pass_untouched() {
        let mut unwrapper = simulcast_publisher();
        let media = through(
            &mut unwrapper,
            packet(1_000, H264, 7, Some((RID_EXT, "f")), b"top"),
        );
        assert_eq!(
            (media.header.ssrc, media.header.sequence_number),
            (1_000, 7)
        );
        let stranger = through(
            &mut unwrapper,
            packet(4_000, RTX, 1, Some((RRID_EXT, "q")), b"\x00\x01x"),
        );
        assert_eq!(stranger.header.ssrc, 4_000, "no layer has that rid");
        let long = "x".repeat(MAX_RID + 1);
        let odd = through(
            &mut unwrapper,
            packet(5_000, H264, 1, Some((RID_EXT, &long)), b"y"),
        );
        assert_eq!(odd.header.ssrc, 5_000);
        assert_eq!(unwrapper.metrics.rtx_unwrapped.get(), 0);
    }
}
