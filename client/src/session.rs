//! One session of a participant on one node: where to connect (straight to a node, or as the
//! join API says), the signaling socket, the offer/answer exchange, and the peer connection
//! with the tasks that send and receive its media. Failover replaces a session whole; the
//! media clips and the statistics outlive it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rtc::peer_connection::sdp::RTCSessionDescription;
use tokio::sync::{MappedMutexGuard, MutexGuard, mpsc};
use tokio::task::JoinHandle;
use webrtc::peer_connection::PeerConnection;

use crate::audio::{AUDIO_LEVEL_URI, OpusClip};
use crate::join::{JoinConfig, JoinError};
use crate::join_api::{self, JoinRequest};
use crate::peer::{self, LocalTracks, MID_URI, RID_URI, SIMULCAST_RIDS, Shared};
use crate::send::{SimulcastExtensions, VideoEncodings, VideoSource};
use crate::signaling::{
    self, ClientMessage, Incoming, ServerMessage, SignalReader, SignalWriter, Welcome,
};
use crate::state::Event;
use crate::video::{VideoClip, VideoClipConfig};
use crate::{receive, send};

/// The synthetic media a participant publishes, encoded once and re-published by every
/// session.
#[derive(Clone)]
pub struct Media {
    /// The video's encodings, lowest first (one unless simulcast); the last is the picture
    /// at its configured size.
    video: Vec<Arc<VideoClip>>,
    simulcast: bool,
    audio: Option<Arc<OpusClip>>,
}

impl Media {
    /// Encodes (or fetches) the clips `cfg` asks for.
    pub async fn prepare(cfg: &JoinConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !(cfg.simulcast && cfg.sync_marks),
            "sync-mark video goes out as one stream, not in simulcast layers"
        );
        let mut video = Vec::new();
        if cfg.publish_video {
            let mut config =
                VideoClipConfig::new(cfg.width, cfg.height, cfg.fps, cfg.video_bitrate_bps);
            config.frames = cfg.fps.max(1) * cfg.clip_seconds.max(1);
            config.sync_marks = cfg.sync_marks;
            let configs = if cfg.simulcast {
                config.simulcast_layers().to_vec()
            } else {
                vec![config]
            };
            for config in configs {
                let clip = tokio::task::spawn_blocking(move || VideoClip::shared(config))
                    .await
                    .context("video encoder task")??;
                video.push(clip);
            }
        }
        let audio = if cfg.publish_audio && cfg.sync_marks {
            Some(OpusClip::shared_sync_marks(cfg.clip_seconds.max(1))?)
        } else if cfg.publish_audio {
            Some(OpusClip::shared()?)
        } else {
            None
        };
        Ok(Self {
            video,
            simulcast: cfg.simulcast,
            audio,
        })
    }

    /// The video clip at the configured size, if the participant publishes video.
    pub fn video(&self) -> Option<&Arc<VideoClip>> {
        self.video.last()
    }

    /// The clips of the video's simulcast layers, lowest first, if it publishes simulcast.
    pub fn simulcast_layers(&self) -> Option<&[Arc<VideoClip>]> {
        (self.simulcast && !self.video.is_empty()).then_some(&self.video[..])
    }

    /// The camera on the negotiated video m-line: each simulcast layer on its SSRC of `ssrcs`
    /// (lowest first) naming `mid` and its rid in the extensions `ids`, or (without
    /// simulcast, or without those extensions negotiated) the picture on the last SSRC.
    pub fn camera(
        &self,
        ssrcs: &[u32],
        payload_type: u8,
        mid: Option<(&str, SimulcastExtensions)>,
    ) -> Option<VideoEncodings> {
        let top = self.video()?;
        let layers = self
            .simulcast_layers()
            .filter(|layers| layers.len() == ssrcs.len() && layers.len() <= SIMULCAST_RIDS.len());
        if let (Some(layers), Some((mid, ids))) = (layers, mid) {
            let layers = layers.iter().zip(ssrcs).zip(SIMULCAST_RIDS);
            let layers = layers
                .map(|((clip, ssrc), rid)| (Arc::clone(clip), *ssrc, rid))
                .collect();
            return Some(VideoEncodings::simulcast(layers, payload_type, mid, ids));
        }
        let ssrc = *ssrcs.last()?;
        let source = VideoSource::new(Arc::clone(top), ssrc, payload_type);
        Some(VideoEncodings::single(source))
    }

    /// The Opus clip, if the participant publishes audio.
    pub fn audio(&self) -> Option<&Arc<OpusClip>> {
        self.audio.as_ref()
    }

    /// Starts the senders of the negotiated `pc` (answer applied): the clips through the
    /// `local` tracks with the negotiated payload types and audio level extension, and the
    /// keyframe-request watcher of the video track. The tasks run until aborted.
    pub async fn start_sending(
        &self,
        pc: &Arc<dyn PeerConnection>,
        local: &LocalTracks,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let mut tasks = Vec::new();
        for transceiver in pc.get_transceivers().await {
            let Some(sender) = transceiver.sender().await? else {
                continue;
            };
            let ssrcs = webrtc::media_stream::Track::ssrcs(sender.track().as_ref()).await;
            let is = |ssrc: Option<u32>| ssrc.is_some_and(|s| ssrcs.contains(&s));
            let video_ssrc = local.video.as_ref().and_then(|(_, s)| s.first().copied());
            if is(video_ssrc)
                && let (Some((track, ssrcs)), Some(clip)) = (&local.video, self.video())
            {
                let (pt, mid_ext) = peer::sender_params(&sender, MID_URI).await?;
                let (_, rid_ext) = peer::sender_params(&sender, RID_URI).await?;
                let mid = transceiver.mid().await?;
                let (keyframes, requests) = mpsc::unbounded_channel();
                let (track, shared) = (Arc::clone(track), Arc::clone(shared));
                tasks.push(tokio::spawn(send::watch_keyframe_requests(
                    Arc::clone(&track),
                    keyframes,
                )));
                let config = clip.config();
                if config.sync_marks {
                    let (ssrc, clip) = (ssrcs[0], Arc::clone(clip));
                    let sender =
                        send::send_video_sync_marks(track, ssrc, pt, clip, shared, requests);
                    tasks.push(tokio::spawn(sender));
                    continue;
                }
                let ids = mid_ext
                    .zip(rid_ext)
                    .map(|(mid, rid)| SimulcastExtensions { mid, rid });
                let negotiated = mid.as_deref().zip(ids);
                if self.simulcast_layers().is_some() && negotiated.is_none() {
                    tracing::warn!("simulcast without the mid and rid extensions: one stream");
                }
                if let Some(camera) = self.camera(ssrcs, pt, negotiated) {
                    let sender = send::send_video(track, camera, config.fps, shared, requests);
                    tasks.push(tokio::spawn(sender));
                }
            } else if is(local.audio.as_ref().map(|(_, s)| *s))
                && let (Some((track, ssrc)), Some(clip)) = (&local.audio, &self.audio)
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
                    Arc::clone(shared),
                )));
            }
        }
        Ok(tasks)
    }
}

/// Applies `description` (an offer or an answer of `pc`) as the local description, waits (up
/// to 2 s) for ICE gathering to complete, and returns the local SDP with its candidates: no
/// trickling needed.
pub async fn local_sdp(
    pc: &Arc<dyn PeerConnection>,
    shared: &Shared,
    description: RTCSessionDescription,
) -> anyhow::Result<String> {
    let mut gathered = shared.gathering_done.subscribe();
    pc.set_local_description(description)
        .await
        .context("set_local_description")?;
    let _ = tokio::time::timeout(Duration::from_secs(2), gathered.wait_for(|done| *done)).await;
    Ok(pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))?
        .sdp)
}

/// Where a session connects.
pub struct Target {
    /// The node's name, when the join API chose it.
    pub node: Option<String>,
    /// The signaling WebSocket URL.
    pub url: String,
    /// The token for the `join` frame.
    pub token: Option<String>,
}

/// Finds where to join: through the join API at `cfg.locator` (presenting `token`, avoiding
/// `avoid_node`, pinned to `node`), or straight at `cfg.server`.
pub async fn locate(
    cfg: &JoinConfig,
    token: Option<String>,
    avoid_node: Option<String>,
    node: Option<String>,
) -> Result<Target, JoinError> {
    let Some(base) = &cfg.locator else {
        return Ok(Target {
            node: None,
            url: signaling::url(cfg.server),
            token,
        });
    };
    let request = JoinRequest {
        name: cfg.name.clone(),
        token,
        region: cfg.region.clone(),
        avoid_node,
        node,
    };
    let answer = timed(
        cfg.timeout,
        "join API",
        join_api::request_join(base, &cfg.meeting, &request),
    )
    .await?;
    Ok(Target {
        node: Some(answer.node),
        url: answer.signaling_url,
        token: (!answer.token.is_empty()).then_some(answer.token),
    })
}

/// A live connection to one node. Dropping it stops its tasks and closes the peer connection.
pub struct Session {
    pub writer: SignalWriter,
    pc: Option<Arc<dyn PeerConnection>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// Joins at `target` as a new session of `shared`: signaling, offer/answer, then starts
    /// publishing `media` and receiving. Returns the session and its `welcome`.
    pub async fn open(
        cfg: &JoinConfig,
        shared: &Arc<Shared>,
        media: &Media,
        target: &Target,
    ) -> Result<(Self, Welcome), JoinError> {
        let (writer, mut reader, id, welcome) = join_signaling(cfg, shared, target).await?;
        let local_ip = cfg
            .local_ip
            .or_else(|| writer.local_ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let built = peer::build(
            shared,
            id,
            local_ip,
            cfg.publish_audio,
            cfg.publish_video,
            if cfg.simulcast { &SIMULCAST_RIDS } else { &[] },
            welcome.recv_slots,
        )
        .await?;
        let pc = Arc::clone(&built.pc);
        let mut session = Self {
            writer,
            pc: Some(Arc::clone(&pc)),
            tasks: Vec::new(),
        };
        let offer = pc.create_offer(None).await.context("create_offer")?;
        let sdp = local_sdp(&pc, shared, offer).await?;
        let answer = offer_answer(cfg, &mut session.writer, &mut reader, shared, id, sdp).await?;
        let answer = RTCSessionDescription::answer(answer).context("parsing answer")?;
        pc.set_remote_description(answer)
            .await
            .context("set_remote_description")?;

        let tasks = &mut session.tasks;
        tasks.push(tokio::spawn(read_signaling(reader, Arc::clone(shared), id)));
        tasks.push(tokio::spawn(receive::dispatch_tracks(
            Arc::clone(&pc),
            built.tracks_rx,
            Arc::clone(shared),
            id,
        )));
        tasks.extend(media.start_sending(&pc, &built.local, shared).await?);
        Ok((session, welcome))
    }

    /// Closes the socket (politely, if it is still open) and the peer connection.
    pub async fn close(mut self) {
        let _ = self.writer.close().await;
        self.stop_tasks();
        if let Some(pc) = self.pc.take() {
            let _ = pc.close().await;
        }
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_tasks();
        if let (Some(pc), Ok(handle)) = (self.pc.take(), tokio::runtime::Handle::try_current()) {
            handle.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// Starts a new session of `shared` at `target`: opens the signaling socket, sends `join` and
/// waits for `welcome`. Returns the socket's halves, the session's number and the `welcome`.
pub async fn join_signaling(
    cfg: &JoinConfig,
    shared: &Shared,
    target: &Target,
) -> Result<(SignalWriter, SignalReader, u64, Welcome), JoinError> {
    let id = shared.begin_session();
    let (mut writer, mut reader) = timed(cfg.timeout, "connect", async {
        Ok(signaling::connect_url(&target.url).await?)
    })
    .await?;
    writer
        .send(&ClientMessage::Join {
            meeting: cfg.meeting.clone(),
            name: cfg.name.clone(),
            token: target.token.clone(),
            client: Some("synthetic".into()),
        })
        .await?;
    let welcome = timed(
        cfg.timeout,
        "welcome",
        read_until(&mut reader, shared, id, "welcome", |m| match m {
            ServerMessage::Welcome(w) => Some(Welcome::clone(w)),
            _ => None,
        }),
    )
    .await?;
    Ok((writer, reader, id, welcome))
}

/// Sends the offer `sdp` of session `id` and waits for the node's answer; returns the answer,
/// its candidates rewritten to `cfg.media_via` if set.
pub async fn offer_answer(
    cfg: &JoinConfig,
    writer: &mut SignalWriter,
    reader: &mut SignalReader,
    shared: &Shared,
    id: u64,
    sdp: String,
) -> Result<String, JoinError> {
    writer.send(&ClientMessage::Offer { sdp }).await?;
    let answer = timed(
        cfg.timeout,
        "answer",
        read_until(reader, shared, id, "answer", |m| match m {
            ServerMessage::Answer { sdp } => Some(sdp.clone()),
            _ => None,
        }),
    )
    .await?;
    Ok(match cfg.media_via {
        Some(via) => peer::rewrite_candidates(&answer, via),
        None => answer,
    })
}

/// Runs `fut` with `timeout`; a [`JoinError::Timeout`] naming `what` if it takes longer.
pub async fn timed<T>(
    timeout: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, JoinError>>,
) -> Result<T, JoinError> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| JoinError::Timeout(what))?
}

/// Applies frames of `session` until `pick` finds what the join waits for.
async fn read_until<T>(
    reader: &mut SignalReader,
    shared: &Shared,
    session: u64,
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
            Some(incoming) => match apply(shared, session, incoming) {
                Some(msg) => msg,
                None => continue,
            },
        };
        // Any error before the join completes is fatal for the join (a bad offer, too).
        if let ServerMessage::Error { code, message } = msg {
            return Err(JoinError::Refused { code, message });
        }
        if let Some(value) = pick(&msg) {
            return Ok(value);
        }
    }
}

/// Records one item from the socket in the state of `session`; returns it if it parsed.
fn apply(shared: &Shared, session: u64, incoming: Incoming) -> Option<ServerMessage> {
    match incoming {
        Incoming::Message(msg) => {
            shared.update_session(session, Some(Event::Signal(msg.clone())), |s| s.apply(&msg));
            Some(msg)
        }
        Incoming::Unparsed(text) => {
            shared.update_session(session, Some(Event::Unparsed(text.clone())), |s| {
                s.unparsed.push(text)
            });
            None
        }
    }
}

/// Applies the frames of session `session` until the socket closes.
pub async fn read_signaling(mut reader: SignalReader, shared: Arc<Shared>, session: u64) {
    while let Ok(Some(incoming)) = reader.recv().await {
        apply(&shared, session, incoming);
    }
    shared.update_session(session, Some(Event::SignalingClosed), |s| {
        s.signaling_closed = true
    });
}

/// The session a participant is in now, and its `welcome`; failover replaces both.
pub struct Current {
    welcome: std::sync::Mutex<Welcome>,
    session: tokio::sync::Mutex<Option<Session>>,
}

impl Current {
    pub fn new(session: Session, welcome: Welcome) -> Self {
        Self {
            welcome: std::sync::Mutex::new(welcome),
            session: tokio::sync::Mutex::new(Some(session)),
        }
    }

    /// Runs `f` on the current session's `welcome`.
    pub fn with_welcome<R>(&self, f: impl FnOnce(&Welcome) -> R) -> R {
        f(&self.welcome.lock().expect("welcome lock"))
    }

    /// The current session's signaling writer; an error while failover is joining again.
    pub async fn writer(&self) -> anyhow::Result<MappedMutexGuard<'_, SignalWriter>> {
        MutexGuard::try_map(self.session.lock().await, |s| {
            s.as_mut().map(|s| &mut s.writer)
        })
        .map_err(|_| anyhow!("not connected: failover is joining again"))
    }

    /// Takes the session out (to close it); the participant is not connected until the next
    /// [`Current::install`].
    pub async fn take(&self) -> Option<Session> {
        self.session.lock().await.take()
    }

    /// Makes `session` the current one.
    pub async fn install(&self, session: Session, welcome: Welcome) {
        *self.welcome.lock().expect("welcome lock") = welcome;
        *self.session.lock().await = Some(session);
    }
}
