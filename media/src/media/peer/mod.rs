//! A browser-style participant's transport on the node's shared socket, negotiated once, with
//! a fixed set of receive slots.
//!
//! The client offers its publish m-lines (sendonly) and N recvonly slots per kind; the peer
//! answers with one sendonly transceiver per slot, each with an SSRC chosen here: the slot is a
//! [`Consumer`] whose [`OutboundStream`] rewrites whatever feeds it onto that SSRC. ICE is lite
//! with credentials chosen here (the ufrag names the participant, for routing), DTLS is the
//! server role, and SRTP is AEAD_AES_256_GCM unless legacy profiles are enabled.
//!
//! The node holds the participant's DTLS association and SRTP keys itself (`dtls`), and sends
//! what it forwards on its own path (`send`): numbered for congestion control, sealed once,
//! straight into the send batch. rtc's `RTCPeerConnection` negotiates, does ICE and the receive
//! side behind an in-process leg (`leg`), and hands up what the participant sends (`inbound`).

mod dtls;
mod engine;
mod inbound;
mod leg;
mod negotiation;
mod send;

use crate::media::bwe::DownlinkEstimate;
use crate::media::nack_filter::{FreshFrom, NackFilter, SentMarks};
use crate::media::red::{RedEncoder, RedUnwrap};
use crate::media::rtx::RtxUnwrap;
use crate::media::surroundings::WallClock;
use crate::media::transport::{
    Consumer, Inbound, NegotiationError, Publication, Transport, TransportError, TransportEvent,
};
use crate::metrics::Metrics;
use dtls::{Association, SrtpKeys};
use engine::media_engine;
use leg::Leg;
use rand::rngs::StdRng;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    NackGeneratorBuilder, ReceiverReportBuilder, Registry, Slot as InterceptorSlot,
};
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_receiver_only;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use rtc::shared::{TaggedBytesMut, TransportContext};
use send::SendPath;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Where a publisher's RTX packets are unwrapped: under the NACK generator (7_000), so that it
/// sees a repaired packet as the original.
const RTX_UNWRAP_SLOT: usize = 5_500;
/// When the node's certificate, as the peer connection holds it, expires: never, in
/// practice (the node makes a new one at every start).
const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How a peer connection is configured; the same for every participant of a node.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Addresses announced as UDP host candidates (the node's one UDP socket, per public IP).
    pub udp_candidates: Vec<SocketAddr>,
    /// Addresses announced as ICE-TCP passive candidates.
    pub tcp_candidates: Vec<SocketAddr>,
    /// Also offer AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM for legacy peers.
    pub legacy_srtp: bool,
    /// Upper bound on receive slots per kind.
    pub max_slots: usize,
}

/// The receivers of the client's publish m-lines, learned from its offer.
#[derive(Debug, Default)]
struct Receivers {
    audio: Option<RTCRtpReceiverId>,
    video: Option<RTCRtpReceiverId>,
}

/// A participant's WebRTC transport.
pub struct WebRtcPeer {
    pc: RTCPeerConnection,
    settings: Arc<PeerSettings>,
    connected: bool,
    negotiated: bool,
    receivers: Receivers,
    publication: Publication,
    /// One consumer per receive slot.
    consumers: Vec<Consumer>,
    /// The repair stream (RTX) of each consumer whose subscriber negotiated one (same index).
    repairs: Vec<Option<RepairStream>>,
    /// Inbound media parsed from one decrypted message and not yet drained.
    inbound: VecDeque<Inbound>,
    /// The simulcast layer of each inbound SSRC seen (0 for audio and single-stream video).
    layers: Vec<(u32, u8)>,
    /// What its downlink carries, as its congestion feedback says.
    downlink: DownlinkEstimate,
    /// Where each consumer's current source began, for the NACK filter in its chain.
    fresh: FreshFrom,
    /// When each consumer had sent what (noted as it writes), for its NACK filter.
    marks: SentMarks,
    /// Takes out of the participant's NACKs what is not worth resending.
    nack_filter: NackFilter,
    /// Unwraps its audio when it publishes RED.
    red_in: Option<RedUnwrap>,
    /// A RED encoder for each consumer whose slot negotiated RED (same index).
    red_out: Vec<Option<RedEncoder>>,
    /// The SRTP profiles it offers the participant.
    profiles: Vec<SrtpProtectionProfile>,
    /// Its DTLS association with the participant (from the offer on).
    participant: Option<Association>,
    /// The participant's SRTP keys, once its handshake completed.
    keys: Option<SrtpKeys>,
    /// Where the participant's datagrams come from, and what it is sent goes to.
    tuple: Option<TransportContext>,
    /// Whether the connection's ICE is connected.
    ice_connected: bool,
    /// The connection got input since its events were last read: a subscriber that is only
    /// written forwarded media leaves its connection alone.
    pc_events: bool,
    /// The connection's deadline, as last asked (asked again after it got input).
    pc_deadline: Option<Instant>,
    /// The connection got input since its deadline was last asked.
    pc_deadline_stale: bool,
    /// The in-process leg to the connection.
    leg: Leg,
    /// What the node sends of its own.
    send: SendPath,
    /// Datagrams for the participant.
    transmits: VecDeque<TaggedBytesMut>,
    metrics: Arc<Metrics>,
}

impl WebRtcPeer {
    /// A peer whose ICE ufrag is `ufrag` (routes its STUN to it) and password `pwd`; `wall`
    /// dates its sender reports.
    pub fn new(
        now: Instant,
        ufrag: String,
        pwd: String,
        settings: Arc<PeerSettings>,
        metrics: Arc<Metrics>,
        wall: WallClock,
    ) -> Result<Self, RtcError> {
        let mut profiles = vec![SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm];
        if settings.legacy_srtp {
            profiles.extend([
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ]);
        }
        let label = ufrag.clone();
        let setting_engine = SettingEngineBuilder::new()
            .with_ice_credentials(ufrag, pwd)
            .with_lite(true)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            // the connection's DTLS is the leg's, whose client is the node itself; the
            // participant's certificate is checked on the node's own association
            .with_disable_certificate_fingerprint_verification(true)
            .build();
        let certificate = RTCCertificate::from_existing(
            dtls::identity()?.clone(),
            SystemTime::UNIX_EPOCH + CERTIFICATE_LIFETIME,
        );
        let configuration = RTCConfigurationBuilder::new()
            .with_certificates(vec![certificate])
            .build();
        let mut media_engine = media_engine()?;
        // no NACK responder: the core answers NACKs from each publisher's one ring
        // (`media::repair`) instead of a copy of every packet per consumer
        let registry = Registry::new().with(
            InterceptorSlot::NackGenerator,
            NackGeneratorBuilder::new().build(),
        );
        // transport-wide congestion feedback on what the participant sends; the other half
        // (sequence numbers on what it is sent, whose feedback drives its estimate) is the send
        // path's. No pacer: the node forwards each packet as it arrives, and the allocator keeps
        // the rate within the estimate by choosing layers.
        let registry = configure_twcc_receiver_only(registry, &mut media_engine)?;
        let downlink = DownlinkEstimate::default();
        // receiver reports on what it sends; the sender reports of what it is sent are the
        // send path's
        let registry = registry.with(
            InterceptorSlot::ReceiverReport,
            ReceiverReportBuilder::new().build(),
        );
        let fresh = FreshFrom::new(2 * settings.max_slots);
        let marks = SentMarks::new(now, 2 * settings.max_slots);
        let nack_filter = NackFilter::new(
            fresh.clone(),
            marks.clone(),
            downlink.clone(),
            metrics.clone(),
        );
        let registry = registry.with(
            InterceptorSlot::Custom(RTX_UNWRAP_SLOT),
            RtxUnwrap::new(metrics.clone()),
        );
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;
        let send = SendPath::new(now, downlink.clone(), label, wall);
        Ok(Self {
            pc,
            settings,
            connected: false,
            negotiated: false,
            receivers: Receivers::default(),
            publication: Publication::default(),
            consumers: Vec::new(),
            repairs: Vec::new(),
            inbound: VecDeque::new(),
            layers: Vec::new(),
            downlink,
            fresh,
            marks,
            nack_filter,
            red_in: None,
            red_out: Vec::new(),
            profiles,
            participant: None,
            keys: None,
            tuple: None,
            ice_connected: false,
            pc_events: true,
            pc_deadline: None,
            pc_deadline_stale: true,
            leg: Leg::default(),
            send,
            transmits: VecDeque::new(),
            metrics,
        })
    }

    /// Notes that the connection got input: its events and deadline are read again.
    fn touch_pc(&mut self) {
        self.pc_events = true;
        self.pc_deadline_stale = true;
    }

    /// Notes where each consumer's current source began, for the NACK filter, before RTCP
    /// reaches it.
    fn note_fresh(&self) {
        for (index, consumer) in self.consumers.iter().enumerate() {
            let stream = &consumer.stream;
            self.fresh.note(index, stream.ssrc(), stream.fresh_from());
        }
    }

    /// Puts consumer `index`'s SSRC and payload type on `packet`; false when there is no such
    /// consumer.
    fn stamp(&self, index: usize, packet: &mut rtc::rtp::Packet) -> bool {
        let Some(consumer) = self.consumers.get(index) else {
            return false;
        };
        packet.header.payload_type = consumer.payload_type;
        packet.header.ssrc = consumer.stream.ssrc();
        true
    }

    /// Seals a packet of consumer `index` (a resend on its repair stream when `resend`) on the
    /// send path, for the participant.
    fn transmit(
        &mut self,
        now: Instant,
        index: usize,
        packet: rtc::rtp::Packet,
        resend: bool,
    ) -> Result<(), TransportError> {
        let (Some(keys), Some(transport)) = (self.keys.as_mut(), self.tuple) else {
            return Ok(());
        };
        let message = self
            .send
            .seal(now, index, packet, resend, &mut keys.local)
            .map_err(rtc_error)?;
        self.transmits.push_back(TaggedBytesMut {
            now,
            transport,
            message,
        });
        Ok(())
    }

    /// Sends the sender reports that are due.
    fn send_reports(&mut self, now: Instant) -> Result<(), TransportError> {
        let (Some(keys), Some(transport)) = (self.keys.as_mut(), self.tuple) else {
            return Ok(());
        };
        let Some(reports) = self.send.poll_reports(now) else {
            return Ok(());
        };
        let plain = rtc::rtcp::packet::marshal(&reports).map_err(rtc_error)?;
        let message = keys.local.encrypt_rtcp(&plain).map_err(rtc_error)?;
        self.transmits.push_back(TaggedBytesMut {
            now,
            transport,
            message,
        });
        Ok(())
    }
}

/// A consumer's repair stream (RTX, RFC 4588): its own SSRC, payload type and sequence
/// numbers; each packet carries the original sequence number ahead of the original payload.
#[derive(Debug)]
struct RepairStream {
    ssrc: u32,
    payload_type: u8,
    next_seq: u16,
}

impl RepairStream {
    /// `packet`, as it went out on the consumer, wrapped for the repair stream.
    fn wrap(&mut self, packet: rtc::rtp::Packet) -> rtc::rtp::Packet {
        let mut payload = bytes::BytesMut::with_capacity(2 + packet.payload.len());
        payload.extend_from_slice(&packet.header.sequence_number.to_be_bytes());
        payload.extend_from_slice(&packet.payload);
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                ssrc: self.ssrc,
                payload_type: self.payload_type,
                sequence_number: seq,
                ..packet.header
            },
            payload: payload.freeze(),
        }
    }
}

/// Whether a subscriber's downlink is congested (then its losses are the bottleneck's, and RED
/// would only add to them).
fn is_congested(downlink: &DownlinkEstimate) -> bool {
    downlink.is_congested() || downlink.under_ceiling()
}

fn rtc_error(e: RtcError) -> TransportError {
    TransportError(e.to_string())
}

impl Transport for WebRtcPeer {
    fn negotiate(
        &mut self,
        now: Instant,
        offer: String,
        rng: &mut StdRng,
    ) -> Result<String, NegotiationError> {
        self.touch_pc();
        self.answer(now, offer, rng)
    }

    fn handle_datagram(&mut self, datagram: TaggedBytesMut) -> Result<(), TransportError> {
        let now = datagram.now;
        self.touch_pc();
        self.read_datagram(datagram)?;
        self.pump(now)
    }

    fn poll_inbound(&mut self) -> Option<Inbound> {
        loop {
            if let Some(inbound) = self.inbound.pop_front() {
                return Some(inbound);
            }
            let message = self.pc.poll_read()?;
            self.queue_inbound(message.message);
        }
    }

    fn layer_of(&self, ssrc: u32) -> u8 {
        self.layers
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map_or(0, |(_, layer)| *layer)
    }

    fn downlink_estimate(&self) -> Option<&DownlinkEstimate> {
        Some(&self.downlink)
    }

    /// What the participant is to be sent: the connection's output was carried out at the
    /// datagram, timeout or event that made it.
    fn poll_transmit(&mut self) -> Option<TaggedBytesMut> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self, now: Instant) -> Option<TransportEvent> {
        if !self.pc_events {
            return None;
        }
        if let Err(e) = self.pump(now) {
            tracing::debug!("peer connection output dropped: {e}");
        }
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed,
                ) if !self.ice_connected => {
                    self.ice_connected = true;
                    if let Err(e) = self.start_leg(now) {
                        tracing::debug!("peer connection leg not started: {e}");
                    }
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected if !self.connected => {
                        self.connected = true;
                        let protection = self.keys.as_ref().map(|k| k.profile).unwrap_or_default();
                        return Some(TransportEvent::Connected {
                            protection: protection.to_owned(),
                        });
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.connected = false;
                        return Some(TransportEvent::Disconnected);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        self.pc_events = false;
        None
    }

    /// Drives ICE consent, DTLS retransmission, RTCP reports and NACK generation.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), TransportError> {
        if self.pc_deadline.is_some_and(|at| at <= now) {
            self.touch_pc();
            self.pc.handle_timeout(now).map_err(rtc_error)?;
        }
        if let Some(association) = &mut self.participant {
            association.handle_timeout(now).map_err(rtc_error)?;
            while let Some(flight) = association.poll_transmit() {
                if let Some(transport) = self.tuple {
                    self.transmits.push_back(TaggedBytesMut {
                        now,
                        transport,
                        message: flight,
                    });
                }
            }
        }
        self.leg_timeout(now)?;
        self.send.handle_timeout(now).map_err(rtc_error)?;
        self.send_reports(now)?;
        self.pump(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let participant = self
            .participant
            .as_ref()
            .and_then(Association::poll_timeout);
        if self.pc_deadline_stale {
            self.pc_deadline = self.pc.poll_timeout();
            self.pc_deadline_stale = false;
        }
        [
            self.pc_deadline,
            participant,
            self.leg.poll_timeout(),
            self.send.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn is_connected(&self) -> bool {
        self.connected && self.keys.is_some()
    }

    fn publication(&self) -> &Publication {
        &self.publication
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
        if !self.stamp(index, &mut packet) {
            return Ok(());
        }
        let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
        self.marks.note(index, ssrc, seq, now);
        if let Some(Some(red)) = self.red_out.get_mut(index) {
            if is_congested(&self.downlink) {
                red.stand_down();
            } else {
                red.observe_loss(now, self.downlink.loss());
            }
            if red.encode(now, &mut packet) {
                self.metrics.red_sent.inc();
            }
        }
        self.transmit(now, index, packet, false)
    }

    fn resend_rtp(
        &mut self,
        now: Instant,
        index: usize,
        mut packet: rtc::rtp::Packet,
    ) -> Result<(), TransportError> {
        if !self.stamp(index, &mut packet) {
            return Ok(());
        }
        if let Some(Some(repair)) = self.repairs.get_mut(index) {
            packet = repair.wrap(packet);
        }
        self.transmit(now, index, packet, true)
    }

    fn request_keyframe(&mut self, now: Instant, media_ssrc: u32) -> Result<bool, TransportError> {
        self.touch_pc();
        let Some(receiver_id) = self.receivers.video else {
            return Ok(false);
        };
        let Some(mut receiver) = self.pc.rtp_receiver(receiver_id) else {
            return Ok(false);
        };
        receiver
            .write_rtcp(
                now,
                vec![Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                })],
            )
            .map_err(rtc_error)?;
        self.pump(now)?;
        Ok(true)
    }

    fn close(&mut self) {
        self.touch_pc();
        let _ = self.pc.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_packet_goes_out_on_the_repair_stream_with_its_sequence_number_ahead() {
        let mut repair = RepairStream {
            ssrc: 0xBEEF,
            payload_type: 103,
            next_seq: 65_535,
        };
        let original = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 102,
                sequence_number: 0x1234,
                timestamp: 90_000,
                ssrc: 0xCAFE,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[7, 8, 9]),
        };
        let first = repair.wrap(original.clone());
        let second = repair.wrap(original);
        let h = &first.header;
        assert_eq!(
            (h.version, h.ssrc, h.payload_type, h.sequence_number),
            (2, 0xBEEF, 103, 65_535)
        );
        assert_eq!((h.timestamp, h.marker), (90_000, true));
        assert_eq!(&first.payload[..], &[0x12, 0x34, 7, 8, 9]);
        assert_eq!(second.header.sequence_number, 0, "its own sequence numbers");
    }
}
