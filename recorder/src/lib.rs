//! kaskade recorder media core: RTP packets in, crash-safe playable MP4 out.
//!
//! Sans-IO where possible: time and packets are arguments, outputs are drained. Per track, a
//! [`timeline::Timeline`] reorders packets and places them on the recording's clock; H.264
//! payloads go through [`depacketize::H264Depacketizer`]; [`fmp4::Fmp4Writer`] writes one
//! participant's samples as fragmented MP4; [`finalize`] turns a finished file into a
//! moov-first MP4 and [`recover`] does the same for a file cut by a crash.
//! [`participant::ParticipantRecorder`] ties these together for one participant.

pub mod depacketize;
pub mod finalize;
pub mod fmp4;
pub mod participant;
pub mod recover;
pub mod timeline;
