//! A synthetic participant: joins a meeting over signaling (straight at a node, or through the
//! join API of a locator or a standalone node), publishes the synthetic H.264 and Opus sources
//! in real time, decodes what it receives, and records every signaling event. A participant
//! that joined through the join API fails over by itself when its node is lost (see
//! `failover.rs`); its statistics accumulate across sessions.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kaskade_client::{JoinConfig, Participant};
//! let cfg = JoinConfig::new("127.0.0.1:8080".parse()?, "standup", "bot-1");
//! let bot = Participant::join(cfg).await?;
//! bot.wait_until(std::time::Duration::from_secs(10), |s| s.participants.len() == 2).await?;
//! println!("{:?}", bot.stats());
//! bot.leave().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::audio::LEVEL_SILENT;
use crate::failover;
use crate::join::{JoinConfig, JoinError};
use crate::peer::Shared;
use crate::session::{Current, Media, Session, locate};
use crate::signaling::{
    CameraRequest, ClientMessage, DialRequest, ErrorCode, ModerateAction, ParticipantId,
    ParticipantInfo, Welcome,
};
use crate::state::{Event, MeetingState, ParticipantStats};
use kaskade_protocol::directory::DirectoryListing;

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

    /// Adds an RTSP camera to the meeting (moderator) and waits up to `timeout` for the node's
    /// answer: the camera's participant id, or the refusal's code and message.
    pub async fn add_camera(
        &self,
        request: CameraRequest,
        timeout: Duration,
    ) -> anyhow::Result<Result<ParticipantId, (ErrorCode, String)>> {
        self.ask(ClientMessage::AddCamera(request), timeout, |s| {
            &s.cameras_added
        })
        .await
    }

    /// Calls a SIP address into the meeting (those who may dial): the call's participant id once the
    /// node places it (its progress then shows in that participant's source state), or the
    /// error that refused it.
    pub async fn dial(
        &self,
        request: DialRequest,
        timeout: Duration,
    ) -> anyhow::Result<Result<ParticipantId, (ErrorCode, String)>> {
        self.ask(ClientMessage::Dial(request), timeout, |s| &s.calls_placed)
            .await
    }

    /// Has the meeting call this participant's phone `number` (call-me): the phone's
    /// participant id once the node places the call, or the error that refused it.
    pub async fn call_me(
        &self,
        number: &str,
        timeout: Duration,
    ) -> anyhow::Result<Result<ParticipantId, (ErrorCode, String)>> {
        let request = ClientMessage::CallMe {
            number: number.into(),
        };
        self.ask(request, timeout, |s| &s.calls_placed).await
    }

    /// The SIP directory's rooms (those who may dial), or the refusal's code and message.
    pub async fn directory(
        &self,
        timeout: Duration,
    ) -> anyhow::Result<Result<Vec<DirectoryListing>, (ErrorCode, String)>> {
        let before = self.state();
        let (answered, errors) = (before.directories.len(), before.errors.len());
        self.send(&ClientMessage::Directory).await?;
        let state = self
            .wait_until(timeout, |s| {
                s.directories.len() > answered || s.errors.len() > errors
            })
            .await?;
        Ok(match state.directories.get(answered) {
            Some(entries) => Ok(entries.clone()),
            None => Err(state.errors[errors].clone()),
        })
    }

    /// Sends a request whose answer is a new entry in `answers` or an `error` frame.
    async fn ask(
        &self,
        request: ClientMessage,
        timeout: Duration,
        answers: impl Fn(&MeetingState) -> &Vec<(ParticipantId, String)>,
    ) -> anyhow::Result<Result<ParticipantId, (ErrorCode, String)>> {
        let before = self.state();
        let (answered, errors) = (answers(&before).len(), before.errors.len());
        self.send(&request).await?;
        let state = self
            .wait_until(timeout, |s| {
                answers(s).len() > answered || s.errors.len() > errors
            })
            .await?;
        Ok(match answers(&state).get(answered) {
            Some((id, _)) => Ok(*id),
            None => Err(state.errors[errors].clone()),
        })
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
