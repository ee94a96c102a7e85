//! kaskade's media core: everything a node does with media, free of I/O and of any runtime.
//!
//! [`media::core::MediaCore`] holds every participant, room and stream of a node. Datagrams,
//! RTP handed in by the node's shell, signaling requests and the time are its inputs;
//! datagrams to send, frames for participants, cascade control messages and call records are
//! its outputs, drained by the shell (`kaskade_sfu::node`). It reads no clock and draws no
//! global randomness (both come from [`media::surroundings`]), and this crate depends on
//! neither tokio nor axum, so the compiler keeps it that way.
//!
//! Layout: [`media`] is the core and the participant model (transports, consumers, the
//! forwarder, RTCP and speaker detection), [`cascade`] the sealed links between nodes (frames,
//! cipher, control messages, the per-link state), [`metrics`] the node's Prometheus metrics,
//! which the core counts into and the shell renders.

pub mod cascade;
pub mod media;
pub mod metrics;
