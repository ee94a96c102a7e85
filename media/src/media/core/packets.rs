//! The packet path: inbound RTP fanned out to subscriber slots, keyframe requests relayed to
//! publishers.

use super::MediaCore;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::{DropReason, InboundPacket, MediaKind, Rewritten};
use crate::media::gop::GopCache;
use crate::media::keyframe::h264_keyframe_start;
use crate::media::participant::{Participant, RoomIndex};
use crate::media::speaker::audio_level;
use crate::metrics::{Dropped, Metrics};
use std::time::{Duration, Instant};
use tracing::debug;

/// A consumer that began at a keyframe less than this ago is not replayed a publisher's cached
/// group of pictures again.
const REPLAY_INTERVAL: Duration = Duration::from_millis(500);

impl MediaCore {
    /// An RTP packet of `publisher`, from its transport or relayed from its node (which sends
    /// its audio `level` beside the packet, where a transport finds it in a header extension).
    pub(super) fn on_rtp(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        packet: rtc::rtp::Packet,
        from_link: Option<FromLink>,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(kind) = p
            .transport
            .publication()
            .kind_of(packet.header.payload_type)
        else {
            self.metrics.drop_packet(Dropped::UnknownPayloadType);
            return;
        };
        if p.is_here() {
            // relayed packets are counted per link (`cascade_rtp_received`)
            self.metrics.rtp_published.inc();
        }
        let room_index = p.room;
        let mut keyframe_start = false;
        let mut layer = 0;
        let mut level = from_link.and_then(|l| l.level);
        match kind {
            MediaKind::Audio => {
                level = level.or_else(|| {
                    p.transport
                        .publication()
                        .audio_level_ext
                        .and_then(|ext| packet.header.get_extension(ext))
                        .and_then(|payload| audio_level(&payload))
                });
                if let Some(level) = level
                    && !p.audio_muted
                    && let Some(room) = self.rooms.get_mut(&room_index)
                {
                    room.speaker.record(publisher, level, now);
                }
            }
            MediaKind::Video => {
                keyframe_start = h264_keyframe_start(&packet.payload);
                layer =
                    from_link.map_or_else(|| p.transport.layer_of(packet.header.ssrc), |l| l.layer);
                p.video.on_packet(
                    now,
                    layer,
                    packet.header.ssrc,
                    &packet.payload,
                    keyframe_start,
                );
            }
        }
        let muted = match kind {
            MediaKind::Audio => p.audio_muted,
            MediaKind::Video => p.video_muted,
        };
        // a mute is enforced on the participant's own node, which relays nothing muted; here,
        // a relayed packet that overtakes the announcement of its unmute is still forwarded
        if muted && p.is_here() {
            self.metrics.drop_packet(Dropped::Muted);
            return;
        }
        if kind == MediaKind::Video {
            let header = &packet.header;
            p.repair.keep(
                header.ssrc,
                header.sequence_number,
                header.timestamp,
                header.marker,
                &packet.payload,
            );
        }
        let received = Received {
            kind,
            layer,
            level,
            keyframe_start,
        };
        self.relay(now, room_index, publisher, received, &packet);
        self.fan_out(now, room_index, publisher, received, &packet);
        if let Some(gop) = self
            .participants
            .get_mut(&publisher)
            .and_then(|p| p.gop.as_mut())
            .filter(|_| kind == MediaKind::Video)
        {
            gop.push(&packet, keyframe_start);
        }
    }

    /// Writes `packet` of `publisher` (local or relayed) to every subscriber slot it feeds: a
    /// slot takes the simulcast layer chosen for it, and goes on with the layer it shows until
    /// that one's keyframe. A consumer that starts watching a publisher with a cached group of
    /// pictures gets that group first, so it can decode at once.
    pub(super) fn fan_out(
        &mut self,
        now: Instant,
        room_index: RoomIndex,
        publisher: ParticipantId,
        received: Received,
        packet: &rtc::rtp::Packet,
    ) {
        let Received {
            kind,
            layer,
            keyframe_start,
            ..
        } = received;
        let inbound = inbound_of(packet, keyframe_start);
        let Some(room) = self.rooms.get(&room_index) else {
            return;
        };
        // taken out while the subscribers (in the same map) are borrowed
        let gop = match kind {
            MediaKind::Video if !keyframe_start => self
                .participants
                .get_mut(&publisher)
                .and_then(|p| p.gop.take()),
            _ => None,
        };
        let mut wants_keyframe = false;
        for &(subscriber, slot) in room.routes(publisher, kind) {
            let Some(s) = self.participants.get_mut(&subscriber) else {
                continue;
            };
            if !s.transport.is_connected() {
                continue;
            }
            let Some(consumer) = s.transport.consumers_mut().get_mut(slot) else {
                continue;
            };
            if consumer.layer == layer {
                consumer.stream.attach(inbound.ssrc);
            } else if !consumer.stream.maps(inbound.ssrc) {
                continue;
            }
            if packet.payload.is_empty() {
                // a padding-only probe: not worth a subscriber's bandwidth, but its sequence
                // number must not become a gap
                consumer.stream.skip(&inbound);
                self.metrics.drop_packet(Dropped::PaddingOnly);
                continue;
            }
            let mut wrote = false;
            if consumer.stream.awaits_keyframe()
                && let Some(gop) = gop.as_ref().filter(|g| !g.is_empty())
            {
                for (cached, timestamp) in gop.packets().zip(gop.squeezed_timestamps(&inbound)) {
                    let cached_inbound = InboundPacket {
                        timestamp,
                        ..inbound_of(cached, h264_keyframe_start(&cached.payload))
                    };
                    wrote |= forward(s, slot, cached, &cached_inbound, now, &self.metrics).is_ok();
                }
                if let (Some(consumer), Some(last)) = (
                    s.transport.consumers_mut().get_mut(slot),
                    gop.packets().last(),
                ) {
                    consumer
                        .stream
                        .replayed_through(last.header.sequence_number);
                }
                self.metrics.gop_replays.inc();
            }
            match forward(s, slot, packet, &inbound, now, &self.metrics) {
                Ok(()) => {
                    wrote = true;
                    if packet.header.marker && kind == MediaKind::Video && s.prober.is_probing() {
                        pad(s, slot, &inbound, now, &self.metrics);
                    }
                }
                Err(reason) => {
                    wants_keyframe |= reason == DropReason::WaitingForKeyframe;
                    self.metrics.drop_packet(Dropped::Slot(reason));
                }
            }
            if wrote && !s.dirty {
                s.dirty = true;
                self.dirty.push(subscriber);
            }
        }
        if let Some(gop) = gop
            && let Some(slot) = self.gop_of(publisher)
        {
            *slot = Some(gop);
        }
        if wants_keyframe {
            self.request_keyframe(now, publisher, layer);
        }
        self.fanned_out += 1;
    }

    /// A subscriber asks for a keyframe of what its consumer `ssrc` carries: asked of the
    /// publisher (throttled), or replayed from the publisher's cache when it cannot be asked.
    pub(super) fn on_keyframe_request(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        ssrc: u32,
    ) {
        self.metrics.keyframe_requests_received.inc();
        let Some((index, publisher, source)) = self.participants.get(&subscriber).and_then(|s| {
            let index = s
                .transport
                .consumers()
                .iter()
                .position(|c| c.stream.ssrc() == ssrc)?;
            let source = s.transport.consumers()[index].stream.source();
            Some((index, s.slots.get(index)?.publisher?, source))
        }) else {
            return;
        };
        let replayable = self.gop_of(publisher).is_some_and(|gop| gop.is_some());
        if replayable {
            // a source that cannot be asked: the consumer starts over from the cached group of
            // pictures at the publisher's next packet, unless it began at a keyframe a moment
            // ago (a subscriber repeating its request must not make the node resend a whole
            // group of pictures for every packet)
            if let Some(consumer) = self
                .participants
                .get_mut(&subscriber)
                .and_then(|s| s.transport.consumers_mut().get_mut(index))
                .filter(|c| !c.stream.began_within(now, REPLAY_INTERVAL))
            {
                consumer.stream.detach();
            }
        } else {
            // the layer the consumer shows, or is about to
            let layer = self
                .participants
                .get(&publisher)
                .and_then(|p| p.video.layer_of(source?))
                .unwrap_or(0);
            self.request_keyframe(now, publisher, layer);
        }
    }

    /// A subscriber asks again for the packet its consumer `ssrc` sent as `seq`: resent from
    /// the retransmission ring of the publisher it came from, while the consumer still carries
    /// that publisher's stream and the ring still holds it.
    pub(super) fn on_nack(&mut self, now: Instant, subscriber: ParticipantId, ssrc: u32, seq: u16) {
        let Some((index, publisher, from)) = self.participants.get(&subscriber).and_then(|s| {
            let consumers = s.transport.consumers();
            let index = consumers.iter().position(|c| c.stream.ssrc() == ssrc)?;
            let from = consumers[index].stream.source_of(seq)?;
            Some((index, s.slots.get(index)?.publisher?, from))
        }) else {
            debug!(%subscriber, ssrc, seq, "NACKed packet not sent from a current source");
            self.metrics.nacks_missed.inc();
            return;
        };
        let Some(kept) = self
            .participants
            .get(&publisher)
            .and_then(|p| p.repair.get(from.ssrc, from.seq))
            .cloned()
        else {
            debug!(%subscriber, ssrc, seq, "NACKed packet out of the publisher's ring");
            self.metrics.nacks_missed.inc();
            return;
        };
        debug!(%subscriber, ssrc, seq, "resending");
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: kept.marker,
                sequence_number: seq,
                timestamp: kept.timestamp.wrapping_add(from.ts_offset),
                ..Default::default()
            },
            payload: kept.payload,
        };
        let Some(s) = self.participants.get_mut(&subscriber) else {
            return;
        };
        match s.transport.resend_rtp(now, index, packet) {
            Ok(()) => {
                self.metrics.retransmitted.inc();
            }
            Err(e) => {
                self.metrics.drop_packet(Dropped::WriteFailed);
                debug!(%subscriber, "resend failed: {e}");
            }
        }
        self.mark_dirty(subscriber);
    }

    /// Where the group-of-pictures cache of `publisher` lives (`None` inside when its source
    /// can be asked for keyframes).
    fn gop_of(&mut self, publisher: ParticipantId) -> Option<&mut Option<GopCache>> {
        self.participants.get_mut(&publisher).map(|p| &mut p.gop)
    }

    /// Asks `publisher` for a keyframe of its video's `layer`, coalesced and throttled per
    /// layer (its transport asks the participant, or its source, or its node for a relayed
    /// one).
    pub(super) fn request_keyframe(&mut self, now: Instant, publisher: ParticipantId, layer: u8) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        if let Some(media_ssrc) = p.video.request_keyframe(now, layer) {
            self.send_pli(now, publisher, media_ssrc);
        } else {
            self.mark_dirty(publisher);
        }
    }

    /// Asks `publisher` for a keyframe of the video it sends on `media_ssrc`, now.
    pub(super) fn send_pli(&mut self, now: Instant, publisher: ParticipantId, media_ssrc: u32) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        match p.transport.request_keyframe(now, media_ssrc) {
            Ok(true) => {
                debug!(%publisher, media_ssrc, "keyframe asked");
                self.metrics.plis_sent.inc();
            }
            Ok(false) => {}
            Err(e) => debug!(%publisher, "PLI failed: {e}"),
        }
        self.mark_dirty(publisher);
    }
}

/// What a cascade link's frame says of a relayed packet beside the packet itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct FromLink {
    /// Its RFC 6464 audio level, as its node read it.
    pub level: Option<u8>,
    /// The simulcast layer it belongs to on its node.
    pub layer: u8,
}

/// What the packet path knows of an inbound packet beside the packet itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Received {
    /// Audio or video.
    pub kind: MediaKind,
    /// The simulcast layer it belongs to (0 without simulcast).
    pub layer: u8,
    /// Its RFC 6464 audio level.
    pub level: Option<u8>,
    /// It starts a keyframe.
    pub keyframe_start: bool,
}

/// The fields of `packet` that rewriting looks at.
pub(super) fn inbound_of(packet: &rtc::rtp::Packet, keyframe_start: bool) -> InboundPacket {
    InboundPacket {
        ssrc: packet.header.ssrc,
        seq: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        keyframe_start,
    }
}

/// Sends the padding a probe of `subscriber`'s downlink owes now on `slot`, right after
/// `after`, the end of a frame just forwarded there (see `probe::Prober`).
fn pad(
    subscriber: &mut Participant,
    slot: usize,
    after: &InboundPacket,
    now: Instant,
    metrics: &Metrics,
) {
    let Some(estimate) = subscriber.transport.downlink_estimate() else {
        return;
    };
    for _ in 0..subscriber.prober.padding_due(now, estimate) {
        let Some(at) = subscriber
            .transport
            .consumers_mut()
            .get_mut(slot)
            .and_then(|c| c.stream.pad(after))
        else {
            return;
        };
        let padding = Outgoing {
            at,
            marker: false,
            padding: true,
            payload: bytes::Bytes::new(),
        };
        if !write(subscriber, slot, padding, now, metrics) {
            return;
        }
        metrics.probe_padding.inc();
    }
}

/// Rewrites `packet` for consumer `slot` of `subscriber` and writes it (counted as forwarded,
/// or as a failed write); the rewriting's refusal otherwise.
fn forward(
    subscriber: &mut Participant,
    slot: usize,
    packet: &rtc::rtp::Packet,
    inbound: &InboundPacket,
    now: Instant,
    metrics: &Metrics,
) -> Result<(), DropReason> {
    let consumer = subscriber
        .transport
        .consumers_mut()
        .get_mut(slot)
        .ok_or(DropReason::NoSource)?;
    let out = Outgoing {
        at: consumer.stream.rewrite(inbound, now)?,
        marker: packet.header.marker,
        padding: false,
        payload: packet.payload.clone(),
    };
    if write(subscriber, slot, out, now, metrics) {
        metrics.rtp_forwarded.inc();
    }
    Ok(())
}

/// A packet for a consumer: where its stream puts it, and what it carries.
struct Outgoing {
    at: Rewritten,
    marker: bool,
    padding: bool,
    payload: bytes::Bytes,
}

/// Writes `out` to consumer `slot` of `subscriber` under a fresh header (the publisher's
/// extensions, ids negotiated with the publisher, are not forwarded, and nothing here
/// allocates); whether it was written (a failed write is counted).
fn write(
    subscriber: &mut Participant,
    slot: usize,
    out: Outgoing,
    now: Instant,
    metrics: &Metrics,
) -> bool {
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: out.marker,
            padding: out.padding,
            sequence_number: out.at.seq,
            timestamp: out.at.timestamp,
            ..Default::default()
        },
        payload: out.payload,
    };
    match subscriber.transport.write_rtp(now, slot, packet) {
        Ok(()) => true,
        Err(e) => {
            metrics.drop_packet(Dropped::WriteFailed);
            debug!(subscriber = %subscriber.id, "write failed: {e}");
            false
        }
    }
}
