//! The peer's one offer/answer: a sendonly transceiver per receive slot the client offered
//! (up to the node's limit), the node's ICE candidates, and what the answer settled: the
//! slots (consumers with their SSRCs, payload types and RED encoders) and the publish m-lines
//! (the receivers of the client's audio and video, and its audio level extension).

use std::time::Instant;

use rand::Rng;
use rtc::ice::tcp_type::TcpType;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use rtc::shared::error::Error as RtcError;

use super::dtls::{self, Association, offered_fingerprint};
use super::engine::{is_forwarded_codec, is_red, kind_of, repairs, slot_track};
use super::{RepairStream, WebRtcPeer};
use crate::media::forwarder::{MediaKind, OutboundStream};
use crate::media::red::{RedEncoder, RedUnwrap};
use crate::media::transport::{Consumer, NegotiationError};
use rtc::interceptor::{RTCPFeedback, RTPHeaderExtension, StreamInfo};

impl WebRtcPeer {
    /// Answers the client's one offer; `rng` picks a fresh SSRC for each slot and the random
    /// first sequence number and timestamp of its stream.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        offer_sdp: String,
        rng: &mut impl Rng,
    ) -> Result<String, NegotiationError> {
        if self.negotiated {
            return Err(NegotiationError::AlreadyNegotiated);
        }
        let invalid = |e: RtcError| NegotiationError::InvalidOffer(e.to_string());
        let offer = RTCSessionDescription::offer(offer_sdp).map_err(invalid)?;
        let parsed = offer.unmarshal().map_err(invalid)?;
        let fingerprint = offered_fingerprint(&parsed);
        let recvonly = |kind: &str| {
            parsed
                .media_descriptions
                .iter()
                .filter(|m| m.media_name.media == kind && m.attribute("recvonly").is_some())
                .count()
                .min(self.settings.max_slots)
        };
        let wanted = [
            (MediaKind::Audio, recvonly("audio")),
            (MediaKind::Video, recvonly("video")),
        ];
        for (kind, count) in wanted {
            for _ in 0..count {
                let (ssrc, rtx_ssrc) = (rng.random(), rng.random());
                self.pc
                    .add_transceiver_from_track(
                        slot_track(kind, ssrc, rtx_ssrc),
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Sendonly,
                            streams: vec![],
                            send_encodings: vec![],
                        }),
                    )
                    .map_err(invalid)?;
            }
        }
        self.pc
            .set_remote_description(now, offer)
            .map_err(invalid)?;
        for candidate in self.local_candidates().map_err(invalid)? {
            self.pc.add_local_candidate(candidate).map_err(invalid)?;
        }
        let answer = self.pc.create_answer(None).map_err(invalid)?;
        self.pc
            .set_local_description(now, answer)
            .map_err(invalid)?;
        let local = self
            .pc
            .local_description()
            .ok_or_else(|| NegotiationError::InvalidOffer("no local description".into()))?;
        // an offer none of whose m-lines can be negotiated (no codec this node forwards) gets
        // an answer rejecting them all, without ICE credentials: no connection can follow it.
        // The session is spent (kaskade negotiates once), and the client is told why.
        let accepted = local
            .unmarshal()
            .map_err(invalid)?
            .media_descriptions
            .iter()
            .any(|m| m.media_name.port.value != 0);
        if !accepted {
            self.negotiated = true;
            return Err(NegotiationError::InvalidOffer(
                "no m-line of the offer can be negotiated (Opus or H.264 packetization mode 1)"
                    .into(),
            ));
        }
        self.negotiated = true;
        let fingerprint = fingerprint.ok_or_else(|| {
            NegotiationError::InvalidOffer("the offer has no sha-256 DTLS fingerprint".into())
        })?;
        let identity = dtls::identity().map_err(invalid)?;
        self.participant = Some(
            Association::server(identity, fingerprint, self.profiles.clone()).map_err(invalid)?,
        );
        self.learn_negotiated(now, rng);
        Ok(local.sdp)
    }

    fn local_candidates(&self) -> Result<Vec<RTCIceCandidateInit>, RtcError> {
        let udp = self
            .settings
            .udp_candidates
            .iter()
            .map(|a| (a, "udp", TcpType::Unspecified));
        let tcp = self
            .settings
            .tcp_candidates
            .iter()
            .map(|a| (a, "tcp", TcpType::Passive));
        udp.chain(tcp)
            .map(|(addr, network, tcp_type)| {
                let candidate = CandidateHostConfig {
                    base_config: CandidateConfig {
                        network: network.to_owned(),
                        address: addr.ip().to_string(),
                        port: addr.port(),
                        component: 1,
                        ..Default::default()
                    },
                    tcp_type,
                }
                .new_candidate_host()?;
                RTCIceCandidate::from(&candidate).to_json()
            })
            .collect()
    }

    /// Records the slots and publish m-lines the answer settled.
    fn learn_negotiated(&mut self, now: Instant, rng: &mut impl Rng) {
        let transceivers: Vec<_> = self.pc.get_transceivers().collect();
        for id in transceivers {
            let Some(transceiver) = self.pc.rtp_transceiver(id) else {
                continue;
            };
            let Some(mid) = transceiver.mid().clone() else {
                continue;
            };
            let direction = transceiver.direction();
            let sender = transceiver.sender();
            let receiver = transceiver.receiver();
            if direction == RTCRtpTransceiverDirection::Sendonly
                && let Some(sender_id) = sender
            {
                let Some(mut sender) = self.pc.rtp_sender(sender_id) else {
                    continue;
                };
                let ssrc = sender.track().ssrcs().next().unwrap_or_default();
                let kind = kind_of(sender.track().kind());
                let parameters = sender.get_parameters();
                let codecs = &parameters.rtp_parameters.codecs;
                let Some(payload_type) = codecs
                    .iter()
                    .find(|c| is_forwarded_codec(&c.rtp_codec.mime_type))
                    .map(|c| c.payload_type)
                else {
                    continue;
                };
                let red = codecs
                    .iter()
                    .find(|c| is_red(&c.rtp_codec.mime_type))
                    .map(|c| RedEncoder::new(c.payload_type));
                let repair = codecs
                    .iter()
                    .find(|c| repairs(&c.rtp_codec, payload_type))
                    .zip(
                        parameters
                            .encodings
                            .first()
                            .and_then(|e| e.rtp_coding_parameters.rtx.as_ref()),
                    )
                    .map(|(codec, rtx)| RepairStream {
                        ssrc: rtx.ssrc,
                        payload_type: codec.payload_type,
                        next_seq: rng.random(),
                    });
                let Some(codec) = codecs
                    .iter()
                    .find(|c| c.payload_type == payload_type)
                    .map(|c| c.rtp_codec.clone())
                else {
                    continue;
                };
                self.send.add_stream(&StreamInfo {
                    ssrc,
                    ssrc_rtx: repair.as_ref().map(|r| r.ssrc),
                    payload_type,
                    payload_type_rtx: repair.as_ref().map(|r| r.payload_type),
                    rtp_header_extensions: parameters
                        .rtp_parameters
                        .header_extensions
                        .iter()
                        .map(|e| RTPHeaderExtension {
                            uri: e.uri.clone(),
                            id: e.id,
                        })
                        .collect(),
                    mime_type: codec.mime_type.clone(),
                    clock_rate: codec.clock_rate,
                    channels: codec.channels,
                    sdp_fmtp_line: codec.sdp_fmtp_line.clone(),
                    rtcp_feedback: codec
                        .rtcp_feedback
                        .iter()
                        .map(|f| RTCPFeedback {
                            typ: f.typ.clone(),
                            parameter: f.parameter.clone(),
                        })
                        .collect(),
                    ..Default::default()
                });
                let (seq, ts) = (rng.random(), rng.random());
                self.consumers.push(Consumer {
                    mid,
                    payload_type,
                    stream: OutboundStream::new(ssrc, kind, seq, ts, now),
                    layer: 0,
                });
                self.repairs.push(repair);
                self.red_out.push(red);
            } else if direction.has_recv()
                && let Some(receiver_id) = receiver
            {
                let Some(mut receiver) = self.pc.rtp_receiver(receiver_id) else {
                    continue;
                };
                let kind = kind_of(receiver.track().kind());
                let params = receiver.get_parameters().rtp_parameters.clone();
                for codec in &params.codecs {
                    if is_forwarded_codec(&codec.rtp_codec.mime_type) {
                        self.publication
                            .payload_kinds
                            .push((codec.payload_type, kind));
                    }
                }
                match kind {
                    MediaKind::Audio => {
                        let payload_type = |wanted: fn(&str) -> bool| {
                            params
                                .codecs
                                .iter()
                                .find(|c| wanted(&c.rtp_codec.mime_type))
                                .map(|c| c.payload_type)
                        };
                        if let (Some(red), Some(opus)) =
                            (payload_type(is_red), payload_type(is_forwarded_codec))
                        {
                            self.red_in = Some(RedUnwrap::new(red, opus));
                        }
                        self.receivers.audio = Some(receiver_id);
                        self.publication.audio_level_ext = params
                            .header_extensions
                            .iter()
                            .find(|e| e.uri == AUDIO_LEVEL_URI)
                            .and_then(|e| u8::try_from(e.id).ok());
                    }
                    MediaKind::Video => self.receivers.video = Some(receiver_id),
                }
            }
        }
    }
}
