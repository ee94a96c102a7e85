//! A browser-style participant's transport: one sans-IO `RTCPeerConnection` on the node's
//! shared socket, negotiated once, with a fixed set of receive slots.
//!
//! The client offers its publish m-lines (sendonly) and N recvonly slots per kind; the peer
//! answers with one sendonly transceiver per slot, each with an SSRC chosen here: the slot is a
//! [`Consumer`] whose [`OutboundStream`] rewrites whatever feeds it onto that SSRC. ICE is lite with credentials
//! chosen here (the ufrag names the participant, for routing), DTLS is the server role, and
//! SRTP is AEAD_AES_256_GCM unless legacy profiles are enabled.

mod engine;
mod negotiation;

use crate::media::bwe::{DownlinkEstimate, DownlinkEstimator, TwccStreamsOnly};
use crate::media::nack_filter::{self, FreshFrom, SentMarks};
use crate::media::red::{RedEncoder, RedUnwrap};
use crate::media::rtcp_tap;
use crate::media::rtx::RtxUnwrap;
use crate::media::transport::{
    Consumer, Inbound, NegotiationError, Publication, Transport, TransportError, TransportEvent,
};
use crate::metrics::Metrics;
use engine::media_engine;
use rand::rngs::StdRng;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, Registry, Slot as InterceptorSlot,
    TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;
use rtc::shared::error::Error as RtcError;
use rtc::statistics::StatsSelector;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Where the NACK filter sits in the interceptor chain: under the RTCP tap that hands what
/// is left of each NACK to the core (which resends it from the publisher's ring).
const NACK_FILTER_SLOT: usize = 3_500;
/// Where a publisher's RTX packets are unwrapped: under the NACK generator (7_000), so that it
/// sees a repaired packet as the original.
const RTX_UNWRAP_SLOT: usize = 5_500;
/// Inbound SSRCs whose layer a peer remembers: its audio, up to three simulcast layers, and
/// room for a restarted encoder.
const MAX_INBOUND_SSRCS: usize = 8;
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
    /// Unwraps its audio when it publishes RED.
    red_in: Option<RedUnwrap>,
    /// A RED encoder for each consumer whose slot negotiated RED (same index).
    red_out: Vec<Option<RedEncoder>>,
    metrics: Arc<Metrics>,
}

impl WebRtcPeer {
    /// A peer whose ICE ufrag is `ufrag` (routes its STUN to it) and password `pwd`.
    pub fn new(
        now: Instant,
        ufrag: String,
        pwd: String,
        settings: Arc<PeerSettings>,
        metrics: Arc<Metrics>,
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
            .with_srtp_protection_profiles(profiles)
            .build();
        let mut media_engine = media_engine()?;
        // no NACK responder: the core answers NACKs from each publisher's one ring
        // (`media::repair`) instead of a copy of every packet per consumer
        let registry = Registry::new().with(
            InterceptorSlot::NackGenerator,
            NackGeneratorBuilder::new().build(),
        );
        // both halves of transport-wide congestion control: feedback on what the participant
        // sends, and sequence numbers on what it is sent, whose feedback drives its estimate.
        // No pacer: the node forwards each packet as it arrives, and the allocator keeps the
        // rate within the estimate by choosing layers.
        let registry = configure_twcc_receiver_only(registry, &mut media_engine)?;
        let downlink = DownlinkEstimate::default();
        let registry = registry
            .with(
                InterceptorSlot::TwccSender,
                TwccStreamsOnly(TwccSenderBuilder::new().build()),
            )
            .with(
                InterceptorSlot::CongestionControl,
                TwccStreamsOnly(
                    CongestionControlBuilder::new(DownlinkEstimator::new(downlink.clone(), label))
                        .build(),
                ),
            );
        let registry = configure_rtcp_reports(registry);
        // under the tap (14_000): what the core is asked to resend is narrowed first
        let fresh = FreshFrom::new(2 * settings.max_slots);
        let marks = SentMarks::new(now, 2 * settings.max_slots);
        let filter = nack_filter::tap(
            fresh.clone(),
            marks.clone(),
            downlink.clone(),
            metrics.clone(),
        );
        let registry = registry
            .with(InterceptorSlot::Custom(NACK_FILTER_SLOT), filter)
            .with(
                InterceptorSlot::Custom(RTX_UNWRAP_SLOT),
                RtxUnwrap::new(metrics.clone()),
            )
            .with(
                InterceptorSlot::Custom(14_000),
                rtcp_tap::tap(metrics.clone()),
            );
        let pc = RTCPeerConnectionBuilder::new()
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;
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
            red_in: None,
            red_out: Vec::new(),
            metrics,
        })
    }

    /// Parses a decrypted message into inbound media: RTP as is (RED as the Opus packets it
    /// carries), PLI and FIR as keyframe requests per consumer SSRC, NACKs (what the filter
    /// left of them) as one request per lost packet, the loss receiver reports show to the RED
    /// encoders; other RTCP (handled by the interceptors) dropped.
    fn queue_inbound(&mut self, now: Instant, message: RTCMessage) {
        match message {
            RTCMessage::RtpPacket(_, packet) => {
                self.learn_layer(packet.header.ssrc);
                let Some(red) = &mut self.red_in else {
                    self.inbound.push_back(Inbound::Rtp(packet));
                    return;
                };
                let inbound = &mut self.inbound;
                match red.unwrap(packet, |p| inbound.push_back(Inbound::Rtp(p))) {
                    Ok(unwrapped) => {
                        if unwrapped.red {
                            self.metrics.red_received.inc();
                        }
                        self.metrics
                            .red_recovered
                            .inc_by(unwrapped.recovered as u64);
                    }
                    Err(_) => {
                        self.metrics.red_unreadable.inc();
                    }
                }
            }
            RTCMessage::RtcpPacket(_, packets) => {
                for packet in packets {
                    let any = packet.as_any();
                    if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                        for ssrc in packet.destination_ssrc() {
                            self.inbound.push_back(Inbound::KeyframeRequest { ssrc });
                        }
                    } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                        let ssrc = nack.media_ssrc;
                        for pair in &nack.nacks {
                            self.inbound
                                .extend(pair.into_iter().map(|seq| Inbound::Nack { ssrc, seq }));
                        }
                    } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                        self.observe_reports(now, &report.reports);
                    } else if let Some(report) = any.downcast_ref::<SenderReport>() {
                        self.observe_reports(now, &report.reports);
                    }
                }
            }
            _ => {}
        }
    }

    /// Hands the loss a subscriber's receiver reports show on a RED slot to its encoder.
    fn observe_reports(&mut self, now: Instant, reports: &[ReceptionReport]) {
        if is_congested(&self.downlink) {
            return;
        }
        for report in reports {
            let slot = self
                .consumers
                .iter()
                .zip(&mut self.red_out)
                .find(|(consumer, _)| consumer.stream.ssrc() == report.ssrc);
            if let Some((_, Some(encoder))) = slot {
                encoder.observe_loss(now, f64::from(report.fraction_lost) / 256.0);
            }
        }
    }

    /// Notes the layer of a new inbound SSRC: its encoding's place in the video receiver's
    /// encodings (the order of the offer's `a=simulcast`), or 0 when the video has one encoding
    /// or the SSRC is not video. An SSRC of a simulcast video whose rid is not known yet is
    /// looked up again at its next packet.
    fn learn_layer(&mut self, ssrc: u32) {
        if self.layers.len() >= MAX_INBOUND_SSRCS || self.layers.iter().any(|(s, _)| *s == ssrc) {
            return;
        }
        let codings = self
            .receivers
            .video
            .and_then(|id| self.pc.rtp_receiver(id))
            .map(|receiver| {
                let codings = receiver.track().codings();
                let index = codings
                    .iter()
                    .position(|c| c.rtp_coding_parameters.ssrc == Some(ssrc));
                (codings.len(), index)
            });
        let is_audio = self
            .receivers
            .audio
            .and_then(|id| self.pc.rtp_receiver(id))
            .is_some_and(|receiver| receiver.track().ssrcs().any(|s| s == ssrc));
        let layer = match codings {
            Some((_, Some(index))) => u8::try_from(index).unwrap_or(0),
            Some((count, None)) if count > 1 && !is_audio => return,
            _ => 0,
        };
        self.layers.push((ssrc, layer));
    }
}

impl WebRtcPeer {
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

    /// Hands a packet for one of its consumers (or their repair streams) to the connection's
    /// outbound interceptors and SRTP: the consumer's SSRC and payload type were negotiated
    /// here, so the sender's checks of them are not run again for every packet.
    fn send(&mut self, now: Instant, packet: rtc::rtp::Packet) -> Result<(), TransportError> {
        self.pc
            .handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(String::new(), packet),
            })
            .map_err(rtc_error)
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
        self.answer(now, offer, rng)
    }

    fn handle_datagram(&mut self, datagram: TaggedBytesMut) -> Result<(), TransportError> {
        if is_rtcp(&datagram.message) {
            for (index, consumer) in self.consumers.iter().enumerate() {
                let stream = &consumer.stream;
                self.fresh.note(index, stream.ssrc(), stream.fresh_from());
            }
        }
        self.pc.handle_read(datagram).map_err(rtc_error)
    }

    fn poll_inbound(&mut self) -> Option<Inbound> {
        loop {
            if let Some(inbound) = self.inbound.pop_front() {
                return Some(inbound);
            }
            let message = self.pc.poll_read()?;
            self.queue_inbound(message.now, message.message);
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

    fn poll_transmit(&mut self) -> Option<TaggedBytesMut> {
        self.pc.poll_write()
    }

    fn poll_event(&mut self, now: Instant) -> Option<TransportEvent> {
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if !self.connected => {
                        self.connected = true;
                        let protection = self
                            .pc
                            .get_stats(now, StatsSelector::None)
                            .transport()
                            .map(|t| t.srtp_cipher.clone())
                            .unwrap_or_default();
                        return Some(TransportEvent::Connected { protection });
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.connected = false;
                        return Some(TransportEvent::Disconnected);
                    }
                    _ => {}
                }
            }
        }
        None
    }

    /// Drives ICE consent, DTLS retransmission, RTCP reports and NACK generation.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), TransportError> {
        self.pc.handle_timeout(now).map_err(rtc_error)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    fn is_connected(&self) -> bool {
        self.connected
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
        self.send(now, packet)
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
        self.send(now, packet)
    }

    fn request_keyframe(&mut self, now: Instant, media_ssrc: u32) -> Result<bool, TransportError> {
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
        Ok(true)
    }

    fn close(&mut self) {
        let _ = self.pc.close();
    }
}

/// Whether a datagram is (S)RTCP: an RTP-range first byte (RFC 7983) and an RTCP packet type
/// in the second, whose header SRTCP leaves in the clear (RFC 5761).
fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, 192..=223, ..])
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
