//! What a join asks for ([`JoinConfig`]), how it fails ([`JoinError`]), and the callback that
//! receives a participant's media as it arrives ([`MediaSink`]): the vocabulary every part of
//! the client shares, kept apart so that those parts need not know each other.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kaskade_protocol::cluster::ApiError;

use crate::audio::LEVEL_SILENT;
use crate::signaling::{ErrorCode, MediaKind, ParticipantId};

/// How to join.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The node's signaling address (`ws://ADDR/ws`), for direct joins (`locator` unset).
    pub server: SocketAddr,
    /// Join through the join API at this base URL (`http://host:port`, a locator or a node
    /// without one) instead of `server`, and fail over by itself when the node is lost.
    pub locator: Option<String>,
    /// Preferred region (join API).
    pub region: Option<String>,
    /// Pin the first join to this node (join API); failover goes wherever the API says.
    pub node: Option<String>,
    /// Meeting name.
    pub meeting: String,
    /// Display name.
    pub name: String,
    /// Optional JWT.
    pub token: Option<String>,
    /// Publish the Opus tone.
    pub publish_audio: bool,
    /// Publish the H.264 test pattern.
    pub publish_video: bool,
    /// Publish the video in three simulcast layers (a quarter, a half and the whole of
    /// `width` x `height`, see [`VideoClipConfig::simulcast_layers`]), each paused while the
    /// node says nobody receives it, as the web client does. Default off: one stream. Not
    /// with `sync_marks` (the join is refused: that video is one stream).
    ///
    /// [`VideoClipConfig::simulcast_layers`]: crate::video::VideoClipConfig::simulcast_layers
    pub simulcast: bool,
    /// Video width (even).
    pub width: u32,
    /// Video height (even).
    pub height: u32,
    /// Video target bitrate (bits/s).
    pub video_bitrate_bps: u32,
    /// Video frame rate.
    pub fps: u32,
    /// Length of the looped video clip in seconds: it holds exactly one IDR, so this is the
    /// keyframe interval when nobody asks for a keyframe (default 2).
    pub clip_seconds: u32,
    /// RFC 6464 audio level sent (0 loudest ... 127 silent).
    pub audio_level: u8,
    /// Publish content with known instants, for A/V sync measurements, instead of the test
    /// pattern and the tone: dark video with one white frame per clip loop, and silence with a
    /// 100 ms, 1 kHz beep that starts at the same instant (second `clip_seconds / 2` of every
    /// loop, so one mark every `clip_seconds` seconds). Audio and video are paced from one
    /// origin, so the white frame and the beep's first audio frame are sent together and carry
    /// RTP timestamps of the same instant. Every video frame is then an IDR (keyframe requests
    /// cost nothing). Default off.
    pub sync_marks: bool,
    /// Route media through this address (a relay such as the load generator's `LossyRelay`): the answer's UDP candidates
    /// are rewritten to it and its TCP candidates dropped.
    pub media_via: Option<SocketAddr>,
    /// Local IP to bind the media socket to; by default the local IP of the signaling
    /// connection (loopback for a loopback node).
    pub local_ip: Option<IpAddr>,
    /// Timeout for each step of a join (join API, connect, welcome, answer).
    pub timeout: Duration,
    /// Decode received video (to count frames); a recorder that only stores packets turns it
    /// off.
    pub decode_video: bool,
    /// Receives every RTP packet as it arrives, attributed to its publisher.
    pub sink: Option<MediaSink>,
    /// Send a latency stamp ([`crate::latency`]) ahead of every video frame, so receivers
    /// measure end-to-end latency. Default off.
    pub latency_stamps: bool,
}

/// One received RTP packet, attributed to the participant the slot map gives its slot.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    /// The publisher.
    pub from: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The packet: its RTP header fields (extensions left out) and its payload (shared, not
    /// copied).
    pub packet: rtc::rtp::Packet,
    /// When it was read from the peer connection.
    pub arrival: std::time::Instant,
}

/// A callback that receives every attributed RTP packet ([`JoinConfig::sink`]); it runs on the
/// receiving task, so it must hand the packet on quickly.
#[derive(Clone)]
pub struct MediaSink(pub Arc<dyn Fn(ReceivedPacket) + Send + Sync>);

impl std::fmt::Debug for MediaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaSink")
    }
}

impl JoinConfig {
    /// Defaults: publish audio (silent level 127) and 320x240 video at 20 fps, 300 kbit/s.
    pub fn new(server: SocketAddr, meeting: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            server,
            locator: None,
            region: None,
            node: None,
            meeting: meeting.into(),
            name: name.into(),
            token: None,
            publish_audio: true,
            publish_video: true,
            simulcast: false,
            width: 320,
            height: 240,
            video_bitrate_bps: 300_000,
            fps: 20,
            clip_seconds: 2,
            audio_level: LEVEL_SILENT,
            sync_marks: false,
            media_via: None,
            local_ip: None,
            timeout: Duration::from_secs(10),
            decode_video: true,
            latency_stamps: false,
            sink: None,
        }
    }
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The node answered the join with an error frame.
    #[error("join refused: {code}: {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The node's message.
        message: String,
    },
    /// The join API answered with an error status.
    #[error("join API refused ({status}): {}: {}", error.error, error.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error body.
        error: ApiError,
    },
    /// The node did not answer in time.
    #[error("join timed out: {0}")]
    Timeout(&'static str),
    /// Anything else (connection, WebRTC, protocol).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl JoinError {
    /// The machine-readable code of a refusal, from the node's `error` frame or the join API
    /// (`meeting_full`, `bad_token`, `no_capacity`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            JoinError::Refused { code, .. } => Some(code.as_str()),
            JoinError::Api { error, .. } => Some(&error.error),
            JoinError::Timeout(_) | JoinError::Other(_) => None,
        }
    }

    /// Whether joining again (later, or elsewhere) may succeed: timeouts, connection
    /// failures, a full node, and join API server errors (`no_capacity`, 5xx) may pass; a bad
    /// token, a locked or full meeting and other refusals do not.
    pub fn is_transient(&self) -> bool {
        match self {
            JoinError::Refused { code, .. } => *code == ErrorCode::NodeFull,
            JoinError::Api { status, .. } => *status >= 500,
            JoinError::Timeout(_) | JoinError::Other(_) => true,
        }
    }
}
