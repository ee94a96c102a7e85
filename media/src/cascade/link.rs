//! One cascade link as the media core sees it: the peer node, the sealed datagrams to and
//! from it, the recently relayed packets kept for the peer's NACKs, and the loss detection
//! that sends NACKs the other way.

use super::cipher::{Channel, LinkCipher, OpenError};
use super::frame::{self, COUNTER_AT, Frame, FrameError, HEADER_LEN, RelayedRtp};
use crate::media::forwarder::MediaKind;
use bytes::{Bytes, BytesMut};
use kaskade_protocol::ids::ParticipantId;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Relayed datagrams kept for retransmission (about a second of a ten-person room's video).
const RETRANSMIT_RING: usize = 2048;
/// A sequence jump larger than this is a restart, not loss.
const MAX_GAP: u16 = 64;

/// How to reach a peer node.
#[derive(Debug, Clone)]
pub struct LinkParams {
    /// The peer's node index.
    pub index: u16,
    /// The peer's name (metrics, logs).
    pub name: String,
    /// The peer's UDP media address.
    pub media_addr: SocketAddr,
    /// The link key (32 bytes).
    pub key: [u8; 32],
}

/// Why a link datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDrop {
    /// Not sealed with this link's key.
    Forged,
    /// Replayed or too old.
    Replayed,
    /// Authentic but not a frame.
    Malformed,
}

impl From<OpenError> for LinkDrop {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Forged => LinkDrop::Forged,
            OpenError::Replayed => LinkDrop::Replayed,
        }
    }
}

impl From<FrameError> for LinkDrop {
    fn from(_: FrameError) -> Self {
        LinkDrop::Malformed
    }
}

struct Sent {
    publisher: ParticipantId,
    kind: MediaKind,
    seq: u16,
    datagram: Vec<u8>,
}

/// The media side of one link.
pub struct Link {
    params: LinkParams,
    local: u16,
    cipher: LinkCipher,
    sent: Vec<Sent>,
    next_sent: usize,
    highest: HashMap<(ParticipantId, MediaKind), u16>,
}

impl Link {
    /// A link from node `local` to the peer in `params`.
    pub fn new(local: u16, params: LinkParams) -> Self {
        let cipher = LinkCipher::new(&params.key, local, params.index, Channel::Media)
            .expect("a 32-byte key is a valid AES-256 key");
        Self {
            params,
            local,
            cipher,
            sent: Vec::new(),
            next_sent: 0,
            highest: HashMap::new(),
        }
    }

    /// Relayed streams whose sequence numbers the link tracks, and datagrams held for
    /// retransmission (metrics).
    pub fn sizes(&self) -> (usize, usize) {
        (self.highest.len(), self.sent.len())
    }

    /// The peer.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Seals a relayed RTP packet into a datagram, keeping a copy for retransmission.
    pub fn relay(&mut self, rtp: &RelayedRtp) -> BytesMut {
        let mut buf = frame::start_datagram(self.local, rtp.payload.len() + 32);
        frame::put_rtp(&mut buf, rtp);
        self.cipher.seal(&mut buf, HEADER_LEN, COUNTER_AT);
        let entry = Sent {
            publisher: rtp.publisher,
            kind: rtp.kind,
            seq: rtp.seq,
            datagram: Vec::new(),
        };
        if self.sent.len() < RETRANSMIT_RING {
            self.sent.push(entry);
        }
        let slot = &mut self.sent[self.next_sent];
        slot.publisher = rtp.publisher;
        slot.kind = rtp.kind;
        slot.seq = rtp.seq;
        slot.datagram.clear();
        slot.datagram.extend_from_slice(&buf);
        self.next_sent = (self.next_sent + 1) % RETRANSMIT_RING;
        buf
    }

    /// Seals a keyframe request for a publisher on the peer.
    pub fn keyframe_request(&mut self, publisher: ParticipantId) -> BytesMut {
        let mut buf = frame::start_datagram(self.local, 8);
        frame::put_keyframe_request(&mut buf, publisher);
        self.cipher.seal(&mut buf, HEADER_LEN, COUNTER_AT);
        buf
    }

    /// The datagrams the peer asks again for (those still kept).
    pub fn retransmissions<'a>(
        &'a self,
        publisher: ParticipantId,
        kind: MediaKind,
        seqs: impl Iterator<Item = u16> + 'a,
    ) -> impl Iterator<Item = BytesMut> + 'a {
        seqs.filter_map(move |seq| {
            self.sent
                .iter()
                .find(|s| s.publisher == publisher && s.kind == kind && s.seq == seq)
                .map(|s| BytesMut::from(&s.datagram[..]))
        })
    }

    /// Opens a datagram from the peer (its header already parsed).
    pub fn open(&mut self, mut datagram: BytesMut, counter: u64) -> Result<Frame, LinkDrop> {
        let len = self.cipher.open(&mut datagram, HEADER_LEN, counter)?;
        let plain: Bytes = datagram.freeze().slice(HEADER_LEN..HEADER_LEN + len);
        Ok(frame::decode(plain)?)
    }

    /// Notes a relayed packet's sequence number; returns a NACK datagram for the packets a
    /// jump skipped, if any.
    pub fn received(
        &mut self,
        publisher: ParticipantId,
        kind: MediaKind,
        seq: u16,
    ) -> Option<BytesMut> {
        let highest = self.highest.entry((publisher, kind)).or_insert(seq);
        let ahead = seq.wrapping_sub(*highest);
        if ahead == 0 || ahead > u16::MAX / 2 {
            return None;
        }
        let from = *highest;
        *highest = seq;
        if ahead == 1 || ahead > MAX_GAP {
            return None;
        }
        let missing: Vec<u16> = (1..ahead).map(|d| from.wrapping_add(d)).collect();
        let mut buf = frame::start_datagram(self.local, 6 + 2 * missing.len());
        frame::put_nack(&mut buf, publisher, kind, &missing);
        self.cipher.seal(&mut buf, HEADER_LEN, COUNTER_AT);
        Some(buf)
    }

    /// Forgets a publisher's streams (it left).
    pub fn forget(&mut self, publisher: ParticipantId) {
        self.highest.retain(|(p, _), _| *p != publisher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(local: u16, peer: u16) -> Link {
        Link::new(
            local,
            LinkParams {
                index: peer,
                name: format!("node-{peer}"),
                media_addr: "127.0.0.1:1".parse().unwrap(),
                key: [9; 32],
            },
        )
    }

    fn rtp(seq: u16) -> RelayedRtp {
        RelayedRtp {
            publisher: ParticipantId::from(5),
            kind: MediaKind::Video,
            level: None,
            marker: false,
            payload_type: 102,
            seq,
            timestamp: 1,
            ssrc: 2,
            payload: Bytes::from_static(b"payload"),
        }
    }

    fn deliver(to: &mut Link, datagram: BytesMut) -> Result<Frame, LinkDrop> {
        let header = frame::parse_header(&datagram).unwrap();
        to.open(datagram, header.counter)
    }

    #[test]
    fn a_lost_packet_is_nacked_and_resent_from_the_ring() {
        let (mut a, mut b) = (link(1, 2), link(2, 1));
        let first = a.relay(&rtp(10));
        let _lost = a.relay(&rtp(11));
        let third = a.relay(&rtp(12));
        assert!(matches!(deliver(&mut b, first), Ok(Frame::Rtp(r)) if r.seq == 10));
        assert!(
            b.received(ParticipantId::from(5), MediaKind::Video, 10)
                .is_none()
        );
        assert!(matches!(deliver(&mut b, third), Ok(Frame::Rtp(r)) if r.seq == 12));
        let nack = b
            .received(ParticipantId::from(5), MediaKind::Video, 12)
            .expect("a NACK for 11");
        let Ok(Frame::Nack {
            publisher,
            kind,
            seqs,
        }) = deliver(&mut a, nack)
        else {
            panic!("not a NACK");
        };
        let resent: Vec<_> = a
            .retransmissions(publisher, kind, frame::nacked(&seqs))
            .collect();
        assert_eq!(resent.len(), 1);
        let resent = resent.into_iter().next().unwrap();
        assert!(matches!(deliver(&mut b, resent), Ok(Frame::Rtp(r)) if r.seq == 11));
    }

    #[test]
    fn reordering_wraps_and_restarts_send_no_nack() {
        let mut b = link(2, 1);
        for seq in [65_534, 65_535, 0, 1] {
            assert!(
                b.received(ParticipantId::from(5), MediaKind::Audio, seq)
                    .is_none(),
                "{seq}"
            );
        }
        assert!(
            b.received(ParticipantId::from(5), MediaKind::Audio, 0)
                .is_none(),
            "late"
        );
        assert!(
            b.received(ParticipantId::from(5), MediaKind::Audio, 30_000)
                .is_none(),
            "restart"
        );
    }

    #[test]
    fn a_foreign_or_replayed_datagram_is_dropped() {
        let (mut a, mut b) = (link(1, 2), link(2, 1));
        let mut stranger = Link::new(
            1,
            LinkParams {
                key: [1; 32],
                ..a.params().clone()
            },
        );
        assert_eq!(
            deliver(&mut b, stranger.relay(&rtp(1))),
            Err(LinkDrop::Forged)
        );
        let datagram = a.relay(&rtp(2));
        assert!(deliver(&mut b, datagram.clone()).is_ok());
        assert_eq!(deliver(&mut b, datagram), Err(LinkDrop::Replayed));
    }
}
