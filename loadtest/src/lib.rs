//! `kaskade_loadtest`: load generation and measurement for kaskade and the SFUs it is measured
//! against.
//!
//! Load comes from [`LoadPeer`]s of several kinds: kaskade's own WebRTC participant
//! (`kaskade_client::Participant`), the [`lean`] client (its own ICE, DTLS and SRTP on one socket,
//! for rooms larger than webrtc-rs can carry on this machine), the [`raw`] forwarder's plain RTP
//! participants (the ceiling a forwarder without WebRTC reaches) and [`janus`]'s VideoRoom
//! participants (the baseline). [`report`] and [`series`] turn what they counted into the
//! figures of docs/BENCHMARKS.md; [`LossyRelay`] puts random RTP/RTCP loss on one participant's
//! media path; [`churn`] has participants leave and join while a run goes on.

pub mod churn;
pub mod janus;
pub mod lean;
pub mod load_peer;
pub mod lossy_relay;
pub mod measure;
pub mod raw;
pub mod report;
pub mod series;

pub use load_peer::{LoadPeer, LoadSpec};
pub use lossy_relay::{LossyRelay, RelayHandle, RelayStats};
