//! kaskade recorder media core: RTP packets in, crash-safe playable MP4 out.
//!
//! Sans-IO where possible: time and packets are arguments, outputs are drained. Per track, a
//! [`timeline::Timeline`] reorders packets and places them on the recording's clock; H.264
//! payloads go through [`depacketize::H264Depacketizer`]; [`fmp4::Fmp4Writer`] writes one
//! participant's samples as fragmented MP4; [`finalize`] turns a finished file into a
//! moov-first MP4 and [`recover`] does the same for a file cut by a crash.
//! [`participant::ParticipantRecorder`] ties these together for one participant.
//! [`compose`] renders the finalized files into one meeting video (a grid of participants
//! with the mixed audio), natively with openh264 and Opus.
//!
//! Around that core: [`session`] is one recording (a hidden WebRTC participant in the meeting
//! and the writer thread of its files), [`service`] the recordings a recorder runs and has on
//! disk, [`api`] its HTTP surface (control for the locator, playback for people), and
//! [`report`] how a standalone recorder tells the locator it exists.

pub mod api;
pub mod at_rest;
pub mod compose;
pub mod depacketize;
pub mod finalize;
pub mod fmp4;
pub mod participant;
pub mod recover;
pub mod report;
pub mod service;
pub mod session;
pub mod timeline;
