//! Routes datagrams arriving on the node's shared socket to participants.
//!
//! The fast path is a map from the datagram's four-tuple to a participant. A datagram from an
//! unknown four-tuple is routed only if it is a STUN binding request whose USERNAME starts with
//! a ufrag this node issued: the ufrag begins with the participant id (see [`ufrag_for`]). The
//! peer connection then authenticates the request with the ICE password; a tuple that never
//! authenticates costs one map entry, and each participant keeps a bounded number of them.

use crate::metrics::Dropped;
use rtc::shared::{FourTuple, TransportContext};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, is_stun_message};
use rtc::stun::textattrs::Username;
use std::collections::HashMap;

pub use kaskade_protocol::signaling::ParticipantId;

/// Four-tuples a participant may hold at once (candidate pairs, ICE-TCP, NAT rebinding).
const MAX_TUPLES_PER_PARTICIPANT: usize = 8;

/// The ICE ufrag for participant `id`: its id in hex, then `random` (ICE characters only).
pub fn ufrag_for(id: ParticipantId, random: &str) -> String {
    format!("{:08x}{random}", u32::from(id))
}

fn participant_of_ufrag(ufrag: &str) -> Option<ParticipantId> {
    u32::from_str_radix(ufrag.get(..8)?, 16)
        .ok()
        .map(ParticipantId::from)
}

/// Four-tuple affinity plus ufrag routing.
#[derive(Default)]
pub struct Demuxer {
    affinity: HashMap<FourTuple, ParticipantId>,
    tuples: HashMap<ParticipantId, Vec<FourTuple>>,
}

impl Demuxer {
    /// The participant a datagram belongs to, learning new four-tuples from STUN whose
    /// USERNAME names a participant that `present` admits. A STUN check that arrives after
    /// its participant left (or names one that never was) teaches nothing: its tuple would
    /// outlive every `remove`, and forged names would grow the maps from the network.
    pub fn route(
        &mut self,
        transport: &TransportContext,
        datagram: &[u8],
        present: impl Fn(ParticipantId) -> bool,
    ) -> Option<ParticipantId> {
        let tuple = FourTuple::from(transport);
        if let Some(id) = self.affinity.get(&tuple) {
            return Some(*id);
        }
        let id = stun_participant(datagram).filter(|id| present(*id))?;
        let tuples = self.tuples.entry(id).or_default();
        if tuples.len() >= MAX_TUPLES_PER_PARTICIPANT {
            let oldest = tuples.remove(0);
            self.affinity.remove(&oldest);
        }
        tuples.push(tuple);
        self.affinity.insert(tuple, id);
        Some(id)
    }

    /// Entries of the four-tuple map and of the per-participant tuple lists (metrics).
    pub fn sizes(&self) -> (usize, usize) {
        (self.affinity.len(), self.tuples.len())
    }

    /// Forgets every four-tuple of a participant who left.
    pub fn remove(&mut self, id: ParticipantId) {
        for tuple in self.tuples.remove(&id).unwrap_or_default() {
            self.affinity.remove(&tuple);
        }
    }
}

/// Why a datagram cannot be STUN, DTLS, RTP or RTCP (RFC 7983 first byte, minimum sizes);
/// `None` when it may be one of them.
pub fn malformed(datagram: &[u8]) -> Option<Dropped> {
    const STUN_HEADER: usize = 20;
    const DTLS_RECORD_HEADER: usize = 13;
    const RTP_HEADER: usize = 12;
    const RTCP_HEADER: usize = 8;
    let Some(&first) = datagram.first() else {
        return Some(Dropped::Empty);
    };
    let minimum = match first {
        0..=3 => STUN_HEADER,
        20..=63 => DTLS_RECORD_HEADER,
        128..=191 => match datagram.get(1) {
            Some(192..=223) => RTCP_HEADER,
            _ => RTP_HEADER,
        },
        _ => return Some(Dropped::NotWebrtc),
    };
    (datagram.len() < minimum).then_some(Dropped::Truncated)
}

fn stun_participant(datagram: &[u8]) -> Option<ParticipantId> {
    if !is_stun_message(datagram) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    let username = Username::get_from_as(&message, ATTR_USERNAME).ok()?;
    let local = username.text.split_once(':')?.0;
    participant_of_ufrag(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::TransportProtocol;
    use rtc::stun::message::{BINDING_REQUEST, Setter, TransactionId};

    fn transport(port: u16) -> TransportContext {
        TransportContext {
            local_addr: "127.0.0.1:5000".parse().unwrap(),
            peer_addr: format!("127.0.0.1:{port}").parse().unwrap(),
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        }
    }

    fn binding_request(username: &str) -> Vec<u8> {
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
        ];
        m.build(&setters).unwrap();
        m.raw
    }

    #[test]
    fn learns_tuples_from_stun_then_routes_anything_from_them() {
        let mut d = Demuxer::default();
        let stun = binding_request(&format!(
            "{}:remote",
            ufrag_for(ParticipantId::from(42), "abcd")
        ));
        assert_eq!(d.route(&transport(1), &[0x80, 0, 0, 0], |_| true), None);
        assert_eq!(
            d.route(&transport(1), &stun, |_| true),
            Some(ParticipantId::from(42))
        );
        assert_eq!(
            d.route(&transport(1), &[0x80, 0, 0, 0], |_| true),
            Some(ParticipantId::from(42))
        );
        d.remove(ParticipantId::from(42));
        assert_eq!(d.route(&transport(1), &[0x80, 0, 0, 0], |_| true), None);
    }

    #[test]
    fn learns_nothing_for_a_participant_who_is_not_there() {
        let mut d = Demuxer::default();
        let stun = binding_request(&format!(
            "{}:remote",
            ufrag_for(ParticipantId::from(42), "abcd")
        ));
        assert_eq!(
            d.route(&transport(1), &stun, |id| id != ParticipantId::from(42)),
            None
        );
        assert_eq!(
            d.sizes(),
            (0, 0),
            "a late check after a leave leaves nothing behind"
        );
        assert_eq!(d.route(&transport(1), &[0x80, 0, 0, 0], |_| true), None);
    }

    #[test]
    fn ignores_garbage_and_foreign_ufrags() {
        let mut d = Demuxer::default();
        for datagram in [
            vec![],
            vec![0u8; 3],
            vec![0xff; 100],
            binding_request("nothex!!:remote"),
            binding_request("noseparator"),
        ] {
            assert_eq!(
                d.route(&transport(1), &datagram, |_| true),
                None,
                "{datagram:?}"
            );
        }
    }

    #[test]
    fn classifies_datagrams_by_first_byte_and_size() {
        use Dropped::{Empty, NotWebrtc, Truncated};
        let cases: &[(&[u8], Option<Dropped>)] = &[
            (&[], Some(Empty)),
            (&[0, 1, 0, 0], Some(Truncated)),
            (&[0; 20], None),
            (&[22, 254, 253], Some(Truncated)),
            (&[22; 13], None),
            (&[0x80, 0x60, 0, 1], Some(Truncated)),
            (&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], None),
            (&[0x81, 0xc9, 0, 1, 0, 0, 0, 0], None),
            (&[0x81, 0xc9, 0, 1], Some(Truncated)),
            (&[0x10; 40], Some(NotWebrtc)),
            (&[0xff; 40], Some(NotWebrtc)),
        ];
        for (datagram, want) in cases {
            assert_eq!(malformed(datagram), *want, "{datagram:?}");
        }
    }

    #[test]
    fn bounds_the_tuples_one_participant_can_claim() {
        let mut d = Demuxer::default();
        let stun = binding_request(&format!(
            "{}:remote",
            ufrag_for(ParticipantId::from(7), "x")
        ));
        for port in 0..100 {
            assert_eq!(
                d.route(&transport(port), &stun, |_| true),
                Some(ParticipantId::from(7))
            );
        }
        assert_eq!(d.affinity.len(), MAX_TUPLES_PER_PARTICIPANT);
        assert_eq!(
            d.route(&transport(0), &[0x80], |_| true),
            None,
            "oldest tuple evicted"
        );
        assert_eq!(
            d.route(&transport(99), &[0x80], |_| true),
            Some(ParticipantId::from(7))
        );
    }
}
