//! What the participant sends, as the node reads it: its RTP as the peer connection hands it
//! up (RED unwrapped, the simulcast layer of each SSRC), and its RTCP as it arrives (the
//! keyframe requests and NACKs of its consumers, the loss its receiver reports show).

use super::{WebRtcPeer, is_congested};
use crate::media::transport::Inbound;
use kaskade_rtcp_tap::{RtcpObserver, nacked_packets};
use rtc::peer_connection::message::RTCMessage;
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use std::time::Instant;

/// Inbound SSRCs whose layer a peer remembers: its audio, up to three simulcast layers, and
/// room for a restarted encoder.
const MAX_INBOUND_SSRCS: usize = 8;

impl WebRtcPeer {
    /// Parses a message of the peer connection into inbound media: RTP as is (RED as the Opus
    /// packets it carries). Its RTCP was read as it arrived ([`Self::read_rtcp`]).
    pub(super) fn queue_inbound(&mut self, message: RTCMessage) {
        let RTCMessage::RtpPacket(_, packet) = message else {
            return;
        };
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

    /// The participant's RTCP, as it arrives: PLI and FIR become keyframe requests per
    /// consumer SSRC, NACKs (what the filter leaves of them) one request per lost packet, and
    /// the loss its reports show goes to the RED encoders. Read here rather than from the
    /// peer connection, which hands its application only compounds whose first packet names
    /// a stream it knows (Chromium's start with a receiver report of nothing).
    pub(super) fn read_rtcp(&mut self, now: Instant, packets: &mut Vec<Box<dyn RtcpPacket>>) {
        self.note_fresh();
        self.nack_filter.inbound(now, packets);
        for packet in packets.iter() {
            let any = packet.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                for ssrc in packet.destination_ssrc() {
                    self.inbound.push_back(Inbound::KeyframeRequest { ssrc });
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let ssrc = nack.media_ssrc;
                self.metrics.nacks_received.inc_by(nacked_packets(nack));
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
