//! Cascading: the links that join SFU nodes hosting the same meeting.
//!
//! One link per node pair carries every shared meeting: media datagrams on the node's UDP
//! socket ([`frame`], sealed by [`cipher`]) and ordered [`control`] messages on a WebSocket.
//! [`link`] is the sans-IO state the media core keeps per peer; the node's async shell
//! (`crate::cluster`) dials and accepts the control connections.

pub mod cipher;
pub mod control;
pub mod frame;
pub mod link;
