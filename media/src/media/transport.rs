//! The participant model: what the core asks of any participant's transport.
//!
//! Every participant of a node, whatever carries its media (a WebRTC peer connection on the
//! node's socket, or RTP handed in by the shell from an RTSP camera or, later, a SIP leg), is
//! one [`Participant`](super::participant::Participant) record with a `Box<dyn Transport>`.
//! The core never asks which kind a transport is: it feeds datagrams and time in, drains
//! [`Inbound`] media and [`TransportEvent`]s out, writes forwarded packets to the transport's
//! [`Consumer`]s, and asks it for keyframes of what it publishes.
//!
//! Vocabulary (as in mediasoup): a *producer* is one inbound stream a participant publishes
//! (its kind is told by [`Publication`]); a *consumer* is one outbound stream a subscriber
//! receives, with its own SSRC and rewriting ([`Consumer`]); the room's fan-out table maps each
//! producer to the consumers it feeds.

use crate::media::bwe::DownlinkEstimate;
use crate::media::forwarder::{MediaKind, OutboundStream};
use rand::rngs::StdRng;
use rtc::shared::TaggedBytesMut;
use std::time::Instant;

/// Why an offer could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    /// The SDP does not parse, or asks for something this node cannot do.
    #[error("invalid offer: {0}")]
    InvalidOffer(String),
    /// The peer connection already negotiated (kaskade negotiates once per session).
    #[error("the session is already negotiated")]
    AlreadyNegotiated,
    /// This transport is not negotiated by its participant (its media is set up by the node).
    #[error("this participant's media is not negotiated over signaling")]
    NotNegotiable,
}

/// Why a transport refused something the core handed it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Media arriving from a participant, decrypted and parsed.
#[derive(Debug)]
pub enum Inbound {
    /// An RTP packet of one of its producers.
    Rtp(rtc::rtp::Packet),
    /// It asks for a keyframe of what it receives on the consumer with this outbound SSRC.
    KeyframeRequest {
        /// The consumer's SSRC (the media SSRC of the PLI or FIR).
        ssrc: u32,
    },
    /// It asks again for the packet its consumer with outbound SSRC `ssrc` sent as `seq` (an
    /// entry of its NACK, past the NACK filter).
    Nack {
        /// The consumer's SSRC (the media SSRC of the NACK).
        ssrc: u32,
        /// The consumer's sequence number of the lost packet.
        seq: u16,
    },
}

/// Something a transport did that the core must act on.
#[derive(Debug)]
pub enum TransportEvent {
    /// Media can flow.
    Connected {
        /// How media is protected on this transport (the SRTP profile, or `none`).
        protection: String,
    },
    /// The transport failed or closed.
    Disconnected,
    /// A keyframe of what arrives on `media_ssrc` was asked of a source that is not reached
    /// through this transport: the shell feeds it (the shell asks its source, or waits for its
    /// next keyframe when the source has no way to be asked), or a peer node relays it (asked
    /// over the link, for that simulcast layer).
    KeyframeWanted {
        /// The SSRC the video arrives on here.
        media_ssrc: u32,
    },
}

/// What a participant publishes: its producers' payload types and the header extension its
/// audio levels arrive in.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    /// Payload type -> kind of each producer.
    pub payload_kinds: Vec<(u8, MediaKind)>,
    /// The RFC 6464 audio-level extension id on its audio.
    pub audio_level_ext: Option<u8>,
    /// Its video cannot be asked for a keyframe (an RTSP camera): the core keeps the group of
    /// pictures since its last keyframe and replays it to a consumer that starts watching.
    pub cache_gop: bool,
}

impl Publication {
    /// The kind of a published packet, by payload type.
    pub fn kind_of(&self, payload_type: u8) -> Option<MediaKind> {
        self.payload_kinds
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, kind)| *kind)
    }

    /// Whether it publishes media of `kind`.
    pub fn publishes(&self, kind: MediaKind) -> bool {
        self.payload_kinds.iter().any(|(_, k)| *k == kind)
    }
}

/// One outbound stream of a subscriber (a receive slot of its session): a fixed SSRC and
/// payload type, and the rewriting that keeps it one seamless stream whoever feeds it.
#[derive(Debug)]
pub struct Consumer {
    /// The m-line's mid, as the subscriber knows it.
    pub mid: String,
    /// The payload type the subscriber negotiated for the slot's codec.
    pub payload_type: u8,
    /// Rewriting state (its SSRC is the consumer's).
    pub stream: OutboundStream,
    /// The simulcast layer of its publisher's video it is to carry (0 without simulcast), or
    /// `allocation::PAUSED` when its subscriber's downlink has no room for it.
    pub layer: u8,
}

/// A participant's transport, as the core drives it. Sans-IO: datagrams and time come in as
/// arguments, datagrams to send are drained with [`Transport::poll_transmit`].
///
/// The provided methods are those of a publish-only transport (a source the node feeds, or a
/// participant relayed from another node): nothing to negotiate, no consumers, no timers and
/// no datagrams of its own.
pub trait Transport: Send {
    /// Answers the participant's offer (transports set up by the node refuse with
    /// [`NegotiationError::NotNegotiable`]); `rng` draws the consumers' SSRCs and initial
    /// sequence numbers.
    fn negotiate(
        &mut self,
        _now: Instant,
        _offer: String,
        _rng: &mut StdRng,
    ) -> Result<String, NegotiationError> {
        Err(NegotiationError::NotNegotiable)
    }

    /// Feeds one datagram the node's socket received for this participant.
    fn handle_datagram(&mut self, datagram: TaggedBytesMut) -> Result<(), TransportError>;

    /// The next inbound media.
    fn poll_inbound(&mut self) -> Option<Inbound>;

    /// The simulcast layer of its video that arrives on `ssrc`, numbered in the order its
    /// offer lists them (0 for a transport without simulcast).
    fn layer_of(&self, _ssrc: u32) -> u8 {
        0
    }

    /// What the participant's downlink carries, as estimated from its congestion feedback
    /// (`None`: a transport that estimates nothing, never limited).
    fn downlink_estimate(&self) -> Option<&DownlinkEstimate> {
        None
    }

    /// The next datagram to send on the node's socket.
    fn poll_transmit(&mut self) -> Option<TaggedBytesMut> {
        None
    }

    /// The next event.
    fn poll_event(&mut self, now: Instant) -> Option<TransportEvent>;

    /// Drives the transport's timers.
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), TransportError> {
        Ok(())
    }

    /// The transport's next deadline.
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    /// Whether forwarded media can be written now.
    fn is_connected(&self) -> bool;

    /// What the participant publishes.
    fn publication(&self) -> &Publication;

    /// The participant's consumers, in the order its session knows them.
    fn consumers(&self) -> &[Consumer] {
        &[]
    }

    /// Mutable access to the consumers' rewriting state.
    fn consumers_mut(&mut self) -> &mut [Consumer] {
        &mut []
    }

    /// Writes one forwarded packet, already rewritten, on consumer `index` (the transport sets
    /// the consumer's SSRC and payload type).
    fn write_rtp(
        &mut self,
        _now: Instant,
        _index: usize,
        _packet: rtc::rtp::Packet,
    ) -> Result<(), TransportError> {
        Err(TransportError("this transport receives nothing".into()))
    }

    /// Resends a packet consumer `index` sent before, rebuilt with its sequence number and
    /// timestamp as they went out: on the consumer's repair stream (RTX) where the subscriber
    /// negotiated one, as it was otherwise.
    fn resend_rtp(
        &mut self,
        _now: Instant,
        _index: usize,
        _packet: rtc::rtp::Packet,
    ) -> Result<(), TransportError> {
        Err(TransportError("this transport resends nothing".into()))
    }

    /// Asks the participant for a keyframe of its video, whose SSRC is `media_ssrc`. Returns
    /// false when nothing could be asked.
    fn request_keyframe(&mut self, now: Instant, media_ssrc: u32) -> Result<bool, TransportError>;

    /// Closes the transport.
    fn close(&mut self);
}
