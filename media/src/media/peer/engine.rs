//! The codecs and header extensions a kaskade node negotiates with a WebRTC peer, and the
//! tracks of its receive slots.

use crate::media::forwarder::MediaKind;
use crate::media::red::{RED_MIME, RED_PAYLOAD_TYPE};
use crate::media::rtx::{REPAIRED_RID_URI, RID_URI};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MediaEngine,
};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use rtc::shared::error::Error as RtcError;

/// H.264 constrained baseline, packetization mode 1: what every kaskade participant sends.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PAYLOAD_TYPE: u8 = 102;
/// H.264's retransmissions (RFC 4588).
const RTX_PAYLOAD_TYPE: u8 = 103;
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The header extensions of simulcast: the m-line's mid, the layer's RTP stream id and that of
/// the layer a retransmission repairs (RFC 8843, RFC 8852).
const SIMULCAST_EXTENSIONS: [&str; 3] = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    RID_URI,
    REPAIRED_RID_URI,
];

pub(super) fn is_forwarded_codec(mime: &str) -> bool {
    mime.eq_ignore_ascii_case(MIME_TYPE_H264) || mime.eq_ignore_ascii_case(MIME_TYPE_OPUS)
}

/// Whether `mime` is RED (RFC 2198), the redundant audio a node reads and writes around Opus.
pub(super) fn is_red(mime: &str) -> bool {
    mime.eq_ignore_ascii_case(RED_MIME)
}

/// Whether `codec` is RTX (RFC 4588) for the codec of `payload_type`: its `apt` names it (a
/// subscriber offers one RTX payload type per video payload type it takes).
pub(super) fn repairs(codec: &RTCRtpCodec, payload_type: u8) -> bool {
    codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_RTX)
        && codec.sdp_fmtp_line.split(';').any(|parameter| {
            parameter
                .trim()
                .strip_prefix("apt=")
                .is_some_and(|apt| apt.trim().parse() == Ok(payload_type))
        })
}

pub(super) fn kind_of(kind: RtpCodecKind) -> MediaKind {
    if kind == RtpCodecKind::Audio {
        MediaKind::Audio
    } else {
        MediaKind::Video
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![RTCPFeedback {
            typ: "transport-cc".to_owned(),
            parameter: String::new(),
        }],
    }
}

fn h264_codec() -> RTCRtpCodec {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![
            feedback("transport-cc", ""),
            feedback("ccm", "fir"),
            feedback("nack", ""),
            feedback("nack", "pli"),
        ],
    }
}

/// The codecs and header extensions a kaskade node negotiates: Opus and its redundancy (RED),
/// H.264 CB mode 1 and its retransmissions, audio levels, and simulcast's.
pub(super) fn media_engine() -> Result<MediaEngine, RtcError> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: OPUS_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: RED_MIME.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: format!("{OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}"),
                rtcp_feedback: Vec::new(),
            },
            payload_type: RED_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: h264_codec(),
            payload_type: H264_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_RTX.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!("apt={H264_PAYLOAD_TYPE}"),
                rtcp_feedback: Vec::new(),
            },
            payload_type: RTX_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        Some(RTCRtpTransceiverDirection::Recvonly),
    )?;
    for uri in SIMULCAST_EXTENSIONS {
        engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverDirection::Recvonly),
        )?;
    }
    Ok(engine)
}

/// The track of a receive slot sending on `ssrc`; a video slot's retransmissions go on
/// `rtx_ssrc` where the subscriber negotiated RTX.
pub(super) fn slot_track(kind: MediaKind, ssrc: u32, rtx_ssrc: u32) -> MediaStreamTrack {
    let (codec, rtp_kind, rtx) = match kind {
        MediaKind::Audio => (opus_codec(), RtpCodecKind::Audio, None),
        MediaKind::Video => (
            h264_codec(),
            RtpCodecKind::Video,
            Some(RTCRtpRtxParameters { ssrc: rtx_ssrc }),
        ),
    };
    MediaStreamTrack::new(
        format!("kaskade-{ssrc:08x}"),
        format!("{}-{ssrc:08x}", kind.as_str()),
        format!("{}-{ssrc:08x}", kind.as_str()),
        rtp_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx,
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtx(fmtp: &str) -> RTCRtpCodec {
        RTCRtpCodec {
            mime_type: "video/rtx".to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: Vec::new(),
        }
    }

    #[test]
    fn a_repair_codec_is_the_one_whose_apt_names_the_payload_type() {
        assert!(repairs(&rtx("apt=102"), 102));
        assert!(repairs(&rtx("rtx-time=3000; apt=102"), 102));
        assert!(!repairs(&rtx("apt=104"), 102), "another H.264's");
        assert!(!repairs(&rtx(""), 102));
        assert!(!repairs(&h264_codec(), 102), "not RTX");
    }
}
