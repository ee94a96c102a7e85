//! A synthetic participant: joins a meeting over signaling, publishes the synthetic H.264 and
//! Opus sources in real time, decodes what it receives, and records every signaling event.
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

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rtc::peer_connection::sdp::RTCSessionDescription;
use tokio::sync::{Mutex, broadcast};
use tokio::task::JoinHandle;
use webrtc::peer_connection::PeerConnection;

use crate::audio::{AUDIO_LEVEL_URI, LEVEL_SILENT, OpusClip};
use crate::peer::{self, Shared};
use crate::signaling::{
    self, ClientMessage, ErrorCode, Incoming, ModerateAction, ParticipantId, ParticipantInfo,
    ServerMessage, SignalReader, SignalWriter, Welcome,
};
use crate::state::{Event, MeetingState, ParticipantStats};
use crate::video::{VideoClip, VideoClipConfig};
use crate::{receive, send};

/// How to join.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The node's signaling address (`ws://ADDR/ws`).
    pub server: SocketAddr,
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
    /// Route media through this address (a [`crate::LossyRelay`]): the answer's UDP candidates
    /// are rewritten to it and its TCP candidates dropped.
    pub media_via: Option<SocketAddr>,
    /// Local IP to bind the media socket to; by default the IP the OS would use to reach the
    /// server (loopback for a loopback server).
    pub local_ip: Option<IpAddr>,
    /// Timeout for the join (welcome + answer).
    pub timeout: Duration,
}

impl JoinConfig {
    /// Defaults: publish audio (silent level 127) and 320x240 video at 20 fps, 300 kbit/s.
    pub fn new(server: SocketAddr, meeting: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            server,
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
            media_via: None,
            local_ip: None,
            timeout: Duration::from_secs(10),
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
    /// The node did not answer in time.
    #[error("join timed out: {0}")]
    Timeout(&'static str),
    /// Anything else (connection, WebRTC, protocol).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A connected synthetic participant. Dropping it closes its connections.
pub struct Participant {
    welcome: Welcome,
    shared: Arc<Shared>,
    writer: Mutex<SignalWriter>,
    pc: Arc<dyn PeerConnection>,
    events: broadcast::Receiver<Event>,
    tasks: Vec<JoinHandle<()>>,
}

fn default_local_ip(server: SocketAddr) -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let unspecified = if server.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        };
        let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
        socket.connect(server)?;
        Ok(socket.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

async fn read_until<T>(
    reader: &mut SignalReader,
    shared: &Shared,
    what: &'static str,
    mut pick: impl FnMut(&ServerMessage) -> Option<T>,
) -> Result<T, JoinError> {
    loop {
        let msg = match reader.recv().await? {
            None => {
                return Err(JoinError::Other(anyhow!(
                    "socket closed while waiting for {what}"
                )));
            }
            Some(Incoming::Unparsed(text)) => {
                shared.update(Some(Event::Unparsed(text.clone())), |s| {
                    s.unparsed.push(text)
                });
                continue;
            }
            Some(Incoming::Message(msg)) => msg,
        };
        shared.update(Some(Event::Signal(msg.clone())), |s| s.apply(&msg));
        // Any error before the join completes is fatal for the join (a bad offer, too).
        if let ServerMessage::Error { code, message } = &msg {
            return Err(JoinError::Refused {
                code: *code,
                message: message.clone(),
            });
        }
        if let Some(value) = pick(&msg) {
            return Ok(value);
        }
    }
}

async fn timed<T>(
    timeout: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, JoinError>>,
) -> Result<T, JoinError> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| JoinError::Timeout(what))?
}

impl Participant {
    /// Joins a meeting: signaling, offer/answer, then starts publishing and receiving.
    pub async fn join(cfg: JoinConfig) -> Result<Self, JoinError> {
        let shared = Arc::new(Shared::new(cfg.audio_level));
        let (mut writer, mut reader) = timed(cfg.timeout, "connect", async {
            Ok(signaling::connect(cfg.server).await?)
        })
        .await?;
        writer
            .send(&ClientMessage::Join {
                meeting: cfg.meeting.clone(),
                name: cfg.name.clone(),
                token: cfg.token.clone(),
                client: Some("synthetic".into()),
            })
            .await?;
        let welcome = timed(
            cfg.timeout,
            "welcome",
            read_until(&mut reader, &shared, "welcome", |m| match m {
                ServerMessage::Welcome(w) => Some(w.clone()),
                _ => None,
            }),
        )
        .await?;

        // Encode (or fetch) the media before offering, so it is ready when media flows.
        let video_clip = if cfg.publish_video {
            let mut config =
                VideoClipConfig::new(cfg.width, cfg.height, cfg.fps, cfg.video_bitrate_bps);
            config.frames = cfg.fps.max(1) * cfg.clip_seconds.max(1);
            Some(
                tokio::task::spawn_blocking(move || VideoClip::shared(config))
                    .await
                    .context("video encoder task")??,
            )
        } else {
            None
        };
        let audio_clip = if cfg.publish_audio {
            Some(OpusClip::shared()?)
        } else {
            None
        };

        let local_ip = cfg.local_ip.unwrap_or_else(|| default_local_ip(cfg.server));
        let peer = peer::build(
            &shared,
            local_ip,
            cfg.publish_audio,
            cfg.publish_video,
            welcome.recv_slots,
        )
        .await?;
        let pc = peer.pc;
        let offer = pc.create_offer(None).await.context("create_offer")?;
        let mut gathered = shared.gathering_done.subscribe();
        pc.set_local_description(offer)
            .await
            .context("set_local_description")?;
        let _ = tokio::time::timeout(Duration::from_secs(2), gathered.wait_for(|done| *done)).await;
        let offer = pc
            .local_description()
            .await
            .ok_or_else(|| anyhow!("no local description"))?;
        writer
            .send(&ClientMessage::Offer { sdp: offer.sdp })
            .await?;
        let answer = timed(
            cfg.timeout,
            "answer",
            read_until(&mut reader, &shared, "answer", |m| match m {
                ServerMessage::Answer { sdp } => Some(sdp.clone()),
                _ => None,
            }),
        )
        .await?;
        let answer = match cfg.media_via {
            Some(via) => peer::rewrite_candidates(&answer, via),
            None => answer,
        };
        let answer = RTCSessionDescription::answer(answer).context("parsing answer")?;
        pc.set_remote_description(answer)
            .await
            .context("set_remote_description")?;

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(read_signaling(reader, Arc::clone(&shared))));
        tasks.push(tokio::spawn(receive::dispatch_tracks(
            Arc::clone(&pc),
            peer.tracks_rx,
            Arc::clone(&shared),
        )));
        let senders = pc.get_senders().await;
        for sender in senders {
            let track_ssrc = |t: &Option<(Arc<_>, u32)>| t.as_ref().map(|(_, s)| *s);
            let ssrcs = webrtc::media_stream::Track::ssrcs(sender.track().as_ref()).await;
            let is = |ssrc: Option<u32>| ssrc.is_some_and(|s| ssrcs.contains(&s));
            if is(track_ssrc(&peer.local.video))
                && let (Some((track, ssrc)), Some(clip)) = (&peer.local.video, &video_clip)
            {
                let (pt, _) = peer::sender_params(&sender, AUDIO_LEVEL_URI).await?;
                tasks.push(tokio::spawn(send::send_video(
                    Arc::clone(track),
                    *ssrc,
                    pt,
                    Arc::clone(clip),
                    Arc::clone(&shared),
                )));
                tasks.push(tokio::spawn(send::watch_keyframe_requests(
                    Arc::clone(track),
                    Arc::clone(&shared),
                )));
            } else if is(track_ssrc(&peer.local.audio))
                && let (Some((track, ssrc)), Some(clip)) = (&peer.local.audio, &audio_clip)
            {
                let (pt, level_ext) = peer::sender_params(&sender, AUDIO_LEVEL_URI).await?;
                if level_ext.is_none() {
                    tracing::warn!("audio level extension not negotiated");
                }
                tasks.push(tokio::spawn(send::send_audio(
                    Arc::clone(track),
                    *ssrc,
                    pt,
                    level_ext,
                    Arc::clone(clip),
                    Arc::clone(&shared),
                )));
            }
        }
        let events = shared.events.subscribe();
        Ok(Self {
            welcome,
            shared,
            writer: Mutex::new(writer),
            pc,
            events,
            tasks,
        })
    }

    /// This participant's id.
    pub fn id(&self) -> ParticipantId {
        self.welcome.you.id
    }

    /// The `welcome` frame.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
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
        let sent = &self.shared.sent;
        let rtcp = &self.shared.rtcp;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        stats.packets_sent = get(&sent.packets);
        stats.bytes_sent = get(&sent.bytes);
        stats.video_frames_sent = get(&sent.video_frames);
        stats.audio_packets_sent = get(&sent.audio_packets);
        stats.keyframes_sent = get(&sent.keyframes);
        stats.keyframes_forced = get(&sent.keyframes_forced);
        stats.plis_received = get(&rtcp.plis_received);
        stats.firs_received = get(&rtcp.firs_received);
        stats.plis_sent = get(&rtcp.plis_sent);
        stats.nacks_received = get(&rtcp.nacks_received);
        stats.nacked_packets_received = get(&rtcp.nacked_packets_received);
        stats.nacks_sent = get(&rtcp.nacks_sent);
        stats.nacked_packets_sent = get(&rtcp.nacked_packets_sent);
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

    /// Sends any frame.
    pub async fn send(&self, msg: &ClientMessage) -> anyhow::Result<()> {
        self.writer.lock().await.send(msg).await
    }

    /// Sends raw text on the signaling socket (for malformed-frame tests).
    pub async fn send_raw(&self, text: impl Into<String>) -> anyhow::Result<()> {
        self.writer.lock().await.send_raw(text.into()).await
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
                return Err(anyhow!(
                    "participant {} ({}): condition not met within {timeout:?}; state: {:?}",
                    self.id(),
                    self.welcome.you.name,
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
    pub async fn leave(self) -> anyhow::Result<()> {
        let sent = self.send(&ClientMessage::Leave).await;
        self.close().await;
        sent
    }

    /// Closes the socket and the peer connection without sending `leave`.
    pub async fn close(mut self) {
        let _ = self.writer.lock().await.close().await;
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let _ = self.pc.close().await;
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let pc = Arc::clone(&self.pc);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

fn summary(state: &MeetingState) -> String {
    format!(
        "me={:?} participants={:?} speaker={:?} locked={} slots={} conn={} errors={:?} stats={:?}",
        state.me.as_ref().map(|m| m.id),
        state.participants.keys().collect::<Vec<_>>(),
        state.speaker,
        state.locked,
        state.slots.len(),
        state.connection_state,
        state.errors,
        state.stats
    )
}

async fn read_signaling(mut reader: SignalReader, shared: Arc<Shared>) {
    loop {
        match reader.recv().await {
            Ok(Some(Incoming::Message(msg))) => {
                shared.update(Some(Event::Signal(msg.clone())), |s| s.apply(&msg));
            }
            Ok(Some(Incoming::Unparsed(text))) => {
                shared.update(Some(Event::Unparsed(text.clone())), |s| {
                    s.unparsed.push(text)
                });
            }
            Ok(None) | Err(_) => break,
        }
    }
    shared.update(Some(Event::SignalingClosed), |s| s.signaling_closed = true);
}
