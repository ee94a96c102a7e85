//! Signaling: the JSON-over-WebSocket protocol (docs/SIGNALING.md) and its sessions.

pub mod protocol;
pub mod session;
