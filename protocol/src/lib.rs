//! Wire types every kaskade process and client shares: the JSON frames of the signaling
//! protocol (docs/SIGNALING.md), the HS256 access tokens that admit participants, and the
//! cluster API between clients, the locator and SFU nodes (docs/CLUSTER.md), recordings, the directory of SIP rooms ([`directory`]), and the
//! identifiers they carry ([`ids`]).

pub mod cluster;
pub mod directory;
pub mod ids;
pub mod recording;
pub mod signaling;
pub mod token;
