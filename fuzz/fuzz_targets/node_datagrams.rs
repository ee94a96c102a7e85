//! Whole datagrams into a real node media core (`media::core::MediaCore`) with a participant
//! joined and negotiated, a cascade link up and a relayed participant of the peer node in the
//! meeting: everything a datagram meets on the node's shared socket before and around SRTP
//! authentication. The core's first byte test sends 0xCA datagrams to the link
//! (`frame::parse_header`, the cipher, `frame::decode`, relayed RTP into the fan-out, keyframe
//! requests, NACKs); the rest goes through `demux::malformed`, `Demuxer::route` (STUN USERNAME)
//! and the participant's connection (rtc's ICE-lite agent, DTLS server, SRTP), whose output
//! the core handles. The participant is the load generator's lean client in-process: it
//! answers the node's STUN and runs a real DTLS handshake once ICE succeeded, so fuzzed
//! datagrams also land in the middle of a handshake and after it. Signaling frames (offers,
//! mutes, moderation, locks) and the peer's control messages interleave with the datagrams.
//!
//! Input: records `op | len | body`, `op % 8`: 0 a datagram from the address `op >> 3 & 3`
//! (0 is the participant's) over UDP; 1 the same as an ICE-TCP frame; 2 the participant `op >>
//! 3 & 1` sends a valid STUN check (USE-CANDIDATE); 3 the peer node seals the body as a link
//! frame and sends it; 4 the body is the JSON of a control message from the peer; 5 the body is
//! a signaling frame of the participant; 6 time passes (`u16` ms) and timers run; 7 another
//! participant joins.
//!
//! Negotiating the participant's offer costs far more than an input, so the core is kept from
//! one input to the next and made anew every 256 inputs, or once its first participant has
//! left (a crash found after others is replayed from a fresh core: the input alone usually
//! reproduces it).
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kaskade_fuzz::node::{self, Client};
use kaskade_fuzz::ops::{Fields, Records};
use kaskade_protocol::signaling::{ClientMessage, MediaKind, ParticipantInfo, Role};
use kaskade_sfu::cascade::cipher::LinkCipher;
use kaskade_sfu::cascade::control::LinkMessage;
use kaskade_sfu::media::core::MediaCore;
use kaskade_sfu::signaling::session::parse;
use libfuzzer_sys::fuzz_target;
use rtc::crypto::RTCCryptoProvider;
use rtc::shared::TransportProtocol;

fn provider() -> &'static dyn RTCCryptoProvider {
    static PROVIDER: OnceLock<std::sync::Arc<dyn RTCCryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(node::provider).as_ref()
}

fn setup(now: Instant) -> (MediaCore, Vec<Client>) {
    let mut core = node::core(3, 2);
    let client = node::join_client(&mut core, now, 0).expect("the first participant joins");
    core.link_up(now, node::link_params());
    core.attach(node::PEER_INDEX, node::MEETING);
    core.link_message(
        now,
        node::PEER_INDEX,
        LinkMessage::Participant {
            meeting: node::MEETING.into(),
            participant: ParticipantInfo {
                id: node::REMOTE_ID,
                identity: Some("remote".into()),
                name: "Remote".into(),
                role: Role::Moderator,
                audio_muted: false,
                video_muted: false,
                source: None,
            },
            payload_kinds: vec![(111, MediaKind::Audio), (102, MediaKind::Video)],
            cache_gop: false,
        },
    );
    while core.poll_output().is_some() {}
    (core, vec![client])
}

/// Inputs after which the core is made anew.
const FRESH_EVERY: u32 = 256;

struct World {
    core: MediaCore,
    clients: Vec<Client>,
    peer: LinkCipher,
    now: Instant,
    inputs: u32,
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let crypto = provider();
    WORLD.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell
            .as_ref()
            .is_none_or(|w| w.inputs >= FRESH_EVERY || w.core.participant_count() == 0)
        {
            let now = Instant::now();
            let (core, clients) = setup(now);
            *cell = Some(World {
                core,
                clients,
                peer: node::peer_media_cipher(),
                now,
                inputs: 0,
            });
        }
        let World {
            core,
            clients,
            peer,
            now,
            inputs,
        } = cell.as_mut().expect("a world");
        *inputs += 1;
        run(core, clients, peer, now, data, crypto);
    });
});

fn run(
    core: &mut MediaCore,
    clients: &mut Vec<Client>,
    peer: &mut LinkCipher,
    now: &mut Instant,
    data: &[u8],
    crypto: &dyn RTCCryptoProvider,
) {
    for (op, body) in Records::new(data) {
        match op % 8 {
            0 | 1 => {
                let protocol = if op % 8 == 0 {
                    TransportProtocol::UDP
                } else {
                    TransportProtocol::TCP
                };
                let source = node::client_addr((op >> 3) & 3);
                core.handle_datagram(*now, node::from(source, protocol), BytesMut::from(body));
            }
            2 => {
                let n = usize::from((op >> 3) & 1) % clients.len();
                clients[n].check(core, *now, crypto);
            }
            3 => {
                let datagram = node::sealed_link_datagram(peer, body);
                let source = node::PEER_ADDR.parse().expect("an address");
                core.handle_datagram(*now, node::from(source, TransportProtocol::UDP), datagram);
            }
            4 => {
                if let Ok(message) = serde_json::from_slice::<LinkMessage>(body) {
                    core.link_message(*now, node::PEER_INDEX, message);
                }
            }
            5 => {
                let Ok(text) = std::str::from_utf8(body) else {
                    continue;
                };
                let id = clients[0].id;
                match parse(text) {
                    Ok(ClientMessage::Offer { sdp }) => {
                        let _ = core.offer(*now, id, sdp);
                    }
                    Ok(message) => core.client_message(*now, id, message),
                    Err(_) => {}
                }
            }
            6 => {
                let ms = u64::from(Fields::new(body).u16());
                *now += Duration::from_millis(ms);
                core.handle_timeout(*now);
            }
            _ => {
                if clients.len() < 3
                    && let Some(client) = node::join_client(core, *now, clients.len() as u8)
                {
                    clients.push(client);
                }
            }
        }
        node::pump(core, clients, *now, crypto);
    }
}
