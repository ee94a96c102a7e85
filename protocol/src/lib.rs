//! Wire types every kaskade process and client shares: the JSON frames of the signaling
//! protocol (docs/SIGNALING.md) and the HS256 access tokens that admit participants.

pub mod signaling;
pub mod token;
