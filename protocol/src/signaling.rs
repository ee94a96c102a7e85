//! The JSON frames of the signaling protocol (docs/SIGNALING.md), as plain data that both
//! the node (sending [`ServerMessage`], receiving [`ClientMessage`]) and clients use.

use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::ids::ParticipantId;

/// What a participant may do in a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Publishes and receives media.
    Participant,
    /// A participant who may also mute or remove others and lock the meeting.
    Moderator,
    /// A hidden, subscribe-only participant that records the meeting.
    Recorder,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Opus audio.
    Audio,
    /// H.264 video.
    Video,
}

impl MediaKind {
    /// Lower-case name, as in SDP and in the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// A frame from a client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Enter a meeting (first frame only).
    Join {
        /// Meeting name.
        meeting: String,
        /// Display name.
        #[serde(default)]
        name: String,
        /// Access token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// What kind of client this is (`browser`, `synthetic`, `sip`, ...), for call records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// The client's one SDP offer.
    Offer {
        /// SDP text.
        sdp: String,
    },
    /// Set own mute state.
    Mute {
        /// New audio mute state, if changing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<bool>,
        /// New video mute state, if changing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<bool>,
    },
    /// A moderator action on another participant.
    Moderate {
        /// What to do.
        action: ModerateAction,
        /// Whom to do it to.
        target: ParticipantId,
    },
    /// Lock or unlock the meeting (moderators).
    Lock {
        /// New state.
        locked: bool,
    },
    /// Add an RTSP camera to the meeting as a participant (moderators): answered with
    /// `camera_added` once its stream plays, or an `error` saying why not.
    AddCamera(CameraRequest),
    /// Call a room system, MCU or phone over SIP and bring it into the meeting as a participant
    /// (moderators and holders of a token with the `dial` right, see `Welcome::may_dial`):
    /// answered with `dialling` at once, then the call's progress shows in its participant's
    /// `source` state; a failure is an `error` with code `call_failed` saying why. Hanging up is
    /// removing the participant (`moderate` `remove`, which a dialler may do to SIP calls).
    Dial(DialRequest),
    /// Have the meeting call the participant's phone through the node's phone trunk (anyone,
    /// when `Welcome::call_me` says the node can): answered with `dialling`, then the phone is
    /// a participant of its own with source kind `phone`; the participant who asked may hang it
    /// up (`moderate` `remove`).
    CallMe {
        /// The phone number: digits, an optional leading `+`; spaces, dashes, dots and
        /// parentheses are ignored.
        number: String,
    },
    /// Ask for the meeting's dial-in number and PIN (moderators): answered with `dial_in`.
    DialIn,
    /// Set (4 to 8 digits) or clear (`null`) the meeting's PIN (moderators): answered with
    /// `dial_in`.
    SetPin {
        /// The new PIN.
        pin: Option<String>,
    },
    /// Ask for the directory of SIP rooms (those who may dial): answered with `directory`.
    Directory,
    /// Send DTMF keys to a SIP call in the meeting (those who may dial), to steer a room
    /// system's or an MCU's menu: `0-9 * # A-D`, up to 32 at a time.
    Dtmf {
        /// The SIP call's participant.
        target: ParticipantId,
        /// The keys, in order.
        digits: String,
    },
    /// The heights at which the client shows others' video, in device pixels, sent when they
    /// change: the node sends each publisher's smallest simulcast layer at least that tall (a
    /// participant left out is sent as large as it comes; 0: not shown, the smallest layer).
    Viewing {
        /// One entry per participant shown, at most 64.
        tiles: Vec<TileView>,
    },
    /// Leave at once.
    Leave,
}

/// How large a client shows one participant's video.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TileView {
    /// Whose video.
    pub participant: ParticipantId,
    /// Its height on screen, in device pixels.
    pub height: u32,
}

/// A moderator's request to add an RTSP camera.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CameraRequest {
    /// `rtsp://host[:port]/path`; credentials may be in the URL or in the fields below.
    pub url: String,
    /// The name its tile shows (the URL's host when empty).
    #[serde(default)]
    pub name: String,
    /// User name for the camera's digest or basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for the camera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// How RTP comes from the camera: interleaved in the RTSP connection (the default, it
    /// crosses firewalls) or over UDP.
    #[serde(default)]
    pub transport: RtspTransport,
}

/// A request to call a SIP address into the meeting: a room of the directory (`entry`) or an
/// address typed in (`uri`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DialRequest {
    /// `sip:user@host[:port]`; empty when `entry` is given.
    #[serde(default)]
    pub uri: String,
    /// The id of a directory entry: its address (and the credentials it names) is dialled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The name its tile shows (the entry's name, or the URI's user part, when empty).
    #[serde(default)]
    pub name: String,
}

/// How a camera's RTP is carried.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection.
    #[default]
    Tcp,
    /// RTP and RTCP over UDP.
    Udp,
}

/// A participant that is a media source the node connects to (an RTSP camera, a SIP call),
/// and how it is doing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    /// What it is.
    pub kind: SourceKind,
    /// Whether its media flows.
    pub state: SourceState,
    /// Why it is not live, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Source {
    /// A source of `kind` whose media flows.
    pub fn live(kind: SourceKind) -> Self {
        Self {
            kind,
            state: SourceState::Live,
            detail: None,
        }
    }
}

/// Kinds of sources.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An RTSP camera.
    Camera,
    /// A SIP call with video: a room system or an MCU.
    Sip,
    /// A phone: an audio-only SIP call (call-me).
    Phone,
}

/// How a source is doing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// A call being placed: the INVITE is out.
    Calling,
    /// The far end rings.
    Ringing,
    /// Its media flows.
    Live,
    /// It dropped; the node is connecting again (with backoff).
    Reconnecting,
}

/// What a moderator can do to another participant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ModerateAction {
    /// Stop forwarding their audio until they unmute.
    MuteAudio,
    /// Stop forwarding their video until they unmute.
    MuteVideo,
    /// Hang up on them.
    Remove,
}

/// A participant as others see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Cluster-unique id.
    pub id: ParticipantId,
    /// Stable identity from the token: told only to recorders (for the manifest) and to other
    /// nodes, never to participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Display name.
    pub name: String,
    /// Role in the meeting.
    pub role: Role,
    /// Audio muted (by self or a moderator).
    pub audio_muted: bool,
    /// Video muted.
    pub video_muted: bool,
    /// Set for a source the node connects to (a camera), with its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One assigned receive slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotAssignment {
    /// The m-line's mid.
    pub mid: String,
    /// What the slot carries.
    pub kind: MediaKind,
    /// Whose media the slot carries.
    pub participant: ParticipantId,
}

/// Why someone left.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They left or closed the page.
    Left,
    /// A moderator removed them.
    Removed,
    /// Their connection failed.
    Disconnected,
}

/// Error codes of the `error` frame.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Token missing, forged, expired or for another meeting.
    BadToken,
    /// The room is full.
    MeetingFull,
    /// The meeting is locked.
    MeetingLocked,
    /// The node is at capacity.
    NodeFull,
    /// Malformed frame or invalid field.
    BadRequest,
    /// Unknown `type`.
    UnknownType,
    /// Not allowed for this role.
    Forbidden,
    /// No such participant in the meeting (or room in the SIP directory).
    NotFound,
    /// A source (a camera) could not be added: unreachable, credentials refused, or a codec
    /// kaskade does not take.
    SourceFailed,
    /// A SIP call failed or could not be placed: busy, declined, not found, no answer,
    /// unreachable, authentication refused, no common codec (the message says which).
    CallFailed,
    /// Something the request needs did not answer (the locator, for the SIP directory); trying
    /// again later may work.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadToken => "bad_token",
            ErrorCode::MeetingFull => "meeting_full",
            ErrorCode::MeetingLocked => "meeting_locked",
            ErrorCode::NodeFull => "node_full",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::SourceFailed => "source_failed",
            ErrorCode::CallFailed => "call_failed",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Whether the node closes the socket after this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::BadToken
                | ErrorCode::MeetingFull
                | ErrorCode::MeetingLocked
                | ErrorCode::NodeFull
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `welcome` frame: a join accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Welcome {
    /// The joining participant.
    pub you: ParticipantInfo,
    /// Meeting name.
    pub meeting: String,
    /// Whether the meeting is locked.
    pub locked: bool,
    /// Room size limit.
    pub max_room_size: usize,
    /// Receive slots per kind the client should offer.
    pub recv_slots: usize,
    /// Everyone else present.
    pub participants: Vec<ParticipantInfo>,
    /// Current active speaker.
    pub speaker: Option<ParticipantId>,
    /// Whether the meeting is being recorded.
    #[serde(default)]
    pub recording: bool,
    /// Token for reconnecting with the same identity and role.
    #[serde(default)]
    pub token: String,
    /// Whether the recipient may place SIP calls (a moderator, or a token with the `dial`
    /// right, on a node with a SIP gateway).
    #[serde(default)]
    pub may_dial: bool,
    /// Whether the node can call the recipient's phone (`call_me`): it has a phone trunk.
    #[serde(default)]
    pub call_me: bool,
    /// Whether phones can dial in to the meeting (the node answers SIP calls with its voice
    /// menu): moderators may ask for its number and set its PIN (`dial_in`, `set_pin`).
    #[serde(default)]
    pub dial_in: bool,
}

/// A frame to a client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Join accepted.
    Welcome(Box<Welcome>),
    /// The answer to the client's offer.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// The complete current slot map.
    Slots {
        /// Assigned slots.
        slots: Vec<SlotAssignment>,
    },
    /// Someone joined.
    Joined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left.
    Left {
        /// Who.
        id: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone's mute state changed.
    Updated {
        /// Their new state.
        participant: ParticipantInfo,
    },
    /// The active speaker changed.
    Speaker {
        /// Who speaks now.
        id: ParticipantId,
    },
    /// The meeting was locked or unlocked.
    Lock {
        /// New state.
        locked: bool,
        /// By whom.
        by: ParticipantId,
    },
    /// A recording of the meeting started or stopped.
    Recording {
        /// Whether a recorder is in the meeting now.
        active: bool,
    },
    /// A moderator muted the recipient.
    MutedByModerator {
        /// Audio was muted.
        audio: bool,
        /// Video was muted.
        video: bool,
        /// By whom.
        by: ParticipantId,
    },
    /// The camera the recipient asked for plays and is in the meeting.
    CameraAdded {
        /// The camera's participant id.
        id: ParticipantId,
        /// Its name.
        name: String,
    },
    /// The SIP call the recipient asked for is being placed, as this participant.
    Dialling {
        /// The call's participant id.
        id: ParticipantId,
        /// The address called.
        uri: String,
    },
    /// The meeting's dial-in, as the recipient (a moderator) asked or set it.
    DialIn {
        /// What a phone enters at kaskade's voice menu.
        number: String,
        /// What it enters next, when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
        /// The phone number that reaches kaskade's voice menu, as the operator gave it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
    },
    /// The directory of SIP rooms, as the recipient asked.
    Directory {
        /// The rooms, by name.
        entries: Vec<crate::directory::DirectoryListing>,
    },
    /// Which of the recipient's simulcast layers anyone receives, by the order of its offer's
    /// `a=simulcast` (the order of its `sendEncodings`): a layer nobody receives may be paused
    /// (`active: false` on its encoding) until a later `layers` wants it again. Sent when it
    /// changes, only while someone receives the recipient's video.
    Layers {
        /// Per layer: whether someone receives it.
        active: Vec<bool>,
    },
    /// A moderator removed the recipient.
    Removed {
        /// By whom.
        by: ParticipantId,
    },
    /// Something went wrong.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

impl ServerMessage {
    /// The frame as a participant gets it: identities left out (only recorders see them).
    pub fn without_identities(mut self) -> Self {
        match &mut self {
            ServerMessage::Welcome(welcome) => {
                welcome.you.identity = None;
                for p in &mut welcome.participants {
                    p.identity = None;
                }
            }
            ServerMessage::Joined { participant } | ServerMessage::Updated { participant } => {
                participant.identity = None;
            }
            _ => {}
        }
        self
    }
}

/// Whether `meeting` is a valid meeting name: 1 to 64 characters of `A-Z a-z 0-9 _ . -`.
pub fn valid_meeting(meeting: &str) -> bool {
    (1..=64).contains(&meeting.len())
        && meeting
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A display name cleaned of control characters, trimmed of white space and cut to 64
/// characters (`Guest` if nothing is left).
pub fn display_name(name: &str) -> String {
    // control characters go first, so none can shield white space from the trim; the cut
    // comes before the end is trimmed, so it cannot end the name in white space either
    let name: String = name
        .chars()
        .filter(|c| !c.is_control())
        .skip_while(|c| c.is_whitespace())
        .take(64)
        .collect();
    match name.trim_end() {
        "" => "Guest".into(),
        trimmed => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_never_blank_nor_padded() {
        // found by fuzz/fuzz_targets/signaling_json.rs: a control character hid the white
        // space behind it from the trim, and the cut at 64 characters could end in a space
        assert_eq!(display_name("\u{7}  "), "Guest");
        assert_eq!(display_name("\u{7} Ann \u{1b}"), "Ann");
        let long = format!("{} tail", "x".repeat(63));
        assert_eq!(display_name(&long), "x".repeat(63));
        let fuzzed = "{\"type\":\"ji){\"type\":\"locc\",g\":\"s\"locked-:false}tandu\\u0007  \",  ";
        let shown = display_name(fuzzed);
        assert_eq!(shown, shown.trim());
        assert_eq!(display_name("  Émile  "), "Émile");
        assert_eq!(display_name(&"é".repeat(100)).chars().count(), 64);
    }
}
