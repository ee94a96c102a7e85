//! The media plane, free of I/O: routing datagrams to participants, forwarding RTP with
//! per-subscriber rewriting, RTCP handling, speaker detection and room state.

pub mod allocation;
pub mod arrival;
pub mod bwe;
pub mod core;
pub mod deadlines;
pub mod demux;
pub mod forwarder;
pub mod gop;
pub mod ingest;
pub mod keyframe;
pub mod nack_filter;
pub mod participant;
pub mod peer;
pub mod probe;
pub mod red;
pub mod relayed;
pub mod repair;
pub mod room;
pub mod rtx;
pub mod simulcast;
pub mod speaker;
pub mod sps;
pub mod surroundings;
pub mod transport;
