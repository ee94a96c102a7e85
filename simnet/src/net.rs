//! The simulation: node cores, clients, the datagrams in flight between them, and one clock.

use crate::client::{Client, Offering};
use anyhow::{Context, anyhow};
use bytes::BytesMut;
use kaskade_media::cascade::control::LinkMessage;
use kaskade_media::cascade::link::LinkParams;
use kaskade_media::media::core::{CoreConfig, JoinRequest, MediaCore, Output};
use kaskade_media::media::ingest::Delivery;
use kaskade_media::media::peer::PeerSettings;
use kaskade_media::media::surroundings::Surroundings;
use kaskade_media::media::transport::Publication;
use kaskade_media::metrics::Metrics;
use kaskade_protocol::signaling::{MediaKind, Role, ServerMessage, Source, SourceKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::shared::marshal::Marshal;
use rtc::shared::{TransportContext, TransportProtocol};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node of the simulation, by its position (its cluster index is one more).
pub type NodeId = usize;

/// What a path does to the datagrams that cross it.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly up to this, per datagram (datagrams overtake each other).
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

/// A datagram on its way.
struct InFlight {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: BytesMut,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

struct Node {
    core: MediaCore,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
}

/// Node cores and clients on one simulated clock and network.
pub struct Sim {
    /// The simulated time.
    pub now: Instant,
    nodes: Vec<Node>,
    /// The clients, by the index [`Sim::join`] returned.
    pub clients: Vec<Client>,
    /// The meeting each client is in, and whether it is still there.
    memberships: Vec<(NodeId, String, bool)>,
    /// Sources (cameras): their id, node and meeting.
    sources: Vec<(kaskade_protocol::signaling::ParticipantId, NodeId, String)>,
    flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    rng: StdRng,
    impairments: HashMap<SocketAddr, Impairment>,
    /// What the paths between nodes do.
    pub link: Impairment,
    /// Clients that join from now on send transport-wide congestion feedback, as browsers do,
    /// and so get a downlink estimate at their node (its allocator then weighs their tiles
    /// against it).
    pub congestion_feedback: bool,
    /// Frames for participants and every other output the cores produced, by node.
    pub outputs: Vec<(NodeId, Output)>,
    /// The control messages each node sent over its links, in order.
    pub control_sent: Vec<(NodeId, LinkMessage)>,
    /// Datagrams that reached an address of neither a node nor a client (a subscribing
    /// source's shell): where to and what.
    pub delivered: Vec<(SocketAddr, BytesMut)>,
}

impl Sim {
    /// `nodes` cores (rooms of up to 10, cascade links between every pair), seeded with
    /// `seed` (the cores' randomness and the impairments').
    pub fn new(seed: u64, nodes: usize) -> Self {
        let now = Instant::now();
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| {
                let addr = node_addr(i);
                let metrics = Arc::new(Metrics::new());
                let mut core = MediaCore::new(
                    CoreConfig {
                        max_room_size: 10,
                        max_participants: 100,
                        first_is_moderator: false,
                        peer: Arc::new(PeerSettings {
                            udp_candidates: vec![addr],
                            tcp_candidates: vec![],
                            legacy_srtp: false,
                            max_slots: 9,
                        }),
                        node_name: format!("sim-{}", i + 1),
                    },
                    metrics.clone(),
                    Surroundings::seeded(now, 1_700_000_000_000, seed ^ i as u64),
                );
                core.set_node_index(i as u16 + 1);
                Node {
                    core,
                    addr,
                    metrics,
                }
            })
            .collect();
        let mut sim = Self {
            now,
            nodes,
            clients: Vec::new(),
            memberships: Vec::new(),
            sources: Vec::new(),
            flight: BinaryHeap::new(),
            order: 0,
            rng: StdRng::seed_from_u64(seed),
            impairments: HashMap::new(),
            link: Impairment::default(),
            congestion_feedback: false,
            control_sent: Vec::new(),
            outputs: Vec::new(),
            delivered: Vec::new(),
        };
        for a in 0..sim.nodes.len() {
            for b in 0..sim.nodes.len() {
                if a != b {
                    let params = LinkParams {
                        index: b as u16 + 1,
                        name: format!("sim-{}", b + 1),
                        media_addr: node_addr(b),
                        key: [0x42; 32],
                    };
                    sim.nodes[a].core.link_up(now, params);
                }
            }
        }
        sim.settle();
        sim
    }

    /// The metrics `node`'s core counts into.
    pub fn metrics(&self, node: NodeId) -> &Metrics {
        &self.nodes[node].metrics
    }

    /// The core of `node`.
    pub fn core(&mut self, node: NodeId) -> &mut MediaCore {
        &mut self.nodes[node].core
    }

    /// Joins a client to `meeting` on `node` as `name`, publishing audio and video on
    /// `publish`'s SSRCs (none: receiving only); returns its index. It connects as time runs.
    pub fn join(
        &mut self,
        node: NodeId,
        meeting: &str,
        name: &str,
        publish: Option<(u32, u32)>,
    ) -> anyhow::Result<usize> {
        self.join_offering(node, meeting, name, publish, &[])
    }

    /// Joins a client as [`Sim::join`] does, publishing audio on `audio_ssrc` and its video as
    /// simulcast layers with RTP stream ids `rids`, lowest first (the client writes each
    /// layer's rid and mid into its packets' header extensions: see `Sim::simulcast_packet`).
    pub fn join_simulcast(
        &mut self,
        node: NodeId,
        meeting: &str,
        name: &str,
        audio_ssrc: u32,
        rids: &[&str],
    ) -> anyhow::Result<usize> {
        self.join_offering(node, meeting, name, Some((audio_ssrc, 0)), rids)
    }

    fn join_offering(
        &mut self,
        node: NodeId,
        meeting: &str,
        name: &str,
        publish: Option<(u32, u32)>,
        rids: &[&str],
    ) -> anyhow::Result<usize> {
        let n = self.clients.len();
        let now = self.now;
        let node_addr = self.nodes[node].addr;
        let core = &mut self.nodes[node].core;
        let admitted = core
            .join(
                now,
                JoinRequest {
                    meeting: meeting.into(),
                    identity: name.into(),
                    name: name.into(),
                    role: Role::Participant,
                    rejoin: false,
                    kind: "synthetic".into(),
                },
            )
            .map_err(|(code, message)| anyhow!("{name} refused: {code}: {message}"))?;
        let ServerMessage::Welcome(welcome) = &admitted.welcome else {
            return Err(anyhow!("no welcome"));
        };
        let offering = Offering {
            publish,
            video_rids: rids,
            congestion_feedback: self.congestion_feedback,
        };
        let client = Client::negotiate(
            admitted.id,
            welcome,
            (client_addr(n), node_addr),
            &offering,
            n as u64,
            |offer| {
                core.offer(now, admitted.id, offer)
                    .map_err(|e| anyhow!("offer refused: {e}"))
            },
        )?;
        self.clients.push(client);
        self.memberships.push((node, meeting.into(), true));
        self.settle();
        Ok(n)
    }

    /// Joins a source (an RTSP camera, as the node's camera task would) to `meeting` on
    /// `node`, publishing H.264 on payload type 96 and Opus on 111; returns its participant id,
    /// with which [`Sim::ingest`] hands its packets in.
    pub fn join_source(
        &mut self,
        node: NodeId,
        meeting: &str,
        name: &str,
    ) -> anyhow::Result<kaskade_protocol::signaling::ParticipantId> {
        self.admit_source(node, meeting, name, None)
    }

    /// Joins a source that also takes the meeting's media (a SIP call, as the node's SIP
    /// gateway would), delivered as `delivery` says; what reaches its address collects in
    /// [`Sim::delivered`].
    pub fn join_subscribing_source(
        &mut self,
        node: NodeId,
        meeting: &str,
        name: &str,
        delivery: Delivery,
    ) -> anyhow::Result<kaskade_protocol::signaling::ParticipantId> {
        self.admit_source(node, meeting, name, Some(delivery))
    }

    fn admit_source(
        &mut self,
        node: NodeId,
        meeting: &str,
        name: &str,
        delivery: Option<Delivery>,
    ) -> anyhow::Result<kaskade_protocol::signaling::ParticipantId> {
        let request = JoinRequest::source(
            meeting.into(),
            format!("source:{name}"),
            name.into(),
            "camera",
        );
        let source = Source::live(SourceKind::Camera);
        let publication = Publication {
            payload_kinds: vec![(96, MediaKind::Video), (111, MediaKind::Audio)],
            audio_level_ext: None,
            cache_gop: delivery.is_none(),
        };
        let admitted = self.nodes[node]
            .core
            .join_source(self.now, request, source, publication, delivery)
            .map_err(|(code, message)| anyhow!("{name} refused: {code}: {message}"))?;
        self.sources.push((admitted.id, node, meeting.into()));
        self.settle();
        Ok(admitted.id)
    }

    /// Hands the core of `source`'s node one plain RTP packet of it.
    pub fn ingest(
        &mut self,
        source: kaskade_protocol::signaling::ParticipantId,
        packet: &rtc::rtp::Packet,
    ) -> anyhow::Result<()> {
        let node = self
            .sources
            .iter()
            .find(|(id, _, _)| *id == source)
            .map(|(_, node, _)| *node)
            .context("no such source")?;
        let bytes = packet.marshal().map_err(|e| anyhow!("{e}"))?;
        let now = self.now;
        self.nodes[node].core.ingest(
            now,
            source,
            TransportContext::default(),
            [BytesMut::from(&bytes[..])],
        );
        self.settle();
        Ok(())
    }

    /// Client `n` leaves its meeting.
    pub fn leave(&mut self, n: usize) {
        let (node, _, present) = &mut self.memberships[n];
        *present = false;
        let node = *node;
        let id = self.clients[n].id;
        self.nodes[node]
            .core
            .leave(self.now, id, kaskade_protocol::signaling::LeaveReason::Left);
        self.settle();
    }

    /// Takes `source` out of its meeting, as the node's shell does when a call ends.
    pub fn leave_source(&mut self, source: kaskade_protocol::signaling::ParticipantId) {
        if let Some(i) = self.sources.iter().position(|(id, _, _)| *id == source) {
            let (id, node, _) = self.sources.remove(i);
            self.nodes[node].core.leave(
                self.now,
                id,
                kaskade_protocol::signaling::LeaveReason::Left,
            );
            self.settle();
        }
    }

    /// Sets what the path between client `n` and its node does (both ways).
    pub fn impair(&mut self, n: usize, impairment: Impairment) {
        self.impairments.insert(self.clients[n].addr, impairment);
    }

    /// Client `n` sends `packet` (sealed with its SRTP keys) to its node.
    pub fn send_rtp(&mut self, n: usize, packet: &rtc::rtp::Packet) -> anyhow::Result<()> {
        let sealed = self.clients[n].seal_rtp(packet)?;
        self.send_from_client(n, sealed);
        Ok(())
    }

    /// Client `n` asks for a keyframe on its consumer `ssrc`.
    pub fn send_pli(&mut self, n: usize, ssrc: u32) -> anyhow::Result<()> {
        let sealed = self.clients[n].seal_pli(ssrc)?;
        self.send_from_client(n, sealed);
        Ok(())
    }

    /// Runs until every present client is connected, or fails after `limit` of simulated
    /// time.
    pub fn connect_all(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = self.now + limit;
        while self.now < deadline {
            let connected = self
                .clients
                .iter()
                .zip(&self.memberships)
                .all(|(c, m)| !m.2 || c.connected());
            if connected {
                // the core sees the last DTLS flight arrive a path's delay later
                self.run_for(Duration::from_millis(100));
                return Ok(());
            }
            self.step(deadline);
        }
        Err(anyhow!("clients not connected within {limit:?}"))
    }

    /// Runs the simulation for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step(until);
        }
    }

    /// Moves time to the earliest thing due (no later than `until`) and handles it.
    fn step(&mut self, until: Instant) {
        let next = [
            self.flight.peek().map(|Reverse(f)| f.at),
            self.nodes
                .iter_mut()
                .filter_map(|n| n.core.poll_timeout())
                .min(),
            self.clients
                .iter_mut()
                .zip(&self.memberships)
                .filter(|(_, m)| m.2)
                .filter_map(|(c, _)| c.poll_timeout())
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(until)
        .clamp(self.now, until);
        self.now = next;
        while self
            .flight
            .peek()
            .is_some_and(|Reverse(f)| f.at <= self.now)
        {
            if let Some(Reverse(datagram)) = self.flight.pop() {
                self.deliver(datagram);
            }
        }
        for node in 0..self.nodes.len() {
            if self.nodes[node]
                .core
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.nodes[node].core.handle_timeout(self.now);
            }
        }
        for n in 0..self.clients.len() {
            if self.memberships[n].2 {
                let out = self.clients[n].poll(self.now);
                for datagram in out {
                    self.send_from_client(n, datagram);
                }
            }
        }
        self.settle();
    }

    fn deliver(&mut self, datagram: InFlight) {
        if let Some(node) = self.nodes.iter().position(|n| n.addr == datagram.to) {
            let transport = TransportContext {
                local_addr: datagram.to,
                peer_addr: datagram.from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            };
            self.nodes[node]
                .core
                .handle_datagram(self.now, transport, datagram.bytes);
        } else if let Some(n) = self.clients.iter().position(|c| c.addr == datagram.to) {
            if self.memberships[n].2 {
                let answers = self.clients[n].receive(self.now, &datagram.bytes);
                for answer in answers {
                    self.send_from_client(n, answer);
                }
            }
        } else {
            self.delivered.push((datagram.to, datagram.bytes));
        }
    }

    fn send_from_client(&mut self, n: usize, bytes: BytesMut) {
        let (from, to) = (self.clients[n].addr, self.clients[n].node);
        let impairment = self.impairments.get(&from).copied().unwrap_or_default();
        self.launch(from, to, bytes, impairment);
    }

    fn launch(&mut self, from: SocketAddr, to: SocketAddr, bytes: BytesMut, path: Impairment) {
        if path.loss > 0.0 && self.rng.random_bool(path.loss.min(1.0)) {
            return;
        }
        let jitter = if path.jitter.is_zero() {
            Duration::ZERO
        } else {
            path.jitter.mul_f64(self.rng.random::<f64>())
        };
        self.order += 1;
        self.flight.push(Reverse(InFlight {
            at: self.now + path.delay + jitter,
            order: self.order,
            from,
            to,
            bytes,
        }));
    }

    /// Drains every core: datagrams onto their paths, cascade control messages to their
    /// peers at once (the control channel is reliable), everything else into `outputs`.
    fn settle(&mut self) {
        let mut control: VecDeque<(NodeId, u16, kaskade_media::cascade::control::LinkMessage)> =
            VecDeque::new();
        loop {
            for node in 0..self.nodes.len() {
                while let Some(transmit) = self.nodes[node].core.poll_transmit() {
                    let to = transmit.transport.peer_addr;
                    let path = if self.nodes.iter().any(|n| n.addr == to) {
                        self.link
                    } else {
                        self.impairments.get(&to).copied().unwrap_or_default()
                    };
                    let from = self.nodes[node].addr;
                    self.launch(from, to, transmit.message, path);
                }
                while let Some(output) = self.nodes[node].core.poll_output() {
                    match output {
                        Output::Link(peer, message) => {
                            self.control_sent.push((node, message.clone()));
                            control.push_back((peer as usize - 1, node as u16 + 1, message));
                        }
                        Output::FindPeers(meeting) => self.find_peers(node, &meeting),
                        other => self.outputs.push((node, other)),
                    }
                }
            }
            let Some((to, from_index, message)) = control.pop_front() else {
                break;
            };
            if let Some(peer) = self.nodes.get_mut(to) {
                peer.core.link_message(self.now, from_index, message);
            }
        }
    }

    /// A meeting opened on `node`: it is shared with every node that has a client in it.
    fn find_peers(&mut self, node: NodeId, meeting: &str) {
        let mut others: Vec<NodeId> = self
            .memberships
            .iter()
            .filter(|(n, m, present)| *present && *n != node && m == meeting)
            .map(|(n, _, _)| *n)
            .chain(
                self.sources
                    .iter()
                    .filter(|(_, n, m)| *n != node && m == meeting)
                    .map(|(_, n, _)| *n),
            )
            .collect();
        others.sort_unstable();
        others.dedup();
        for other in others {
            self.nodes[node].core.attach(other as u16 + 1, meeting);
        }
    }

    /// The participant id of client `n`.
    pub fn id(&self, n: usize) -> kaskade_protocol::signaling::ParticipantId {
        self.clients[n].id
    }

    /// The consumer SSRC on which client `n` receives `publisher`'s `kind`, from the last
    /// `slots` frame its node sent it.
    pub fn consumer_of(&self, n: usize, publisher: usize, kind: MediaKind) -> anyhow::Result<u32> {
        self.consumer_of_id(n, self.clients[publisher].id, kind)
    }

    /// The consumer SSRC on which client `n` receives the participant `them`'s `kind` (a
    /// source, say).
    pub fn consumer_of_id(
        &self,
        n: usize,
        them: kaskade_protocol::signaling::ParticipantId,
        kind: MediaKind,
    ) -> anyhow::Result<u32> {
        let (node, _, _) = &self.memberships[n];
        let me = self.clients[n].id;
        let mid = self
            .outputs
            .iter()
            .rev()
            .find_map(|(from, output)| match output {
                Output::Send(to, ServerMessage::Slots { slots }) if from == node && *to == me => {
                    Some(slots)
                }
                _ => None,
            })
            .context("no slots frame")?
            .iter()
            .find(|s| s.participant == them && s.kind == kind)
            .map(|s| s.mid.clone())
            .context("no slot carries that publisher")?;
        self.clients[n]
            .slot_ssrc(&mid)
            .context("the answer has no such mid")
    }
}

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 10_000))
}

fn client_addr(n: usize) -> SocketAddr {
    SocketAddr::from(([192, 168, 0, n as u8 + 1], 40_000 + n as u16))
}
