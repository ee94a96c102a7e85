//! [`NodeHandle`]: how signaling sessions, cameras and the cluster shell reach the media core's
//! task, one request at a time over a bounded channel.

use crate::cascade::control::LinkMessage;
use crate::cascade::link::LinkParams;
use crate::media::core::{Admitted, JoinRequest, NodeLoad};
use crate::media::demux::ParticipantId;
use crate::media::ingest::Delivery;
use crate::media::participant::CallNote;
use crate::media::transport::Publication;
use crate::node::SessionEvent;
use crate::signaling::protocol::{ClientMessage, ErrorCode, Source, SourceState};
use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

/// A request to the media core's task.
pub(super) enum Request {
    Join {
        request: JoinRequest,
        events: mpsc::Sender<SessionEvent>,
        reply: oneshot::Sender<Result<Admitted, (ErrorCode, String)>>,
    },
    JoinSource {
        request: JoinRequest,
        source: Source,
        publication: Publication,
        delivery: Option<Delivery>,
        events: mpsc::Sender<SessionEvent>,
        reply: oneshot::Sender<Result<Admitted, (ErrorCode, String)>>,
    },
    Ingest {
        id: ParticipantId,
        packets: Vec<BytesMut>,
    },
    NoteCall {
        id: ParticipantId,
        note: CallNote,
    },
    SourceState {
        id: ParticipantId,
        state: SourceState,
        detail: Option<String>,
    },
    Offer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Message {
        id: ParticipantId,
        message: ClientMessage,
    },
    Leave {
        id: ParticipantId,
    },
    SlowReader {
        id: ParticipantId,
    },
    SetIndex(u16),
    Load(oneshot::Sender<NodeLoad>),
    LinkUp {
        params: LinkParams,
        connection: u64,
        messages: mpsc::UnboundedSender<LinkMessage>,
    },
    LinkMessage {
        peer: u16,
        message: LinkMessage,
    },
    LinkDown {
        peer: u16,
        connection: u64,
    },
    Attach {
        peer: u16,
        meeting: String,
    },
    MeetingLocked {
        meeting: String,
        locked: bool,
    },
}

/// A cheap handle through which signaling sessions talk to the media core.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) requests: mpsc::Sender<Request>,
}

/// The core's task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the media core has stopped")]
pub struct CoreStopped;

impl NodeHandle {
    /// Asks the core to admit a participant; `events` (of [`SESSION_QUEUE`] frames) receives
    /// its frames from then on.
    pub async fn join(
        &self,
        request: JoinRequest,
        events: mpsc::Sender<SessionEvent>,
    ) -> Result<Result<Admitted, (ErrorCode, String)>, CoreStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Join {
            request,
            events,
            reply,
        })
        .await?;
        answer.await.map_err(|_| CoreStopped)
    }

    /// Asks the core to admit a source (a camera, a SIP call) that publishes what
    /// `publication` says and, with a `delivery`, takes the meeting's media there; `events`
    /// receives its close and keyframe requests from then on.
    pub async fn join_source(
        &self,
        request: JoinRequest,
        source: Source,
        (publication, delivery): (Publication, Option<Delivery>),
        events: mpsc::Sender<SessionEvent>,
    ) -> Result<Result<Admitted, (ErrorCode, String)>, CoreStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::JoinSource {
            request,
            source,
            publication,
            delivery,
            events,
            reply,
        })
        .await?;
        answer.await.map_err(|_| CoreStopped)
    }

    /// Hands the core plain RTP packets of a source.
    pub async fn ingest(
        &self,
        id: ParticipantId,
        packets: Vec<BytesMut>,
    ) -> Result<(), CoreStopped> {
        self.send(Request::Ingest { id, packets }).await
    }

    /// Notes who dialled a call the node placed and how it went, for its call record.
    pub async fn note_call(&self, id: ParticipantId, note: CallNote) -> Result<(), CoreStopped> {
        self.send(Request::NoteCall { id, note }).await
    }

    /// Tells everyone how a source is doing.
    pub async fn set_source_state(
        &self,
        id: ParticipantId,
        state: SourceState,
        detail: Option<String>,
    ) -> Result<(), CoreStopped> {
        self.send(Request::SourceState { id, state, detail }).await
    }

    /// Hands a participant's offer to the core; returns the answer SDP or why there is none.
    pub async fn offer(
        &self,
        id: ParticipantId,
        sdp: String,
    ) -> Result<Result<String, String>, CoreStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Offer { id, sdp, reply }).await?;
        answer.await.map_err(|_| CoreStopped)
    }

    /// Forwards any other request of a participant.
    pub async fn message(
        &self,
        id: ParticipantId,
        message: ClientMessage,
    ) -> Result<(), CoreStopped> {
        self.send(Request::Message { id, message }).await
    }

    /// The participant's signaling socket closed.
    pub async fn leave(&self, id: ParticipantId) -> Result<(), CoreStopped> {
        self.send(Request::Leave { id }).await
    }

    /// The participant's signaling client stopped reading: drop it as disconnected.
    pub async fn disconnect_slow_reader(&self, id: ParticipantId) -> Result<(), CoreStopped> {
        self.send(Request::SlowReader { id }).await
    }

    /// Sets the node's cluster index (from the locator).
    pub async fn set_node_index(&self, index: u16) -> Result<(), CoreStopped> {
        self.send(Request::SetIndex(index)).await
    }

    /// The node's current load.
    pub async fn load(&self) -> Result<NodeLoad, CoreStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Load(reply)).await?;
        answer.await.map_err(|_| CoreStopped)
    }

    /// A cascade link's control connection is up; `messages` carries the core's messages to
    /// the peer. `connection` tells this connection from a later one to the same peer.
    pub async fn link_up(
        &self,
        params: LinkParams,
        connection: u64,
        messages: mpsc::UnboundedSender<LinkMessage>,
    ) -> Result<(), CoreStopped> {
        self.send(Request::LinkUp {
            params,
            connection,
            messages,
        })
        .await
    }

    /// A control message from a peer.
    pub async fn link_message(&self, peer: u16, message: LinkMessage) -> Result<(), CoreStopped> {
        self.send(Request::LinkMessage { peer, message }).await
    }

    /// A link's control connection closed.
    pub async fn link_down(&self, peer: u16, connection: u64) -> Result<(), CoreStopped> {
        self.send(Request::LinkDown { peer, connection }).await
    }

    /// Shares a meeting with a peer over its link.
    pub async fn attach(&self, peer: u16, meeting: String) -> Result<(), CoreStopped> {
        self.send(Request::Attach { peer, meeting }).await
    }

    /// Applies the locator's lock state of a meeting.
    pub async fn set_meeting_locked(
        &self,
        meeting: String,
        locked: bool,
    ) -> Result<(), CoreStopped> {
        self.send(Request::MeetingLocked { meeting, locked }).await
    }

    async fn send(&self, request: Request) -> Result<(), CoreStopped> {
        self.requests.send(request).await.map_err(|_| CoreStopped)
    }
}
