//! RTSP cameras as participants of a meeting.
//!
//! A moderator asks for a camera by its `rtsp://` URL ([`spawn_add`]). One thread per camera
//! then owns it: it opens the RTSP session first (so a wrong URL, refused credentials or a
//! codec kaskade does not take are told at once and nothing joins), joins the meeting as a
//! source through the core's plain-RTP transport, and hands the core every frame as RTP. When
//! the camera drops, the tile says so and the task reconnects with backoff (1 s doubling to
//! 30 s) until it plays again; it ends when a moderator removes it or the meeting empties.
//!
//! Keyframes: RTSP has no way to ask a camera for one, so a subscriber that joins waits for
//! the camera's next keyframe (the camera's keyframe interval, 1-2 s on a well-set camera).

mod opus;
mod rtsp;
mod video;

pub use rtsp::{CameraError, CameraSpec};

use crate::media::core::JoinRequest;
use crate::media::demux::ParticipantId;
use crate::node::{NodeHandle, SESSION_QUEUE, SessionEvent};
use crate::seats::Seats;
use crate::signaling::protocol::{
    CameraRequest, ErrorCode, ServerMessage, Source, SourceKind, SourceState,
};
use rand::Rng;
use rtsp::CameraStream;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// First wait before reconnecting a dropped camera; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Cameras a node runs (or is connecting to) at once; more are refused, so a moderator's
/// requests cannot grow the node's threads without bound.
const MAX_CAMERAS: usize = 64;

/// Cameras running or connecting on this node.
static RUNNING: Seats = Seats::new(MAX_CAMERAS);

/// Stack of a camera's thread: the pure-Rust Opus encoder builds its state in deep stack
/// frames that overflow a runtime worker's 2 MiB.
const CAMERA_STACK: usize = 16 << 20;

/// Adds the camera `request` to `meeting` in the background; the answer (`camera_added`, or
/// an `error` with code `source_failed` or `bad_request` saying why) goes to `reply` if the
/// session asking is still there. Each
/// camera runs on a thread of its own (with a one-thread runtime for its RTSP session), so
/// transcoding never holds up the node's runtime.
pub fn spawn_add(
    node: NodeHandle,
    meeting: String,
    request: CameraRequest,
    reply: mpsc::WeakSender<SessionEvent>,
) {
    let answer = |message: ServerMessage| async move {
        if let Some(reply) = reply.upgrade() {
            let _ = reply.send(SessionEvent::Message(message)).await;
        }
    };
    let Some(seat) = RUNNING.take() else {
        let refusal = format!("this node already runs {MAX_CAMERAS} cameras");
        tokio::spawn(answer(ServerMessage::error(
            ErrorCode::SourceFailed,
            refusal,
        )));
        return;
    };
    let camera = async move {
        let _seat = seat;
        match add(&node, meeting, &request).await {
            Ok(camera) => {
                answer(ServerMessage::CameraAdded {
                    id: camera.id,
                    name: camera.spec.name.clone(),
                })
                .await;
                camera.run().await;
            }
            Err((code, message)) => answer(ServerMessage::error(code, message)).await,
        }
    };
    let started = std::thread::Builder::new()
        .name("camera".into())
        .stack_size(CAMERA_STACK)
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(camera),
                Err(e) => warn!("no runtime for a camera: {e}"),
            }
        });
    if let Err(e) = started {
        warn!("no thread for a camera: {e}");
    }
}

/// A camera in a meeting.
struct Camera {
    node: NodeHandle,
    id: ParticipantId,
    spec: CameraSpec,
    stream: CameraStream,
    events: mpsc::Receiver<SessionEvent>,
}

async fn add(
    node: &NodeHandle,
    meeting: String,
    request: &CameraRequest,
) -> Result<Camera, (ErrorCode, String)> {
    let spec = CameraSpec::parse(request).map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
    let (ssrc, seq) = session_numbers();
    let stream = CameraStream::open(&spec, ssrc, seq)
        .await
        .map_err(|e| (ErrorCode::SourceFailed, e.to_string()))?;
    let (events_tx, events) = mpsc::channel(SESSION_QUEUE);
    let join = JoinRequest::source(
        meeting,
        format!("camera:{}", spec.url),
        spec.name.clone(),
        "camera",
    );
    let source = Source::live(SourceKind::Camera);
    let admitted = node
        .join_source(join, source, (stream.publication(), None), events_tx)
        .await
        .map_err(|e| (ErrorCode::SourceFailed, e.to_string()))??;
    info!(participant = %admitted.id, url = %spec.url, "camera added");
    Ok(Camera {
        node: node.clone(),
        id: admitted.id,
        spec,
        stream,
        events,
    })
}

/// A random SSRC and first sequence number for one RTSP session's packets.
fn session_numbers() -> (u32, u16) {
    let mut rng = rand::rng();
    (rng.random(), rng.random())
}

/// What ended a camera's playing session.
enum Stop {
    /// Removed, or the meeting ended: the task ends.
    Removed,
    /// The stream dropped: reconnect.
    Dropped(CameraError),
}

impl Camera {
    /// Plays the camera into the meeting until it is removed, reconnecting when it drops.
    async fn run(mut self) {
        loop {
            match self.play().await {
                Stop::Removed => break,
                Stop::Dropped(e) => {
                    warn!(participant = %self.id, url = %self.spec.url, "camera dropped: {e}");
                    if !self.reconnect(e).await {
                        break;
                    }
                }
            }
        }
        debug!(participant = %self.id, "camera task ended");
    }

    /// Forwards frames until the stream drops or the camera is removed.
    async fn play(&mut self) -> Stop {
        let mut packets = Vec::new();
        loop {
            tokio::select! {
                event = self.events.recv() => {
                    if !still_wanted(event) {
                        return Stop::Removed;
                    }
                }
                frame = self.stream.next(&mut packets) => {
                    if let Err(e) = frame {
                        return Stop::Dropped(e);
                    }
                    if !packets.is_empty()
                        && self.node.ingest(self.id, std::mem::take(&mut packets)).await.is_err()
                    {
                        return Stop::Removed;
                    }
                }
            }
        }
    }

    /// Tells the meeting the camera is reconnecting and tries again with backoff until it
    /// plays; false when the camera was removed meanwhile.
    async fn reconnect(&mut self, why: CameraError) -> bool {
        let mut backoff = FIRST_BACKOFF;
        let mut detail = why.to_string();
        loop {
            if self
                .node
                .set_source_state(self.id, SourceState::Reconnecting, Some(detail.clone()))
                .await
                .is_err()
            {
                return false;
            }
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    event = self.events.recv() => {
                        if !still_wanted(event) {
                            return false;
                        }
                    }
                    _ = &mut wait => break,
                }
            }
            let (ssrc, seq) = session_numbers();
            let attempt = CameraStream::open(&self.spec, ssrc, seq);
            tokio::pin!(attempt);
            let opened = loop {
                tokio::select! {
                    event = self.events.recv() => {
                        if !still_wanted(event) {
                            return false;
                        }
                    }
                    opened = &mut attempt => break opened,
                }
            };
            match opened {
                Ok(stream) => {
                    self.stream = stream;
                    info!(participant = %self.id, url = %self.spec.url, "camera back");
                    return self
                        .node
                        .set_source_state(self.id, SourceState::Live, None)
                        .await
                        .is_ok();
                }
                Err(e) => {
                    debug!(participant = %self.id, "camera reconnect failed: {e}");
                    detail = e.to_string();
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Whether an event from the core leaves the camera in the meeting. Frames for a camera are
/// dropped; a keyframe request has no RTSP equivalent (see the module comment).
fn still_wanted(event: Option<SessionEvent>) -> bool {
    !matches!(event, None | Some(SessionEvent::Close))
}
