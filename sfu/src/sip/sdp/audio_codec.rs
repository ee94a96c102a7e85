//! The audio codecs a SIP leg takes, as SDP names and numbers them.

use sdp_types::RtpMap;

/// Audio codecs a SIP leg takes, in kaskade's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// Opus at 48 kHz: what the meeting speaks, so it passes through without transcoding.
    Opus,
    /// G.722: wideband (16 kHz), what room systems prefer after Opus.
    G722,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl AudioCodec {
    pub(super) const ALL: [AudioCodec; 4] = [
        AudioCodec::Opus,
        AudioCodec::G722,
        AudioCodec::Pcmu,
        AudioCodec::Pcma,
    ];

    /// The `rtpmap` encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Opus => "opus",
            AudioCodec::G722 => "G722",
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
        }
    }

    /// The RTP clock rate (G.722's is 8 kHz though it samples at 16, RFC 3551).
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48_000,
            AudioCodec::G722 | AudioCodec::Pcmu | AudioCodec::Pcma => 8_000,
        }
    }

    /// The payload type kaskade offers it with (the static ones of RFC 3551 for G.711).
    pub(super) fn offered_payload_type(self) -> u8 {
        match self {
            AudioCodec::Opus => 111,
            AudioCodec::G722 => 9,
            AudioCodec::Pcmu => 0,
            AudioCodec::Pcma => 8,
        }
    }

    /// The codec of a static payload type (RFC 3551), for descriptions without `rtpmap`.
    pub(super) fn of_static(payload_type: u8) -> Option<Self> {
        match payload_type {
            0 => Some(AudioCodec::Pcmu),
            8 => Some(AudioCodec::Pcma),
            9 => Some(AudioCodec::G722),
            _ => None,
        }
    }

    pub(super) fn of_rtpmap(rtpmap: &RtpMap) -> Option<Self> {
        Self::ALL.into_iter().find(|c| {
            c.encoding_name()
                .eq_ignore_ascii_case(&rtpmap.encoding_name)
                && c.clock_rate() == rtpmap.clock_rate
        })
    }
}
