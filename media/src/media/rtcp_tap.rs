//! The node's RTCP observer: subscribers' keyframe requests reach the forwarder, NACKs are
//! counted.
//!
//! The NACK responder answers retransmission requests from its cache inside the chain; the SFU
//! must still see PLI/FIR about the streams it forwards, to relay them, coalesced, to the
//! publisher, so exactly those are delivered to the application.

use crate::metrics::Metrics;
use kaskade_rtcp_tap::{RtcpObserver, RtcpTap, Verdict, is_keyframe_request, nacked_packets};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use std::sync::Arc;
use std::time::Instant;

/// Delivers PLI/FIR to the core and counts NACKed packets into the node's metrics.
pub struct NodeRtcp {
    metrics: Arc<Metrics>,
}

/// The tap a participant's chain carries.
pub fn tap(metrics: Arc<Metrics>) -> RtcpTap<NodeRtcp> {
    RtcpTap::new(NodeRtcp { metrics })
}

impl RtcpObserver for NodeRtcp {
    fn inbound(&mut self, _now: Instant, packets: &mut Vec<Box<dyn RtcpPacket>>) -> Verdict {
        let mut keyframe_request = false;
        for packet in packets.iter() {
            if is_keyframe_request(packet.as_ref()) {
                keyframe_request = true;
            } else if let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() {
                self.metrics.nacks_received.inc_by(nacked_packets(nack));
            }
        }
        if keyframe_request {
            Verdict::Deliver
        } else {
            Verdict::Pass
        }
    }
}
