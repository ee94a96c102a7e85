//! What `kaskade-loadtest` drives, whatever the server under test: a [`LoadPeer`] joins one
//! room from a [`LoadSpec`], publishes the synthetic media (H.264 clip with latency stamps,
//! Opus at 50 packets/s), hands every received packet to the spec's sink and counts what it
//! sent and received in [`ParticipantStats`]. kaskade's [`Participant`] is one; each other
//! target (Janus, the raw forwarder) brings its own.

use std::time::Duration;

use async_trait::async_trait;

use kaskade_client::signaling::ParticipantId;
use kaskade_client::state::ParticipantStats;
use kaskade_client::{JoinConfig, MediaSink, Participant};

/// One synthetic participant of a load run, target-independent.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The room (meeting) name.
    pub meeting: String,
    /// Display name, unique in the run.
    pub name: String,
    /// Video width and height (even).
    pub resolution: (u32, u32),
    /// Video frames per second.
    pub fps: u32,
    /// Video bitrate, bits/s (of the top layer, with simulcast).
    pub video_bitrate_bps: u32,
    /// Publish the video in three simulcast layers (kaskade's clients; the other targets'
    /// publish one stream).
    pub simulcast: bool,
    /// Show every room-mate's video this many pixels tall and report it (`viewing`), so the
    /// node sends the simulcast layer that fills the tile (kaskade's lean client; none: the
    /// best layer).
    pub tile_height: Option<u32>,
    /// Decode received video with openh264 (costly: off for load, on to check pictures).
    pub decode_video: bool,
    /// Access token, when the target wants one.
    pub token: Option<String>,
    /// Receives every packet, attributed to its publisher.
    pub sink: MediaSink,
    /// Timeout of each join step.
    pub timeout: Duration,
}

/// A joined synthetic participant, as the load generator drives it.
#[async_trait]
pub trait LoadPeer: Send + Sync {
    /// Its id in the room (what [`crate::ReceivedPacket::from`] names).
    fn id(&self) -> ParticipantId;
    /// What it has sent and received so far.
    fn stats(&self) -> ParticipantStats;
    /// Whether it knows `other` to be in the room now.
    fn sees(&self, other: ParticipantId) -> bool;
    /// Stops publishing (the end of a measurement window), staying in the room.
    async fn stop_sending(&self) -> anyhow::Result<()>;
    /// Leaves the room.
    async fn leave(self: Box<Self>) -> anyhow::Result<()>;
}

impl LoadSpec {
    /// The kaskade join configuration for this spec, through the join API at `base`.
    pub fn kaskade_config(&self, base: &str) -> JoinConfig {
        let mut cfg = JoinConfig::new(
            std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            self.meeting.clone(),
            self.name.clone(),
        );
        cfg.locator = Some(base.to_owned());
        (cfg.width, cfg.height) = self.resolution;
        cfg.fps = self.fps;
        cfg.video_bitrate_bps = self.video_bitrate_bps;
        cfg.simulcast = self.simulcast;
        cfg.token = self.token.clone();
        cfg.sink = Some(self.sink.clone());
        cfg.decode_video = self.decode_video;
        cfg.latency_stamps = true;
        cfg.timeout = self.timeout;
        cfg
    }
}

#[async_trait]
impl LoadPeer for Participant {
    fn id(&self) -> ParticipantId {
        Participant::id(self)
    }

    fn stats(&self) -> ParticipantStats {
        Participant::stats(self)
    }

    fn sees(&self, other: ParticipantId) -> bool {
        self.state().participants.contains_key(&other)
    }

    async fn stop_sending(&self) -> anyhow::Result<()> {
        self.mute(Some(true), Some(true)).await
    }

    async fn leave(self: Box<Self>) -> anyhow::Result<()> {
        Participant::leave(*self).await
    }
}
