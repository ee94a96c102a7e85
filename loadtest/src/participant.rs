//! A synthetic participant: joins a meeting over signaling (straight at a node, or through the
//! join API of a locator or a standalone node), publishes the synthetic H.264 and Opus sources
//! in real time, decodes what it receives, and records every signaling event. A participant
//! that joined through the join API fails over by itself when its node is lost (see
//! `failover.rs`); its statistics accumulate across sessions.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kaskade_loadtest::{JoinConfig, Participant};
//! let cfg = JoinConfig::new("127.0.0.1:8080".parse()?, "standup", "bot-1");
//! let bot = Participant::join(cfg).await?;
//! bot.wait_until(std::time::Duration::from_secs(10), |s| s.participants.len() == 2).await?;
//! println!("{:?}", bot.stats());
//! bot.leave().await?;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::audio::LEVEL_SILENT;
use crate::failover;
use crate::join_api::ApiError;
use crate::peer::Shared;
use crate::session::{Current, Media, Session, locate};
use crate::signaling::{
    ClientMessage, ErrorCode, MediaKind, ModerateAction, ParticipantId, ParticipantInfo, Welcome,
};
use crate::state::{Event, MeetingState, ParticipantStats};

/// How to join.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The node's signaling address (`ws://ADDR/ws`), for direct joins (`locator` unset).
    pub server: SocketAddr,
    /// Join through the join API at this base URL (`http://host:port`, a locator or a node
    /// without one) instead of `server`, and fail over by itself when the node is lost.
    pub locator: Option<String>,
    /// Preferred region (join API).
    pub region: Option<String>,
    /// Pin the first join to this node (join API); failover goes wherever the API says.
    pub node: Option<String>,
    /// Meeting name.
    pub meeting: String,
    /// Display name.
    pub name: String,
    /// Optional JWT.
    pub token: Option<String>,
    /// Publish the Opus tone.
    pub publish_audio: bool,
    /// Publish the H.264 test pattern.
    pub publish_video: bool,
    /// Video width (even).
    pub width: u32,
    /// Video height (even).
    pub height: u32,
    /// Video target bitrate (bits/s).
    pub video_bitrate_bps: u32,
    /// Video frame rate.
    pub fps: u32,
    /// Length of the looped video clip in seconds: it holds exactly one IDR, so this is the
    /// keyframe interval when nobody asks for a keyframe (default 2).
    pub clip_seconds: u32,
    /// RFC 6464 audio level sent (0 loudest ... 127 silent).
    pub audio_level: u8,
    /// Publish content with known instants, for A/V sync measurements, instead of the test
    /// pattern and the tone: dark video with one white frame per clip loop, and silence with a
    /// 100 ms, 1 kHz beep that starts at the same instant (second `clip_seconds / 2` of every
    /// loop, so one mark every `clip_seconds` seconds). Audio and video are paced from one
    /// origin, so the white frame and the beep's first audio frame are sent together and carry
    /// RTP timestamps of the same instant. Every video frame is then an IDR (keyframe requests
    /// cost nothing). Default off.
    pub sync_marks: bool,
    /// Route media through this address (a [`crate::LossyRelay`]): the answer's UDP candidates
    /// are rewritten to it and its TCP candidates dropped.
    pub media_via: Option<SocketAddr>,
    /// Local IP to bind the media socket to; by default the local IP of the signaling
    /// connection (loopback for a loopback node).
    pub local_ip: Option<IpAddr>,
    /// Timeout for each step of a join (join API, connect, welcome, answer).
    pub timeout: Duration,
    /// Decode received video (to count frames); a recorder that only stores packets turns it
    /// off.
    pub decode_video: bool,
    /// Receives every RTP packet as it arrives, attributed to its publisher.
    pub sink: Option<MediaSink>,
    /// Send a latency stamp ([`crate::latency`]) ahead of every video frame, so receivers
    /// measure end-to-end latency. Default off.
    pub latency_stamps: bool,
}

/// One received RTP packet, attributed to the participant the slot map gives its slot.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    /// The publisher.
    pub from: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The packet: its RTP header fields (extensions left out) and its payload (shared, not
    /// copied).
    pub packet: rtc::rtp::Packet,
    /// When it was read from the peer connection.
    pub arrival: std::time::Instant,
}

/// A callback that receives every attributed RTP packet ([`JoinConfig::sink`]); it runs on the
/// receiving task, so it must hand the packet on quickly.
#[derive(Clone)]
pub struct MediaSink(pub Arc<dyn Fn(ReceivedPacket) + Send + Sync>);

impl std::fmt::Debug for MediaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaSink")
    }
}

impl JoinConfig {
    /// Defaults: publish audio (silent level 127) and 320x240 video at 20 fps, 300 kbit/s.
    pub fn new(server: SocketAddr, meeting: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            server,
            locator: None,
            region: None,
            node: None,
            meeting: meeting.into(),
            name: name.into(),
            token: None,
            publish_audio: true,
            publish_video: true,
            width: 320,
            height: 240,
            video_bitrate_bps: 300_000,
            fps: 20,
            clip_seconds: 2,
            audio_level: LEVEL_SILENT,
            sync_marks: false,
            media_via: None,
            local_ip: None,
            timeout: Duration::from_secs(10),
            decode_video: true,
            latency_stamps: false,
            sink: None,
        }
    }
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The node answered the join with an error frame.
    #[error("join refused: {code}: {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The node's message.
        message: String,
    },
    /// The join API answered with an error status.
    #[error("join API refused ({status}): {}: {}", error.error, error.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error body.
        error: ApiError,
    },
    /// The node did not answer in time.
    #[error("join timed out: {0}")]
    Timeout(&'static str),
    /// Anything else (connection, WebRTC, protocol).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl JoinError {
    /// The machine-readable code of a refusal, from the node's `error` frame or the join API
    /// (`meeting_full`, `bad_token`, `no_capacity`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            JoinError::Refused { code, .. } => Some(code.as_str()),
            JoinError::Api { error, .. } => Some(&error.error),
            JoinError::Timeout(_) | JoinError::Other(_) => None,
        }
    }

    /// Whether joining again (later, or elsewhere) may succeed: timeouts, connection
    /// failures, a full node, and join API server errors (`no_capacity`, 5xx) may pass; a bad
    /// token, a locked or full meeting and other refusals do not.
    pub fn is_transient(&self) -> bool {
        match self {
            JoinError::Refused { code, .. } => *code == ErrorCode::NodeFull,
            JoinError::Api { status, .. } => *status >= 500,
            JoinError::Timeout(_) | JoinError::Other(_) => true,
        }
    }
}

/// A connected synthetic participant. Dropping it closes its connections.
pub struct Participant {
    shared: Arc<Shared>,
    current: Arc<Current>,
    failover: Option<JoinHandle<()>>,
    events: broadcast::Receiver<Event>,
}

impl Participant {
    /// Joins a meeting: through the join API when `cfg.locator` is set (and then fails over by
    /// itself), else straight at `cfg.server`; signaling, offer/answer, then starts publishing
    /// and receiving.
    pub async fn join(cfg: JoinConfig) -> Result<Self, JoinError> {
        let shared = Arc::new(Shared::new(&cfg));
        // Encode (or fetch) the media before joining, so it is ready when media flows.
        let media = Media::prepare(&cfg).await?;
        let target = locate(&cfg, cfg.token.clone(), None, cfg.node.clone()).await?;
        let (session, welcome) = Session::open(&cfg, &shared, &media, &target).await?;
        shared.update(None, |s| s.node = target.node);
        let current = Arc::new(Current::new(session, welcome));
        let failover = cfg.locator.is_some().then(|| {
            tokio::spawn(failover::run(
                cfg,
                Arc::clone(&shared),
                Arc::clone(&current),
                media,
            ))
        });
        let events = shared.events.subscribe();
        Ok(Self {
            shared,
            current,
            failover,
            events,
        })
    }

    /// This participant's id in the current session.
    pub fn id(&self) -> ParticipantId {
        self.current.with_welcome(|w| w.you.id)
    }

    /// The current session's `welcome` frame.
    pub fn welcome(&self) -> Welcome {
        self.current.with_welcome(Welcome::clone)
    }

    /// The current session's node, as the join API named it (`None` for direct joins).
    pub fn node(&self) -> Option<String> {
        self.shared.with_state(|s| s.node.clone())
    }

    /// How many times failover replaced a lost session.
    pub fn reconnects(&self) -> u32 {
        self.shared.with_state(|s| s.reconnects)
    }

    /// A snapshot of the meeting state and statistics.
    pub fn state(&self) -> MeetingState {
        let mut state = self.shared.with_state(|s| s.clone());
        self.merge_counters(&mut state.stats);
        state
    }

    /// Everyone else currently in the meeting.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.shared.with_state(|s| s.participant_list())
    }

    /// The current active speaker.
    pub fn speaker(&self) -> Option<ParticipantId> {
        self.shared.with_state(|s| s.speaker)
    }

    /// A snapshot of the media statistics.
    pub fn stats(&self) -> ParticipantStats {
        let mut stats = self.shared.with_state(|s| s.stats.clone());
        self.merge_counters(&mut stats);
        stats
    }

    fn merge_counters(&self, stats: &mut ParticipantStats) {
        self.shared.add_counters(stats);
    }

    /// Sets the RFC 6464 level sent with each audio packet (0 loudest ... 127 silent).
    pub fn set_audio_level(&self, level: u8) {
        self.shared
            .audio_level
            .store(level.min(LEVEL_SILENT), Ordering::Relaxed);
    }

    /// Mutes or unmutes own media (`None` leaves a kind unchanged): stops or resumes sending
    /// it and tells the node.
    pub async fn mute(&self, audio: Option<bool>, video: Option<bool>) -> anyhow::Result<()> {
        if let Some(muted) = audio {
            self.shared.send_audio.store(!muted, Ordering::Relaxed);
        }
        if let Some(muted) = video {
            self.shared.send_video.store(!muted, Ordering::Relaxed);
        }
        self.send(&ClientMessage::Mute { audio, video }).await
    }

    /// Sends a moderator request.
    pub async fn moderate(
        &self,
        action: ModerateAction,
        target: ParticipantId,
    ) -> anyhow::Result<()> {
        self.send(&ClientMessage::Moderate { action, target }).await
    }

    /// Locks or unlocks the meeting (moderator).
    pub async fn lock(&self, locked: bool) -> anyhow::Result<()> {
        self.send(&ClientMessage::Lock { locked }).await
    }

    /// Sends any frame on the current session (an error while failover is joining again).
    pub async fn send(&self, msg: &ClientMessage) -> anyhow::Result<()> {
        self.current.writer().await?.send(msg).await
    }

    /// Sends raw text on the signaling socket (for malformed-frame tests).
    pub async fn send_raw(&self, text: impl Into<String>) -> anyhow::Result<()> {
        self.current.writer().await?.send_raw(text.into()).await
    }

    /// Asks the local video sender for a keyframe at the next frame.
    pub fn force_keyframe(&self) {
        self.shared.force_keyframe.store(true, Ordering::Relaxed);
    }

    /// The next event (in order; skips over events lost to a lagging receiver).
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.events.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("participant event receiver lagged by {n}");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A new independent event receiver (sees events from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Waits until `pred` holds on the state (checked on every change and every 50 ms, so
    /// statistics predicates work too); returns the state that satisfied it.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&MeetingState) -> bool,
    ) -> anyhow::Result<MeetingState> {
        let mut version = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.state();
            if pred(&state) {
                return Ok(state);
            }
            if tokio::time::Instant::now() >= deadline {
                let (id, name) = self
                    .current
                    .with_welcome(|w| (w.you.id, w.you.name.clone()));
                return Err(anyhow!(
                    "participant {id} ({name}): condition not met within {timeout:?}; state: {:?}",
                    summary(&state)
                ));
            }
            tokio::select! {
                _ = version.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Waits for the peer connection to reach `connected`.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_until(timeout, |s| s.connected_at.is_some())
            .await
            .map(|_| ())
    }

    /// Sends `leave`, then closes the socket and the peer connection.
    pub async fn leave(mut self) -> anyhow::Result<()> {
        self.stop_failover();
        let sent = self.send(&ClientMessage::Leave).await;
        self.close().await;
        sent
    }

    /// Closes the socket and the peer connection without sending `leave`.
    pub async fn close(mut self) {
        self.stop_failover();
        if let Some(session) = self.current.take().await {
            session.close().await;
        }
    }

    fn stop_failover(&mut self) {
        if let Some(task) = self.failover.take() {
            task.abort();
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        // The session closes when the last reference to it goes (see `Session`'s `Drop`).
        self.stop_failover();
    }
}

fn summary(state: &MeetingState) -> String {
    format!(
        "me={:?} node={:?} reconnects={} participants={:?} speaker={:?} locked={} slots={} \
         conn={} errors={:?} failover_error={:?} stats={:?}",
        state.me.as_ref().map(|m| m.id),
        state.node,
        state.reconnects,
        state.participants.keys().collect::<Vec<_>>(),
        state.speaker,
        state.locked,
        state.slots.len(),
        state.connection_state,
        state.errors,
        state.failover_error,
        state.stats
    )
}
