//! A pass-through interceptor for webrtc-rs `rtc` chains that shows every RTCP compound packet
//! to an [`RtcpObserver`], which may count it, narrow it, or mark it for the application.
//!
//! An `rtc` chain ends inbound RTCP at its terminus: reports, NACKs and TWCC are the chain's own
//! business. Whoever needs keyframe requests (the SFU relays them to publishers; a client's
//! encoder answers them) or feedback statistics puts an [`RtcpTap`] in the chain instead of
//! writing the queueing boilerplate of an interceptor again.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// What happens to an inbound compound RTCP packet after the observer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Continue up the chain as usual (it stops at the terminus).
    Pass,
    /// Continue up the chain and reach the application.
    Deliver,
    /// Stop here.
    Drop,
}

/// Sees the RTCP crossing the tap's place in the chain.
pub trait RtcpObserver: Send + Sync + 'static {
    /// An inbound compound packet, read at `now`; the observer may narrow `packets`.
    fn inbound(&mut self, now: Instant, packets: &mut Vec<Box<dyn RtcpPacket>>) -> Verdict;

    /// An outbound compound packet.
    fn outbound(&mut self, _packets: &[Box<dyn RtcpPacket>]) {}
}

/// The interceptor: queues packets through unchanged except for what the observer decides.
pub struct RtcpTap<O> {
    observer: O,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<O: RtcpObserver> RtcpTap<O> {
    /// A tap reporting to `observer`.
    pub fn new(observer: O) -> Self {
        Self {
            observer,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl<O: RtcpObserver> Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap<O> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            match self.observer.inbound(msg.now, packets) {
                Verdict::Pass => {}
                Verdict::Deliver => {
                    msg.message.add(Attribute::DeliverToApplication);
                }
                Verdict::Drop => return Ok(()),
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            self.observer.outbound(packets);
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.read.clear();
        self.write.clear();
        Ok(())
    }
}

impl<O: RtcpObserver> Interceptor for RtcpTap<O> {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// An observer that lets exactly the keyframe requests (PLI/FIR) of inbound RTCP reach the
/// application and stops everything else, as the end of a default chain would.
pub struct KeyframeRequests;

impl RtcpObserver for KeyframeRequests {
    fn inbound(&mut self, _now: Instant, packets: &mut Vec<Box<dyn RtcpPacket>>) -> Verdict {
        packets.retain(|p| is_keyframe_request(p.as_ref()));
        if packets.is_empty() {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Whether `packet` asks for a keyframe (PLI or FIR).
pub fn is_keyframe_request(packet: &dyn RtcpPacket) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// The SSRC whose keyframe `packet` asks for, if it is a PLI or a FIR (a FIR's first entry).
pub fn keyframe_wanted_of(packet: &dyn RtcpPacket) -> Option<u32> {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        return Some(pli.media_ssrc);
    }
    let fir = any.downcast_ref::<FullIntraRequest>()?;
    Some(fir.fir.first().map_or(fir.media_ssrc, |entry| entry.ssrc))
}

/// How many sequence numbers a NACK asks for.
pub fn nacked_packets(nack: &TransportLayerNack) -> u64 {
    nack.nacks
        .iter()
        .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
    use rtc::shared::{TransportContext, TransportProtocol};

    fn rtcp(packets: Vec<Box<dyn RtcpPacket>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: "127.0.0.1:5000".parse().unwrap(),
                peer_addr: "127.0.0.1:6000".parse().unwrap(),
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: Packet::Rtcp(packets).into(),
        }
    }

    #[test]
    fn the_verdict_decides_delivery_and_writes_pass_untouched() {
        let mut tap = RtcpTap::new(KeyframeRequests);
        tap.handle_read(rtcp(vec![
            Box::new(ReceiverReport::default()),
            Box::new(PictureLossIndication::default()),
        ]))
        .unwrap();
        let delivered = tap.poll_read().expect("a PLI goes on");
        assert!(delivered.message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(packets) = &delivered.message.packet else {
            panic!("rtcp");
        };
        assert_eq!(packets.len(), 1, "narrowed to the keyframe request");
        tap.handle_read(rtcp(vec![Box::new(ReceiverReport::default())]))
            .unwrap();
        assert!(tap.poll_read().is_none(), "dropped");
        tap.handle_write(rtcp(vec![Box::new(ReceiverReport::default())]))
            .unwrap();
        assert!(tap.poll_write().is_some(), "writes are never swallowed");
    }

    #[test]
    fn a_keyframe_request_names_the_ssrc_it_wants_a_keyframe_of() {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        };
        assert_eq!(keyframe_wanted_of(&pli), Some(7));
        let fir = FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 0,
            fir: vec![rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry {
                ssrc: 9,
                sequence_number: 3,
            }],
        };
        assert_eq!(keyframe_wanted_of(&fir), Some(9));
        assert_eq!(keyframe_wanted_of(&ReceiverReport::default()), None);
    }

    #[test]
    fn counts_nacked_sequence_numbers() {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![
                NackPair {
                    packet_id: 10,
                    lost_packets: 0b101,
                },
                NackPair {
                    packet_id: 40,
                    lost_packets: 0,
                },
            ],
        };
        assert_eq!(nacked_packets(&nack), 4);
    }
}
