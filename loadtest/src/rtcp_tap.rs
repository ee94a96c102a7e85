//! Interceptors that observe RTCP feedback for the participant's statistics and hand keyframe
//! requests to the application.
//!
//! webrtc-rs stops inbound RTCP at the end of the interceptor chain unless an interceptor marks
//! it `DeliverToApplication`. [`RtcpCounter`] sits next to the wire (so it sees every inbound
//! packet before the NACK responder consumes it, and every outbound packet after the NACK
//! generator produced it) and only counts. [`KeyframeForwarder`] sits last and marks inbound
//! PLI/FIR so the local video track's `poll()` yields them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

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
            RtcpCounter {
                counters,
                read: VecDeque::new(),
                write: VecDeque::new(),
            },
        )
        .with(
            Slot::from(FORWARDER_SLOT),
            KeyframeForwarder {
                read: VecDeque::new(),
                write: VecDeque::new(),
            },
        )
}

fn nacked(nack: &TransportLayerNack) -> u64 {
    nack.nacks
        .iter()
        .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
        .sum()
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Counts NACK/PLI/FIR in both directions; passes everything through unchanged.
pub struct RtcpCounter {
    counters: Arc<RtcpCounters>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpCounter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let c = &self.counters;
            for packet in packets {
                let any = packet.as_any();
                if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                    c.nacks_received.fetch_add(1, Ordering::Relaxed);
                    c.nacked_packets_received
                        .fetch_add(nacked(nack), Ordering::Relaxed);
                } else if any.is::<PictureLossIndication>() {
                    c.plis_received.fetch_add(1, Ordering::Relaxed);
                } else if any.is::<FullIntraRequest>() {
                    c.firs_received.fetch_add(1, Ordering::Relaxed);
                }
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
            let c = &self.counters;
            for packet in packets {
                let any = packet.as_any();
                if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                    c.nacks_sent.fetch_add(1, Ordering::Relaxed);
                    c.nacked_packets_sent
                        .fetch_add(nacked(nack), Ordering::Relaxed);
                } else if any.is::<PictureLossIndication>() {
                    c.plis_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpCounter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Marks inbound PLI/FIR for delivery to the application (narrowed to just those packets);
/// other inbound RTCP stops here as it would at the end of the default chain.
pub struct KeyframeForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            if !packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                return Ok(());
            }
            packets.retain(|p| is_keyframe_request(p.as_ref()));
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
