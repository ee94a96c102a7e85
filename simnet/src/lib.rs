//! kaskade's media cores and in-process participants on one simulated clock and network, for
//! tests that are deterministic and faster than real time, the way quinn and str0m test.
//!
//! A [`Sim`] holds node cores ([`kaskade_media::media::core::MediaCore`], joined by cascade
//! links when there are several) and [`Client`]s: the load generator's lean client (its offer,
//! ICE checks, DTLS client and SRTP contexts) driven in-process. Every datagram crosses a
//! simulated path with a delay, and optionally loss and jitter (which reorders), drawn from a
//! seeded generator; time only moves when the test steps it, to the earliest deadline of any
//! core, client or datagram in flight. Clients publish real RTP (their packets decrypt at the
//! node like a browser's) and record what they receive, so a test asserts on the packets a
//! subscriber saw after two nodes forwarded them.

mod client;
mod net;

pub use client::{Client, Offering, Received};
pub use net::{Impairment, NodeId, Sim};
