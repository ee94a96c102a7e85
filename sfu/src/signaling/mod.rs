//! Signaling: the JSON-over-WebSocket protocol (docs/SIGNALING.md) and its sessions.

pub use kaskade_protocol::signaling as protocol;
pub mod session;
