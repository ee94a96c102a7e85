//! The packet path: inbound RTP fanned out to subscriber slots, keyframe requests relayed to
//! publishers.

use super::MediaCore;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::{DropReason, InboundPacket, MediaKind};
use crate::media::keyframe::h264_keyframe_start;
use crate::media::participant::RoomIndex;
use crate::media::speaker::audio_level;
use crate::metrics::Dropped;
use std::time::Instant;
use tracing::debug;

impl MediaCore {
    pub(super) fn on_rtp(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        packet: rtc::rtp::Packet,
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
        self.metrics.rtp_published.inc();
        let room_index = p.room;
        let mut keyframe_start = false;
        let mut level = None;
        match kind {
            MediaKind::Audio => {
                level = p
                    .transport
                    .publication()
                    .audio_level_ext
                    .and_then(|ext| packet.header.get_extension(ext))
                    .and_then(|payload| audio_level(&payload));
                if let Some(level) = level
                    && !p.audio_muted
                    && let Some(room) = self.rooms.get_mut(&room_index)
                {
                    room.speaker.record(publisher, level, now);
                }
            }
            MediaKind::Video => {
                p.video_ssrc = Some(packet.header.ssrc);
                keyframe_start = h264_keyframe_start(&packet.payload);
                if keyframe_start {
                    p.keyframes.keyframe_seen();
                }
            }
        }
        let muted = match kind {
            MediaKind::Audio => p.audio_muted,
            MediaKind::Video => p.video_muted,
        };
        if muted {
            self.metrics.drop_packet(Dropped::Muted);
            return;
        }
        self.relay(now, room_index, publisher, kind, level, &packet);
        self.fan_out(now, room_index, publisher, kind, &packet, keyframe_start);
    }

    /// Writes `packet` of `publisher` (local or relayed) to every subscriber slot it feeds.
    pub(super) fn fan_out(
        &mut self,
        now: Instant,
        room_index: RoomIndex,
        publisher: ParticipantId,
        kind: MediaKind,
        packet: &rtc::rtp::Packet,
        keyframe_start: bool,
    ) {
        let inbound = InboundPacket {
            ssrc: packet.header.ssrc,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            keyframe_start,
        };
        let Some(room) = self.rooms.get(&room_index) else {
            return;
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
            consumer.stream.attach(inbound.ssrc);
            if packet.payload.is_empty() {
                // a padding-only probe: not worth a subscriber's bandwidth, but its sequence
                // number must not become a gap
                consumer.stream.skip(&inbound);
                self.metrics.drop_packet(Dropped::PaddingOnly);
                continue;
            }
            match consumer.stream.rewrite(&inbound, now) {
                Ok(rewritten) => {
                    // a fresh header: the publisher's extensions (ids negotiated with the
                    // publisher) are not forwarded, and nothing here allocates
                    let out = rtc::rtp::Packet {
                        header: rtc::rtp::header::Header {
                            version: 2,
                            marker: packet.header.marker,
                            sequence_number: rewritten.seq,
                            timestamp: rewritten.timestamp,
                            ..Default::default()
                        },
                        payload: packet.payload.clone(),
                    };
                    match s.transport.write_rtp(now, slot, out) {
                        Ok(()) => {
                            self.metrics.rtp_forwarded.inc();
                        }
                        Err(e) => {
                            self.metrics.drop_packet(Dropped::WriteFailed);
                            debug!(%subscriber, "forward failed: {e}");
                        }
                    };
                    if !s.dirty {
                        s.dirty = true;
                        self.dirty.push(subscriber);
                    }
                }
                Err(reason) => {
                    wants_keyframe |= reason == DropReason::WaitingForKeyframe;
                    self.metrics.drop_packet(Dropped::Slot(reason));
                }
            }
        }
        if wants_keyframe {
            self.request_keyframe(now, publisher);
        }
        // the one clock read of the core: observability of real processing time, not protocol
        self.metrics
            .forward_seconds
            .observe(Instant::now().saturating_duration_since(now).as_secs_f64());
    }

    /// A subscriber asks for a keyframe of what its consumer `ssrc` carries.
    pub(super) fn on_keyframe_request(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        ssrc: u32,
    ) {
        self.metrics.keyframe_requests_received.inc();
        let publisher = self.participants.get(&subscriber).and_then(|s| {
            let index = s
                .transport
                .consumers()
                .iter()
                .position(|c| c.stream.ssrc() == ssrc)?;
            s.slots.get(index)?.publisher
        });
        if let Some(publisher) = publisher {
            self.request_keyframe(now, publisher);
        }
    }

    /// Asks `publisher` for a keyframe: coalesced and throttled here for a local publisher,
    /// sent to its node for a relayed one.
    pub(super) fn request_keyframe(&mut self, now: Instant, publisher: ParticipantId) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            self.request_remote_keyframe(now, publisher);
            return;
        };
        if p.keyframes.request(now) {
            self.send_pli(now, publisher);
        } else {
            self.mark_dirty(publisher);
        }
    }

    pub(super) fn send_pli(&mut self, now: Instant, publisher: ParticipantId) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(media_ssrc) = p.video_ssrc else {
            return;
        };
        match p.transport.request_keyframe(now, media_ssrc) {
            Ok(true) => {
                self.metrics.plis_sent.inc();
            }
            Ok(false) => {}
            Err(e) => debug!(%publisher, "PLI failed: {e}"),
        }
        self.mark_dirty(publisher);
    }
}
