//! The kaskade signaling protocol (docs/SIGNALING.md): typed frames and a WebSocket client.
//!
//! Every JSON frame the node and the client exchange has a typed representation here:
//! [`ClientMessage`] for what a participant sends, [`ServerMessage`] for what the node sends.
//! [`connect`] opens `ws://ADDR/ws` and returns a [`SignalWriter`] / [`SignalReader`] pair.

use std::fmt;
use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Participant ids are numbers, unique on the node.
pub type ParticipantId = u64;

/// A participant's role in a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An ordinary participant.
    Participant,
    /// May mute and remove others and lock the meeting.
    Moderator,
    /// A hidden recorder.
    Recorder,
    /// A role this client does not know.
    #[serde(other)]
    Unknown,
}

/// A participant as the node describes it (`you`, `participants`, `joined`, `updated`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Node-unique id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Role in the meeting.
    pub role: Role,
    /// Whether the participant's audio is muted.
    #[serde(default)]
    pub audio_muted: bool,
    /// Whether the participant's video is muted.
    #[serde(default)]
    pub video_muted: bool,
}

/// The `welcome` frame: the answer to a successful `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// This participant.
    pub you: ParticipantInfo,
    /// The meeting name.
    pub meeting: String,
    /// Whether the meeting is locked.
    #[serde(default)]
    pub locked: bool,
    /// Maximum number of participants in the meeting.
    #[serde(default)]
    pub max_room_size: u32,
    /// How many receive slots of each kind the offer must contain.
    pub recv_slots: u32,
    /// Everyone else already in the meeting.
    #[serde(default)]
    pub participants: Vec<ParticipantInfo>,
    /// The current active speaker, if any.
    #[serde(default)]
    pub speaker: Option<ParticipantId>,
    /// A token for this identity and role, for reconnects.
    #[serde(default)]
    pub token: Option<String>,
}

/// Media kind of a receive slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// An audio slot.
    Audio,
    /// A video slot.
    Video,
}

/// One entry of the `slots` map: which participant a receive slot (by SDP mid) carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAssignment {
    /// The SDP mid of the receive transceiver.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The participant whose media the slot carries.
    pub participant: ParticipantId,
}

/// Why a participant left (`left.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave` or closed its socket.
    Left,
    /// A moderator removed it.
    Removed,
    /// Its connection was lost.
    Disconnected,
    /// A reason this client does not know.
    #[serde(other)]
    Unknown,
}

/// A moderator action (`moderate.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerateAction {
    /// Mute the target's audio.
    MuteAudio,
    /// Mute the target's video.
    MuteVideo,
    /// Remove the target from the meeting.
    Remove,
}

/// An error code carried by an `error` frame; unknown codes are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorCode {
    /// Token missing, forged, expired or for another meeting (fatal).
    BadToken,
    /// The meeting is full (fatal).
    MeetingFull,
    /// The meeting is locked (fatal).
    MeetingLocked,
    /// The node is at capacity (fatal).
    NodeFull,
    /// Malformed request (fatal before `welcome`).
    BadRequest,
    /// Unknown frame type.
    UnknownType,
    /// A moderator request from a non-moderator.
    Forbidden,
    /// A moderator request naming nobody in the meeting.
    NotFound,
    /// Any other code.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadToken => "bad_token",
            Self::MeetingFull => "meeting_full",
            Self::MeetingLocked => "meeting_locked",
            Self::NodeFull => "node_full",
            Self::BadRequest => "bad_request",
            Self::UnknownType => "unknown_type",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Other(code) => code,
        }
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        match code.as_str() {
            "bad_token" => Self::BadToken,
            "meeting_full" => Self::MeetingFull,
            "meeting_locked" => Self::MeetingLocked,
            "node_full" => Self::NodeFull,
            "bad_request" => Self::BadRequest,
            "unknown_type" => Self::UnknownType,
            "forbidden" => Self::Forbidden,
            "not_found" => Self::NotFound,
            _ => Self::Other(code),
        }
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Other(code) => code,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Frames a client sends to the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The first frame: join a meeting.
    Join {
        /// Meeting name.
        meeting: String,
        /// Display name.
        name: String,
        /// Optional JWT.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// The SDP offer.
    Offer {
        /// SDP text.
        sdp: String,
    },
    /// Set own mute state; `None` leaves that kind unchanged.
    Mute {
        /// New audio mute state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<bool>,
        /// New video mute state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<bool>,
    },
    /// A moderator request.
    Moderate {
        /// What to do.
        action: ModerateAction,
        /// To whom.
        target: ParticipantId,
    },
    /// Lock or unlock the meeting (moderator).
    Lock {
        /// New lock state.
        locked: bool,
    },
    /// Leave at once.
    Leave,
}

/// Frames the node sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Join accepted.
    Welcome(Welcome),
    /// The SDP answer.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// The complete current slot map; slots not listed are idle.
    Slots {
        /// Current assignments.
        slots: Vec<SlotAssignment>,
    },
    /// Someone joined.
    Joined {
        /// The newcomer.
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
        /// The participant's new state.
        participant: ParticipantInfo,
    },
    /// The active speaker changed.
    Speaker {
        /// The new active speaker (`None` if the node sends `null`).
        #[serde(default)]
        id: Option<ParticipantId>,
    },
    /// The meeting was locked or unlocked.
    Lock {
        /// New lock state.
        locked: bool,
        /// The moderator who did it.
        #[serde(default)]
        by: Option<ParticipantId>,
    },
    /// A moderator muted this participant.
    MutedByModerator {
        /// Audio was muted.
        #[serde(default)]
        audio: bool,
        /// Video was muted.
        #[serde(default)]
        video: bool,
        /// The moderator.
        #[serde(default)]
        by: Option<ParticipantId>,
    },
    /// A moderator removed this participant; the node closes the socket.
    Removed {
        /// The moderator.
        #[serde(default)]
        by: Option<ParticipantId>,
    },
    /// An error, fatal or not.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable message.
        #[serde(default)]
        message: String,
    },
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a signaling connection.
pub struct SignalWriter {
    sink: SplitSink<Ws, Message>,
}

/// The receiving half of a signaling connection.
pub struct SignalReader {
    stream: SplitStream<Ws>,
}

/// Opens the signaling WebSocket `ws://{server}/ws`.
pub async fn connect(server: SocketAddr) -> Result<(SignalWriter, SignalReader)> {
    connect_url(&format!("ws://{server}/ws")).await
}

/// Opens a signaling WebSocket at an explicit URL.
pub async fn connect_url(url: &str) -> Result<(SignalWriter, SignalReader)> {
    let (ws, _response) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let (sink, stream) = ws.split();
    Ok((SignalWriter { sink }, SignalReader { stream }))
}

impl SignalWriter {
    /// Sends one typed frame.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        let text = serde_json::to_string(msg)?;
        self.send_raw(text).await
    }

    /// Sends arbitrary text (for protocol tests that need malformed frames).
    pub async fn send_raw(&mut self, text: String) -> Result<()> {
        self.sink
            .send(Message::Text(text.into()))
            .await
            .context("sending signaling frame")
    }

    /// Closes the WebSocket politely.
    pub async fn close(&mut self) -> Result<()> {
        self.sink.close().await.context("closing signaling socket")
    }
}

/// One item read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A frame that parsed as a [`ServerMessage`].
    Message(ServerMessage),
    /// A text frame that did not parse (kept for diagnostics).
    Unparsed(String),
}

impl SignalReader {
    /// Reads the next frame; `Ok(None)` when the node closed the socket.
    pub async fn recv(&mut self) -> Result<Option<Incoming>> {
        loop {
            let Some(frame) = self.stream.next().await else {
                return Ok(None);
            };
            match frame.map_err(|e| anyhow!("signaling socket: {e}"))? {
                Message::Text(text) => {
                    return Ok(Some(match serde_json::from_str(text.as_str()) {
                        Ok(msg) => Incoming::Message(msg),
                        Err(_) => Incoming::Unparsed(text.as_str().to_owned()),
                    }));
                }
                Message::Close(_) => return Ok(None),
                _ => {}
            }
        }
    }
}
