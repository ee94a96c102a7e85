//! RTP and RTCP as the node handles them once SRTP has authenticated them: two participants
//! (the load generator's lean client, in-process) connected to a real media core over real
//! ICE, DTLS and SRTP, each publishing audio and video and subscribed to the other. What the
//! fuzzer writes is encrypted with the participant's SRTP keys, so it reaches everything behind
//! the decryption: rtc's RTP/RTCP unmarshalling and inbound interceptors (NACK generator,
//! receiver reports, TWCC), `core::packets::on_rtp` (payload type to kind, the audio level
//! extension, H.264 keyframe detection, mute), the fan-out with `OutboundStream` rewriting into
//! the other participant's slots and its outbound interceptors (NACK responder, sender
//! reports), and `on_rtcp` (PLI/FIR relayed to the publisher, coalesced).
//!
//! Input: records `op | len | body`; bit 4 of the op picks the participant, its low 4 bits
//! modulo 5 what happens: 0 the body
//! is an RTP packet (its sequence number is replaced by one that moves forward by 1 to 3 per
//! SSRC, as SRTP's replay window wants); 1 the body is RTCP (compound); 2 time passes (`u16`
//! ms, timers and consent checks run); 3 a packet of the participant's own audio or video
//! stream (`kind | marker | timestamp step (u16) | level | payload`: the right SSRC, payload
//! type and audio level extension, so the payload reaches the forwarder); 4 the body is a
//! signaling frame of the participant (mute, moderation, lock).
//!
//! Connecting takes a DTLS handshake, so the two participants and the core are kept from one
//! input to the next and made anew every 20 000 inputs, or when a participant has left.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaskade_fuzz::node::{self, Client};
use kaskade_fuzz::ops::{Fields, Records};
use kaskade_loadtest::lean::sdp::AUDIO_LEVEL_EXT_ID;
use kaskade_protocol::signaling::{MediaKind, ServerMessage};
use kaskade_sfu::media::core::{MediaCore, Output};
use kaskade_sfu::signaling::session::parse;
use libfuzzer_sys::fuzz_target;
use rtc::crypto::RTCCryptoProvider;
use rtc::shared::TransportProtocol;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};

/// Inputs after which the world is made anew.
const FRESH_EVERY: u32 = 20_000;
/// SSRCs whose sequence numbers are remembered at most.
const MAX_STREAMS: usize = 4096;

struct World {
    core: MediaCore,
    clients: Vec<Client>,
    now: Instant,
    provider: Arc<dyn RTCCryptoProvider>,
    next_seq: HashMap<(usize, u32), u16>,
    media_ts: [u32; 4],
    inputs: u32,
    broken: bool,
}

impl World {
    fn new() -> Self {
        let provider = node::provider();
        let mut now = Instant::now();
        let mut core = node::core(2, 1);
        let mut clients: Vec<Client> = (0..2)
            .map(|n| node::join_client(&mut core, now, n).expect("a participant joins"))
            .collect();
        assert!(
            node::connect(&mut core, &mut clients, &mut now, provider.as_ref()),
            "the harness participants did not connect"
        );
        Self {
            core,
            clients,
            now,
            provider,
            next_seq: HashMap::new(),
            media_ts: [0; 4],
            inputs: 0,
            broken: false,
        }
    }

    /// The next sequence number of `ssrc` from participant `n`: 1 to 3 past the last one.
    fn sequence(&mut self, n: usize, ssrc: u32, wanted: u16) -> u16 {
        if self.next_seq.len() >= MAX_STREAMS && !self.next_seq.contains_key(&(n, ssrc)) {
            self.next_seq.clear();
        }
        let next = self.next_seq.entry((n, ssrc)).or_insert(wanted);
        let seq = next.wrapping_add(wanted % 3);
        *next = seq.wrapping_add(1);
        seq
    }

    fn send_rtp(&mut self, n: usize, mut plain: Vec<u8>) {
        if plain.len() < 12 {
            return;
        }
        plain[0] = 0x80 | (plain[0] & 0x3f);
        let ssrc = u32::from_be_bytes([plain[8], plain[9], plain[10], plain[11]]);
        let seq = self.sequence(n, ssrc, u16::from_be_bytes([plain[2], plain[3]]));
        plain[2..4].copy_from_slice(&seq.to_be_bytes());
        let client = &mut self.clients[n];
        let Some(srtp) = &mut client.srtp else {
            return;
        };
        // rtc-rtp lets a one-byte extension element run past the extension's declared length,
        // and rtc-srtp then splits the packet at the re-measured header length, which panics
        // when that lies past the end. No sender can seal such a packet, and the node's
        // decryption refuses one (its length check comes before the split), so it is skipped.
        let mut header_bytes = plain.as_slice();
        let Ok(header) = rtc::rtp::Header::unmarshal(&mut header_bytes) else {
            return;
        };
        if header.marshal_size() > plain.len() {
            return;
        }
        if let Ok(sealed) = srtp.local.encrypt_rtp_with_header(&plain, &header) {
            let from = node::from(client.addr, TransportProtocol::UDP);
            self.core.handle_datagram(self.now, from, sealed);
        }
    }

    fn send_rtcp(&mut self, n: usize, mut plain: Vec<u8>) {
        if plain.len() < 8 {
            return;
        }
        plain[0] = 0x80 | (plain[0] & 0x3f);
        let client = &mut self.clients[n];
        let Some(srtp) = &mut client.srtp else {
            return;
        };
        if let Ok(sealed) = srtp.local.encrypt_rtcp(&plain) {
            let from = node::from(client.addr, TransportProtocol::UDP);
            self.core.handle_datagram(self.now, from, sealed);
        }
    }

    /// A packet of participant `n`'s own stream, carrying the payload the input gives.
    fn send_media(&mut self, n: usize, body: &[u8]) {
        let mut f = Fields::new(body);
        let kind = if f.bool() {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let marker = f.bool();
        let step = u32::from(f.u16());
        let level = f.u8();
        let payload = f.rest();
        let answer = &self.clients[n].answer;
        let Some(section) = answer.publish_section(kind) else {
            return;
        };
        let payload_type = section.payload_types.first().copied().unwrap_or(0);
        let (ssrc, stream) = match kind {
            MediaKind::Audio => (node::AUDIO_SSRC + n as u32, n * 2),
            MediaKind::Video => (node::VIDEO_SSRC + n as u32, n * 2 + 1),
        };
        self.media_ts[stream] = self.media_ts[stream].wrapping_add(step);
        let mut header = rtc::rtp::header::Header {
            version: 2,
            marker,
            payload_type,
            timestamp: self.media_ts[stream],
            ssrc,
            ..Default::default()
        };
        if kind == MediaKind::Audio {
            let id = section.audio_level_ext.unwrap_or(AUDIO_LEVEL_EXT_ID);
            let _ = header.set_extension(id, bytes::Bytes::copy_from_slice(&[level]));
        }
        let packet = rtc::rtp::Packet {
            header,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        if let Ok(raw) = packet.marshal() {
            self.send_rtp(n, raw.to_vec());
        }
    }

    fn pump(&mut self) {
        let outputs = node::pump(
            &mut self.core,
            &mut self.clients,
            self.now,
            self.provider.as_ref(),
        );
        self.note(outputs);
    }

    fn note(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Close(_) | Output::Send(_, ServerMessage::Removed { .. }) => {
                    self.broken = true;
                }
                _ => {}
            }
        }
        if self.core.participant_count() != self.clients.len() {
            self.broken = true;
        }
    }
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell
            .as_ref()
            .is_none_or(|w| w.broken || w.inputs >= FRESH_EVERY)
        {
            *cell = Some(World::new());
        }
        let world = cell.as_mut().expect("a world");
        world.inputs += 1;
        for (op, body) in Records::new(data) {
            if world.broken {
                break;
            }
            let n = usize::from((op >> 4) & 1);
            match (op & 0x0f) % 5 {
                0 => world.send_rtp(n, body.to_vec()),
                1 => world.send_rtcp(n, body.to_vec()),
                2 => {
                    let ms = u64::from(Fields::new(body).u16());
                    let outputs = node::advance(
                        &mut world.core,
                        &mut world.clients,
                        &mut world.now,
                        Duration::from_millis(ms),
                        world.provider.as_ref(),
                    );
                    world.note(outputs);
                }
                3 => world.send_media(n, body),
                _ => {
                    let Ok(text) = std::str::from_utf8(body) else {
                        continue;
                    };
                    if let Ok(message) = parse(text) {
                        let id = world.clients[n].id;
                        world.core.client_message(world.now, id, message);
                    }
                }
            }
            world.pump();
        }
    });
});
