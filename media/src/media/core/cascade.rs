//! The core's side of cascading: links to peer nodes, meetings shared over them, their control
//! messages and relayed participants. The media that crosses each link (each stream at most
//! once, and only if someone on the far side watches it) is `relay`'s.

use super::{MediaCore, Output};
use crate::cascade::control::LinkMessage;
use crate::cascade::link::{Link, LinkParams};
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::gop::GopCache;
use crate::media::participant::{Participant, RoomIndex};
use crate::media::relayed::LinkTransport;
use crate::media::simulcast::VideoLayers;
use crate::media::transport::Publication;
use kaskade_protocol::signaling::{LeaveReason, ModerateAction, ParticipantInfo, ServerMessage};
use kaskade_protocol::token::Role;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Keyframe requests towards one relayed publisher are sent to its node at most this often
/// (its node coalesces further).
const RELAYED_KEYFRAME_INTERVAL: Duration = Duration::from_millis(100);

impl MediaCore {
    /// Sets the index the locator gave this node: ids of participants admitted from now on
    /// carry it, so they are unique across the cluster.
    pub fn set_node_index(&mut self, index: u16) {
        self.node_index = index;
    }

    /// A link to a peer node is up (replacing any previous one to it).
    pub fn link_up(&mut self, now: Instant, params: LinkParams) {
        let peer = params.index;
        let shared: Vec<String> = self
            .rooms
            .values()
            .filter(|r| r.peers.contains(&peer))
            .map(|r| r.meeting.clone())
            .collect();
        if self.links.contains_key(&peer) {
            self.link_down(now, peer);
        }
        info!(peer = %params.name, index = params.index, "cascade link up");
        let counters = self.metrics.link(&params.name);
        self.links
            .insert(params.index, (Link::new(self.node_index, params), counters));
        self.metrics.cascade_links.set(self.links.len() as i64);
        // a replaced connection: the meetings shared over the old one are shared again
        for meeting in shared {
            self.attach(peer, &meeting);
        }
    }

    /// The link to `peer` is gone: its participants leave every shared meeting.
    pub fn link_down(&mut self, now: Instant, peer: u16) {
        let Some((link, _)) = self.links.remove(&peer) else {
            return;
        };
        info!(peer = %link.params().name, "cascade link down");
        self.metrics.cascade_links.set(self.links.len() as i64);
        let shared: Vec<RoomIndex> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.peers.contains(&peer))
            .map(|(i, _)| *i)
            .collect();
        for room in shared {
            self.detach_peer(now, room, peer, LeaveReason::Disconnected);
            // the peer may be alive behind a broken connection: look again
            if let Some(meeting) = self.rooms.get(&room).map(|r| r.meeting.clone()) {
                self.outputs.push_back(Output::FindPeers(meeting));
            }
        }
        self.update_link_gauges();
    }

    /// Shares `meeting` with `peer` (the locator says it hosts it too): announces this node's
    /// participants and asks for the peer's.
    pub fn attach(&mut self, peer: u16, meeting: &str) {
        let Some(&room_index) = self.room_names.get(meeting) else {
            return;
        };
        if !self.links.contains_key(&peer) {
            return;
        }
        let Some(room) = self.rooms.get_mut(&room_index) else {
            return;
        };
        if room.peers.contains(&peer) {
            return;
        }
        room.peers.push(peer);
        let locked = room.locked;
        self.outputs.push_back(Output::Link(
            peer,
            LinkMessage::Attach {
                meeting: meeting.to_string(),
                locked,
            },
        ));
        self.announce_all(room_index, peer);
    }

    /// Applies a lock kept elsewhere (by the locator after a node loss, or by a peer node that
    /// shares the meeting): the participants here learn it with `by: 0` (no one on this node
    /// locked it).
    pub fn set_meeting_locked(&mut self, meeting: &str, locked: bool) {
        let Some(&index) = self.room_names.get(meeting) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&index) else {
            return;
        };
        if locked && !room.locked {
            room.locked = true;
            self.broadcast(
                index,
                None,
                ServerMessage::Lock {
                    locked,
                    by: ParticipantId::NOBODY,
                },
            );
        }
    }

    /// A control message from `peer`.
    pub fn link_message(&mut self, now: Instant, peer: u16, message: LinkMessage) {
        if !self.links.contains_key(&peer) {
            return;
        }
        match message {
            LinkMessage::Hello { .. } => {}
            LinkMessage::Attach { meeting, locked } => self.on_attach(peer, &meeting, locked),
            LinkMessage::Detach { meeting } => {
                if let Some(&room) = self.room_names.get(&meeting) {
                    self.detach_peer(now, room, peer, LeaveReason::Left);
                }
            }
            other => {
                let Some(room) = other
                    .meeting()
                    .and_then(|meeting| self.shared_room(meeting, peer))
                else {
                    return;
                };
                self.shared_meeting_message(now, peer, room, other);
            }
        }
    }

    /// A message about a meeting this node shares with `peer` (in `room`).
    fn shared_meeting_message(
        &mut self,
        now: Instant,
        peer: u16,
        room: RoomIndex,
        message: LinkMessage,
    ) {
        match message {
            LinkMessage::Participant {
                participant,
                payload_kinds,
                cache_gop,
                ..
            } => {
                if participant.id.node() != peer {
                    warn!(peer, id = %participant.id, "peer announced an id not its own");
                    return;
                }
                let publication = Publication {
                    payload_kinds,
                    audio_level_ext: None,
                    cache_gop,
                };
                self.upsert_relayed(now, room, peer, participant, publication);
            }
            LinkMessage::Left { id, reason, .. } => {
                if self.relayed_from(id) == Some(peer) {
                    self.leave(now, id, reason);
                }
            }
            LinkMessage::Subscribe { streams, .. } => self.on_subscribe(now, room, peer, streams),
            LinkMessage::Moderate {
                by, action, target, ..
            } => self.on_peer_moderation(now, peer, room, by, action, target),
            LinkMessage::Recording { active, .. } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.recording_peers.retain(|p| *p != peer);
                    if active {
                        r.recording_peers.push(peer);
                    }
                }
                self.recording_changed(room);
            }
            LinkMessage::Lock { locked, by, .. } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.locked = locked;
                }
                self.broadcast(room, None, ServerMessage::Lock { locked, by });
            }
            LinkMessage::Hello { .. } | LinkMessage::Attach { .. } | LinkMessage::Detach { .. } => {
            }
        }
    }

    /// A moderator relayed from `peer` acts on a participant of this node: applied when the
    /// moderator really is one of that peer's, in the same meeting.
    fn on_peer_moderation(
        &mut self,
        now: Instant,
        peer: u16,
        room: RoomIndex,
        by: ParticipantId,
        action: ModerateAction,
        target: ParticipantId,
    ) {
        let by_moderator = self.participants.get(&by).is_some_and(|m| {
            m.relayed_from == Some(peer) && m.room == room && m.role == Role::Moderator
        });
        let target_here = self
            .participants
            .get(&target)
            .is_some_and(|t| t.room == room && t.is_here() && !t.is_hidden());
        if by_moderator && target_here {
            self.apply_moderation(now, by, action, target);
        }
    }

    /// After a recorder came or went here or on a peer: tells local participants whether the
    /// meeting is recorded, and peers whether a recorder is here, when that changed.
    pub(super) fn recording_changed(&mut self, room_index: RoomIndex) {
        let Some(room) = self.rooms.get_mut(&room_index) else {
            return;
        };
        let here = room
            .members
            .iter()
            .any(|m| self.participants.get(m).is_some_and(Participant::is_hidden));
        let active = here || !room.recording_peers.is_empty();
        let tell_peers = (here != room.recorder_here).then(|| LinkMessage::Recording {
            meeting: room.meeting.clone(),
            active: here,
        });
        room.recorder_here = here;
        if active != room.recording {
            room.recording = active;
            self.broadcast(room_index, None, ServerMessage::Recording { active });
        }
        if let Some(message) = tell_peers {
            self.tell_peers(room_index, message);
        }
    }

    /// Tells every peer of the participant's room who it is and what it publishes.
    pub(super) fn announce(&mut self, id: ParticipantId) {
        let Some((room, message)) = self.participant_message(id) else {
            return;
        };
        self.tell_peers(room, message);
    }

    /// Sends `message` to every peer sharing the room.
    pub(super) fn tell_peers(&mut self, room: RoomIndex, message: LinkMessage) {
        let Some(room) = self.rooms.get(&room) else {
            return;
        };
        for peer in &room.peers {
            self.outputs.push_back(Output::Link(*peer, message.clone()));
        }
    }

    fn on_attach(&mut self, peer: u16, meeting: &str, locked: bool) {
        if !self.room_names.contains_key(meeting) {
            self.outputs.push_back(Output::Link(
                peer,
                LinkMessage::Detach {
                    meeting: meeting.to_string(),
                },
            ));
            return;
        };
        self.set_meeting_locked(meeting, locked);
        self.attach(peer, meeting);
    }

    /// The room of `meeting` if it is shared with `peer`.
    fn shared_room(&self, meeting: &str, peer: u16) -> Option<RoomIndex> {
        let &index = self.room_names.get(meeting)?;
        self.rooms
            .get(&index)?
            .peers
            .contains(&peer)
            .then_some(index)
    }

    fn participant_message(&self, id: ParticipantId) -> Option<(RoomIndex, LinkMessage)> {
        let p = self
            .participants
            .get(&id)
            .filter(|p| p.is_here() && !p.is_hidden())?;
        let room = self.rooms.get(&p.room)?;
        Some((
            p.room,
            LinkMessage::Participant {
                meeting: room.meeting.clone(),
                participant: p.info(),
                payload_kinds: p.transport.publication().payload_kinds.clone(),
                cache_gop: p.gop.is_some(),
            },
        ))
    }

    fn announce_all(&mut self, room_index: RoomIndex, peer: u16) {
        let Some(room) = self.rooms.get(&room_index) else {
            return;
        };
        let mut messages: Vec<LinkMessage> = room
            .members
            .iter()
            .filter_map(|m| self.participant_message(*m))
            .map(|(_, message)| message)
            .collect();
        if room.recorder_here {
            messages.push(LinkMessage::Recording {
                meeting: room.meeting.clone(),
                active: true,
            });
        }
        for message in messages {
            self.outputs.push_back(Output::Link(peer, message));
        }
    }

    /// The peer node participant `id` is relayed from, if it is a relayed participant.
    pub(super) fn relayed_from(&self, id: ParticipantId) -> Option<u16> {
        self.participants.get(&id).and_then(|p| p.relayed_from)
    }

    /// A participant of `peer` joined the shared meeting or changed: it becomes (or is updated
    /// as) a member of the room whose transport is the link.
    fn upsert_relayed(
        &mut self,
        now: Instant,
        room_index: RoomIndex,
        peer: u16,
        info: ParticipantInfo,
        publication: Publication,
    ) {
        let id = info.id;
        let cache_gop = publication.cache_gop;
        let transport = Box::new(LinkTransport::new(publication));
        match self.participants.get_mut(&id) {
            Some(p) if p.relayed_from == Some(peer) && p.room == room_index => {
                let newly_muted = [
                    (MediaKind::Audio, !p.audio_muted && info.audio_muted),
                    (MediaKind::Video, !p.video_muted && info.video_muted),
                ];
                describe(p, &info);
                if p.gop.is_some() != cache_gop {
                    p.gop = cache_gop.then(GopCache::default);
                }
                p.transport = transport;
                for (kind, muted) in newly_muted {
                    if muted {
                        self.detach_routes(room_index, id, kind);
                    }
                }
                self.broadcast(
                    room_index,
                    None,
                    ServerMessage::Updated { participant: info },
                );
            }
            Some(_) => {
                warn!(peer, %id, "peer announced a participant known elsewhere");
                return;
            }
            None => {
                let Some(room) = self.rooms.get_mut(&room_index) else {
                    return;
                };
                room.members.push(id);
                let mut relayed = Participant {
                    relayed_from: Some(peer),
                    kind: "relayed".into(),
                    video: VideoLayers::with_keyframe_interval(RELAYED_KEYFRAME_INTERVAL),
                    ..Participant::new(id, room_index, transport)
                };
                describe(&mut relayed, &info);
                self.participants.insert(id, relayed);
                self.broadcast(
                    room_index,
                    None,
                    ServerMessage::Joined { participant: info },
                );
            }
        }
        self.reassign_slots(now, room_index);
    }

    fn detach_peer(&mut self, now: Instant, room_index: RoomIndex, peer: u16, reason: LeaveReason) {
        let Some(room) = self.rooms.get(&room_index) else {
            return;
        };
        let theirs: Vec<ParticipantId> = room
            .members
            .iter()
            .filter(|m| self.relayed_from(**m) == Some(peer))
            .copied()
            .collect();
        for id in theirs {
            self.remove_participant(now, id, reason);
        }
        if let Some(room) = self.rooms.get_mut(&room_index) {
            room.remove_peer(peer);
        }
        self.recording_changed(room_index);
        self.reassign_slots(now, room_index);
        self.update_link_gauges();
    }

    /// Refreshes the per-link stream gauges from every room's subscriptions.
    pub(super) fn update_link_gauges(&self) {
        for (peer, (_, counters)) in &self.links {
            let (mut sent, mut received) = (0, 0);
            for room in self.rooms.values() {
                sent += room.subscriptions.get(peer).map_or(0, Vec::len);
                received += room.wanted.get(peer).map_or(0, Vec::len);
            }
            counters.streams_sent.set(sent as i64);
            counters.streams_received.set(received as i64);
        }
    }
}

/// Gives a relayed participant the identity, name, role, mute state and source its node
/// announced.
fn describe(p: &mut Participant, info: &ParticipantInfo) {
    p.identity = info.identity.clone().unwrap_or_default();
    p.name = info.name.clone();
    p.role = info.role;
    p.audio_muted = info.audio_muted;
    p.video_muted = info.video_muted;
    p.source = info.source.clone();
}
