//! Who is in the node's meetings: admitting participants and sources (capacity, lock, room
//! size, the first moderator, the welcome), their one negotiation, leaving, and the rooms that
//! empty.

use super::{Admitted, JoinRequest, MediaCore, Output};
use crate::cascade::control::LinkMessage;
use crate::media::demux::{ParticipantId, ufrag_for};
use crate::media::ingest::{Delivery, RtpIngest};
use crate::media::participant::{Participant, RoomIndex};
use crate::media::peer::WebRtcPeer;
use crate::media::room::{Room, SlotSource};
use crate::media::transport::{Publication, Transport};
use kaskade_protocol::signaling::{
    ErrorCode, LeaveReason, ServerMessage, Source, SourceState, Welcome,
};
use kaskade_protocol::token::Role;
use rand::Rng;
use rand::rngs::StdRng;
use std::time::Instant;
use tracing::info;

impl MediaCore {
    /// Admits a participant that connects over WebRTC, or says why not.
    pub fn join(
        &mut self,
        now: Instant,
        request: JoinRequest,
    ) -> Result<Admitted, (ErrorCode, String)> {
        let settings = self.config.peer.clone();
        let metrics = self.metrics.clone();
        let wall = self.surroundings.clock;
        self.admit(now, request, None, |id, rng| {
            let ufrag = ufrag_for(id, &random_ice_chars(rng, 8));
            let pwd = random_ice_chars(rng, 24);
            WebRtcPeer::new(now, ufrag, pwd, settings, metrics, wall)
                .map(|peer| Box::new(peer) as Box<dyn Transport>)
                .map_err(|e| format!("cannot create a session: {e}"))
        })
    }

    /// Admits a source (an RTSP camera, a SIP call): a participant whose plain RTP the shell
    /// hands in with [`Self::ingest`], and, with a `delivery`, who takes the meeting's media
    /// back as plain RTP at the shell's address. It stays while anyone else is in the meeting.
    pub fn join_source(
        &mut self,
        now: Instant,
        request: JoinRequest,
        source: Source,
        publication: Publication,
        delivery: Option<Delivery>,
    ) -> Result<Admitted, (ErrorCode, String)> {
        let admitted = self.admit(now, request, Some(source), |_, rng| {
            let transport = match &delivery {
                Some(delivery) => RtpIngest::subscribing(publication, delivery, now, rng),
                None => RtpIngest::new(publication),
            };
            Ok(Box::new(transport) as Box<dyn Transport>)
        })?;
        // nothing to negotiate: its consumers and its producers get their slots at once
        if let Some(p) = self.participants.get_mut(&admitted.id) {
            p.slots = slots_of(p);
            let room = p.room;
            self.reassign_slots(now, room);
        }
        Ok(admitted)
    }

    /// Admits a participant (a `source` when it is one) whose transport `transport` makes from
    /// its id, or says why not.
    fn admit(
        &mut self,
        now: Instant,
        request: JoinRequest,
        source: Option<Source>,
        transport: impl FnOnce(ParticipantId, &mut StdRng) -> Result<Box<dyn Transport>, String>,
    ) -> Result<Admitted, (ErrorCode, String)> {
        if self.participant_count() >= self.config.max_participants {
            return Err((ErrorCode::NodeFull, "this node is at capacity".into()));
        }
        let room_index = self.room_for(&request.meeting);
        let role = self.admission(room_index, &request, source.is_some())?;
        let id = next_id(&mut self.next_participant, self.node_index, |id| {
            self.participants.contains_key(&id)
        });
        let transport = match transport(id, &mut self.surroundings.rng) {
            Ok(transport) => transport,
            Err(e) => {
                self.drop_room_if_empty(room_index);
                return Err((ErrorCode::BadRequest, e));
            }
        };
        let participant = Participant {
            identity: request.identity,
            name: request.name,
            role,
            source,
            kind: request.kind,
            joined_at_ms: self.surroundings.clock.unix_ms(now),
            ..Participant::new(id, room_index, transport)
        };
        let welcome = self.welcome(room_index, &participant, request.meeting);
        self.seat(participant);
        Ok(Admitted { id, role, welcome })
    }

    /// The room of `meeting`, made when it has none.
    fn room_for(&mut self, meeting: &str) -> RoomIndex {
        let index = *self
            .room_names
            .entry(meeting.to_owned())
            .or_insert_with(|| {
                let index = self.next_room;
                self.next_room += 1;
                index
            });
        self.rooms
            .entry(index)
            .or_insert_with(|| Room::new(meeting.to_owned()));
        index
    }

    /// Whether `request` may enter the room (locked, full), and with which role: the first
    /// person of a meeting moderates it when joins are open.
    fn admission(
        &self,
        room_index: RoomIndex,
        request: &JoinRequest,
        is_source: bool,
    ) -> Result<Role, (ErrorCode, String)> {
        let Some(room) = self.rooms.get(&room_index) else {
            return Err((ErrorCode::BadRequest, "the meeting is gone".into()));
        };
        let visible = room
            .members
            .iter()
            .filter(|id| self.participants.get(id).is_some_and(|p| !p.is_hidden()))
            .count();
        let hidden = request.role == Role::Recorder;
        if room.locked && !hidden && !request.rejoin {
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
        Ok(
            if visible == 0 && self.config.first_is_moderator && !hidden && !is_source {
                Role::Moderator
            } else {
                request.role
            },
        )
    }

    /// The `welcome` frame for `participant` joining the room (identities only for recorders).
    fn welcome(
        &self,
        room_index: RoomIndex,
        participant: &Participant,
        meeting: String,
    ) -> ServerMessage {
        let hidden = participant.is_hidden();
        let room = self.rooms.get(&room_index);
        let others: Vec<_> = room
            .iter()
            .flat_map(|room| &room.members)
            .filter_map(|m| self.participants.get(m))
            .filter(|p| !p.is_hidden())
            .map(Participant::info)
            .collect();
        let welcome = ServerMessage::Welcome(Box::new(Welcome {
            you: participant.info(),
            meeting,
            locked: room.is_some_and(|r| r.locked),
            max_room_size: self.config.max_room_size,
            // a recorder receives everyone; a participant everyone else
            recv_slots: if hidden {
                self.config.max_room_size
            } else {
                self.config.max_room_size.saturating_sub(1)
            }
            .min(self.config.peer.max_slots),
            participants: others,
            speaker: room.and_then(|r| r.speaker.current()),
            recording: room.is_some_and(|r| r.recording),
            // the signaling session fills in these
            token: String::new(),
            may_dial: false,
            call_me: false,
            dial_in: false,
        }));
        if hidden {
            welcome
        } else {
            welcome.without_identities()
        }
    }

    /// Puts an admitted participant in its room and tells whom it concerns.
    fn seat(&mut self, participant: Participant) {
        let (id, room_index, role) = (participant.id, participant.room, participant.role);
        let (hidden, you) = (participant.is_hidden(), participant.info());
        let Some(room) = self.rooms.get_mut(&room_index) else {
            return;
        };
        room.members.push(id);
        let first_member = room.members.len() == 1;
        info!(participant = %id, identity = %participant.identity, meeting = %room.meeting, ?role, "joined");
        self.participants.insert(id, participant);
        self.metrics
            .participants
            .set(self.participant_count() as i64);
        if first_member {
            self.metrics.rooms.set(self.rooms.len() as i64);
            let meeting = self.participant_meeting(id);
            self.outputs.push_back(Output::FindPeers(meeting));
        }
        if hidden {
            self.recording_changed(room_index);
        } else {
            self.broadcast(
                room_index,
                Some(id),
                ServerMessage::Joined { participant: you },
            );
            self.announce(id);
        }
        self.mark_dirty(id);
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
            .transport
            .negotiate(now, sdp, &mut self.surroundings.rng)
            .map_err(|e| e.to_string())?;
        participant.slots = slots_of(participant);
        let room = participant.room;
        self.mark_dirty(id);
        self.reassign_slots(now, room);
        self.announce(id);
        Ok(answer)
    }

    /// Removes a participant from the node.
    pub fn leave(&mut self, now: Instant, id: ParticipantId, reason: LeaveReason) {
        let Some(room_index) = self.remove_participant(now, id, reason) else {
            return;
        };
        self.reassign_slots(now, room_index);
        self.dismiss_sources(now, room_index);
        self.drop_room_if_empty(room_index);
    }

    /// Takes a participant out of the node and its room and tells whom it concerns: the room,
    /// and for one of this node its peers and the call records; returns its room. The room's
    /// slots are left to the caller.
    pub(super) fn remove_participant(
        &mut self,
        now: Instant,
        id: ParticipantId,
        reason: LeaveReason,
    ) -> Option<RoomIndex> {
        let mut participant = self.participants.remove(&id)?;
        participant.transport.close();
        self.demux.remove(id);
        self.deadlines.set(id, None);
        let room_index = participant.room;
        if let Some(room) = self.rooms.get_mut(&room_index) {
            room.members.retain(|m| *m != id);
            room.speaker.remove(id);
            for wanted in room.wanted.values_mut() {
                wanted.retain(|s| s.publisher != id);
            }
        }
        self.metrics
            .participants
            .set(self.participant_count() as i64);
        info!(participant = %id, ?reason, "left");
        if !participant.is_hidden() {
            self.broadcast(room_index, None, ServerMessage::Left { id, reason });
        }
        match participant.relayed_from {
            // the link forgets the relayed streams it tracked for it
            Some(peer) => {
                if let Some((link, _)) = self.links.get_mut(&peer) {
                    link.forget(id);
                }
            }
            None if participant.is_hidden() => self.recording_changed(room_index),
            None => {
                if let Some(meeting) = self.rooms.get(&room_index).map(|r| r.meeting.clone()) {
                    let left = LinkMessage::Left {
                        meeting,
                        id,
                        reason,
                    };
                    self.tell_peers(room_index, left);
                }
            }
        }
        if participant.is_here() {
            self.record_call(now, &participant, reason);
        }
        Some(room_index)
    }

    /// A source's state changed (a camera reconnecting, or live again): everyone is told.
    pub fn set_source_state(
        &mut self,
        id: ParticipantId,
        state: SourceState,
        detail: Option<String>,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(source) = &mut p.source else {
            return;
        };
        if source.state == state && source.detail == detail {
            return;
        }
        source.state = state;
        source.detail = detail;
        let (room, participant) = (p.room, p.info());
        self.broadcast(room, None, ServerMessage::Updated { participant });
        self.announce(id);
    }

    /// Sources (cameras) leave once nobody else is in the meeting, here or on another node.
    pub(super) fn dismiss_sources(&mut self, now: Instant, room_index: RoomIndex) {
        let Some(room) = self.rooms.get(&room_index) else {
            return;
        };
        let others = room.members.iter().any(|m| {
            self.participants
                .get(m)
                .is_some_and(|p| p.source.is_none() && !p.is_hidden())
        });
        if others {
            return;
        }
        let companions: Vec<_> = room
            .members
            .iter()
            .copied()
            .filter(|m| {
                self.participants
                    .get(m)
                    .is_some_and(|p| p.is_here() && p.source.is_some())
            })
            .collect();
        for id in companions {
            self.leave(now, id, LeaveReason::Left);
            self.outputs.push_back(Output::Close(id));
        }
    }

    /// Drops the room once no participant of this node is in it, with the participants
    /// relayed into it, and tells its peers.
    pub(super) fn drop_room_if_empty(&mut self, room_index: RoomIndex) {
        let Some(room) = self.rooms.get(&room_index) else {
            return;
        };
        let here = |m: &ParticipantId| self.participants.get(m).is_some_and(|p| p.is_here());
        if room.members.iter().any(here) {
            return;
        }
        let Some(room) = self.rooms.remove(&room_index) else {
            return;
        };
        self.room_names.remove(&room.meeting);
        for id in &room.members {
            if let Some(relayed) = self.participants.remove(id) {
                self.deadlines.set(*id, None);
                if let Some((link, _)) = relayed.relayed_from.and_then(|p| self.links.get_mut(&p)) {
                    link.forget(*id);
                }
            }
        }
        for peer in &room.peers {
            self.outputs.push_back(Output::Link(
                *peer,
                LinkMessage::Detach {
                    meeting: room.meeting.clone(),
                },
            ));
        }
        self.update_link_gauges();
        self.metrics.rooms.set(self.rooms.len() as i64);
    }
}

/// The next free participant id of node `index`, from a counter that skips 0 and ids still in
/// use.
fn next_id(counter: &mut u32, index: u16, taken: impl Fn(ParticipantId) -> bool) -> ParticipantId {
    loop {
        let candidate = ParticipantId::new(index, *counter);
        *counter = if *counter >= ParticipantId::MAX_COUNTER {
            1
        } else {
            *counter + 1
        };
        if let Some(id) = candidate.filter(|id| id.counter() != 0 && !taken(*id)) {
            return id;
        }
    }
}

/// Random characters valid in ICE ufrags and passwords.
fn random_ice_chars(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A participant's receive slots, one per consumer of its transport, none assigned yet.
fn slots_of(participant: &Participant) -> Vec<SlotSource> {
    participant
        .transport
        .consumers()
        .iter()
        .map(|c| SlotSource {
            kind: c.stream.kind(),
            publisher: None,
        })
        .collect()
}
