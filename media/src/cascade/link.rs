//! One cascade link as the media core sees it: the peer node, the sealed datagrams to and
//! from it, the recently relayed packets kept for the peer's NACKs, and the loss detection
//! that sends NACKs the other way: a packet a jump skipped is NACKed at once, and again a
//! round trip later (measured from the retransmissions that came) while it is still missing.
//! A stream that was silent for a while (its layer was not wanted, its publisher muted) starts
//! afresh: what it skipped was never sent over the link.

use super::cipher::{Channel, LinkCipher, OpenError};
use super::frame::{self, COUNTER_AT, Frame, FrameError, HEADER_LEN, LinkStream, RelayedRtp};
use bytes::{Bytes, BytesMut};
use kaskade_protocol::ids::ParticipantId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Relayed datagrams kept for retransmission (about a second of a ten-person room's video).
const RETRANSMIT_RING: usize = 2048;
/// A sequence jump larger than this is a restart, not loss.
const MAX_GAP: u16 = 64;
/// Packets NACKed and still awaited, at most (beyond it new losses are not tracked).
const MAX_MISSING: usize = 512;
/// NACKs sent for one packet at most.
const MAX_NACKS: u8 = 4;
/// The round trip assumed until a retransmission has measured one.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Re-NACKs wait at least this long (a link on one LAN measures a round trip of microseconds).
const MIN_RENACK: Duration = Duration::from_millis(20);
/// A stream silent this long starts afresh: the far node stopped relaying it (nobody here
/// wanted that layer, or its publisher was muted), so its jump is no loss.
const RESUMED_AFTER: Duration = Duration::from_secs(1);

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
    stream: LinkStream,
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
    /// Each relayed stream's highest sequence number and when a packet of it last came.
    highest: HashMap<LinkStream, (u16, Instant)>,
    /// Packets NACKed and not arrived: when last NACKed, and how often.
    missing: HashMap<(LinkStream, u16), (Instant, u8)>,
    /// Smoothed round trip, from NACK to retransmission.
    rtt: Duration,
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
            missing: HashMap::new(),
            rtt: INITIAL_RTT,
        }
    }

    /// Relayed streams whose sequence numbers the link tracks, datagrams held for
    /// retransmission, and packets awaited after a NACK (metrics).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.highest.len(), self.sent.len(), self.missing.len())
    }

    /// The smoothed round trip from a NACK to its retransmission.
    pub fn rtt(&self) -> Duration {
        self.rtt
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
            stream: rtp.stream(),
            seq: rtp.seq,
            datagram: Vec::new(),
        };
        if self.sent.len() < RETRANSMIT_RING {
            self.sent.push(entry);
        }
        let slot = &mut self.sent[self.next_sent];
        slot.stream = rtp.stream();
        slot.seq = rtp.seq;
        slot.datagram.clear();
        slot.datagram.extend_from_slice(&buf);
        self.next_sent = (self.next_sent + 1) % RETRANSMIT_RING;
        buf
    }

    /// Seals a packet of a publisher's cached group of pictures for the peer's own cache (not
    /// kept for retransmission: a lost one leaves the peer's cache short until the next
    /// keyframe).
    pub fn cached(&mut self, rtp: &RelayedRtp) -> BytesMut {
        let mut buf = frame::start_datagram(self.local, rtp.payload.len() + 32);
        frame::put_cached(&mut buf, rtp);
        self.cipher.seal(&mut buf, HEADER_LEN, COUNTER_AT);
        buf
    }

    /// Seals a keyframe request for `layer` of a publisher's video on the peer.
    pub fn keyframe_request(&mut self, publisher: ParticipantId, layer: u8) -> BytesMut {
        let mut buf = frame::start_datagram(self.local, 8);
        frame::put_keyframe_request(&mut buf, publisher, layer);
        self.cipher.seal(&mut buf, HEADER_LEN, COUNTER_AT);
        buf
    }

    /// The datagrams the peer asks again for (those still kept).
    pub fn retransmissions<'a>(
        &'a self,
        stream: LinkStream,
        seqs: impl Iterator<Item = u16> + 'a,
    ) -> impl Iterator<Item = BytesMut> + 'a {
        seqs.filter_map(move |seq| {
            self.sent
                .iter()
                .find(|s| s.stream == stream && s.seq == seq)
                .map(|s| BytesMut::from(&s.datagram[..]))
        })
    }

    /// Opens a datagram from the peer (its header already parsed).
    pub fn open(&mut self, mut datagram: BytesMut, counter: u64) -> Result<Frame, LinkDrop> {
        let len = self.cipher.open(&mut datagram, HEADER_LEN, counter)?;
        let plain: Bytes = datagram.freeze().slice(HEADER_LEN..HEADER_LEN + len);
        Ok(frame::decode(plain)?)
    }

    /// Notes a relayed packet's sequence number, received at `now`; returns a NACK datagram
    /// for the packets a jump skipped, if any. A packet that was awaited measures the round
    /// trip.
    pub fn received(&mut self, now: Instant, stream: LinkStream, seq: u16) -> Option<BytesMut> {
        if let Some((nacked_at, _)) = self.missing.remove(&(stream, seq)) {
            let sample = now.saturating_duration_since(nacked_at);
            self.rtt = (self.rtt * 7 + sample) / 8;
        }
        let (highest, last) = self.highest.entry(stream).or_insert((seq, now));
        let resumed = now.saturating_duration_since(*last) >= RESUMED_AFTER;
        *last = now;
        let ahead = seq.wrapping_sub(*highest);
        if resumed {
            *highest = seq;
            return None;
        }
        if ahead == 0 || ahead > u16::MAX / 2 {
            return None;
        }
        let from = *highest;
        *highest = seq;
        if ahead == 1 || ahead > MAX_GAP {
            return None;
        }
        let missing: Vec<u16> = (1..ahead).map(|d| from.wrapping_add(d)).collect();
        for &lost in &missing {
            if self.missing.len() < MAX_MISSING {
                self.missing.insert((stream, lost), (now, 1));
            }
        }
        Some(self.nack(stream, &missing))
    }

    /// NACKs again what is still missing a round trip after its last NACK (at most
    /// [`MAX_NACKS`] times in all); appends the datagrams to `out`.
    pub fn renack(&mut self, now: Instant, out: &mut Vec<BytesMut>) {
        let wait = self.renack_wait();
        let mut due: HashMap<LinkStream, Vec<u16>> = HashMap::new();
        self.missing.retain(|&(stream, seq), (at, count)| {
            if now.saturating_duration_since(*at) < wait {
                return true;
            }
            if *count >= MAX_NACKS {
                return false;
            }
            *at = now;
            *count += 1;
            due.entry(stream).or_default().push(seq);
            true
        });
        for (stream, seqs) in due {
            out.push(self.nack(stream, &seqs));
        }
    }

    /// When [`Self::renack`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wait = self.renack_wait();
        self.missing.values().map(|(at, _)| *at + wait).min()
    }

    fn renack_wait(&self) -> Duration {
        (self.rtt + self.rtt / 2).max(MIN_RENACK)
    }

    fn nack(&mut self, stream: LinkStream, seqs: &[u16]) -> BytesMut {
        let mut buf = frame::start_datagram(self.local, 6 + 2 * seqs.len());
        frame::put_nack(&mut buf, stream, seqs);
        self.cipher.seal(&mut buf, HEADER_LEN, COUNTER_AT);
        buf
    }

    /// Forgets a publisher's streams (it left).
    pub fn forget(&mut self, publisher: ParticipantId) {
        self.highest.retain(|s, _| s.publisher != publisher);
        self.missing.retain(|(s, _), _| s.publisher != publisher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::forwarder::MediaKind;

    const VIDEO: LinkStream = LinkStream {
        publisher: ParticipantId::from_wire(5),
        kind: MediaKind::Video,
        layer: 0,
    };
    const AUDIO: LinkStream = LinkStream {
        kind: MediaKind::Audio,
        ..VIDEO
    };

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
            layer: 0,
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
        let now = Instant::now();
        let (mut a, mut b) = (link(1, 2), link(2, 1));
        let first = a.relay(&rtp(10));
        let _lost = a.relay(&rtp(11));
        let third = a.relay(&rtp(12));
        assert!(matches!(deliver(&mut b, first), Ok(Frame::Rtp(r)) if r.seq == 10));
        assert!(b.received(now, VIDEO, 10).is_none());
        assert!(matches!(deliver(&mut b, third), Ok(Frame::Rtp(r)) if r.seq == 12));
        let nack = b.received(now, VIDEO, 12).expect("a NACK for 11");
        let Ok(Frame::Nack { stream, seqs }) = deliver(&mut a, nack) else {
            panic!("not a NACK");
        };
        let other_layer = LinkStream { layer: 1, ..stream };
        assert_eq!(
            a.retransmissions(other_layer, frame::nacked(&seqs)).count(),
            0,
            "another layer's numbers are its own"
        );
        let resent: Vec<_> = a.retransmissions(stream, frame::nacked(&seqs)).collect();
        assert_eq!(resent.len(), 1);
        let resent = resent.into_iter().next().unwrap();
        assert!(matches!(deliver(&mut b, resent), Ok(Frame::Rtp(r)) if r.seq == 11));
    }

    #[test]
    fn a_packet_still_missing_a_round_trip_later_is_nacked_again_then_given_up() {
        let t0 = Instant::now();
        let mut b = link(2, 1);
        b.received(t0, VIDEO, 10);
        assert!(b.received(t0, VIDEO, 13).is_some(), "11 and 12 NACKed");
        let wait = INITIAL_RTT + INITIAL_RTT / 2;
        assert_eq!(b.poll_timeout(), Some(t0 + wait));
        let mut out = Vec::new();
        b.renack(t0 + wait - Duration::from_millis(1), &mut out);
        assert!(out.is_empty(), "not before a round trip and a half");
        // 12's retransmission comes 40 ms after the NACK: the round trip shrinks towards it
        b.received(t0 + Duration::from_millis(40), VIDEO, 12);
        assert!(b.rtt() < INITIAL_RTT);
        let mut now = t0;
        let mut renacks = 0;
        while let Some(due) = b.poll_timeout() {
            now = due;
            let before = out.len();
            b.renack(now, &mut out);
            renacks += out.len() - before;
        }
        assert_eq!(
            renacks,
            usize::from(MAX_NACKS) - 1,
            "11 asked again, then given up"
        );
        assert!(now < t0 + Duration::from_secs(1));
        let mut a = link(1, 2);
        let Ok(Frame::Nack { seqs, .. }) = deliver(&mut a, out.pop().unwrap()) else {
            panic!("not a NACK");
        };
        assert_eq!(frame::nacked(&seqs).collect::<Vec<_>>(), [11]);
        assert_eq!(b.sizes().2, 0, "nothing awaited any more");
    }

    #[test]
    fn reordering_wraps_and_restarts_send_no_nack() {
        let now = Instant::now();
        let mut b = link(2, 1);
        for seq in [65_534, 65_535, 0, 1] {
            assert!(b.received(now, AUDIO, seq).is_none(), "{seq}");
        }
        assert!(b.received(now, AUDIO, 0).is_none(), "late");
        assert!(b.received(now, AUDIO, 30_000).is_none(), "restart");
    }

    #[test]
    fn a_stream_that_resumes_after_a_silence_is_not_nacked_for_what_it_skipped() {
        let t0 = Instant::now();
        let mut b = link(2, 1);
        let layer = LinkStream { layer: 2, ..VIDEO };
        assert!(b.received(t0, layer, 100).is_none());
        // the far node stopped relaying this layer for a while (nobody here wanted it)
        let resumed = t0 + RESUMED_AFTER;
        assert!(b.received(resumed, layer, 140).is_none(), "no loss");
        assert!(
            b.received(resumed, layer, 142).is_some(),
            "a jump right after is loss again"
        );
        assert!(
            b.received(resumed, LinkStream { layer: 1, ..VIDEO }, 7)
                .is_none(),
            "layers are counted apart"
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
