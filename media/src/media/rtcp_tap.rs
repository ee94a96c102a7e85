//! The node's RTCP observer: subscribers' keyframe requests and NACKs reach the forwarder,
//! receiver reports that show loss reach the peer's RED encoders, NACKs are counted.
//!
//! The SFU relays PLI/FIR about the streams it forwards, coalesced, to the publisher, answers
//! NACKs from the publisher's retransmission ring (`media::repair`; the NACK filter under this
//! tap has already taken out what is not worth resending), and protects the audio of
//! subscribers whose reports show loss with redundancy, so exactly those are delivered to the
//! application.

use crate::metrics::Metrics;
use kaskade_rtcp_tap::{RtcpObserver, RtcpTap, Verdict, is_keyframe_request, nacked_packets};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use std::sync::Arc;
use std::time::Instant;

/// Delivers PLI/FIR, NACKs and receiver reports that show loss to the peer, and counts NACKed
/// packets into the node's metrics.
pub struct NodeRtcp {
    metrics: Arc<Metrics>,
}

/// The tap a participant's chain carries.
pub fn tap(metrics: Arc<Metrics>) -> RtcpTap<NodeRtcp> {
    RtcpTap::new(NodeRtcp { metrics })
}

impl RtcpObserver for NodeRtcp {
    fn inbound(&mut self, _now: Instant, packets: &mut Vec<Box<dyn RtcpPacket>>) -> Verdict {
        let mut deliver = false;
        for packet in packets.iter() {
            let any = packet.as_any();
            if is_keyframe_request(packet.as_ref()) {
                deliver = true;
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                self.metrics.nacks_received.inc_by(nacked_packets(nack));
                deliver = true;
            } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                deliver |= shows_loss(&report.reports);
            } else if let Some(report) = any.downcast_ref::<SenderReport>() {
                deliver |= shows_loss(&report.reports);
            }
        }
        if deliver {
            Verdict::Deliver
        } else {
            Verdict::Pass
        }
    }
}

/// Whether a report block says something was lost since the last report.
fn shows_loss(reports: &[ReceptionReport]) -> bool {
    reports.iter().any(|r| r.fraction_lost > 0)
}
