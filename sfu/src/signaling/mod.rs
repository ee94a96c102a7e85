//! Signaling: the JSON-over-WebSocket protocol (docs/SIGNALING.md) and its sessions.

mod dialpad;
pub use kaskade_protocol::signaling as protocol;
pub mod session;
