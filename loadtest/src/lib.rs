//! `kaskade_loadtest`: synthetic kaskade participants for end-to-end tests and load generation.
//!
//! A [`Participant`] speaks the signaling protocol of docs/SIGNALING.md, publishes a looped
//! openh264-encoded test pattern (H.264 constrained baseline, packetization mode 1) and an Opus
//! 440 Hz tone carrying an RFC 6464 audio level, receives every slot the node offers, decodes
//! the video with openh264 and counts everything per remote participant. It joins straight at
//! a node, or through the join API ([`join_api`]) of a locator or a standalone node; then it
//! fails over by itself to another node when its node is lost. [`LossyRelay`] puts random
//! RTP/RTCP loss on one participant's media path.

pub mod audio;
pub mod churn;
mod clip_cache;
mod failover;
pub mod h264;
mod http_client;
pub mod janus;
pub mod join_api;
pub mod latency;
pub mod lean;
pub mod load_peer;
pub mod lossy_relay;
pub mod participant;
mod peer;
pub mod raw;
mod receive;
pub mod report;
pub mod rtcp_tap;
mod send;
pub mod series;
mod session;
pub mod signaling;
pub mod state;
pub mod video;

pub use load_peer::{LoadPeer, LoadSpec};
pub use lossy_relay::{LossyRelay, RelayHandle, RelayStats};
pub use participant::{JoinConfig, JoinError, MediaSink, Participant, ReceivedPacket};
pub use peer::{H264_FMTP, H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE, rewrite_candidates};
pub use signaling::{
    ClientMessage, ErrorCode, LeaveReason, MediaKind, ModerateAction, ParticipantId,
    ParticipantInfo, Role, ServerMessage,
};
pub use state::{Event, MeetingState, ParticipantStats, RemoteStats};
