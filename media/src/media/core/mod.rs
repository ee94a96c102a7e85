//! The node's media core: every participant, room and stream of the node, with no I/O.
//!
//! Datagrams, signaling requests and the time are passed in; datagrams to send, messages for
//! participants and the next deadline are drained out. The async shell in `node.rs` owns the
//! sockets and the clock. One inbound RTP packet takes this path: [`MediaCore::handle_datagrams`]
//! routes it by four-tuple, the participant's peer connection decrypts it, the room's fan-out
//! table lists the subscriber slots it feeds, each slot's `OutboundStream` rewrites it, and the
//! subscriber's peer connection encrypts it into a datagram drained by
//! [`MediaCore::poll_transmit`].

mod cascade;
mod layers;
mod membership;
mod moderation;
mod packets;
mod relay;
mod reports;
mod sizes;
mod slots;

pub use reports::NodeLoad;

use crate::cascade::control::LinkMessage;
use crate::cascade::frame;
use crate::cascade::link::Link;
use crate::media::deadlines::Deadlines;
use crate::media::demux::{Demuxer, ParticipantId, malformed};
use crate::media::participant::{Participant, RoomIndex};
use crate::media::peer::PeerSettings;
use crate::media::room::Room;
use crate::media::surroundings::Surroundings;
use crate::media::transport::{Inbound, TransportEvent};
use crate::metrics::{Dropped, LinkCounters, Metrics, ProfileLabel};
use kaskade_protocol::cluster::CallRecord;
use kaskade_protocol::signaling::{ClientMessage, ErrorCode, LeaveReason, ServerMessage};
use kaskade_protocol::token::Role;
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
    /// The node's name in call records.
    pub node_name: String,
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
    /// The holder was admitted before (a reconnect token): a lock does not keep it out.
    pub rejoin: bool,
    /// Client kind for call records (`browser`, `synthetic`, ...).
    pub kind: String,
}

impl JoinRequest {
    /// A source the node connects to (`kind`: `camera`, `sip`) joining `meeting` as `name`;
    /// `identity` names it in call records.
    pub fn source(meeting: String, identity: String, name: String, kind: &str) -> Self {
        Self {
            meeting,
            identity,
            name,
            role: Role::Participant,
            rejoin: false,
            kind: kind.into(),
        }
    }
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
    /// A control message for the peer node with this index.
    Link(u16, LinkMessage),
    /// Find the other nodes hosting this meeting and link with them: it got its first
    /// participant here, or lost a link.
    FindPeers(String),
    /// A participant session ended.
    CallRecord(CallRecord),
    /// The source of a participant whose media the shell hands in must send a keyframe.
    KeyframeWanted(ParticipantId),
}

/// The node's media core.
pub struct MediaCore {
    config: CoreConfig,
    metrics: Arc<Metrics>,
    surroundings: Surroundings,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<RoomIndex, Room>,
    room_names: HashMap<String, RoomIndex>,
    demux: Demuxer,
    deadlines: Deadlines,
    node_index: u16,
    next_participant: u32,
    next_room: RoomIndex,
    links: HashMap<u16, (Link, LinkCounters)>,
    next_speaker_tick: Option<Instant>,
    dirty: Vec<ParticipantId>,
    transmits: VecDeque<TaggedBytesMut>,
    outputs: VecDeque<Output>,
    /// Inbound RTP packets fanned out since [`MediaCore::take_fanned_out`].
    fanned_out: usize,
}

impl MediaCore {
    /// An empty core that takes the wall clock and its randomness from `surroundings`.
    pub fn new(config: CoreConfig, metrics: Arc<Metrics>, surroundings: Surroundings) -> Self {
        Self {
            config,
            metrics,
            surroundings,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            room_names: HashMap::new(),
            demux: Demuxer::default(),
            deadlines: Deadlines::default(),
            node_index: 0,
            next_participant: 1,
            next_room: 1,
            links: HashMap::new(),
            next_speaker_tick: None,
            dirty: Vec::new(),
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
            fanned_out: 0,
        }
    }

    /// Handles a signaling request from a participant (join and offer excluded).
    pub fn client_message(&mut self, now: Instant, id: ParticipantId, message: ClientMessage) {
        match message {
            ClientMessage::Mute { audio, video } => self.set_mute(id, audio, video, None),
            ClientMessage::Moderate { action, target } => self.moderate(now, id, action, target),
            ClientMessage::Lock { locked } => self.lock(id, locked),
            ClientMessage::Viewing { tiles } => self.on_viewing(now, id, tiles),
            ClientMessage::Leave => {
                self.leave(now, id, LeaveReason::Left);
                self.outputs.push_back(Output::Close(id));
            }
            ClientMessage::Join { .. } | ClientMessage::Offer { .. } => self.send(
                id,
                ServerMessage::error(ErrorCode::BadRequest, "already joined and negotiated"),
            ),
            ClientMessage::AddCamera(_)
            | ClientMessage::Dial(_)
            | ClientMessage::CallMe { .. }
            | ClientMessage::DialIn
            | ClientMessage::SetPin { .. }
            | ClientMessage::Directory
            | ClientMessage::Dtmf { .. } => self.send(
                id,
                ServerMessage::error(
                    ErrorCode::BadRequest,
                    "cameras and SIP calls are added by a signaling session",
                ),
            ),
        }
    }

    /// Hands in plain RTP packets of a source whose media the shell feeds (see
    /// [`Self::join_source`]), received by `now` from `transport`.
    pub fn ingest(
        &mut self,
        now: Instant,
        id: ParticipantId,
        transport: TransportContext,
        packets: impl IntoIterator<Item = bytes::BytesMut>,
    ) {
        for packet in packets {
            self.deliver(now, id, transport, packet);
        }
        self.flush(now);
    }

    /// Feeds one datagram received at `now` from `transport`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        transport: TransportContext,
        datagram: bytes::BytesMut,
    ) {
        self.handle_datagrams(now, std::iter::once((transport, datagram)));
    }

    /// Feeds a batch of datagrams received by `now`, then drains every participant they
    /// touched once: a subscriber fed by several packets of the batch has its peer connection
    /// flushed and its deadline recomputed once, not once per packet.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (TransportContext, bytes::BytesMut)>,
    ) {
        for (transport, datagram) in datagrams {
            self.read_datagram(now, transport, datagram);
        }
        self.flush(now);
    }

    fn read_datagram(
        &mut self,
        now: Instant,
        transport: TransportContext,
        datagram: bytes::BytesMut,
    ) {
        if datagram.first() == Some(&frame::MAGIC) {
            self.on_link_datagram(now, datagram);
            return;
        }
        if let Some(reason) = malformed(&datagram) {
            self.metrics.drop_packet(reason);
            return;
        }
        let participants = &self.participants;
        let present = |id| participants.contains_key(&id);
        let Some(id) = self.demux.route(&transport, &datagram, present) else {
            self.metrics.drop_packet(Dropped::Unroutable);
            return;
        };
        self.deliver(now, id, transport, datagram);
    }

    /// Hands a datagram to participant `id`'s transport and handles the media it yields.
    fn deliver(
        &mut self,
        now: Instant,
        id: ParticipantId,
        transport: TransportContext,
        datagram: bytes::BytesMut,
    ) {
        let Some(participant) = self.participants.get_mut(&id) else {
            self.metrics.drop_packet(Dropped::UnknownParticipant);
            return;
        };
        participant.bytes_received += datagram.len() as u64;
        if let Err(e) = participant.transport.handle_datagram(TaggedBytesMut {
            now,
            transport,
            message: datagram,
        }) {
            self.metrics.drop_packet(Dropped::RejectedByTransport);
            debug!(participant = %id, "datagram rejected: {e}");
        }
        self.choose_layers_if_squeezed(now, id);
        self.mark_dirty(id);
        while let Some(inbound) = self
            .participants
            .get_mut(&id)
            .and_then(|p| p.transport.poll_inbound())
        {
            match inbound {
                Inbound::Rtp(packet) => self.on_rtp(now, id, packet, None),
                Inbound::KeyframeRequest { ssrc } => self.on_keyframe_request(now, id, ssrc),
                Inbound::Nack { ssrc, seq } => self.on_nack(now, id, ssrc, seq),
            }
        }
    }

    /// Drives every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.deadlines.pop_due(now) {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if let Err(e) = p.transport.handle_timeout(now) {
                debug!(participant = %id, "timeout handling failed: {e}");
            }
            let due: Vec<u32> = p.video.due_keyframe_requests(now).collect();
            for media_ssrc in due {
                self.send_pli(now, id, media_ssrc);
            }
            self.mark_dirty(id);
        }
        if self.next_speaker_tick.is_some_and(|at| at <= now) {
            self.choose_layers(now);
            self.evaluate_speakers(now);
        }
        self.renack_links(now);
        self.flush(now);
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.deadlines.earliest(),
            self.next_speaker_tick,
            self.links_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<TaggedBytesMut> {
        self.transmits.pop_front()
    }

    /// The next message for the signaling layer.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// How many inbound RTP packets were fanned out to subscribers since the last call: the
    /// shell, which owns the clock, observes the time its input took once for each.
    pub fn take_fanned_out(&mut self) -> usize {
        std::mem::take(&mut self.fanned_out)
    }

    /// Number of participants on the node (those relayed from other nodes not counted).
    pub fn participant_count(&self) -> usize {
        self.participants.values().filter(|p| p.is_here()).count()
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
        let (mut disconnected, mut keyframes_wanted) = (Vec::new(), Vec::new());
        while let Some(id) = self.dirty.pop() {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            p.dirty = false;
            while let Some(event) = p.transport.poll_event(now) {
                match event {
                    TransportEvent::Connected { protection } => {
                        info!(participant = %id, protection, "media connected");
                        self.metrics
                            .srtp_profiles
                            .get_or_create(&ProfileLabel {
                                profile: protection,
                            })
                            .inc();
                    }
                    TransportEvent::Disconnected => disconnected.push(id),
                    TransportEvent::KeyframeWanted { media_ssrc } => {
                        keyframes_wanted.push((id, media_ssrc));
                    }
                }
            }
            while let Some(datagram) = p.transport.poll_transmit() {
                p.bytes_sent += datagram.message.len() as u64;
                self.transmits.push_back(datagram);
            }
            let deadline = p.next_deadline();
            self.deadlines.set(id, deadline);
        }
        for (id, media_ssrc) in keyframes_wanted {
            self.ask_source_for_keyframe(now, id, media_ssrc);
        }
        for id in disconnected {
            warn!(participant = %id, "media connection lost");
            self.leave(now, id, LeaveReason::Disconnected);
            self.outputs.push_back(Output::Close(id));
        }
    }

    fn send(&mut self, id: ParticipantId, message: ServerMessage) {
        let message = self.for_recipient(id, message);
        self.outputs.push_back(Output::Send(id, message));
    }

    /// `message` as `id` may see it: identities only for recorders.
    fn for_recipient(&self, id: ParticipantId, message: ServerMessage) -> ServerMessage {
        if self
            .participants
            .get(&id)
            .is_some_and(Participant::is_hidden)
        {
            message
        } else {
            message.without_identities()
        }
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
        let here = |id: &ParticipantId| self.participants.get(id).is_some_and(Participant::is_here);
        for id in room.members.iter().filter(|id| here(id)) {
            if Some(*id) != except {
                let message = self.for_recipient(*id, message.clone());
                self.outputs.push_back(Output::Send(*id, message));
            }
        }
    }
}

#[cfg(test)]
mod tests;
