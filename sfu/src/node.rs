//! The async shell around the media core: the node's UDP socket, its ICE-TCP listener, the
//! clock, and the channel signaling sessions use to reach the core.
//!
//! One task owns the [`MediaCore`] and is the only place that touches it, so the core needs no
//! locks; nothing awaits while the core is borrowed except the socket send of a ready datagram.

use crate::cascade::control::LinkMessage;
use crate::cascade::link::LinkParams;
use crate::media::core::{Admitted, JoinRequest, MediaCore, NodeLoad, Output};
use crate::media::demux::ParticipantId;
use crate::metrics::{Dropped, Metrics, Refused};
use crate::signaling::protocol::{ClientMessage, ErrorCode, LeaveReason, ServerMessage};
use crate::udp_batch::{BATCH, BatchReceiver, BatchSender, Received};
use bytes::{Buf, BytesMut};
use kaskade_protocol::cluster::CallRecord;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Socket buffer size asked of the kernel (bursts of ten-person rooms overflow the default).
const SOCKET_BUFFER: usize = 8 << 20;
/// Frames queued towards one ICE-TCP connection before its datagrams are dropped.
const TCP_QUEUE: usize = 512;
/// ICE-TCP connections open at once; further ones are closed at accept (a node carries at most
/// a few hundred participants, each with one or two connections).
const MAX_TCP_CONNECTIONS: usize = 2048;
/// How often the sizes of the core's and the driver's maps are copied into the metrics.
const MAP_SIZES_EVERY: Duration = Duration::from_secs(1);

/// Frames queued towards one signaling session. A session this far behind has a client that
/// stopped reading: it is disconnected rather than buffered without bound.
pub const SESSION_QUEUE: usize = 256;

/// What a signaling session receives from the core.
#[derive(Debug)]
pub enum SessionEvent {
    /// A frame to send.
    Message(ServerMessage),
    /// The participant is gone from the core: close the socket.
    Close,
}

enum Request {
    Join {
        request: JoinRequest,
        events: mpsc::Sender<SessionEvent>,
        reply: oneshot::Sender<Result<Admitted, (ErrorCode, String)>>,
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

/// What the core tells the cluster shell.
#[derive(Debug)]
pub enum ClusterEvent {
    /// Find the other nodes hosting this meeting and link with them.
    FindPeers(String),
    /// A participant session ended.
    CallRecord(CallRecord),
}

enum TcpInput {
    Opened(SocketAddr, mpsc::Sender<BytesMut>),
    Frame(TransportContext, BytesMut),
    Closed(SocketAddr),
}

/// A cheap handle through which signaling sessions talk to the media core.
#[derive(Clone)]
pub struct NodeHandle {
    requests: mpsc::Sender<Request>,
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

/// The sockets a node's media plane listens on.
pub struct MediaSockets {
    /// The one UDP socket every peer shares.
    pub udp: UdpSocket,
    /// The ICE-TCP listener, if enabled.
    pub tcp: Option<TcpListener>,
}

impl MediaSockets {
    /// Binds the UDP socket (with large buffers) and the TCP listener.
    pub async fn bind(udp: SocketAddr, tcp: Option<SocketAddr>) -> std::io::Result<Self> {
        let socket = std::net::UdpSocket::bind(udp)?;
        socket.set_nonblocking(true)?;
        let sock_ref = socket2_ref(&socket);
        let _ = sock_ref.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock_ref.set_send_buffer_size(SOCKET_BUFFER);
        let tcp = match tcp {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            udp: UdpSocket::from_std(socket)?,
            tcp,
        })
    }
}

fn socket2_ref(socket: &std::net::UdpSocket) -> socket2::SockRef<'_> {
    socket2::SockRef::from(socket)
}

/// Starts the media core's task; returns the handle sessions use. `cluster` receives what the
/// locator and peer nodes must learn (none for a node on its own).
pub fn spawn(
    core: MediaCore,
    sockets: MediaSockets,
    metrics: Arc<Metrics>,
    cluster: Option<mpsc::UnboundedSender<ClusterEvent>>,
) -> NodeHandle {
    let (requests, request_rx) = mpsc::channel(1024);
    let (tcp_tx, tcp_rx) = mpsc::channel(4096);
    if let Some(listener) = sockets.tcp {
        tokio::spawn(accept_tcp(listener, tcp_tx));
    }
    let driver = Driver {
        core,
        udp: sockets.udp,
        metrics,
        sessions: HashMap::new(),
        tcp_writers: HashMap::new(),
        links: HashMap::new(),
        cluster,
        receiver: BatchReceiver::default(),
        sender: BatchSender::default(),
        inbound: Vec::with_capacity(BATCH),
        outbound: Vec::new(),
    };
    tokio::spawn(driver.run(request_rx, tcp_rx));
    NodeHandle { requests }
}

struct Driver {
    core: MediaCore,
    udp: UdpSocket,
    metrics: Arc<Metrics>,
    sessions: HashMap<ParticipantId, mpsc::Sender<SessionEvent>>,
    tcp_writers: HashMap<SocketAddr, mpsc::Sender<BytesMut>>,
    links: HashMap<u16, (u64, mpsc::UnboundedSender<LinkMessage>)>,
    cluster: Option<mpsc::UnboundedSender<ClusterEvent>>,
    receiver: BatchReceiver,
    sender: BatchSender,
    /// Datagrams of one receive batch.
    inbound: Vec<Received>,
    /// UDP datagrams of one flush, sent in `sendmmsg` batches.
    outbound: Vec<TaggedBytesMut>,
}

impl Driver {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut tcp: mpsc::Receiver<TcpInput>,
    ) {
        let local_udp = match self.udp.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                warn!("UDP socket has no local address: {e}");
                return;
            }
        };
        let mut map_sizes = tokio::time::interval(MAP_SIZES_EVERY);
        map_sizes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // one unit of the task's cooperative budget per turn: a socket that is always
            // readable never makes the select below wait, and without this the driver kept its
            // worker thread for as long as datagrams kept coming, starving every other task
            // of the runtime (on one core: signaling, HTTP and the locator reports)
            tokio::task::coop::consume_budget().await;
            self.flush().await;
            let deadline = self
                .core
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                readable = self.udp.readable() => {
                    if let Err(e) = readable {
                        debug!("UDP socket not readable: {e}");
                        continue;
                    }
                    self.receive(local_udp);
                }
                Some(input) = tcp.recv() => self.tcp_input(input),
                Some(request) = requests.recv() => self.request(request),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.core.handle_timeout(Instant::now());
                }
                _ = map_sizes.tick() => self.sample_map_sizes(),
            }
        }
    }

    /// Copies the sizes of the core's maps and of this driver's own into the metrics.
    fn sample_map_sizes(&mut self) {
        let mut sizes = self.core.map_sizes();
        sizes.push(("sessions", self.sessions.len()));
        sizes.push(("tcp_connections", self.tcp_writers.len()));
        sizes.push(("link_channels", self.links.len()));
        self.metrics.set_map_sizes(&sizes);
    }

    /// Reads one batch of waiting datagrams (one `recvmmsg`) into the core.
    fn receive(&mut self, local: SocketAddr) {
        match self.receiver.try_recv(&self.udp, &mut self.inbound) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                debug!("UDP receive failed: {e}");
                return;
            }
        }
        self.metrics.packets_in.inc_by(self.inbound.len() as u64);
        let bytes: usize = self.inbound.iter().map(|(_, d)| d.len()).sum();
        self.metrics.bytes_in.inc_by(bytes as u64);
        let datagrams = self.inbound.drain(..).map(|(peer, datagram)| {
            let transport = TransportContext {
                local_addr: local,
                peer_addr: peer,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            };
            (transport, datagram)
        });
        self.core.handle_datagrams(Instant::now(), datagrams);
    }

    /// Sends the UDP datagrams of this flush, [`BATCH`] per `sendmmsg`; waits while the
    /// socket buffer is full. A datagram the kernel refuses is dropped and counted.
    async fn send_outbound(&mut self) {
        let mut sent = 0;
        while sent < self.outbound.len() {
            let batch = self.outbound[sent..]
                .iter()
                .map(|d| (d.transport.peer_addr, &d.message[..]));
            match self.sender.try_send(&self.udp, batch) {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.udp.writable().await.is_err() {
                        break;
                    }
                }
                Err(_) => {
                    self.metrics.drop_packet(Dropped::SendFailed);
                    sent += 1;
                }
            }
        }
        self.outbound.clear();
    }

    fn tcp_input(&mut self, input: TcpInput) {
        match input {
            TcpInput::Opened(peer, writer) => {
                self.tcp_writers.insert(peer, writer);
            }
            TcpInput::Frame(transport, frame) => {
                self.metrics.packets_in.inc();
                self.metrics.bytes_in.inc_by(frame.len() as u64);
                self.core.handle_datagram(Instant::now(), transport, frame);
            }
            TcpInput::Closed(peer) => {
                self.tcp_writers.remove(&peer);
            }
        }
    }

    fn request(&mut self, request: Request) {
        let now = Instant::now();
        match request {
            Request::Join {
                request,
                events,
                reply,
            } => {
                let result = self.core.join(now, request);
                if let Ok(admitted) = &result {
                    self.sessions.insert(admitted.id, events);
                }
                if let Err(Ok(admitted)) = reply.send(result) {
                    // the session went away while we were admitting it
                    self.sessions.remove(&admitted.id);
                    self.core.leave(now, admitted.id, LeaveReason::Left);
                }
            }
            Request::Offer { id, sdp, reply } => {
                let _ = reply.send(self.core.offer(now, id, sdp));
            }
            Request::Message { id, message } => self.core.client_message(now, id, message),
            Request::Leave { id } => {
                self.sessions.remove(&id);
                self.core.leave(now, id, LeaveReason::Left);
            }
            Request::SlowReader { id } => self.disconnect_slow_reader(id),
            Request::SetIndex(index) => self.core.set_node_index(index),
            Request::Load(reply) => {
                let _ = reply.send(self.core.load());
            }
            Request::LinkUp {
                params,
                connection,
                messages,
            } => {
                self.links.insert(params.index, (connection, messages));
                self.core.link_up(now, params);
            }
            Request::LinkMessage { peer, message } => self.core.link_message(now, peer, message),
            Request::LinkDown { peer, connection } => {
                if self.links.get(&peer).is_some_and(|(c, _)| *c == connection) {
                    self.links.remove(&peer);
                    self.core.link_down(now, peer);
                }
            }
            Request::Attach { peer, meeting } => self.core.attach(peer, &meeting),
            Request::MeetingLocked { meeting, locked } => {
                self.core.set_meeting_locked(&meeting, locked);
            }
        }
    }

    /// Drops a participant whose signaling client stopped reading: its queue of
    /// [`SESSION_QUEUE`] frames is full, or a frame waited too long for the socket. Dropping
    /// the queue's sender ends the session task.
    fn disconnect_slow_reader(&mut self, id: ParticipantId) {
        if self.sessions.remove(&id).is_none() {
            return;
        }
        warn!(
            participant = %id,
            "signaling client stopped reading: disconnected"
        );
        self.metrics.refuse(Refused::SlowReader);
        self.core
            .leave(Instant::now(), id, LeaveReason::Disconnected);
    }

    /// Sends every ready datagram and routes every ready signaling output.
    async fn flush(&mut self) {
        while let Some(datagram) = self.core.poll_transmit() {
            self.metrics.packets_out.inc();
            self.metrics.bytes_out.inc_by(datagram.message.len() as u64);
            match datagram.transport.transport_protocol {
                TransportProtocol::UDP => self.outbound.push(datagram),
                TransportProtocol::TCP => {
                    let sent = self
                        .tcp_writers
                        .get(&datagram.transport.peer_addr)
                        .is_some_and(|w| w.try_send(datagram.message).is_ok());
                    if !sent {
                        self.metrics.drop_packet(Dropped::TcpQueueFull);
                    }
                }
                _ => self.metrics.drop_packet(Dropped::UnsupportedTransport),
            }
        }
        self.send_outbound().await;
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send(id, message) => {
                    let behind = self.sessions.get(&id).is_some_and(|session| {
                        matches!(
                            session.try_send(SessionEvent::Message(message)),
                            Err(mpsc::error::TrySendError::Full(_))
                        )
                    });
                    if behind {
                        self.disconnect_slow_reader(id);
                    }
                }
                Output::Close(id) => {
                    if let Some(session) = self.sessions.remove(&id) {
                        let _ = session.try_send(SessionEvent::Close);
                    }
                }
                Output::Link(peer, message) => {
                    if let Some((_, link)) = self.links.get(&peer) {
                        let _ = link.send(message);
                    }
                }
                Output::FindPeers(meeting) => {
                    if let Some(cluster) = &self.cluster {
                        let _ = cluster.send(ClusterEvent::FindPeers(meeting));
                    }
                }
                Output::CallRecord(record) => {
                    info!(
                        session = %record.session,
                        meeting = %record.meeting,
                        identity = %record.identity,
                        kind = %record.kind,
                        seconds = record.left_at_ms.saturating_sub(record.joined_at_ms) / 1000,
                        bytes_sent = record.bytes_sent,
                        bytes_received = record.bytes_received,
                        "call record"
                    );
                    if let Some(cluster) = &self.cluster {
                        let _ = cluster.send(ClusterEvent::CallRecord(record));
                    }
                }
            }
        }
    }
}

async fn accept_tcp(listener: TcpListener, inputs: mpsc::Sender<TcpInput>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "ICE-TCP connection refused: too many open");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let inputs = inputs.clone();
                tokio::spawn(async move {
                    serve_tcp(stream, peer, inputs).await;
                    drop(slot);
                });
            }
            Err(e) => {
                warn!("ICE-TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One ICE-TCP connection: RFC 4571 frames (16-bit length, then the datagram) both ways.
async fn serve_tcp(stream: TcpStream, peer: SocketAddr, inputs: mpsc::Sender<TcpInput>) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let (frames_tx, mut frames_rx) = mpsc::channel::<BytesMut>(TCP_QUEUE);
    if inputs
        .send(TcpInput::Opened(peer, frames_tx))
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        while let Some(frame) = frames_rx.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else {
                continue;
            };
            if writer.write_all(&len.to_be_bytes()).await.is_err()
                || writer.write_all(&frame).await.is_err()
            {
                break;
            }
        }
    };
    let transport = TransportContext {
        local_addr: local,
        peer_addr: peer,
        ecn: None,
        transport_protocol: TransportProtocol::TCP,
    };
    let read_inputs = inputs.clone();
    let read = async move {
        let mut buf = BytesMut::with_capacity(1 << 16);
        loop {
            while buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                if buf.len() < 2 + len {
                    break;
                }
                buf.advance(2);
                let frame = buf.split_to(len);
                if read_inputs
                    .send(TcpInput::Frame(transport, frame))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if buf.capacity() - buf.len() < 2048 {
                buf.reserve(1 << 16);
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
    let _ = inputs.send(TcpInput::Closed(peer)).await;
}
