//! The first thing every datagram on the node's UDP socket meets, before any authentication:
//! `media::demux::malformed` (RFC 7983 first byte, minimum sizes) and `Demuxer::route`, which
//! learns four-tuples from STUN USERNAME (the ufrag names the participant).
//!
//! Input: records `op | len | datagram`; the op's low 3 bits pick one of 8 remote addresses,
//! bit 3 the transport (UDP, or TCP as ICE-TCP frames arrive), bit 4 makes the record a
//! `remove` of the participant named by the datagram's first 4 bytes (who has then left for
//! good). The demuxer is checked against a model of its rules: a known tuple routes to its
//! participant, an unknown one only by a STUN USERNAME naming a participant still present, at
//! most 8 tuples per participant (oldest dropped).
#![no_main]

use std::collections::{HashMap, HashSet};

use kaskade_fuzz::ops::Records;
use kaskade_sfu::media::demux::{Demuxer, ParticipantId, malformed};
use kaskade_sfu::metrics::Dropped;
use libfuzzer_sys::fuzz_target;
use rtc::shared::{FourTuple, TransportContext, TransportProtocol};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, is_stun_message};
use rtc::stun::textattrs::Username;

const MAX_TUPLES: usize = 8;

fn transport(op: u8) -> TransportContext {
    TransportContext {
        local_addr: "10.0.0.1:10000".parse().unwrap(),
        peer_addr: std::net::SocketAddr::from(([192, 168, 1, 1], 50_000 + u16::from(op & 7))),
        ecn: None,
        transport_protocol: if op & 8 != 0 {
            TransportProtocol::TCP
        } else {
            TransportProtocol::UDP
        },
    }
}

/// The participant a STUN message's USERNAME names, read independently of the demuxer.
fn named_participant(datagram: &[u8]) -> Option<ParticipantId> {
    if !is_stun_message(datagram) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    let username = Username::get_from_as(&message, ATTR_USERNAME).ok()?;
    let (local, _) = username.text.split_once(':')?;
    u32::from_str_radix(local.get(..8)?, 16)
        .ok()
        .map(ParticipantId::from)
}

#[derive(Default)]
struct Model {
    affinity: HashMap<FourTuple, ParticipantId>,
    tuples: HashMap<ParticipantId, Vec<FourTuple>>,
}

impl Model {
    fn route(
        &mut self,
        tuple: FourTuple,
        datagram: &[u8],
        left: &HashSet<ParticipantId>,
    ) -> Option<ParticipantId> {
        if let Some(id) = self.affinity.get(&tuple) {
            return Some(*id);
        }
        let id = named_participant(datagram).filter(|id| !left.contains(id))?;
        let list = self.tuples.entry(id).or_default();
        if list.len() >= MAX_TUPLES {
            let oldest = list.remove(0);
            self.affinity.remove(&oldest);
        }
        list.push(tuple);
        self.affinity.insert(tuple, id);
        Some(id)
    }

    fn remove(&mut self, id: ParticipantId) {
        for tuple in self.tuples.remove(&id).unwrap_or_default() {
            self.affinity.remove(&tuple);
        }
    }
}

fn check_malformed(datagram: &[u8]) {
    let verdict = malformed(datagram);
    match (datagram.first(), verdict) {
        (None, v) => assert_eq!(v, Some(Dropped::Empty)),
        (Some(0..=3 | 20..=63 | 128..=191), Some(Dropped::NotWebrtc)) => {
            panic!("a WebRTC first byte refused as not WebRTC")
        }
        (Some(4..=19 | 64..=127 | 192..=255), v) => assert_eq!(v, Some(Dropped::NotWebrtc)),
        (Some(_), None) => assert!(datagram.len() >= 8, "a datagram too short for any header"),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut demux = Demuxer::default();
    let mut model = Model::default();
    // a removed participant has left for good: a later STUN check naming it teaches nothing
    let mut left = HashSet::new();
    for (op, datagram) in Records::new(data) {
        check_malformed(datagram);
        if op & 0x10 != 0 {
            let mut id = [0u8; 4];
            let n = datagram.len().min(4);
            id[..n].copy_from_slice(&datagram[..n]);
            let id = ParticipantId::from(u32::from_be_bytes(id));
            demux.remove(id);
            model.remove(id);
            left.insert(id);
            continue;
        }
        let transport = transport(op);
        let routed = demux.route(&transport, datagram, |id| !left.contains(&id));
        let expected = model.route(FourTuple::from(&transport), datagram, &left);
        assert_eq!(routed, expected, "the demuxer disagrees with its rules");
    }
});
