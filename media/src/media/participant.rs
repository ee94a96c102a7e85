//! A participant on this node: identity, role, mute state, its transport and its slots.
//!
//! Every kind of participant (a browser, a recorder, an RTSP camera, one relayed from another
//! node over a cascade link; a SIP leg next) is this one type with a different [`Transport`]
//! behind it: the forwarder only sees publishers, routes and consumers. Where it is matters
//! beyond media: a participant of this node has a signaling session here, counts towards the
//! node's capacity, leaves a call record and is announced to peer nodes; a relayed one is all
//! of that on its own node.

use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::gop::GopCache;
use crate::media::probe::Prober;
use crate::media::repair::RepairHistory;
use crate::media::room::SlotSource;
use crate::media::simulcast::VideoLayers;
use crate::media::transport::Transport;
use kaskade_protocol::signaling::{ParticipantInfo, Source};
use kaskade_protocol::token::Role;
use std::time::Instant;

/// Index of a room in the core's room table.
pub type RoomIndex = u32;

/// One participant.
pub struct Participant {
    /// Node-unique id.
    pub id: ParticipantId,
    /// The room it is in.
    pub room: RoomIndex,
    /// Stable identity from the token.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Role in the meeting.
    pub role: Role,
    /// Audio muted by self or a moderator: not forwarded.
    pub audio_muted: bool,
    /// Video muted: not forwarded.
    pub video_muted: bool,
    /// What carries its media.
    pub transport: Box<dyn Transport>,
    /// Who feeds each consumer (parallel to `transport.consumers()`).
    pub slots: Vec<SlotSource>,
    /// The layers its video arrives in (one without simulcast), with their keyframe requests.
    pub video: VideoLayers,
    /// The height at which it renders each publisher's video, as its client reports it (none
    /// reported: as large as the publisher sends).
    pub viewing: Vec<(ParticipantId, u32)>,
    /// Probes its downlink when its estimate holds its tiles under what they ask for.
    pub prober: Prober,
    /// The downlink estimate its layers were last chosen for: when the estimate falls under
    /// it, they are chosen again at once rather than at the next tick.
    pub allocated_for: Option<u32>,
    /// Its video since the last keyframe, when its source cannot be asked for one.
    pub gop: Option<GopCache>,
    /// The last packets of each of its video streams, resent to subscribers that NACK them.
    pub repair: RepairHistory,
    /// Set for a source the node connects to (a camera added by a moderator), with its state.
    /// A source stays only while someone else is in the meeting.
    pub source: Option<Source>,
    /// The peer node it is on when it is relayed from there over a cascade link; `None` for a
    /// participant of this node.
    pub relayed_from: Option<u16>,
    /// Queued for draining at the end of the current step.
    pub dirty: bool,
    /// Client kind for the call record.
    pub kind: String,
    /// When it joined, Unix milliseconds.
    pub joined_at_ms: u64,
    /// Bytes received from it.
    pub bytes_received: u64,
    /// Bytes sent to it.
    pub bytes_sent: u64,
    /// What its call record says beyond its session, for a call the node placed.
    pub call: CallNote,
}

/// What the shell tells of a call it placed (a SIP call), for its call record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallNote {
    /// The identity of the participant who dialled it.
    pub caller: Option<String>,
    /// How it went (`calling`, `answered`, `busy (486 Busy Here)`, ...).
    pub result: Option<String>,
}

impl Participant {
    /// A participant `id` of room `room` whose media `transport` carries, with no name, role
    /// or state yet (its joining fills them in).
    pub fn new(id: ParticipantId, room: RoomIndex, transport: Box<dyn Transport>) -> Self {
        let gop = transport.publication().cache_gop.then(GopCache::default);
        Self {
            id,
            room,
            identity: String::new(),
            name: String::new(),
            role: Role::Participant,
            audio_muted: false,
            video_muted: false,
            transport,
            slots: Vec::new(),
            video: VideoLayers::default(),
            viewing: Vec::new(),
            prober: Prober::default(),
            allocated_for: None,
            gop,
            repair: RepairHistory::default(),
            source: None,
            relayed_from: None,
            dirty: false,
            kind: String::new(),
            joined_at_ms: 0,
            bytes_received: 0,
            bytes_sent: 0,
            call: CallNote::default(),
        }
    }

    /// Whether it is a participant of this node (not relayed from another).
    pub fn is_here(&self) -> bool {
        self.relayed_from.is_none()
    }

    /// Hidden participants (recorders) are neither listed nor counted.
    pub fn is_hidden(&self) -> bool {
        self.role == Role::Recorder
    }

    /// Whether it publishes media of `kind`.
    pub fn publishes(&self, kind: MediaKind) -> bool {
        self.transport.publication().publishes(kind)
    }

    /// This participant as other nodes and recorders see it (with its identity; frames to
    /// participants leave the identity out).
    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id,
            identity: Some(self.identity.clone()),
            name: self.name.clone(),
            role: self.role,
            audio_muted: self.audio_muted,
            video_muted: self.video_muted,
            source: self.source.clone(),
        }
    }

    /// The height it renders `publisher`'s video at, if its client said.
    pub fn viewing_height(&self, publisher: ParticipantId) -> Option<u32> {
        self.viewing
            .iter()
            .find(|(p, _)| *p == publisher)
            .map(|(_, height)| *height)
    }

    /// The participant's next deadline: its transport's or a coalesced keyframe request's.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        match (self.transport.poll_timeout(), self.video.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
