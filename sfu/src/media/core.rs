//! The node's media core: every participant, room and stream of the node, with no I/O.
//!
//! Datagrams, signaling requests and the time are passed in; datagrams to send, messages for
//! participants and the next deadline are drained out. The async shell in `node.rs` owns the
//! sockets and the clock. One inbound RTP packet takes this path: [`MediaCore::handle_datagram`]
//! routes it by four-tuple, the participant's peer connection decrypts it, the room's fan-out
//! table lists the subscriber slots it feeds, each slot's `OutboundStream` rewrites it, and the
//! subscriber's peer connection encrypts it into a datagram drained by
//! [`MediaCore::poll_transmit`].

use crate::media::deadlines::Deadlines;
use crate::media::demux::{Demuxer, ParticipantId, malformed, ufrag_for};
use crate::media::forwarder::{DropReason, InboundPacket, MediaKind};
use crate::media::keyframe::{KeyframeThrottle, h264_keyframe_start};
use crate::media::participant::{Participant, RoomIndex};
use crate::media::peer::{PeerEvent, PeerSettings, WebRtcPeer};
use crate::media::room::{Room, SlotSource, assign_slots};
use crate::media::speaker::audio_level;
use crate::metrics::{Metrics, ProfileLabel};
use crate::signaling::protocol::{
    ClientMessage, ErrorCode, LeaveReason, ModerateAction, ServerMessage, SlotAssignment,
};
use crate::token::Role;
use rtc::peer_connection::message::RTCMessage;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::shared::{TaggedBytesMut, TransportContext};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How often active speakers are re-evaluated.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(250);

/// Limits and transport settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Participants per room (hidden recorders not counted).
    pub max_room_size: usize,
    /// Participants on the node.
    pub max_participants: usize,
    /// The first participant of a meeting becomes its moderator (open joins).
    pub first_is_moderator: bool,
    /// Peer connection settings.
    pub peer: Arc<PeerSettings>,
}

/// Someone asking to join, already authenticated.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Meeting name.
    pub meeting: String,
    /// Stable identity.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Role granted by the token (or by default).
    pub role: Role,
}

/// A join the core accepted.
#[derive(Debug)]
pub struct Admitted {
    /// The new participant's id.
    pub id: ParticipantId,
    /// Its role (a first participant may have been promoted).
    pub role: Role,
    /// The `welcome` frame, without its reconnect token.
    pub welcome: ServerMessage,
}

/// A message for the signaling layer.
#[derive(Debug)]
pub enum Output {
    /// Send a frame to a participant.
    Send(ParticipantId, ServerMessage),
    /// Close a participant's signaling socket (it has already left the core).
    Close(ParticipantId),
}

/// The node's media core.
pub struct MediaCore {
    config: CoreConfig,
    metrics: Arc<Metrics>,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<RoomIndex, Room>,
    room_names: HashMap<String, RoomIndex>,
    demux: Demuxer,
    deadlines: Deadlines,
    next_participant: ParticipantId,
    next_room: RoomIndex,
    next_speaker_tick: Option<Instant>,
    dirty: Vec<ParticipantId>,
    transmits: VecDeque<TaggedBytesMut>,
    outputs: VecDeque<Output>,
}

impl MediaCore {
    /// An empty core.
    pub fn new(config: CoreConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            room_names: HashMap::new(),
            demux: Demuxer::default(),
            deadlines: Deadlines::default(),
            next_participant: 1,
            next_room: 1,
            next_speaker_tick: None,
            dirty: Vec::new(),
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Admits a participant, or says why not.
    pub fn join(
        &mut self,
        now: Instant,
        request: JoinRequest,
    ) -> Result<Admitted, (ErrorCode, String)> {
        if self.participants.len() >= self.config.max_participants {
            return Err((ErrorCode::NodeFull, "this node is at capacity".into()));
        }
        let room_index = *self
            .room_names
            .entry(request.meeting.clone())
            .or_insert_with(|| {
                let index = self.next_room;
                self.next_room += 1;
                index
            });
        let room = self.rooms.entry(room_index).or_default();
        let visible = room
            .members
            .iter()
            .filter(|id| self.participants.get(id).is_some_and(|p| !p.is_hidden()))
            .count();
        let hidden = request.role == Role::Recorder;
        if room.locked && !hidden {
            return Err((ErrorCode::MeetingLocked, "the meeting is locked".into()));
        }
        if visible >= self.config.max_room_size && !hidden {
            return Err((
                ErrorCode::MeetingFull,
                format!(
                    "meeting {} is full ({} participants)",
                    request.meeting, self.config.max_room_size
                ),
            ));
        }
        let role = if visible == 0 && self.config.first_is_moderator && !hidden {
            Role::Moderator
        } else {
            request.role
        };
        let id = self.next_participant;
        self.next_participant = self.next_participant.wrapping_add(1).max(1);
        let ufrag = ufrag_for(id, &random_ice_chars(8));
        let peer = WebRtcPeer::new(
            now,
            ufrag,
            random_ice_chars(24),
            self.config.peer.clone(),
            self.metrics.clone(),
        )
        .map_err(|e| {
            (
                ErrorCode::BadRequest,
                format!("cannot create a session: {e}"),
            )
        })?;
        let participant = Participant {
            id,
            room: room_index,
            identity: request.identity,
            name: request.name,
            role,
            audio_muted: false,
            video_muted: false,
            peer,
            slots: Vec::new(),
            keyframes: KeyframeThrottle::default(),
            joined_at: now,
            dirty: false,
        };
        let you = participant.info();
        let others: Vec<_> = room
            .members
            .iter()
            .filter_map(|m| self.participants.get(m))
            .filter(|p| !p.is_hidden())
            .map(Participant::info)
            .collect();
        let welcome = ServerMessage::Welcome {
            you: you.clone(),
            meeting: request.meeting,
            locked: room.locked,
            max_room_size: self.config.max_room_size,
            recv_slots: self
                .config
                .max_room_size
                .saturating_sub(1)
                .min(self.config.peer.max_slots),
            participants: others,
            speaker: room.speaker.current(),
            token: String::new(),
        };
        room.members.push(id);
        let first_member = room.members.len() == 1;
        self.participants.insert(id, participant);
        self.metrics
            .participants
            .set(self.participants.len() as i64);
        if first_member {
            self.metrics.rooms.set(self.rooms.len() as i64);
        }
        if !hidden {
            self.broadcast(
                room_index,
                Some(id),
                ServerMessage::Joined { participant: you },
            );
        }
        self.mark_dirty(id);
        info!(participant = id, meeting = %self.meeting_name(room_index), ?role, "joined");
        Ok(Admitted { id, role, welcome })
    }

    /// Answers a participant's offer and assigns slots.
    pub fn offer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        sdp: String,
    ) -> Result<String, String> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or_else(|| "not in a meeting".to_string())?;
        let answer = participant
            .peer
            .answer(now, sdp, rand::random, || (rand::random(), rand::random()))
            .map_err(|e| e.to_string())?;
        participant.slots = participant
            .peer
            .slots()
            .iter()
            .map(|s| SlotSource {
                kind: s.stream.kind(),
                publisher: None,
            })
            .collect();
        let room = participant.room;
        self.mark_dirty(id);
        self.reassign_slots(now, room);
        Ok(answer)
    }

    /// Handles a signaling request from a participant (join and offer excluded).
    pub fn client_message(&mut self, now: Instant, id: ParticipantId, message: ClientMessage) {
        match message {
            ClientMessage::Mute { audio, video } => self.set_mute(id, audio, video, None),
            ClientMessage::Moderate { action, target } => self.moderate(now, id, action, target),
            ClientMessage::Lock { locked } => self.lock(id, locked),
            ClientMessage::Leave => {
                self.leave(now, id, LeaveReason::Left);
                self.outputs.push_back(Output::Close(id));
            }
            ClientMessage::Join { .. } | ClientMessage::Offer { .. } => self.send(
                id,
                ServerMessage::error(ErrorCode::BadRequest, "already joined and negotiated"),
            ),
        }
    }

    /// Removes a participant from the node.
    pub fn leave(&mut self, now: Instant, id: ParticipantId, reason: LeaveReason) {
        let Some(mut participant) = self.participants.remove(&id) else {
            return;
        };
        participant.peer.close();
        self.demux.remove(id);
        self.deadlines.set(id, None);
        let room_index = participant.room;
        if let Some(room) = self.rooms.get_mut(&room_index) {
            room.members.retain(|m| *m != id);
            room.speaker.remove(id);
        }
        self.metrics
            .participants
            .set(self.participants.len() as i64);
        info!(participant = id, ?reason, "left");
        if !participant.is_hidden() {
            self.broadcast(room_index, None, ServerMessage::Left { id, reason });
        }
        self.reassign_slots(now, room_index);
        self.drop_room_if_empty(room_index);
    }

    /// Feeds one datagram received at `now` from `transport`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        transport: TransportContext,
        datagram: bytes::BytesMut,
    ) {
        if datagram.is_empty() {
            self.metrics.drop_packet("empty");
            return;
        }
        if let Some(reason) = malformed(&datagram) {
            self.metrics.drop_packet(reason);
            return;
        }
        let Some(id) = self.demux.route(&transport, &datagram) else {
            self.metrics.drop_packet("unroutable");
            return;
        };
        let Some(participant) = self.participants.get_mut(&id) else {
            self.metrics.drop_packet("unknown_participant");
            return;
        };
        if let Err(e) = participant.peer.handle_read(TaggedBytesMut {
            now,
            transport,
            message: datagram,
        }) {
            self.metrics.drop_packet("rejected_by_transport");
            debug!(participant = id, "datagram rejected: {e}");
        }
        self.mark_dirty(id);
        while let Some(message) = self
            .participants
            .get_mut(&id)
            .and_then(|p| p.peer.poll_read())
        {
            match message.message {
                RTCMessage::RtpPacket(_, packet) => self.on_rtp(now, id, packet),
                RTCMessage::RtcpPacket(_, packets) => self.on_rtcp(now, id, &packets),
                _ => {}
            }
        }
        self.flush(now);
    }

    fn on_rtp(&mut self, now: Instant, publisher: ParticipantId, packet: rtc::rtp::Packet) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(kind) = p.peer.published_kind(packet.header.payload_type) else {
            self.metrics.drop_packet("unknown_payload_type");
            return;
        };
        let room_index = p.room;
        let mut keyframe_start = false;
        match kind {
            MediaKind::Audio => {
                if let Some(level) = p
                    .peer
                    .audio_level_ext()
                    .and_then(|ext| packet.header.get_extension(ext))
                    .and_then(|payload| audio_level(&payload))
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
            self.metrics.drop_packet("muted");
            return;
        }
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
                self.metrics.drop_packet("padding_only");
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
                            self.metrics.drop_packet("write_failed");
                            debug!(subscriber, "forward failed: {e}");
                        }
                    };
                    if !s.dirty {
                        s.dirty = true;
                        self.dirty.push(subscriber);
                    }
                }
                Err(reason) => {
                    wants_keyframe |= reason == DropReason::WaitingForKeyframe;
                    self.metrics.drop_packet(reason.as_str());
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

    fn on_rtcp(
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

    fn request_keyframe(&mut self, now: Instant, publisher: ParticipantId) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        if p.keyframes.request(now) {
            self.send_pli(now, publisher);
        } else {
            self.mark_dirty(publisher);
        }
    }

    fn send_pli(&mut self, now: Instant, publisher: ParticipantId) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        match p.peer.send_pli(now) {
            Ok(true) => {
                self.metrics.plis_sent.inc();
            }
            Ok(false) => {}
            Err(e) => debug!(publisher, "PLI failed: {e}"),
        }
        self.mark_dirty(publisher);
    }

    /// Drives every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.deadlines.pop_due(now) {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if let Err(e) = p.peer.handle_timeout(now) {
                debug!(participant = id, "timeout handling failed: {e}");
            }
            if p.keyframes.handle_timeout(now) {
                self.send_pli(now, id);
            }
            self.mark_dirty(id);
        }
        if self.next_speaker_tick.is_some_and(|at| at <= now) {
            self.evaluate_speakers(now);
        }
        self.flush(now);
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.deadlines.earliest(), self.next_speaker_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<TaggedBytesMut> {
        self.transmits.pop_front()
    }

    /// The next message for the signaling layer.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Number of participants on the node.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    fn evaluate_speakers(&mut self, now: Instant) {
        let changes: Vec<(RoomIndex, ParticipantId)> = self
            .rooms
            .iter_mut()
            .filter_map(|(index, room)| room.speaker.evaluate(now).map(|id| (*index, id)))
            .collect();
        for (room, id) in changes {
            self.broadcast(room, None, ServerMessage::Speaker { id });
        }
        self.next_speaker_tick = (!self.rooms.is_empty()).then(|| now + SPEAKER_INTERVAL);
    }

    fn mark_dirty(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Drains events and datagrams of every participant touched in this step and refreshes
    /// their deadlines.
    fn flush(&mut self, now: Instant) {
        let mut disconnected = Vec::new();
        while let Some(id) = self.dirty.pop() {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            p.dirty = false;
            while let Some(event) = p.peer.poll_event(now) {
                match event {
                    PeerEvent::Connected { srtp_profile } => {
                        info!(participant = id, srtp_profile, "media connected");
                        self.metrics
                            .srtp_profiles
                            .get_or_create(&ProfileLabel {
                                profile: srtp_profile,
                            })
                            .inc();
                    }
                    PeerEvent::Disconnected => disconnected.push(id),
                }
            }
            while let Some(datagram) = p.peer.poll_write() {
                self.transmits.push_back(datagram);
            }
            let deadline = p.next_deadline();
            self.deadlines.set(id, deadline);
        }
        for id in disconnected {
            warn!(participant = id, "media connection lost");
            self.leave(now, id, LeaveReason::Disconnected);
            self.outputs.push_back(Output::Close(id));
        }
    }

    fn set_mute(
        &mut self,
        id: ParticipantId,
        audio: Option<bool>,
        video: Option<bool>,
        by: Option<ParticipantId>,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.audio_muted = audio.unwrap_or(p.audio_muted);
        p.video_muted = video.unwrap_or(p.video_muted);
        let (info, room) = (p.info(), p.room);
        for (kind, muted) in [(MediaKind::Audio, audio), (MediaKind::Video, video)] {
            if muted == Some(true) {
                self.detach_routes(room, id, kind);
            }
        }
        if let Some(by) = by {
            self.send(
                id,
                ServerMessage::MutedByModerator {
                    audio: audio == Some(true),
                    video: video == Some(true),
                    by,
                },
            );
        }
        self.broadcast(room, None, ServerMessage::Updated { participant: info });
    }

    /// Stops every stream fed by `publisher`'s `kind`, so resuming re-syncs it.
    fn detach_routes(&mut self, room: RoomIndex, publisher: ParticipantId, kind: MediaKind) {
        let Some(room) = self.rooms.get(&room) else {
            return;
        };
        for &(subscriber, slot) in room.routes(publisher, kind) {
            if let Some(s) = self
                .participants
                .get_mut(&subscriber)
                .and_then(|s| s.peer.slots_mut().get_mut(slot))
            {
                s.stream.detach();
            }
        }
    }

    fn moderate(
        &mut self,
        now: Instant,
        id: ParticipantId,
        action: ModerateAction,
        target: ParticipantId,
    ) {
        let Some(room) = self.moderator_room(id) else {
            return;
        };
        if self
            .participants
            .get(&target)
            .is_none_or(|t| t.room != room || t.is_hidden())
        {
            self.send(
                id,
                ServerMessage::error(ErrorCode::NotFound, "no such participant"),
            );
            return;
        }
        match action {
            ModerateAction::MuteAudio => self.set_mute(target, Some(true), None, Some(id)),
            ModerateAction::MuteVideo => self.set_mute(target, None, Some(true), Some(id)),
            ModerateAction::Remove => {
                self.send(target, ServerMessage::Removed { by: id });
                self.leave(now, target, LeaveReason::Removed);
                self.outputs.push_back(Output::Close(target));
            }
        }
    }

    fn lock(&mut self, id: ParticipantId, locked: bool) {
        let Some(room) = self.moderator_room(id) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&room) {
            r.locked = locked;
        }
        self.broadcast(room, None, ServerMessage::Lock { locked, by: id });
    }

    /// The room of `id` if it is a moderator; otherwise tells it no.
    fn moderator_room(&mut self, id: ParticipantId) -> Option<RoomIndex> {
        let p = self.participants.get(&id)?;
        if p.role == Role::Moderator {
            return Some(p.room);
        }
        self.send(
            id,
            ServerMessage::error(ErrorCode::Forbidden, "only moderators can do that"),
        );
        None
    }

    /// Gives every subscriber of the room a slot for every publisher, keeping existing
    /// assignments, tells subscribers whose map changed, and rebuilds the fan-out table.
    fn reassign_slots(&mut self, now: Instant, room_index: RoomIndex) {
        let Some(room) = self.rooms.get_mut(&room_index) else {
            return;
        };
        let publishers = |kind| -> Vec<ParticipantId> {
            room.members
                .iter()
                .filter(|m| {
                    self.participants
                        .get(m)
                        .is_some_and(|p| !p.is_hidden() && p.peer.publishes(kind))
                })
                .copied()
                .collect()
        };
        let (audio, video) = (publishers(MediaKind::Audio), publishers(MediaKind::Video));
        let mut changed = Vec::new();
        for id in &room.members {
            let Some(p) = self.participants.get_mut(id) else {
                continue;
            };
            let before = p.slots.clone();
            let others = |kind| {
                let all = if kind == MediaKind::Audio {
                    &audio
                } else {
                    &video
                };
                all.iter().copied().filter(|m| m != id).collect()
            };
            if assign_slots(&mut p.slots, others) {
                for (index, (old, new)) in before.iter().zip(&p.slots).enumerate() {
                    if old.publisher != new.publisher
                        && let Some(slot) = p.peer.slots_mut().get_mut(index)
                    {
                        slot.stream.detach();
                    }
                }
                changed.push(*id);
            }
        }
        let members = room.members.clone();
        room.rebuild_routes(
            members
                .iter()
                .filter_map(|m| self.participants.get(m).map(|p| (*m, p.slots.as_slice()))),
        );
        for id in changed {
            let Some(p) = self.participants.get(&id) else {
                continue;
            };
            let slots = p
                .slots
                .iter()
                .zip(p.peer.slots())
                .filter_map(|(source, slot)| {
                    Some(SlotAssignment {
                        mid: slot.mid.clone(),
                        kind: source.kind.as_str(),
                        participant: source.publisher?,
                    })
                })
                .collect();
            self.send(id, ServerMessage::Slots { slots });
        }
        if self.next_speaker_tick.is_none() {
            self.next_speaker_tick = Some(now + SPEAKER_INTERVAL);
        }
    }

    fn drop_room_if_empty(&mut self, room_index: RoomIndex) {
        if self
            .rooms
            .get(&room_index)
            .is_some_and(|r| r.members.is_empty())
        {
            self.rooms.remove(&room_index);
            self.room_names.retain(|_, index| *index != room_index);
            self.metrics.rooms.set(self.rooms.len() as i64);
        }
    }

    fn meeting_name(&self, room_index: RoomIndex) -> &str {
        self.room_names
            .iter()
            .find(|(_, index)| **index == room_index)
            .map(|(name, _)| name.as_str())
            .unwrap_or_default()
    }

    fn send(&mut self, id: ParticipantId, message: ServerMessage) {
        self.outputs.push_back(Output::Send(id, message));
    }

    fn broadcast(
        &mut self,
        room: RoomIndex,
        except: Option<ParticipantId>,
        message: ServerMessage,
    ) {
        let Some(room) = self.rooms.get(&room) else {
            return;
        };
        for id in &room.members {
            if Some(*id) != except {
                self.outputs.push_back(Output::Send(*id, message.clone()));
            }
        }
    }
}

/// Random characters valid in ICE ufrags and passwords.
fn random_ice_chars(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}
