//! A transport for plain RTP that the node's shell feeds: an RTSP camera, a SIP call.
//!
//! The shell owns the source's I/O (an RTSP session, a SIP leg's sockets) and gives the core
//! each RTP packet as a datagram for this participant; the transport parses it and the core
//! forwards it like any publisher's packet. A keyframe request becomes
//! [`TransportEvent::KeyframeWanted`] for the shell, which knows what its source understands.
//!
//! A source that also takes the meeting's media (a SIP call, whose far end hears the meeting)
//! subscribes with a [`Delivery`]: it gets consumers like any subscriber, and what the core
//! forwards to them leaves on the node's socket as plain RTP to the shell's address, one
//! consumer SSRC per slot (the shell mixes or composes it for its far end).

use crate::media::forwarder::{MediaKind, OutboundStream};
use crate::media::keyframe::keyframes_asked;
use crate::media::transport::{
    Consumer, Inbound, Publication, Transport, TransportError, TransportEvent,
};
use bytes::BytesMut;
use rand::Rng;
use rand::rngs::StdRng;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// Packets parsed and not yet drained, beyond which the oldest are dropped (the core drains
/// after every datagram, so this only bounds a misbehaving caller).
const MAX_QUEUED: usize = 256;

/// The payload types the meeting's media is delivered with: Opus and H.264, as the meeting
/// speaks them.
pub const DELIVERED_AUDIO: u8 = 111;
/// See [`DELIVERED_AUDIO`].
pub const DELIVERED_VIDEO: u8 = 96;

/// Where and how much of the meeting a subscribing source takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The shell's address the meeting's packets are sent to from the node's socket.
    pub to: SocketAddr,
    /// Audio consumers (one per other participant it hears).
    pub audio_slots: usize,
    /// Video consumers.
    pub video_slots: usize,
    /// The SSRC of the first consumer; the others follow in order (audio `a0`, `a1`, ...,
    /// then video `v0`, ...), so the shell knows which slot a packet is on.
    pub ssrc_base: u32,
}

impl Delivery {
    /// The SSRC the consumer with `mid` (`a3`, `v0`) carries, if it is one of this delivery's.
    pub fn ssrc_of(&self, mid: &str) -> Option<u32> {
        let (kind, index) = mid.split_at_checked(1)?;
        let index: usize = index.parse().ok()?;
        let offset = match kind {
            "a" if index < self.audio_slots => index,
            "v" if index < self.video_slots => self.audio_slots + index,
            _ => return None,
        };
        Some(self.ssrc_base.wrapping_add(offset as u32))
    }
}

/// Plain RTP handed in by the shell, and, for a subscribing source, the meeting's media
/// handed back.
pub struct RtpIngest {
    publication: Publication,
    inbound: VecDeque<Inbound>,
    consumers: Vec<Consumer>,
    delivery: Option<SocketAddr>,
    outbound: VecDeque<TaggedBytesMut>,
    connected_told: bool,
    /// The SSRC a keyframe was last asked of, until the event is taken.
    keyframe_wanted: Option<u32>,
    closed: bool,
}

impl RtpIngest {
    /// A publish-only transport whose packets of each payload type are of the kind
    /// `publication` gives.
    pub fn new(publication: Publication) -> Self {
        Self {
            publication,
            inbound: VecDeque::new(),
            consumers: Vec::new(),
            delivery: None,
            outbound: VecDeque::new(),
            connected_told: false,
            keyframe_wanted: None,
            closed: false,
        }
    }

    /// A transport that publishes as [`Self::new`] and takes the meeting's media as
    /// `delivery` says; `rng` draws its consumers' first sequence numbers and timestamps.
    pub fn subscribing(
        publication: Publication,
        delivery: &Delivery,
        now: Instant,
        rng: &mut StdRng,
    ) -> Self {
        let slots = [
            (MediaKind::Audio, DELIVERED_AUDIO, "a", delivery.audio_slots),
            (MediaKind::Video, DELIVERED_VIDEO, "v", delivery.video_slots),
        ];
        let consumers = slots
            .into_iter()
            .flat_map(|(kind, payload_type, prefix, count)| {
                (0..count).map(move |i| (kind, payload_type, format!("{prefix}{i}")))
            })
            .enumerate()
            .map(|(i, (kind, payload_type, mid))| {
                let ssrc = delivery.ssrc_base.wrapping_add(i as u32);
                Consumer {
                    mid,
                    payload_type,
                    stream: OutboundStream::new(ssrc, kind, rng.random(), rng.random(), now),
                    layer: 0,
                }
            })
            .collect();
        Self {
            consumers,
            delivery: Some(delivery.to),
            ..Self::new(publication)
        }
    }
}

/// Whether a datagram is RTCP (payload type 200-211 where RTP's would be, RFC 5761).
fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && (200..=211).contains(&datagram[1])
}

impl RtpIngest {
    /// The shell asks for keyframes of what it receives (PLI or FIR naming a consumer's SSRC),
    /// for the core to ask the publisher.
    fn keyframe_requests(&mut self, datagram: &[u8]) -> Result<(), TransportError> {
        for ssrc in keyframes_asked(datagram).map_err(TransportError)? {
            if self.inbound.len() < MAX_QUEUED {
                self.inbound.push_back(Inbound::KeyframeRequest { ssrc });
            }
        }
        Ok(())
    }
}

impl Transport for RtpIngest {
    fn handle_datagram(&mut self, datagram: TaggedBytesMut) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError("the transport is closed".into()));
        }
        if is_rtcp(&datagram.message) {
            return self.keyframe_requests(&datagram.message);
        }
        let packet = rtc::rtp::Packet::unmarshal(&mut &datagram.message[..])
            .map_err(|e| TransportError(format!("not an RTP packet: {e}")))?;
        if self
            .publication
            .kind_of(packet.header.payload_type)
            .is_none()
        {
            return Err(TransportError(format!(
                "payload type {} is not published",
                packet.header.payload_type
            )));
        }
        if self.inbound.len() >= MAX_QUEUED {
            self.inbound.pop_front();
        }
        self.inbound.push_back(Inbound::Rtp(packet));
        Ok(())
    }

    fn poll_inbound(&mut self) -> Option<Inbound> {
        self.inbound.pop_front()
    }

    fn poll_event(&mut self, _now: Instant) -> Option<TransportEvent> {
        if !self.connected_told {
            self.connected_told = true;
            return Some(TransportEvent::Connected {
                protection: "none".into(),
            });
        }
        if let Some(media_ssrc) = self.keyframe_wanted.take() {
            return Some(TransportEvent::KeyframeWanted { media_ssrc });
        }
        None
    }

    fn is_connected(&self) -> bool {
        !self.closed
    }

    fn publication(&self) -> &Publication {
        &self.publication
    }

    fn poll_transmit(&mut self) -> Option<TaggedBytesMut> {
        self.outbound.pop_front()
    }

    fn consumers(&self) -> &[Consumer] {
        &self.consumers
    }

    fn consumers_mut(&mut self) -> &mut [Consumer] {
        &mut self.consumers
    }

    fn write_rtp(
        &mut self,
        now: Instant,
        index: usize,
        mut packet: rtc::rtp::Packet,
    ) -> Result<(), TransportError> {
        let (Some(consumer), Some(to)) = (self.consumers.get(index), self.delivery) else {
            return Err(TransportError("this transport receives nothing".into()));
        };
        packet.header.payload_type = consumer.payload_type;
        packet.header.ssrc = consumer.stream.ssrc();
        let mut message = BytesMut::zeroed(packet.marshal_size());
        packet
            .marshal_to(&mut message)
            .map_err(|e| TransportError(format!("RTP to the shell: {e}")))?;
        if self.outbound.len() >= MAX_QUEUED {
            self.outbound.pop_front();
        }
        self.outbound.push_back(TaggedBytesMut {
            now,
            transport: TransportContext {
                peer_addr: to,
                transport_protocol: TransportProtocol::UDP,
                ..Default::default()
            },
            message,
        });
        Ok(())
    }

    fn request_keyframe(&mut self, _now: Instant, media_ssrc: u32) -> Result<bool, TransportError> {
        self.keyframe_wanted = Some(media_ssrc);
        Ok(true)
    }

    fn close(&mut self) {
        self.closed = true;
        self.inbound.clear();
        self.outbound.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::forwarder::MediaKind;
    use rtc::shared::TransportContext;
    use rtc::shared::marshal::Marshal;

    fn ingest() -> RtpIngest {
        RtpIngest::new(Publication {
            payload_kinds: vec![(96, MediaKind::Video), (111, MediaKind::Audio)],
            audio_level_ext: None,
            cache_gop: true,
        })
    }

    fn datagram(bytes: &[u8]) -> TaggedBytesMut {
        TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: bytes.into(),
        }
    }

    fn rtp(payload_type: u8, seq: u16) -> Vec<u8> {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type,
                sequence_number: seq,
                ssrc: 0x1234,
                ..Default::default()
            },
            payload: vec![0x65, 1, 2, 3].into(),
        }
        .marshal()
        .unwrap()
        .to_vec()
    }

    #[test]
    fn published_packets_come_out_and_anything_else_is_refused_with_a_reason() {
        let mut t = ingest();
        t.handle_datagram(datagram(&rtp(96, 7))).unwrap();
        assert!(matches!(t.poll_inbound(), Some(Inbound::Rtp(p)) if p.header.sequence_number == 7));
        assert!(t.poll_inbound().is_none());
        let unknown = t.handle_datagram(datagram(&rtp(8, 1))).unwrap_err();
        assert!(unknown.0.contains("payload type 8"), "{unknown}");
        let garbage = t.handle_datagram(datagram(&[0x80])).unwrap_err();
        assert!(garbage.0.contains("not an RTP packet"), "{garbage}");
        assert!(t.poll_inbound().is_none());
    }

    #[test]
    fn it_connects_at_once_and_turns_keyframe_requests_into_one_event_each() {
        let mut t = ingest();
        let now = Instant::now();
        assert!(matches!(
            t.poll_event(now),
            Some(TransportEvent::Connected { .. })
        ));
        assert!(t.poll_event(now).is_none());
        assert!(t.request_keyframe(now, 0x1234).unwrap());
        assert!(t.request_keyframe(now, 0x1234).unwrap());
        assert!(matches!(
            t.poll_event(now),
            Some(TransportEvent::KeyframeWanted { media_ssrc: 0x1234 })
        ));
        assert!(t.poll_event(now).is_none(), "coalesced until drained");
    }

    #[test]
    fn consumer_ssrcs_follow_the_base_and_keyframe_requests_name_them() {
        let delivery = Delivery {
            to: "127.0.0.1:4000".parse().unwrap(),
            audio_slots: 2,
            video_slots: 2,
            ssrc_base: u32::MAX - 1,
        };
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(1);
        let mut t =
            RtpIngest::subscribing(ingest().publication, &delivery, Instant::now(), &mut rng);
        let ssrcs: Vec<u32> = t.consumers().iter().map(|c| c.stream.ssrc()).collect();
        assert_eq!(ssrcs, [u32::MAX - 1, u32::MAX, 0, 1], "wrapping");
        assert_eq!(delivery.ssrc_of("a1"), Some(u32::MAX));
        assert_eq!(delivery.ssrc_of("v1"), Some(1));
        assert_eq!(delivery.ssrc_of("v2"), None);
        assert_eq!(delivery.ssrc_of("x0"), None);
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 9,
            media_ssrc: 1,
        };
        t.handle_datagram(datagram(&pli.marshal().unwrap()))
            .unwrap();
        assert!(matches!(
            t.poll_inbound(),
            Some(Inbound::KeyframeRequest { ssrc: 1 })
        ));
        assert!(
            t.handle_datagram(datagram(&[0x80, 201, 0, 9, 0, 0, 0, 0, 1]))
                .is_err()
        );
    }

    #[test]
    fn a_flood_is_bounded_and_a_closed_transport_takes_nothing() {
        let mut t = ingest();
        for seq in 0..(MAX_QUEUED as u16 + 10) {
            t.handle_datagram(datagram(&rtp(111, seq))).unwrap();
        }
        assert_eq!(std::iter::from_fn(|| t.poll_inbound()).count(), MAX_QUEUED);
        t.close();
        assert!(t.handle_datagram(datagram(&rtp(96, 1))).is_err());
        assert!(!t.is_connected());
    }
}
