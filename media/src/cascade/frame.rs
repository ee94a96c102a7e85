//! The datagrams of a cascade link: a cleartext header (magic, version, sender's node index,
//! counter) and a sealed frame: a relayed RTP packet, a keyframe request or a NACK.
//!
//! ```text
//! datagram: 0xCA | version 2 | sender index u16 | counter u64 | sealed frame | tag (16)
//! RTP:      1 | stream | publisher u32 | level (0xFF none) | M+PT | seq u16 | ts u32 | ssrc u32 | payload
//! keyframe: 2 | publisher u32 | layer
//! NACK:     3 | stream | publisher u32 | seq u16 ...
//! cached:   4 | (as RTP): a packet of a camera's cached group of pictures, for the receiver's
//!           own cache, not to be forwarded
//! stream:   kind (low 4 bits: 0 audio, 1 video) | simulcast layer (high 4 bits)
//! ```
//!
//! Each simulcast layer of a video crosses the link as its own stream, with the publisher's
//! SSRC, sequence numbers and timestamps, so that the receiving node chooses among the layers
//! for its own subscribers.
//!
//! Everything after the first datagram byte is checked before use: a short or unknown frame is
//! an error, never a panic.

use crate::media::forwarder::MediaKind;
use crate::media::simulcast::MAX_LAYERS;
use bytes::{BufMut, Bytes, BytesMut};
use kaskade_protocol::ids::ParticipantId;

/// First byte of every link datagram (outside the RFC 7983 ranges of WebRTC traffic).
pub const MAGIC: u8 = 0xCA;
/// Wire version.
pub const VERSION: u8 = 2;
/// Bytes of the cleartext header.
pub const HEADER_LEN: usize = 12;
/// Where the counter sits in the header.
pub const COUNTER_AT: usize = 4;
/// Most sequence numbers one NACK frame carries.
pub const MAX_NACKS: usize = 64;

const RTP: u8 = 1;
const KEYFRAME: u8 = 2;
const NACK: u8 = 3;
const CACHED: u8 = 4;
const RTP_FIXED: usize = 18;
const NO_LEVEL: u8 = 0xFF;

/// The cleartext header of a link datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHeader {
    /// The sending node's index.
    pub sender: u16,
    /// The sender's counter (nonce and replay check).
    pub counter: u64,
}

/// Why a datagram or frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its fixed part, or a wrong magic or version.
    #[error("malformed link datagram")]
    Malformed,
    /// A frame type this node does not know.
    #[error("unknown link frame type")]
    UnknownType,
}

/// Parses the cleartext header.
pub fn parse_header(datagram: &[u8]) -> Result<DatagramHeader, FrameError> {
    if datagram.len() < HEADER_LEN + super::cipher::TAG_LEN
        || datagram[0] != MAGIC
        || datagram[1] != VERSION
    {
        return Err(FrameError::Malformed);
    }
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&datagram[COUNTER_AT..COUNTER_AT + 8]);
    Ok(DatagramHeader {
        sender: u16::from_be_bytes([datagram[2], datagram[3]]),
        counter: u64::from_be_bytes(counter),
    })
}

/// A buffer holding the cleartext header for `sender`, ready for a frame to be appended.
pub fn start_datagram(sender: u16, capacity: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + capacity + super::cipher::TAG_LEN);
    buf.put_u8(MAGIC);
    buf.put_u8(VERSION);
    buf.put_u16(sender);
    buf.put_u64(0);
    buf
}

/// The RTP fields a relayed packet carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedRtp {
    /// The publisher (cluster-unique participant id).
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The simulcast layer of a video (0 for audio and for a video of one layer).
    pub layer: u8,
    /// RFC 6464 level (0 loudest, 127 silence), for audio.
    pub level: Option<u8>,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP payload type as the publisher sent it.
    pub payload_type: u8,
    /// Publisher's sequence number.
    pub seq: u16,
    /// Publisher's timestamp.
    pub timestamp: u32,
    /// Publisher's SSRC.
    pub ssrc: u32,
    /// RTP payload.
    pub payload: Bytes,
}

/// One stream a link carries: a publisher's audio, or one simulcast layer of its video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkStream {
    /// The publisher.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The simulcast layer of a video (0 otherwise).
    pub layer: u8,
}

impl RelayedRtp {
    /// The stream the packet belongs to.
    pub fn stream(&self) -> LinkStream {
        LinkStream {
            publisher: self.publisher,
            kind: self.kind,
            layer: self.layer,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A relayed RTP packet.
    Rtp(RelayedRtp),
    /// Send a keyframe of this publisher's video.
    KeyframeRequest {
        /// The publisher.
        publisher: ParticipantId,
        /// Of which simulcast layer.
        layer: u8,
    },
    /// A packet of a publisher's cached group of pictures (a camera's): for the receiver's
    /// cache of that publisher, from which it replays to its own new viewers.
    Cached(RelayedRtp),
    /// Resend these packets of a stream.
    Nack {
        /// The stream.
        stream: LinkStream,
        /// Missing sequence numbers, two bytes each.
        seqs: Bytes,
    },
}

/// Appends a relayed RTP frame.
pub fn put_rtp(buf: &mut BytesMut, rtp: &RelayedRtp) {
    put_relayed(buf, RTP, rtp);
}

/// Appends a cached-packet frame (see [`Frame::Cached`]).
pub fn put_cached(buf: &mut BytesMut, rtp: &RelayedRtp) {
    put_relayed(buf, CACHED, rtp);
}

fn put_relayed(buf: &mut BytesMut, frame_type: u8, rtp: &RelayedRtp) {
    buf.reserve(RTP_FIXED + rtp.payload.len());
    buf.put_u8(frame_type);
    buf.put_u8(stream_byte(rtp.kind, rtp.layer));
    buf.put_u32(rtp.publisher.into());
    buf.put_u8(rtp.level.map_or(NO_LEVEL, |l| l.min(127)));
    buf.put_u8(u8::from(rtp.marker) << 7 | (rtp.payload_type & 0x7F));
    buf.put_u16(rtp.seq);
    buf.put_u32(rtp.timestamp);
    buf.put_u32(rtp.ssrc);
    buf.put_slice(&rtp.payload);
}

/// Appends a keyframe request for `layer` of `publisher`'s video.
pub fn put_keyframe_request(buf: &mut BytesMut, publisher: ParticipantId, layer: u8) {
    buf.put_u8(KEYFRAME);
    buf.put_u32(publisher.into());
    buf.put_u8(layer);
}

/// Appends a NACK for up to [`MAX_NACKS`] of `seqs` of one stream.
pub fn put_nack(buf: &mut BytesMut, stream: LinkStream, seqs: &[u16]) {
    buf.put_u8(NACK);
    buf.put_u8(stream_byte(stream.kind, stream.layer));
    buf.put_u32(stream.publisher.into());
    for seq in seqs.iter().take(MAX_NACKS) {
        buf.put_u16(*seq);
    }
}

/// Decodes an opened frame.
pub fn decode(frame: Bytes) -> Result<Frame, FrameError> {
    let u32_at = |i: usize| -> Result<u32, FrameError> {
        let b = frame.get(i..i + 4).ok_or(FrameError::Malformed)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match frame.first() {
        Some(&RTP) if frame.len() >= RTP_FIXED => Ok(Frame::Rtp(relayed(&frame)?)),
        Some(&CACHED) if frame.len() >= RTP_FIXED => Ok(Frame::Cached(relayed(&frame)?)),
        Some(&KEYFRAME) if frame.len() == 6 && usize::from(frame[5]) < MAX_LAYERS => {
            Ok(Frame::KeyframeRequest {
                publisher: u32_at(1)?.into(),
                layer: frame[5],
            })
        }
        Some(&NACK) if frame.len() >= 6 && frame.len().is_multiple_of(2) => {
            let (kind, layer) = stream_of(frame[1])?;
            Ok(Frame::Nack {
                stream: LinkStream {
                    publisher: u32_at(2)?.into(),
                    kind,
                    layer,
                },
                seqs: frame.slice(6..),
            })
        }
        Some(&(RTP | KEYFRAME | NACK | CACHED)) | None => Err(FrameError::Malformed),
        Some(_) => Err(FrameError::UnknownType),
    }
}

/// The relayed packet of an RTP or cached frame (at least [`RTP_FIXED`] bytes).
fn relayed(frame: &Bytes) -> Result<RelayedRtp, FrameError> {
    let u32_at = |i: usize| -> u32 {
        u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]])
    };
    let (kind, layer) = stream_of(frame[1])?;
    Ok(RelayedRtp {
        kind,
        layer,
        publisher: u32_at(2).into(),
        level: (frame[6] != NO_LEVEL).then_some(frame[6] & 0x7F),
        marker: frame[7] & 0x80 != 0,
        payload_type: frame[7] & 0x7F,
        seq: u16::from_be_bytes([frame[8], frame[9]]),
        timestamp: u32_at(10),
        ssrc: u32_at(14),
        payload: frame.slice(RTP_FIXED..),
    })
}

/// The sequence numbers of a NACK frame.
pub fn nacked(seqs: &[u8]) -> impl Iterator<Item = u16> + '_ {
    seqs.chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
}

/// The byte naming one stream of a publisher: its kind and simulcast layer.
fn stream_byte(kind: MediaKind, layer: u8) -> u8 {
    let kind = match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    };
    kind | (layer & 0x0F) << 4
}

/// The kind and layer a stream byte names (an unknown kind or a layer beyond
/// [`MAX_LAYERS`] is malformed).
fn stream_of(byte: u8) -> Result<(MediaKind, u8), FrameError> {
    let kind = match byte & 0x0F {
        0 => MediaKind::Audio,
        1 => MediaKind::Video,
        _ => return Err(FrameError::Malformed),
    };
    let layer = byte >> 4;
    if usize::from(layer) >= MAX_LAYERS {
        return Err(FrameError::Malformed);
    }
    Ok((kind, layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp() -> RelayedRtp {
        RelayedRtp {
            publisher: ParticipantId::from(0x0010_0003),
            kind: MediaKind::Video,
            layer: 2,
            level: None,
            marker: true,
            payload_type: 102,
            seq: 65_535,
            timestamp: 0xFFFF_FFF0,
            ssrc: 0xDEAD_BEEF,
            payload: Bytes::from_static(&[0x65, 1, 2, 3]),
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = BytesMut::new();
        put_rtp(&mut buf, &rtp());
        assert_eq!(decode(buf.split().freeze()), Ok(Frame::Rtp(rtp())));
        let audio = RelayedRtp {
            kind: MediaKind::Audio,
            layer: 0,
            level: Some(30),
            marker: false,
            payload: Bytes::new(),
            ..rtp()
        };
        put_rtp(&mut buf, &audio);
        assert_eq!(decode(buf.split().freeze()), Ok(Frame::Rtp(audio)));
        put_cached(&mut buf, &rtp());
        assert_eq!(decode(buf.split().freeze()), Ok(Frame::Cached(rtp())));
        put_keyframe_request(&mut buf, ParticipantId::from(7), 1);
        assert_eq!(
            decode(buf.split().freeze()),
            Ok(Frame::KeyframeRequest {
                publisher: ParticipantId::from(7),
                layer: 1
            })
        );
        let stream = LinkStream {
            publisher: ParticipantId::from(7),
            kind: MediaKind::Video,
            layer: 2,
        };
        put_nack(&mut buf, stream, &[1, 65_535]);
        let Ok(Frame::Nack {
            stream: nacked_stream,
            seqs,
        }) = decode(buf.split().freeze())
        else {
            panic!("not a NACK");
        };
        assert_eq!(nacked_stream, stream);
        assert_eq!(nacked(&seqs).collect::<Vec<_>>(), [1, 65_535]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut buf = BytesMut::new();
        put_rtp(&mut buf, &rtp());
        let whole = buf.split().freeze();
        put_cached(&mut buf, &rtp());
        let cached = buf.split().freeze();
        for len in 0..RTP_FIXED {
            for frame in [&whole, &cached] {
                assert_eq!(
                    decode(frame.slice(..len)),
                    Err(FrameError::Malformed),
                    "{len}"
                );
            }
        }
        assert_eq!(
            decode(Bytes::from_static(&[9, 0, 0])),
            Err(FrameError::UnknownType)
        );
        assert_eq!(
            decode(Bytes::from_static(&[
                1, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ])),
            Err(FrameError::Malformed),
            "unknown kind"
        );
        assert_eq!(
            decode(Bytes::from_static(&[
                1, 0x31, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ])),
            Err(FrameError::Malformed),
            "a layer beyond the last"
        );
        assert_eq!(
            decode(Bytes::from_static(&[2, 0, 0, 0, 1, 3])),
            Err(FrameError::Malformed),
            "a keyframe request for a layer beyond the last"
        );
        assert_eq!(
            decode(Bytes::from_static(&[3, 0, 0, 0, 0, 1, 0])),
            Err(FrameError::Malformed),
            "odd NACK"
        );
    }

    #[test]
    fn headers_are_checked() {
        let buf = start_datagram(0x0102, 0);
        let mut datagram = buf.to_vec();
        datagram.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_header(&datagram),
            Ok(DatagramHeader {
                sender: 0x0102,
                counter: 0
            })
        );
        assert_eq!(parse_header(&datagram[..20]), Err(FrameError::Malformed));
        datagram[1] = 1;
        assert_eq!(
            parse_header(&datagram),
            Err(FrameError::Malformed),
            "version 1 named no layers"
        );
    }
}
