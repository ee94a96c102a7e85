//! What a synthetic participant knows and has measured: the meeting as signaled by the node
//! ([`MeetingState`]), media statistics ([`ParticipantStats`]), and the [`Event`] stream.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::signaling::{
    ErrorCode, LeaveReason, MediaKind, ParticipantId, ParticipantInfo, ServerMessage, Welcome,
};
use kaskade_picture::receive::ReceiveOutcome;
use kaskade_protocol::directory::DirectoryListing;

/// Received-media statistics for one remote participant (attributed through the slot map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Video frames decoded into pictures by openh264.
    pub video_frames_decoded: u64,
    /// Frames the decoder rejected or whose payloads were malformed.
    pub decode_errors: u64,
    /// Frames lost in the network or skipped while waiting for a keyframe.
    pub video_frames_dropped: u64,
    /// Video RTP packets received.
    pub video_packets: u64,
    /// Video RTP payload bytes received.
    pub video_bytes: u64,
    /// Audio RTP packets received.
    pub audio_packets: u64,
    /// Audio RTP payload bytes received.
    pub audio_bytes: u64,
    /// When the first video frame of this participant was decoded.
    pub first_frame_at: Option<Instant>,
    /// When the last video frame was decoded.
    pub last_frame_at: Option<Instant>,
    /// The size (width, height) of the last picture decoded: which simulcast layer arrives.
    pub picture_size: Option<(u32, u32)>,
    /// The RFC 6464 level of the last audio packet that carried one.
    pub last_audio_level: Option<u8>,
}

/// Everything a participant has measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipantStats {
    /// Per remote participant.
    pub remotes: BTreeMap<ParticipantId, RemoteStats>,
    /// Media received on a slot that the slot map did not assign (packets).
    pub unattributed_packets: u64,
    /// RTP packets sent (both kinds, retransmissions excluded).
    pub packets_sent: u64,
    /// RTP payload bytes sent.
    pub bytes_sent: u64,
    /// Video frames sent.
    pub video_frames_sent: u64,
    /// Audio packets sent.
    pub audio_packets_sent: u64,
    /// RTP packets received (both kinds).
    pub packets_received: u64,
    /// RTP payload bytes received.
    pub bytes_received: u64,
    /// Keyframes sent (loop restarts and forced ones).
    pub keyframes_sent: u64,
    /// Keyframes sent because of a PLI/FIR.
    pub keyframes_forced: u64,
    /// PLI packets received.
    pub plis_received: u64,
    /// FIR packets received.
    pub firs_received: u64,
    /// PLI packets sent.
    pub plis_sent: u64,
    /// NACK packets received (the default interceptors answer them).
    pub nacks_received: u64,
    /// Sequence numbers the node asked this client to retransmit.
    pub nacked_packets_received: u64,
    /// NACK packets sent for this client's own losses.
    pub nacks_sent: u64,
    /// Sequence numbers this client asked to be retransmitted.
    pub nacked_packets_sent: u64,
}

impl ParticipantStats {
    /// Stats for one remote participant (default if nothing arrived yet).
    pub fn remote(&self, id: ParticipantId) -> RemoteStats {
        self.remotes.get(&id).cloned().unwrap_or_default()
    }

    /// Counts one received RTP packet with `len` payload bytes of a `kind` slot that carries
    /// `owner` (`None`: the slot map does not assign it), what its decoder made of it and the
    /// audio level it carried, arrived `now`.
    pub fn count_received(
        &mut self,
        owner: Option<ParticipantId>,
        kind: MediaKind,
        len: u64,
        outcome: Option<&ReceiveOutcome>,
        level: Option<u8>,
        now: Instant,
    ) {
        self.packets_received += 1;
        self.bytes_received += len;
        let Some(owner) = owner else {
            self.unattributed_packets += 1;
            return;
        };
        let r = self.remotes.entry(owner).or_default();
        match kind {
            MediaKind::Video => {
                r.video_packets += 1;
                r.video_bytes += len;
                if let Some(o) = outcome {
                    r.video_frames_decoded += u64::from(o.decoded);
                    r.decode_errors += u64::from(o.errors);
                    r.video_frames_dropped += u64::from(o.dropped);
                    if o.decoded > 0 {
                        r.first_frame_at.get_or_insert(now);
                        r.last_frame_at = Some(now);
                    }
                    if o.picture_size.is_some() {
                        r.picture_size = o.picture_size;
                    }
                }
            }
            MediaKind::Audio => {
                r.audio_packets += 1;
                r.audio_bytes += len;
                if let Some(level) = level {
                    r.last_audio_level = Some(level);
                }
            }
        }
    }

    /// Sum of decoded frames over all remote participants.
    pub fn total_frames_decoded(&self) -> u64 {
        self.remotes.values().map(|r| r.video_frames_decoded).sum()
    }

    /// Sum of decode errors over all remote participants.
    pub fn total_decode_errors(&self) -> u64 {
        self.remotes.values().map(|r| r.decode_errors).sum()
    }
}

/// One receive slot's current assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState {
    /// Audio or video.
    pub kind: MediaKind,
    /// The participant it carries.
    pub participant: ParticipantId,
}

/// The meeting as signaled by the node, plus this client's measurements.
#[derive(Debug, Clone, Default)]
pub struct MeetingState {
    /// This participant as the node described it in `welcome` (mute state kept current).
    pub me: Option<ParticipantInfo>,
    /// The `welcome` frame.
    pub welcome: Option<Welcome>,
    /// Everyone else currently in the meeting.
    pub participants: BTreeMap<ParticipantId, ParticipantInfo>,
    /// The current active speaker.
    pub speaker: Option<ParticipantId>,
    /// Whether the meeting is locked.
    pub locked: bool,
    /// Whether the meeting is being recorded.
    pub recording: bool,
    /// Who locked or unlocked it last.
    pub locked_by: Option<ParticipantId>,
    /// Current slot map, by mid.
    pub slots: HashMap<String, SlotState>,
    /// Which of this client's simulcast layers the node wants sent, lowest first, as the last
    /// `layers` frame said (empty: all of them).
    pub active_layers: Vec<bool>,
    /// Everyone who left, with the reason, in order.
    pub left: Vec<(ParticipantId, LeaveReason)>,
    /// `muted_by_moderator` frames received: (audio, video, by).
    pub muted_by_moderator: Vec<(bool, bool, ParticipantId)>,
    /// Set when a moderator removed this participant.
    pub removed_by: Option<ParticipantId>,
    /// Every `error` frame received.
    pub errors: Vec<(ErrorCode, String)>,
    /// Cameras this participant added (`camera_added` frames): id and name.
    pub cameras_added: Vec<(ParticipantId, String)>,
    /// SIP calls this participant placed (`dialling` frames): id and address.
    pub calls_placed: Vec<(ParticipantId, String)>,
    /// The SIP directories this participant asked for (`directory` frames), in order.
    pub directories: Vec<Vec<DirectoryListing>>,
    /// The meeting's dial-in number and PIN, as the last `dial_in` frame said.
    pub dial_in: Option<(String, Option<String>)>,
    /// Frames that did not parse.
    pub unparsed: Vec<String>,
    /// The signaling socket of the current session is closed.
    pub signaling_closed: bool,
    /// The state of the current session's peer connection (`connected`, `failed`, ...).
    pub connection_state: String,
    /// When the current session's peer connection first reached `connected`.
    pub connected_at: Option<Instant>,
    /// The node of the current session, as the join API named it (`None` for direct joins).
    pub node: Option<String>,
    /// Sessions replaced by failover so far.
    pub reconnects: u32,
    /// Why failover gave up (a fatal refusal), if it did.
    pub failover_error: Option<String>,
    /// Media statistics, accumulated over every session.
    pub stats: ParticipantStats,
}

impl MeetingState {
    /// The participant a receive slot currently carries.
    pub fn slot_owner(&self, mid: &str) -> Option<ParticipantId> {
        self.slots.get(mid).map(|s| s.participant)
    }

    /// The participants currently visible to this client, sorted by id.
    pub fn participant_list(&self) -> Vec<ParticipantInfo> {
        self.participants.values().cloned().collect()
    }

    /// Forgets what belonged to the previous session (the meeting as that node signaled it and
    /// its connection); keeps the history and the statistics.
    pub(crate) fn new_session(&mut self) {
        self.participants.clear();
        self.slots.clear();
        self.active_layers.clear();
        self.speaker = None;
        self.signaling_closed = false;
        self.connection_state.clear();
        self.connected_at = None;
    }

    /// Applies one frame from the node.
    pub fn apply(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::Welcome(w) => {
                self.me = Some(w.you.clone());
                self.welcome = Some(Welcome::clone(w));
                self.locked = w.locked;
                self.recording = w.recording;
                self.speaker = w.speaker;
                self.participants = w.participants.iter().map(|p| (p.id, p.clone())).collect();
            }
            ServerMessage::Answer { .. } => {}
            ServerMessage::Layers { active } => self.active_layers.clone_from(active),
            ServerMessage::Slots { slots } => {
                self.slots = slots
                    .iter()
                    .map(|s| {
                        let state = SlotState {
                            kind: s.kind,
                            participant: s.participant,
                        };
                        (s.mid.clone(), state)
                    })
                    .collect();
            }
            ServerMessage::Joined { participant } | ServerMessage::Updated { participant } => {
                if self.me.as_ref().is_some_and(|me| me.id == participant.id) {
                    self.me = Some(participant.clone());
                } else {
                    self.participants
                        .insert(participant.id, participant.clone());
                }
            }
            ServerMessage::Left { id, reason } => {
                self.participants.remove(id);
                self.left.push((*id, *reason));
            }
            ServerMessage::Speaker { id } => self.speaker = Some(*id),
            ServerMessage::Lock { locked, by } => {
                self.locked = *locked;
                self.locked_by = Some(*by);
            }
            ServerMessage::MutedByModerator { audio, video, by } => {
                self.muted_by_moderator.push((*audio, *video, *by));
                if let Some(me) = &mut self.me {
                    me.audio_muted |= *audio;
                    me.video_muted |= *video;
                }
            }
            ServerMessage::Removed { by } => self.removed_by = Some(*by),
            ServerMessage::Recording { active } => self.recording = *active,
            ServerMessage::Error { code, message } => {
                self.errors.push((*code, message.clone()));
            }
            ServerMessage::Dialling { id, uri } => {
                self.calls_placed.push((*id, uri.clone()));
            }
            ServerMessage::Directory { entries } => {
                self.directories.push(entries.clone());
            }
            ServerMessage::DialIn { number, pin, .. } => {
                self.dial_in = Some((number.clone(), pin.clone()));
            }
            ServerMessage::CameraAdded { id, name } => {
                self.cameras_added.push((*id, name.clone()));
            }
        }
    }
}

/// Something that happened to a participant, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A frame from the node (already applied to the state).
    Signal(ServerMessage),
    /// A text frame that did not parse.
    Unparsed(String),
    /// The peer connection changed state (`connected`, `failed`, ...).
    Connection(String),
    /// Media started arriving on a receive slot.
    TrackStarted {
        /// The slot's mid.
        mid: String,
        /// Its kind.
        kind: MediaKind,
    },
    /// The signaling socket closed.
    SignalingClosed,
    /// Failover joined again: a new session on `node` replaced the lost one.
    Rejoined {
        /// The new session's node.
        node: Option<String>,
    },
}
