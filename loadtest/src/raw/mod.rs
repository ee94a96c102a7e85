//! The raw forwarding limit: a minimal forwarder and its participants, the ceiling kaskade's
//! forwarding rate is measured against (docs/BENCHMARKS.md, "The raw limit").
//!
//! `kaskade-raw-forwarder` ([`shell`]) is one UDP socket and one thread: batches of datagrams
//! in (`recvmmsg`), each media packet decrypted once (AES-256-GCM) and sealed again for each
//! other member of its room with that member's key, batches out (`sendmmsg`). The protocol is
//! a sans-IO state machine ([`forwarder::Forwarder`]) over the wire format of [`wire`]: RTP
//! with SRTP-AEAD-like nonces, keys derived from a shared secret (no handshake), and a hello
//! that puts a participant in its room. [`RawParticipant`] is the load generator's
//! participant for it (`kaskade-loadtest --target raw`), publishing the same media as
//! kaskade's participants.

pub mod forwarder;
pub mod participant;
pub mod shell;
pub mod wire;

pub use forwarder::{Forwarder, ForwarderStats, Outbox};
pub use participant::{RawParticipant, RawTarget};
