//! Prometheus metrics of one node, rendered as text at `/metrics`.
//!
//! Every handle the media path touches is created up front, so counting is one atomic add: no
//! lock and no label lookup per packet. The registry is only read when `/metrics` is scraped.
//! Metrics the shell registers beside these (its process gauges) are refreshed by the sampler
//! it gives [`Metrics::with_extra`] when `/metrics` is scraped; the sizes of the node's
//! long-lived maps are set once a second by the node's driver ([`Metrics::set_map_sizes`]).

use crate::media::forwarder::DropReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// Why a datagram or an RTP packet was not delivered. Each reason is one
/// `kaskade_sfu_dropped_total{reason=…}` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A datagram without a byte.
    Empty,
    /// Shorter than the header its first byte announces.
    Truncated,
    /// Its first byte is none of STUN, DTLS, RTP or RTCP (RFC 7983).
    NotWebrtc,
    /// From an unknown four-tuple and not a STUN request naming a participant.
    Unroutable,
    /// Routed to a participant who has left.
    UnknownParticipant,
    /// The participant's connection refused it.
    RejectedByTransport,
    /// RTP with a payload type the publisher did not negotiate.
    UnknownPayloadType,
    /// The publisher is muted.
    Muted,
    /// A padding-only probe, skipped without a sequence gap.
    PaddingOnly,
    /// A slot decision of the forwarder.
    Slot(DropReason),
    /// The subscriber's connection refused the forwarded packet.
    WriteFailed,
    /// The socket refused the datagram.
    SendFailed,
    /// An ICE-TCP connection's queue was full.
    TcpQueueFull,
    /// A transport the node does not speak.
    UnsupportedTransport,
    /// A cascade datagram too short, of another version, or not a frame.
    CascadeMalformed,
    /// A cascade datagram from a node this node has no link with.
    CascadeUnknownLink,
    /// A cascade datagram that does not authenticate under its link's key.
    CascadeForged,
    /// A cascade datagram whose counter was seen already.
    CascadeReplayed,
    /// Relayed media of a publisher the link did not announce.
    CascadeUnknownPublisher,
}

impl Dropped {
    /// Every reason, in counter order.
    const ALL: [Dropped; 23] = [
        Dropped::Empty,
        Dropped::Truncated,
        Dropped::NotWebrtc,
        Dropped::Unroutable,
        Dropped::UnknownParticipant,
        Dropped::RejectedByTransport,
        Dropped::UnknownPayloadType,
        Dropped::Muted,
        Dropped::PaddingOnly,
        Dropped::Slot(DropReason::NoSource),
        Dropped::Slot(DropReason::OtherSource),
        Dropped::Slot(DropReason::WaitingForKeyframe),
        Dropped::Slot(DropReason::BeforeSwitch),
        Dropped::Slot(DropReason::Skipped),
        Dropped::WriteFailed,
        Dropped::SendFailed,
        Dropped::TcpQueueFull,
        Dropped::UnsupportedTransport,
        Dropped::CascadeMalformed,
        Dropped::CascadeUnknownLink,
        Dropped::CascadeForged,
        Dropped::CascadeReplayed,
        Dropped::CascadeUnknownPublisher,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::Empty => "empty",
            Dropped::Truncated => "truncated",
            Dropped::NotWebrtc => "not_webrtc",
            Dropped::Unroutable => "unroutable",
            Dropped::UnknownParticipant => "unknown_participant",
            Dropped::RejectedByTransport => "rejected_by_transport",
            Dropped::UnknownPayloadType => "unknown_payload_type",
            Dropped::Muted => "muted",
            Dropped::PaddingOnly => "padding_only",
            Dropped::Slot(DropReason::NoSource) => "no_source",
            Dropped::Slot(DropReason::OtherSource) => "other_source",
            Dropped::Slot(DropReason::WaitingForKeyframe) => "waiting_for_keyframe",
            Dropped::Slot(DropReason::BeforeSwitch) => "before_switch",
            Dropped::Slot(DropReason::Skipped) => "skipped",
            Dropped::WriteFailed => "write_failed",
            Dropped::SendFailed => "send_failed",
            Dropped::TcpQueueFull => "tcp_queue_full",
            Dropped::UnsupportedTransport => "unsupported_transport",
            Dropped::CascadeMalformed => "cascade_malformed",
            Dropped::CascadeUnknownLink => "cascade_unknown_link",
            Dropped::CascadeForged => "cascade_forged",
            Dropped::CascadeReplayed => "cascade_replayed",
            Dropped::CascadeUnknownPublisher => "cascade_unknown_publisher",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Why the node refused a client or cut one off: the limits a public server needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A signaling client stopped reading and its queue filled up: disconnected.
    SlowReader,
    /// An address opened more WebSockets at once than allowed.
    ConnectionsPerIp,
    /// An address asked to join faster than allowed.
    JoinRatePerIp,
}

impl Refused {
    /// Every reason, each with a counter from the start.
    const ALL: [Refused; 3] = [
        Refused::SlowReader,
        Refused::ConnectionsPerIp,
        Refused::JoinRatePerIp,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::SlowReader => "slow_reader",
            Refused::ConnectionsPerIp => "connections_per_ip",
            Refused::JoinRatePerIp => "join_rate_per_ip",
        }
    }
}

/// Label of a dropped-packet counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Label naming one of the node's long-lived maps.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: &'static str,
}

/// Label naming an SRTP protection profile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabel {
    /// The negotiated profile, as rtc names it.
    pub profile: String,
}

/// Label naming the peer node of a cascade link.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's node name.
    pub peer: String,
}

/// The counters of one cascade link, created once when the link comes up.
pub struct LinkCounters {
    /// RTP packets relayed to the peer.
    pub rtp_sent: Counter,
    /// RTP packets relayed from the peer.
    pub rtp_received: Counter,
    /// Streams relayed to the peer now.
    pub streams_sent: Gauge,
    /// Streams relayed from the peer now.
    pub streams_received: Gauge,
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
    /// One counter per [`Dropped`] reason, in [`Dropped::ALL`] order.
    dropped: Vec<Counter>,
    /// Clients refused or cut off, by [`Refused`] reason.
    refused: Family<ReasonLabel, Counter>,
    /// Lost packets subscribers asked for (NACK entries), past the NACK filter: the ones the
    /// node looks up to resend.
    pub nacks_received: Counter,
    /// Packets resent to subscribers from their publishers' retransmission rings.
    pub retransmitted: Counter,
    /// NACKed packets past the filter that could not be resent: no longer in the publisher's
    /// ring, never sent by it (the stream's own padding), or of a consumer that carries
    /// another source now.
    pub nacks_missed: Counter,
    /// NACKed packets not resent: sent before their stream's current source began.
    pub nacks_stale: Counter,
    /// NACKed packets not resent: resent less than a round trip ago.
    pub nacks_repeated: Counter,
    /// NACKed packets not resent: sent longer ago than the subscriber's round trip keeps
    /// packets worth resending.
    pub nacks_too_old: Counter,
    /// Publishers' retransmissions that came on a repair stream (RTX), unwrapped.
    pub rtx_unwrapped: Counter,
    /// Publishers' RTX packets repairing what had arrived already (a browser's probes).
    pub rtx_redundant: Counter,
    /// Publishers' audio packets that came as RED (RFC 2198).
    pub red_received: Counter,
    /// Publishers' audio packets lost on their way in and made good from the redundancy of
    /// the RED packets after them.
    pub red_recovered: Counter,
    /// RED packets from publishers that could not be read (dropped).
    pub red_unreadable: Counter,
    /// Audio packets sent to subscribers as RED, with the packets before them, while their
    /// path loses packets.
    pub red_sent: Counter,
    /// Keyframe requests (PLI/FIR) received from subscribers.
    pub keyframe_requests_received: Counter,
    /// Keyframe requests sent to publishers after coalescing (PLIs; requests to a camera task or over a link).
    pub plis_sent: Counter,
    /// Cached groups of pictures replayed to a consumer that started watching a source that
    /// cannot be asked for a keyframe (a camera).
    pub gop_replays: Counter,
    /// Simulcast layer changes chosen for consumers (a tile resized, a layer paused or back).
    pub layer_switches: Counter,
    /// Video tiles paused because a subscriber's downlink estimate holds no layer for them.
    pub tiles_paused: Counter,
    /// Probes of subscribers' downlinks that found room above their ceiling.
    pub probes_lifted: Counter,
    /// Probes of subscribers' downlinks that found their ceiling still there.
    pub probes_held: Counter,
    /// Padding packets sent to probe subscribers' downlinks.
    pub probe_padding: Counter,
    /// DTLS handshakes completed, by negotiated SRTP profile.
    pub srtp_profiles: Family<ProfileLabel, Counter>,
    /// Time from a datagram's arrival to the last forwarded copy written, per inbound RTP packet.
    pub forward_seconds: Histogram,
    /// RTP packets received from this node's own publishers.
    pub rtp_published: Counter,
    /// Cascade links up.
    pub cascade_links: Gauge,
    /// NACKs sent over cascade links for relayed packets lost on the way.
    pub cascade_nacks_sent: Counter,
    /// Relayed packets sent again because a peer asked.
    pub cascade_retransmits: Counter,
    /// Keyframe requests sent to other nodes' publishers.
    pub cascade_keyframe_requests: Counter,
    cascade_rtp_sent: Family<PeerLabel, Counter>,
    cascade_rtp_received: Family<PeerLabel, Counter>,
    cascade_streams_sent: Family<PeerLabel, Gauge>,
    cascade_streams_received: Family<PeerLabel, Gauge>,
    /// Entries of each long-lived map, by name (`kaskade_sfu_map_entries{map=…}`).
    map_entries: Family<MapLabel, Gauge>,
    /// Refreshes the shell's own metrics before each render.
    sample: Sampler,
}

/// Refreshes metrics a shell registered beside the core's (read when scraped).
pub type Sampler = Box<dyn Fn() + Send + Sync>;

/// Registers `metric` under `name` and hands it back.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Self {
        Self::with_extra(|_| Box::new(|| {}))
    }

    /// The core's metrics plus those `extra` registers (the node's process gauges), refreshed
    /// by the sampler it returns before each render.
    pub fn with_extra(extra: impl FnOnce(&mut Registry) -> Sampler) -> Self {
        let mut r = Registry::with_prefix("kaskade_sfu");
        let dropped_family = register(
            &mut r,
            "dropped",
            "Packets dropped, by reason",
            Family::<ReasonLabel, Counter>::default(),
        );
        let dropped = Dropped::ALL
            .iter()
            .map(|reason| {
                dropped_family
                    .get_or_create(&ReasonLabel {
                        reason: reason.label(),
                    })
                    .clone()
            })
            .collect();
        let refused = register(
            &mut r,
            "refused",
            "Clients refused or disconnected by an abuse limit, by reason",
            Family::<ReasonLabel, Counter>::default(),
        );
        for reason in Refused::ALL {
            drop(refused.get_or_create(&ReasonLabel {
                reason: reason.label(),
            }));
        }
        Self {
            refused,
            rooms: register(&mut r, "rooms", "Rooms with participants", Gauge::default()),
            participants: register(
                &mut r,
                "participants",
                "Participants on this node",
                Gauge::default(),
            ),
            packets_in: register(
                &mut r,
                "packets_in",
                "Datagrams received",
                Counter::default(),
            ),
            bytes_in: register(&mut r, "bytes_in", "Bytes received", Counter::default()),
            packets_out: register(&mut r, "packets_out", "Datagrams sent", Counter::default()),
            bytes_out: register(&mut r, "bytes_out", "Bytes sent", Counter::default()),
            rtp_forwarded: register(
                &mut r,
                "rtp_forwarded",
                "RTP packets forwarded to subscribers",
                Counter::default(),
            ),
            dropped,
            nacks_received: register(
                &mut r,
                "nacks_received",
                "Lost packets subscribers asked to retransmit, past the NACK filter (not stale, not repeated within a round trip, not too old)",
                Counter::default(),
            ),
            retransmitted: register(
                &mut r,
                "retransmitted",
                "Packets resent to subscribers from their publishers' retransmission rings (on RTX where negotiated)",
                Counter::default(),
            ),
            nacks_missed: register(
                &mut r,
                "nacks_missed",
                "NACKed packets past the filter that could not be resent (out of the publisher's ring, the stream's own padding, or another source's)",
                Counter::default(),
            ),
            nacks_stale: register(
                &mut r,
                "nacks_stale",
                "NACKed packets not resent: sent before their stream's current source (layer) began",
                Counter::default(),
            ),
            nacks_repeated: register(
                &mut r,
                "nacks_repeated",
                "NACKed packets not resent: resent to that subscriber less than a round trip ago",
                Counter::default(),
            ),
            nacks_too_old: register(
                &mut r,
                "nacks_too_old",
                "NACKed packets not resent: sent longer ago than the subscriber's round trip keeps packets worth resending (6 round trips, 1 to 3 s)",
                Counter::default(),
            ),
            rtx_unwrapped: register(
                &mut r,
                "rtx_unwrapped",
                "Publishers' retransmissions received on a repair stream (RTX) and unwrapped",
                Counter::default(),
            ),
            rtx_redundant: register(
                &mut r,
                "rtx_redundant",
                "Publishers' RTX packets repairing what had arrived already (a browser's probes), not forwarded",
                Counter::default(),
            ),
            red_received: register(
                &mut r,
                "red_received",
                "Publishers' audio packets that came as RED (RFC 2198)",
                Counter::default(),
            ),
            red_recovered: register(
                &mut r,
                "red_recovered",
                "Publishers' audio packets lost on the way in and made good from later RED packets",
                Counter::default(),
            ),
            red_unreadable: register(
                &mut r,
                "red_unreadable",
                "RED packets from publishers that could not be read, dropped",
                Counter::default(),
            ),
            red_sent: register(
                &mut r,
                "red_sent",
                "Audio packets sent to subscribers as RED (with the packets before them) while their path loses packets",
                Counter::default(),
            ),
            keyframe_requests_received: register(
                &mut r,
                "keyframe_requests_received",
                "PLI/FIR received from subscribers",
                Counter::default(),
            ),
            plis_sent: register(
                &mut r,
                "plis_sent",
                "Keyframe requests to publishers after coalescing: PLIs, and requests to a camera's task or a relayed publisher's node",
                Counter::default(),
            ),
            gop_replays: register(
                &mut r,
                "gop_replays",
                "Cached groups of pictures replayed to a new consumer of a camera",
                Counter::default(),
            ),
            layer_switches: register(
                &mut r,
                "simulcast_layer_switches",
                "Simulcast layer changes chosen for consumers: a tile resized, a layer paused or back",
                Counter::default(),
            ),
            tiles_paused: register(
                &mut r,
                "downlink_tiles_paused",
                "Video tiles paused because a subscriber's downlink estimate holds no layer for them",
                Counter::default(),
            ),
            probes_lifted: register(
                &mut r,
                "downlink_probes_lifted",
                "Probes of subscribers' downlinks that found room above their ceiling",
                Counter::default(),
            ),
            probes_held: register(
                &mut r,
                "downlink_probes_held",
                "Probes of subscribers' downlinks that found their ceiling still there",
                Counter::default(),
            ),
            probe_padding: register(
                &mut r,
                "downlink_probe_padding_packets",
                "Padding packets sent to probe subscribers' downlinks",
                Counter::default(),
            ),
            srtp_profiles: register(
                &mut r,
                "srtp_profiles",
                "DTLS-SRTP sessions by negotiated protection profile",
                Family::default(),
            ),
            // 1 us .. ~16 ms
            forward_seconds: register(
                &mut r,
                "forward_seconds",
                "Datagram arrival to last forwarded copy written, per inbound RTP packet",
                Histogram::new(exponential_buckets(1e-6, 2.0, 15)),
            ),
            rtp_published: register(
                &mut r,
                "rtp_published",
                "RTP packets received from this node's publishers",
                Counter::default(),
            ),
            cascade_links: register(
                &mut r,
                "cascade_links",
                "Cascade links up",
                Gauge::default(),
            ),
            cascade_nacks_sent: register(
                &mut r,
                "cascade_nacks_sent",
                "NACKs sent to peer nodes for relayed packets lost on the link",
                Counter::default(),
            ),
            cascade_retransmits: register(
                &mut r,
                "cascade_retransmits",
                "Relayed packets resent at a peer's request",
                Counter::default(),
            ),
            cascade_keyframe_requests: register(
                &mut r,
                "cascade_keyframe_requests",
                "Keyframe requests sent to publishers on other nodes",
                Counter::default(),
            ),
            cascade_rtp_sent: register(
                &mut r,
                "cascade_rtp_sent",
                "RTP packets relayed to a peer node",
                Family::default(),
            ),
            cascade_rtp_received: register(
                &mut r,
                "cascade_rtp_received",
                "RTP packets relayed from a peer node",
                Family::default(),
            ),
            cascade_streams_sent: register(
                &mut r,
                "cascade_streams_sent",
                "Streams relayed to a peer node now",
                Family::default(),
            ),
            cascade_streams_received: register(
                &mut r,
                "cascade_streams_received",
                "Streams relayed from a peer node now",
                Family::default(),
            ),
            map_entries: register(
                &mut r,
                "map_entries",
                "Entries of the node's long-lived maps and tables, by map (sampled each second)",
                Family::default(),
            ),
            sample: extra(&mut r),
            registry: r,
        }
    }

    /// Sets the size gauge of each named map (once a second; never on the media path).
    pub fn set_map_sizes(&self, sizes: &[(&'static str, usize)]) {
        for &(map, entries) in sizes {
            self.map_entries
                .get_or_create(&MapLabel { map })
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
    }

    /// The counters of the link to `peer` (created on first use, then held by the link).
    pub fn link(&self, peer: &str) -> LinkCounters {
        let label = PeerLabel {
            peer: peer.to_string(),
        };
        LinkCounters {
            rtp_sent: self.cascade_rtp_sent.get_or_create(&label).clone(),
            rtp_received: self.cascade_rtp_received.get_or_create(&label).clone(),
            streams_sent: self.cascade_streams_sent.get_or_create(&label).clone(),
            streams_received: self.cascade_streams_received.get_or_create(&label).clone(),
        }
    }

    /// Counts one dropped packet.
    pub fn drop_packet(&self, reason: Dropped) {
        self.dropped[reason.index()].inc();
    }

    /// Counts one client refused or cut off.
    pub fn refuse(&self, reason: Refused) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        (self.sample)();
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

#[cfg(test)]
mod tests;
