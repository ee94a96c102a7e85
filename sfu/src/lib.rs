//! kaskade SFU node: a WebRTC media plane on one UDP port (plus ICE-TCP), JSON signaling over
//! WebSocket, Prometheus metrics and the web client.
//!
//! Layout: [`media`] is the sans-IO core, re-exported from the `media` crate (`kaskade_media`,
//! which cannot use tokio or axum) with [`cascade`] and [`metrics`]; [`node`] drives it with
//! sockets and the clock; [`signaling`] speaks the client protocol; [`http`] serves pages, `/ws`, `/metrics`
//! and `/healthz`; [`token`] signs and verifies access tokens; [`camera`] brings RTSP cameras
//! into meetings.

pub mod camera;
pub mod cluster;
pub mod config;
pub mod http;
pub mod node;
pub mod seats;
pub mod signaling;
pub mod sip;
pub mod transcode;
pub mod udp_batch;

pub use config::NodeConfig;
pub use http::{Node, build, serve};
pub use kaskade_media::{cascade, media, metrics};
pub use kaskade_protocol::token;
