//! `kaskade_client`: kaskade's own WebRTC participant, shared by the recorder (which joins a
//! meeting as a silent participant and stores what it receives) and the load generator.
//!
//! A [`Participant`] speaks the signaling protocol of docs/SIGNALING.md, publishes a looped
//! openh264-encoded test pattern (H.264 constrained baseline, packetization mode 1) and an Opus
//! 440 Hz tone carrying an RFC 6464 audio level, receives every slot the node offers, decodes
//! the video with openh264 and counts everything per remote participant. It joins straight at
//! a node, or through the join API ([`join_api`]) of a locator or a standalone node; then it
//! fails over by itself to another node when its node is lost.
//!
//! The modules below the participant ([`peer`], [`session`], [`send`], [`receive`]) are public
//! as building blocks for clients that bring their own media transport (the load generator's
//! lean and Janus clients): signaling, offer/answer and the media sources and sinks are the
//! same whatever carries the packets.

pub mod audio;
mod clip_cache;
mod failover;
pub mod http_client;
pub mod join;
pub mod join_api;
pub mod latency;
pub mod participant;
pub mod peer;
pub mod receive;
mod rtcp_tap;
pub mod send;
pub mod session;
pub mod signaling;
pub mod state;
pub mod video;

pub use join::{JoinConfig, JoinError, MediaSink, ReceivedPacket};
pub use participant::Participant;
pub use peer::{H264_FMTP, H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE, rewrite_candidates};
pub use signaling::{
    CameraRequest, ClientMessage, DialRequest, ErrorCode, LeaveReason, MediaKind, ModerateAction,
    ParticipantId, ParticipantInfo, Role, RtspTransport, ServerMessage, SourceKind, SourceState,
};
pub use state::{Event, MeetingState, ParticipantStats, RemoteStats};
