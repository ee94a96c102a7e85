//! The packet path: inbound RTP fanned out to subscriber slots, keyframe requests relayed to
//! publishers.

use super::MediaCore;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::{DropReason, InboundPacket, MediaKind};
use crate::media::keyframe::h264_keyframe_start;
use crate::media::participant::RoomIndex;
use crate::media::speaker::audio_level;
use crate::metrics::Dropped;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
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
        let Some(kind) = p.peer.published_kind(packet.header.payload_type) else {
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
                    .peer
                    .audio_level_ext()
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
                p.peer.note_video_ssrc(packet.header.ssrc);
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
            if !s.peer.is_connected() {
                continue;
            }
            let Some(recv_slot) = s.peer.slots_mut().get_mut(slot) else {
                continue;
            };
            recv_slot.stream.attach(inbound.ssrc);
            if packet.payload.is_empty() {
                // a padding-only probe: not worth a subscriber's bandwidth, but its sequence
                // number must not become a gap
                recv_slot.stream.skip(&inbound);
                self.metrics.drop_packet(Dropped::PaddingOnly);
                continue;
            }
            match recv_slot.stream.rewrite(&inbound, now) {
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
                    match s.peer.write_slot(now, slot, out) {
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

    pub(super) fn on_rtcp(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        packets: &[Box<dyn rtc::rtcp::Packet>],
    ) {
        for packet in packets {
            let any = packet.as_any();
            if !(any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()) {
                continue;
            }
            self.metrics.keyframe_requests_received.inc();
            for ssrc in packet.destination_ssrc() {
                let publisher = self.participants.get(&subscriber).and_then(|s| {
                    let slot = s.peer.slot_by_ssrc(ssrc)?;
                    s.slots.get(slot)?.publisher
                });
                if let Some(publisher) = publisher {
                    self.request_keyframe(now, publisher);
                }
            }
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
        match p.peer.send_pli(now) {
            Ok(true) => {
                self.metrics.plis_sent.inc();
            }
            Ok(false) => {}
            Err(e) => debug!(%publisher, "PLI failed: {e}"),
        }
        self.mark_dirty(publisher);
    }
}
