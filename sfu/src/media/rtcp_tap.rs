//! An interceptor that lets subscribers' keyframe requests reach the forwarder and counts NACKs.
//!
//! The interceptor chain ends inbound RTCP at its terminus (reports, NACKs and TWCC are the
//! chain's own business: the NACK responder answers retransmission requests from its cache). The
//! SFU must still see PLI/FIR about the streams it forwards, to relay them, coalesced, to the
//! publisher; this tap marks exactly those for delivery to the application.

use crate::metrics::Metrics;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Marks inbound PLI/FIR for the application and counts inbound NACKs.
pub struct RtcpTap {
    metrics: Arc<Metrics>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    /// A tap that reports into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let mut keyframe_request = false;
            for packet in packets {
                let any = packet.as_any();
                if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                    keyframe_request = true;
                } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                    let lost: u64 = nack
                        .nacks
                        .iter()
                        .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
                        .sum();
                    self.metrics.nacks_received.inc_by(lost);
                }
            }
            if keyframe_request {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.read_queue.clear();
        self.write_queue.clear();
        Ok(())
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
