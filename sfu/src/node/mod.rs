//! The async shell around the media core: the node's UDP socket, its ICE-TCP listener, the
//! clock, and the channel signaling sessions use to reach the core.
//!
//! One task owns the [`MediaCore`] and is the only place that touches it, so the core needs no
//! locks; nothing awaits while the core is borrowed except the socket send of a ready datagram.
//! [`NodeHandle`] (in `handle`) is how everything else reaches that task; `tcp` serves ICE-TCP.

mod handle;
mod tcp;

pub use handle::{CoreStopped, NodeHandle};

use crate::cascade::control::LinkMessage;
use crate::media::core::{MediaCore, Output};
use crate::media::demux::ParticipantId;
use crate::metrics::{Dropped, Metrics, Refused};
use crate::signaling::protocol::{LeaveReason, ServerMessage};
use crate::udp_batch::{BATCH, BatchReceiver, BatchSender, Received};
use bytes::BytesMut;
use handle::Request;
use kaskade_protocol::cluster::CallRecord;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcp::{TcpInput, accept_tcp};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Socket buffer size asked of the kernel (bursts of ten-person rooms overflow the default).
const SOCKET_BUFFER: usize = 8 << 20;
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
    /// The participant's source (a camera the node feeds) must send a keyframe.
    KeyframeWanted,
}

/// What the core tells the cluster shell.
#[derive(Debug)]
pub enum ClusterEvent {
    /// Find the other nodes hosting this meeting and link with them.
    FindPeers(String),
    /// A participant session ended.
    CallRecord(Box<CallRecord>),
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
        let start = Instant::now();
        self.core.handle_datagrams(start, datagrams);
        self.observe_forwarding(start);
    }

    /// Observes, once for each RTP packet the core fanned out since `start`, the time from
    /// `start` (its batch's arrival) until every copy was written: the core reads no clock.
    fn observe_forwarding(&mut self, start: Instant) {
        let packets = self.core.take_fanned_out();
        if packets > 0 {
            let seconds = start.elapsed().as_secs_f64();
            for _ in 0..packets {
                self.metrics.forward_seconds.observe(seconds);
            }
        }
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
                let start = Instant::now();
                self.core.handle_datagram(start, transport, frame);
                self.observe_forwarding(start);
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
            Request::JoinSource {
                request,
                source,
                publication,
                delivery,
                events,
                reply,
            } => {
                let result = self
                    .core
                    .join_source(now, request, source, publication, delivery);
                if let Ok(admitted) = &result {
                    self.sessions.insert(admitted.id, events);
                }
                if let Err(Ok(admitted)) = reply.send(result) {
                    self.sessions.remove(&admitted.id);
                    self.core.leave(now, admitted.id, LeaveReason::Left);
                }
            }
            Request::Ingest { id, packets } => {
                self.core
                    .ingest(now, id, TransportContext::default(), packets);
                self.observe_forwarding(now);
            }
            Request::SourceState { id, state, detail } => {
                self.core.set_source_state(id, state, detail);
            }
            Request::NoteCall { id, note } => self.core.note_call(id, note),
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
                Output::KeyframeWanted(id) => {
                    if let Some(session) = self.sessions.get(&id) {
                        let _ = session.try_send(SessionEvent::KeyframeWanted);
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
                        let _ = cluster.send(ClusterEvent::CallRecord(Box::new(record)));
                    }
                }
            }
        }
    }
}
