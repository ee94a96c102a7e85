//! A node's media core driven in-process, with participants that are the load generator's lean
//! client (its hand-written offer, its STUN checks, its DTLS client and SRTP contexts), so a
//! fuzz target can put datagrams into the core at any stage: before ICE, during DTLS, or as
//! SRTP the core decrypts.
//!
//! Everything is deterministic but the keys (ICE passwords and DTLS keys are random in the
//! core), and the clock is virtual: time only moves when the harness moves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kaskade_loadtest::lean::dtls::{self, DtlsClient, SrtpContexts};
use kaskade_loadtest::lean::ice::{Credentials, IceChecks};
use kaskade_loadtest::lean::sdp::{self, Answer, OfferParams};
use kaskade_protocol::signaling::{ParticipantId, Role, ServerMessage};
use kaskade_sfu::cascade::cipher::{Channel, LinkCipher};
use kaskade_sfu::cascade::frame;
use kaskade_sfu::cascade::link::LinkParams;
use kaskade_sfu::media::core::{CoreConfig, JoinRequest, MediaCore, Output};
use kaskade_sfu::media::peer::PeerSettings;
use kaskade_sfu::media::surroundings::Surroundings;
use kaskade_sfu::metrics::Metrics;
use rtc::crypto::RTCCryptoProvider;
use rtc::shared::{TransportContext, TransportProtocol};

/// The node's media address (its one UDP candidate, and its ICE-TCP candidate).
pub const NODE_ADDR: &str = "10.0.0.1:10000";
/// The meeting every harness participant joins.
pub const MEETING: &str = "fuzz";
/// This node's index in the cluster.
pub const NODE_INDEX: u16 = 1;
/// The index of the peer node a cascade link goes to.
pub const PEER_INDEX: u16 = 2;
/// The key of the cascade link.
pub const LINK_KEY: [u8; 32] = [0x5a; 32];
/// The peer node's media address.
pub const PEER_ADDR: &str = "10.0.0.2:10000";
/// The participant id of the first participant the core admits (`NODE_INDEX << 20 | 1`).
pub const FIRST_ID: ParticipantId = ParticipantId::from_wire((NODE_INDEX as u32) << 20 | 1);
/// A participant id of the peer node (`PEER_INDEX << 20 | 1`).
pub const REMOTE_ID: ParticipantId = ParticipantId::from_wire((PEER_INDEX as u32) << 20 | 1);
/// SSRCs the harness participants publish on: participant `n` sends audio on
/// `AUDIO_SSRC + n` and video on `VIDEO_SSRC + n`.
pub const AUDIO_SSRC: u32 = 0x1111_0000;
/// See [`AUDIO_SSRC`].
pub const VIDEO_SSRC: u32 = 0x2222_0000;
/// Steps of virtual time tried while connecting.
const CONNECT_ROUNDS: usize = 200;
/// Datagrams moved between the core and the clients in one pump at most.
const PUMP_LIMIT: usize = 10_000;

/// The node's media address, parsed.
pub fn node_addr() -> SocketAddr {
    NODE_ADDR.parse().expect("a socket address")
}

/// The address of the harness client `n` (one per client, distinct from the node's).
pub fn client_addr(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 168, 0, n.wrapping_add(1)], 40_000 + u16::from(n)))
}

/// The transport of a datagram from `peer` to the node.
pub fn from(peer: SocketAddr, protocol: TransportProtocol) -> TransportContext {
    TransportContext {
        local_addr: node_addr(),
        peer_addr: peer,
        ecn: None,
        transport_protocol: protocol,
    }
}

/// A core with the limits the harness uses: rooms of `max_room_size`, `max_slots` receive
/// slots per kind, legacy SRTP profiles offered, a UDP and a TCP candidate.
pub fn core(max_room_size: usize, max_slots: usize) -> MediaCore {
    let mut core = MediaCore::new(
        CoreConfig {
            max_room_size,
            max_participants: 16,
            first_is_moderator: true,
            peer: Arc::new(PeerSettings {
                udp_candidates: vec![node_addr()],
                tcp_candidates: vec![node_addr()],
                legacy_srtp: true,
                max_slots,
            }),
            node_name: "fuzz-node".into(),
        },
        Arc::new(Metrics::new()),
        Surroundings::seeded(Instant::now(), 1_700_000_000_000, 1),
    );
    core.set_node_index(NODE_INDEX);
    core
}

/// The parameters of a cascade link from this node to [`PEER_INDEX`].
pub fn link_params() -> LinkParams {
    LinkParams {
        index: PEER_INDEX,
        name: "fuzz-peer".into(),
        media_addr: PEER_ADDR.parse().expect("a socket address"),
        key: LINK_KEY,
    }
}

/// The peer node's end of the cascade link's media channel: seals what the peer would send.
pub fn peer_media_cipher() -> LinkCipher {
    LinkCipher::new(&LINK_KEY, PEER_INDEX, NODE_INDEX, Channel::Media).expect("a 32-byte key")
}

/// A link datagram from the peer carrying `frame` (any bytes), sealed with the link key.
pub fn sealed_link_datagram(cipher: &mut LinkCipher, frame_bytes: &[u8]) -> BytesMut {
    let mut buf = frame::start_datagram(PEER_INDEX, frame_bytes.len());
    buf.extend_from_slice(frame_bytes);
    cipher.seal(&mut buf, frame::HEADER_LEN, frame::COUNTER_AT);
    buf
}

/// The crypto provider the lean client uses.
pub fn provider() -> Arc<dyn RTCCryptoProvider> {
    dtls::provider().expect("rtc's crypto provider")
}

/// One harness participant: the lean client's pieces, in-process.
pub struct Client {
    /// Its participant id.
    pub id: ParticipantId,
    /// Its media address.
    pub addr: SocketAddr,
    /// What it offered.
    pub offer: OfferParams,
    /// The node's answer.
    pub answer: Answer,
    ice: IceChecks,
    ice_answered: bool,
    dtls: Option<DtlsClient>,
    /// Its SRTP contexts, once DTLS completed.
    pub srtp: Option<SrtpContexts>,
    /// When it last sent a consent check.
    last_check: Option<Instant>,
}

impl Client {
    /// Whether DTLS completed.
    pub fn connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Sends a fresh binding request (USE-CANDIDATE, keyed with the node's password).
    pub fn check(&mut self, core: &mut MediaCore, now: Instant, crypto: &dyn RTCCryptoProvider) {
        if let Ok(request) = self.ice.request(crypto.crypto()) {
            self.last_check = Some(now);
            core.handle_datagram(
                now,
                from(self.addr, TransportProtocol::UDP),
                BytesMut::from(&request[..]),
            );
        }
    }

    /// Sends a consent check when the last one is two seconds old.
    pub fn keep_alive(
        &mut self,
        core: &mut MediaCore,
        now: Instant,
        crypto: &dyn RTCCryptoProvider,
    ) {
        if self
            .last_check
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(2))
        {
            self.check(core, now, crypto);
        }
    }

    /// Handles one datagram the node sent to this client.
    fn receive(
        &mut self,
        core: &mut MediaCore,
        now: Instant,
        datagram: &[u8],
        crypto: &dyn RTCCryptoProvider,
    ) {
        let back = from(self.addr, TransportProtocol::UDP);
        match datagram.first() {
            Some(0..=3) => {
                if let Some(answer) =
                    self.ice
                        .answer_request(datagram, node_addr(), crypto.crypto())
                {
                    core.handle_datagram(now, back, BytesMut::from(&answer[..]));
                    if !self.ice_answered {
                        self.check(core, now, crypto);
                    }
                } else if self.ice.is_answer(datagram, now, crypto.crypto()) && !self.ice_answered {
                    self.ice_answered = true;
                    if let Ok(dtls) =
                        DtlsClient::connect(now, self.addr, node_addr(), &self.answer.fingerprint)
                    {
                        self.dtls = Some(dtls);
                        self.flush_dtls(core, now);
                    }
                }
            }
            Some(20..=63) => {
                let Some(dtls) = &mut self.dtls else {
                    return;
                };
                if let Ok(Some(srtp)) = dtls.handle(now, datagram) {
                    self.srtp = Some(srtp);
                }
                self.flush_dtls(core, now);
            }
            _ => {}
        }
    }

    fn flush_dtls(&mut self, core: &mut MediaCore, now: Instant) {
        let Some(dtls) = &mut self.dtls else {
            return;
        };
        let back = from(self.addr, TransportProtocol::UDP);
        while let Some(datagram) = dtls.poll_transmit() {
            core.handle_datagram(now, back, datagram);
        }
    }

    fn handle_timeout(&mut self, core: &mut MediaCore, now: Instant) {
        if let Some(dtls) = &mut self.dtls
            && dtls.poll_timeout().is_some_and(|t| t <= now)
        {
            let _ = dtls.handle_timeout(now);
            self.flush_dtls(core, now);
        }
    }
}

/// Joins client number `n` to [`MEETING`] and negotiates its offer (publishing audio and
/// video on the SSRCs of [`AUDIO_SSRC`]); `None` if the core refuses.
pub fn join_client(core: &mut MediaCore, now: Instant, n: u8) -> Option<Client> {
    let admitted = core
        .join(
            now,
            JoinRequest {
                meeting: MEETING.into(),
                identity: format!("fuzz-{n}"),
                name: format!("Fuzz {n}"),
                role: Role::Participant,
                rejoin: false,
                kind: "synthetic".into(),
            },
        )
        .ok()?;
    let ServerMessage::Welcome(welcome) = &admitted.welcome else {
        return None;
    };
    let (_, fingerprint) = dtls::identity().ok()?;
    let offer = OfferParams {
        ufrag: format!("fuzz{n}"),
        pwd: format!("fuzz-client-password-{n:03}"),
        fingerprint: fingerprint.clone(),
        audio_ssrc: Some(AUDIO_SSRC + u32::from(n)),
        video_ssrc: Some(VIDEO_SSRC + u32::from(n)),
        video_rids: Vec::new(),
        cname: format!("fuzzcname{n}"),
        recv_slots: welcome.recv_slots,
        rtx: true,
        red: true,
        congestion_feedback: true,
    };
    let answer_sdp = core.offer(now, admitted.id, sdp::offer(&offer)).ok()?;
    let answer = Answer::parse(&answer_sdp).ok()?;
    let ice = IceChecks::new(
        Credentials::of(&offer, &answer),
        0x0123_4567_89ab_cdef ^ u64::from(n),
    );
    Some(Client {
        id: admitted.id,
        addr: client_addr(n),
        offer,
        answer,
        ice,
        ice_answered: false,
        dtls: None,
        srtp: None,
        last_check: None,
    })
}

/// Moves datagrams from the core to the clients (who answer at once) until nothing moves;
/// returns the core's outputs for the signaling layer met on the way.
pub fn pump(
    core: &mut MediaCore,
    clients: &mut [Client],
    now: Instant,
    crypto: &dyn RTCCryptoProvider,
) -> Vec<Output> {
    let mut outputs = Vec::new();
    for _ in 0..PUMP_LIMIT {
        let Some(transmit) = core.poll_transmit() else {
            break;
        };
        let to = transmit.transport.peer_addr;
        if let Some(client) = clients.iter_mut().find(|c| c.addr == to) {
            client.receive(core, now, &transmit.message, crypto);
        }
        outputs.extend(std::iter::from_fn(|| core.poll_output()));
    }
    outputs.extend(std::iter::from_fn(|| core.poll_output()));
    outputs
}

/// Runs ICE and DTLS for every client on virtual time from `now` (advanced); true when all of
/// them are connected.
pub fn connect(
    core: &mut MediaCore,
    clients: &mut [Client],
    now: &mut Instant,
    crypto: &dyn RTCCryptoProvider,
) -> bool {
    for _ in 0..CONNECT_ROUNDS {
        for client in clients.iter_mut().filter(|c| !c.ice_answered) {
            client.check(core, *now, crypto);
        }
        pump(core, clients, *now, crypto);
        if clients.iter().all(Client::connected) {
            // let the core see the connections come up
            core.handle_timeout(*now);
            pump(core, clients, *now, crypto);
            return true;
        }
        *now += Duration::from_millis(20);
        core.handle_timeout(*now);
        for client in clients.iter_mut() {
            client.handle_timeout(core, *now);
        }
    }
    false
}

/// Moves virtual time forward by `by`, runs the core's and the clients' timers and keeps the
/// clients' consent fresh.
pub fn advance(
    core: &mut MediaCore,
    clients: &mut [Client],
    now: &mut Instant,
    by: Duration,
    crypto: &dyn RTCCryptoProvider,
) -> Vec<Output> {
    *now += by;
    for client in clients.iter_mut() {
        client.keep_alive(core, *now, crypto);
        client.handle_timeout(core, *now);
    }
    core.handle_timeout(*now);
    pump(core, clients, *now, crypto)
}
