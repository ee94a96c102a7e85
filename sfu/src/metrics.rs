//! Prometheus metrics of one node, rendered as text at `/metrics`.
//!
//! Counters are atomics updated on the media path without locks; the registry is only touched
//! when `/metrics` is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of a dropped-packet counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why the packet was dropped.
    pub reason: &'static str,
}

/// Label naming an SRTP protection profile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabel {
    /// The negotiated profile, as rtc names it.
    pub profile: String,
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    /// Rooms with at least one participant.
    pub rooms: Gauge,
    /// Participants on this node.
    pub participants: Gauge,
    /// UDP/TCP datagrams received.
    pub packets_in: Counter,
    /// Bytes received.
    pub bytes_in: Counter,
    /// Datagrams sent.
    pub packets_out: Counter,
    /// Bytes sent.
    pub bytes_out: Counter,
    /// RTP packets forwarded to a subscriber.
    pub rtp_forwarded: Counter,
    /// Datagrams or RTP packets dropped, by reason.
    pub dropped: Family<ReasonLabel, Counter>,
    /// Lost packets subscribers asked for (NACK entries received).
    pub nacks_received: Counter,
    /// Keyframe requests (PLI/FIR) received from subscribers.
    pub keyframe_requests_received: Counter,
    /// PLIs sent to publishers after coalescing.
    pub plis_sent: Counter,
    /// DTLS handshakes completed, by negotiated SRTP profile.
    pub srtp_profiles: Family<ProfileLabel, Counter>,
    /// Time from a datagram's arrival to the last forwarded copy written, per inbound RTP packet.
    pub forward_seconds: Histogram,
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kaskade_sfu");
        let metrics = Self {
            rooms: Gauge::default(),
            participants: Gauge::default(),
            packets_in: Counter::default(),
            bytes_in: Counter::default(),
            packets_out: Counter::default(),
            bytes_out: Counter::default(),
            rtp_forwarded: Counter::default(),
            dropped: Family::default(),
            nacks_received: Counter::default(),
            keyframe_requests_received: Counter::default(),
            plis_sent: Counter::default(),
            srtp_profiles: Family::default(),
            // 1 us .. ~16 ms
            forward_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1e-6, 2.0, 15),
            ),
            registry: Registry::default(),
        };
        registry.register("rooms", "Rooms with participants", metrics.rooms.clone());
        registry.register(
            "participants",
            "Participants on this node",
            metrics.participants.clone(),
        );
        registry.register(
            "packets_in",
            "Datagrams received",
            metrics.packets_in.clone(),
        );
        registry.register("bytes_in", "Bytes received", metrics.bytes_in.clone());
        registry.register("packets_out", "Datagrams sent", metrics.packets_out.clone());
        registry.register("bytes_out", "Bytes sent", metrics.bytes_out.clone());
        registry.register(
            "rtp_forwarded",
            "RTP packets forwarded to subscribers",
            metrics.rtp_forwarded.clone(),
        );
        registry.register(
            "dropped",
            "Packets dropped, by reason",
            metrics.dropped.clone(),
        );
        registry.register(
            "nacks_received",
            "Lost packets subscribers asked to retransmit",
            metrics.nacks_received.clone(),
        );
        registry.register(
            "keyframe_requests_received",
            "PLI/FIR received from subscribers",
            metrics.keyframe_requests_received.clone(),
        );
        registry.register(
            "plis_sent",
            "PLI sent to publishers after coalescing",
            metrics.plis_sent.clone(),
        );
        registry.register(
            "srtp_profiles",
            "DTLS-SRTP sessions by negotiated protection profile",
            metrics.srtp_profiles.clone(),
        );
        registry.register(
            "forward_seconds",
            "Datagram arrival to last forwarded copy written, per inbound RTP packet",
            metrics.forward_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts one dropped packet.
    pub fn drop_packet(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
