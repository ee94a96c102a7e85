//! Relayed media: which local streams each peer node wants (the relay table, from their
//! subscriptions), sealing local packets into link datagrams, opening the peer's datagrams into
//! the fan-out, and keyframe requests and NACKs across links.

use super::packets::{FromLink, Received};
use super::{MediaCore, Output};
use crate::cascade::control::{LinkMessage, StreamRef};
use crate::cascade::frame::{self, Frame, RelayedRtp};
use crate::cascade::link::LinkDrop;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::keyframe::h264_keyframe_start;
use crate::media::participant::RoomIndex;
use crate::media::simulcast::LayerSet;
use crate::metrics::Dropped;
use bytes::BytesMut;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

impl MediaCore {
    /// After slots or layer choices changed: asks each peer for exactly the streams local
    /// subscribers watch, and of a simulcast video the layers not held here (see
    /// `VideoLayers::requested`).
    pub(super) fn update_subscriptions(&mut self, room_index: RoomIndex) {
        let Some(room) = self.rooms.get_mut(&room_index) else {
            return;
        };
        let mut changed = false;
        for &peer in &room.peers {
            let wanted: Vec<StreamRef> = room
                .members
                .iter()
                .filter(|m| {
                    self.participants
                        .get(m)
                        .is_some_and(|p| p.relayed_from == Some(peer))
                })
                .flat_map(|&publisher| {
                    let video_layers = self
                        .participants
                        .get(&publisher)
                        .map_or(LayerSet::ALL, |p| p.video.requested());
                    [
                        (MediaKind::Audio, LayerSet::ALL),
                        (MediaKind::Video, video_layers),
                    ]
                    .into_iter()
                    .map(move |(kind, layers)| StreamRef {
                        publisher,
                        kind,
                        layers,
                    })
                })
                .filter(|s| !room.routes(s.publisher, s.kind).is_empty())
                .collect();
            if room.wanted.get(&peer) != Some(&wanted) {
                self.outputs.push_back(Output::Link(
                    peer,
                    LinkMessage::Subscribe {
                        meeting: room.meeting.clone(),
                        streams: wanted.clone(),
                    },
                ));
                room.wanted.insert(peer, wanted);
                changed = true;
            }
        }
        if changed {
            self.update_link_gauges();
        }
    }

    /// Sends a local publisher's packet once over every link whose far side watches it. Each
    /// simulcast layer of a video is its own stream on the link, sent to the peers that want
    /// that layer: the far node chooses among them for its own subscribers.
    pub(super) fn relay(
        &mut self,
        now: Instant,
        room_index: RoomIndex,
        publisher: ParticipantId,
        received: Received,
        packet: &rtc::rtp::Packet,
    ) {
        let Some(room) = self.rooms.get(&room_index) else {
            return;
        };
        let simulcast = self
            .participants
            .get(&publisher)
            .map(|p| &p.video)
            .filter(|v| received.kind == MediaKind::Video && v.is_simulcast());
        // built for the first peer that takes the packet, shared by the others
        let mut rtp = None;
        for &(peer, layers) in room.relays(publisher, received.kind) {
            let carried = simulcast.map_or(layers, |v| v.carried(now, layers));
            if !carried.contains(received.layer) {
                continue;
            }
            let rtp = rtp.get_or_insert_with(|| {
                relayed_of(
                    publisher,
                    received.kind,
                    received.layer,
                    received.level,
                    packet,
                )
            });
            if let Some((link, counters)) = self.links.get_mut(&peer) {
                let datagram = link.relay(rtp);
                counters.rtp_sent.inc();
                self.transmits
                    .push_back(to_peer(now, link.params().media_addr, datagram));
            }
        }
    }

    /// A participant's transport wants a keyframe of what it publishes on `media_ssrc` from
    /// whatever feeds it: the node of a relayed participant is asked over the link (for that
    /// simulcast layer), the shell is asked for a source it feeds.
    pub(super) fn ask_source_for_keyframe(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        media_ssrc: u32,
    ) {
        let Some(p) = self.participants.get(&publisher) else {
            return;
        };
        let Some(peer) = p.relayed_from else {
            self.outputs.push_back(Output::KeyframeWanted(publisher));
            return;
        };
        let layer = p.video.layer_of(media_ssrc).unwrap_or(0);
        if let Some((link, _)) = self.links.get_mut(&peer) {
            let datagram = link.keyframe_request(publisher, layer);
            self.metrics.cascade_keyframe_requests.inc();
            self.transmits
                .push_back(to_peer(now, link.params().media_addr, datagram));
        }
    }

    /// A peer asks for a keyframe of `layer` of a local publisher: asked of it (throttled),
    /// or, for one that cannot be asked (a camera), its cached group of pictures sent for the
    /// peer's own cache, from which the peer replays to its viewers.
    fn keyframe_for_peer(&mut self, now: Instant, peer: u16, publisher: ParticipantId, layer: u8) {
        let Some(p) = self.participants.get(&publisher) else {
            return;
        };
        let Some(gop) = p.gop.as_ref() else {
            self.request_keyframe(now, publisher, layer);
            return;
        };
        let Some((link, _)) = self.links.get_mut(&peer) else {
            return;
        };
        let addr = link.params().media_addr;
        for packet in gop.packets() {
            let cached = relayed_of(publisher, MediaKind::Video, 0, None, packet);
            self.transmits
                .push_back(to_peer(now, addr, link.cached(&cached)));
        }
    }

    /// NACKs again, on every link, the relayed packets still missing a round trip after their
    /// last NACK.
    pub(super) fn renack_links(&mut self, now: Instant) {
        let mut datagrams = Vec::new();
        for (link, _) in self.links.values_mut() {
            if link.poll_timeout().is_some_and(|due| due <= now) {
                link.renack(now, &mut datagrams);
                let addr = link.params().media_addr;
                for nack in datagrams.drain(..) {
                    self.metrics.cascade_nacks_sent.inc();
                    self.transmits.push_back(to_peer(now, addr, nack));
                }
            }
        }
    }

    /// The earliest re-NACK due on any link.
    pub(super) fn links_timeout(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|(link, _)| link.poll_timeout())
            .min()
    }

    /// A datagram whose first byte says it came over a cascade link.
    pub(super) fn on_link_datagram(&mut self, now: Instant, datagram: BytesMut) {
        let Ok(header) = frame::parse_header(&datagram) else {
            self.metrics.drop_packet(Dropped::CascadeMalformed);
            return;
        };
        let Some((link, counters)) = self.links.get_mut(&header.sender) else {
            self.metrics.drop_packet(Dropped::CascadeUnknownLink);
            return;
        };
        let frame = match link.open(datagram, header.counter) {
            Ok(frame) => frame,
            Err(reason) => {
                self.metrics.drop_packet(match reason {
                    LinkDrop::Forged => Dropped::CascadeForged,
                    LinkDrop::Replayed => Dropped::CascadeReplayed,
                    LinkDrop::Malformed => Dropped::CascadeMalformed,
                });
                return;
            }
        };
        let peer = header.sender;
        match frame {
            Frame::Rtp(rtp) => {
                counters.rtp_received.inc();
                if let Some(nack) = link.received(now, rtp.stream(), rtp.seq) {
                    self.metrics.cascade_nacks_sent.inc();
                    self.transmits
                        .push_back(to_peer(now, link.params().media_addr, nack));
                }
                self.on_relayed_rtp(now, peer, rtp);
            }
            Frame::KeyframeRequest { publisher, layer } => {
                let shared = self
                    .participants
                    .get(&publisher)
                    .filter(|p| p.is_here())
                    .and_then(|p| self.rooms.get(&p.room))
                    .is_some_and(|r| r.peers.contains(&peer));
                if shared {
                    self.keyframe_for_peer(now, peer, publisher, layer);
                }
            }
            Frame::Cached(rtp) => {
                let packet = packet_of(&rtp);
                if let Some(gop) = self
                    .participants
                    .get_mut(&rtp.publisher)
                    .filter(|p| p.relayed_from == Some(peer) && rtp.kind == MediaKind::Video)
                    .and_then(|p| p.gop.as_mut())
                {
                    gop.push(&packet, h264_keyframe_start(&packet.payload));
                }
            }
            Frame::Nack { stream, seqs } => {
                let media_addr = link.params().media_addr;
                let resent: Vec<BytesMut> =
                    link.retransmissions(stream, frame::nacked(&seqs)).collect();
                for datagram in resent {
                    self.metrics.cascade_retransmits.inc();
                    self.transmits.push_back(to_peer(now, media_addr, datagram));
                }
            }
        }
    }

    /// A relayed packet of one of `peer`'s participants: forwarded as that participant's, of
    /// the layer the frame names.
    fn on_relayed_rtp(&mut self, now: Instant, peer: u16, rtp: RelayedRtp) {
        if self.relayed_from(rtp.publisher) != Some(peer) {
            self.metrics.drop_packet(Dropped::CascadeUnknownPublisher);
            return;
        }
        let from_link = FromLink {
            level: rtp.level,
            layer: rtp.layer,
        };
        self.on_rtp(now, rtp.publisher, packet_of(&rtp), Some(from_link));
    }

    pub(super) fn on_subscribe(
        &mut self,
        now: Instant,
        room_index: RoomIndex,
        peer: u16,
        streams: Vec<StreamRef>,
    ) {
        let Some(room) = self.rooms.get(&room_index) else {
            return;
        };
        let before: HashMap<(ParticipantId, MediaKind), LayerSet> = room
            .subscriptions
            .get(&peer)
            .map(|s| {
                s.iter()
                    .map(|s| ((s.publisher, s.kind), s.layers))
                    .collect()
            })
            .unwrap_or_default();
        let valid: Vec<StreamRef> = streams
            .into_iter()
            .filter(|s| {
                self.participants.get(&s.publisher).is_some_and(|p| {
                    p.room == room_index && p.is_here() && !p.is_hidden() && p.publishes(s.kind)
                })
            })
            .collect();
        // the layers the peer starts to receive begin at a keyframe
        let new_layers: Vec<(ParticipantId, u8)> = valid
            .iter()
            .filter(|s| s.kind == MediaKind::Video)
            .flat_map(|s| {
                let had = before
                    .get(&(s.publisher, s.kind))
                    .copied()
                    .unwrap_or(LayerSet::NONE);
                s.layers.without(had).map(move |layer| (s.publisher, layer))
            })
            .collect();
        if let Some(room) = self.rooms.get_mut(&room_index) {
            room.subscriptions.insert(peer, valid);
            room.rebuild_relays();
        }
        for (publisher, layer) in new_layers {
            self.request_keyframe(now, publisher, layer);
        }
        // the peer's layers count among those the publishers are to send
        self.hold_unreceived_layers(now);
        self.update_link_gauges();
    }
}

/// A datagram for a peer node's media socket.
fn to_peer(now: Instant, addr: SocketAddr, message: BytesMut) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: addr,
            peer_addr: addr,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message,
    }
}

/// `packet` of `publisher`'s `kind` (of simulcast `layer`, with its audio `level`) as a link
/// frame carries it.
fn relayed_of(
    publisher: ParticipantId,
    kind: MediaKind,
    layer: u8,
    level: Option<u8>,
    packet: &rtc::rtp::Packet,
) -> RelayedRtp {
    RelayedRtp {
        publisher,
        kind,
        layer,
        level,
        marker: packet.header.marker,
        payload_type: packet.header.payload_type,
        seq: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        ssrc: packet.header.ssrc,
        payload: packet.payload.clone(),
    }
}

/// The RTP packet a relayed frame carries.
fn packet_of(rtp: &RelayedRtp) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: rtp.marker,
            payload_type: rtp.payload_type,
            sequence_number: rtp.seq,
            timestamp: rtp.timestamp,
            ssrc: rtp.ssrc,
            ..Default::default()
        },
        payload: rtp.payload.clone(),
    }
}
