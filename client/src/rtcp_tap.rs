//! Interceptors that observe RTCP feedback for the participant's statistics and hand keyframe
//! requests to the application.
//!
//! Both are [`RtcpTap`]s. [`RtcpCounter`] sits next to the wire (so it sees every inbound
//! packet before the NACK responder consumes it, and every outbound packet after the NACK
//! generator produced it) and only counts. [`KeyframeRequests`] sits last and narrows inbound
//! RTCP to PLI/FIR, delivered so the local video track's `poll()` yields them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kaskade_rtcp_tap::{KeyframeRequests, RtcpObserver, RtcpTap, Verdict, nacked_packets};
use rtc::interceptor::{Registry, Slot};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// Slot next to the wire for the counter (below congestion control, 1_000).
const COUNTER_SLOT: usize = 500;
/// Slot after every built-in interceptor for the forwarder (jitter buffer is 13_000).
const FORWARDER_SLOT: usize = 14_000;

/// RTCP feedback counters, shared between the interceptor and the participant.
#[derive(Debug, Default)]
pub struct RtcpCounters {
    /// NACK packets received.
    pub nacks_received: AtomicU64,
    /// Sequence numbers the remote asked to retransmit.
    pub nacked_packets_received: AtomicU64,
    /// NACK packets sent.
    pub nacks_sent: AtomicU64,
    /// Sequence numbers this side asked to retransmit.
    pub nacked_packets_sent: AtomicU64,
    /// PLI packets received.
    pub plis_received: AtomicU64,
    /// FIR packets received.
    pub firs_received: AtomicU64,
    /// PLI packets sent.
    pub plis_sent: AtomicU64,
}

/// Adds both interceptors to `registry`.
pub fn register(registry: Registry, counters: Arc<RtcpCounters>) -> Registry {
    registry
        .with(
            Slot::from(COUNTER_SLOT),
            RtcpTap::new(RtcpCounter { counters }),
        )
        .with(Slot::from(FORWARDER_SLOT), RtcpTap::new(KeyframeRequests))
}

/// Counts NACK/PLI/FIR in both directions; passes everything through unchanged.
pub struct RtcpCounter {
    counters: Arc<RtcpCounters>,
}

impl RtcpObserver for RtcpCounter {
    fn inbound(&mut self, _now: Instant, packets: &mut Vec<Box<dyn RtcpPacket>>) -> Verdict {
        let c = &self.counters;
        for packet in packets.iter() {
            let any = packet.as_any();
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                c.nacks_received.fetch_add(1, Ordering::Relaxed);
                c.nacked_packets_received
                    .fetch_add(nacked_packets(nack), Ordering::Relaxed);
            } else if any.is::<PictureLossIndication>() {
                c.plis_received.fetch_add(1, Ordering::Relaxed);
            } else if any.is::<FullIntraRequest>() {
                c.firs_received.fetch_add(1, Ordering::Relaxed);
            }
        }
        Verdict::Pass
    }

    fn outbound(&mut self, packets: &[Box<dyn RtcpPacket>]) {
        let c = &self.counters;
        for packet in packets {
            let any = packet.as_any();
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                c.nacks_sent.fetch_add(1, Ordering::Relaxed);
                c.nacked_packets_sent
                    .fetch_add(nacked_packets(nack), Ordering::Relaxed);
            } else if any.is::<PictureLossIndication>() {
                c.plis_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
