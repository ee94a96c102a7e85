//! The datagrams of a cascade link: a cleartext header (magic, version, sender's node index,
//! counter) and a sealed frame: a relayed RTP packet, a keyframe request or a NACK.
//!
//! ```text
//! datagram: 0xCA | version 1 | sender index u16 | counter u64 | sealed frame | tag (16)
//! RTP:      1 | kind | publisher u32 | level (0xFF none) | M+PT | seq u16 | ts u32 | ssrc u32 | payload
//! keyframe: 2 | publisher u32
//! NACK:     3 | kind | publisher u32 | seq u16 ...
//! cached:   4 | (as RTP): a packet of a camera's cached group of pictures, for the receiver's
//!           own cache, not to be forwarded
//! ```
//!
//! Everything after the first datagram byte is checked before use: a short or unknown frame is
//! an error, never a panic.

use crate::media::forwarder::MediaKind;
use bytes::{BufMut, Bytes, BytesMut};
use kaskade_protocol::ids::ParticipantId;

/// First byte of every link datagram (outside the RFC 7983 ranges of WebRTC traffic).
pub const MAGIC: u8 = 0xCA;
/// Wire version.
pub const VERSION: u8 = 1;
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

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A relayed RTP packet.
    Rtp(RelayedRtp),
    /// Send a keyframe of this publisher's video.
    KeyframeRequest {
        /// The publisher.
        publisher: ParticipantId,
    },
    /// A packet of a publisher's cached group of pictures (a camera's): for the receiver's
    /// cache of that publisher, from which it replays to its own new viewers.
    Cached(RelayedRtp),
    /// Resend these packets of a stream.
    Nack {
        /// The publisher.
        publisher: ParticipantId,
        /// Which of its streams.
        kind: MediaKind,
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
    buf.put_u8(kind_byte(rtp.kind));
    buf.put_u32(rtp.publisher.into());
    buf.put_u8(rtp.level.map_or(NO_LEVEL, |l| l.min(127)));
    buf.put_u8(u8::from(rtp.marker) << 7 | (rtp.payload_type & 0x7F));
    buf.put_u16(rtp.seq);
    buf.put_u32(rtp.timestamp);
    buf.put_u32(rtp.ssrc);
    buf.put_slice(&rtp.payload);
}

/// Appends a keyframe request.
pub fn put_keyframe_request(buf: &mut BytesMut, publisher: ParticipantId) {
    buf.put_u8(KEYFRAME);
    buf.put_u32(publisher.into());
}

/// Appends a NACK for up to [`MAX_NACKS`] of `seqs`.
pub fn put_nack(buf: &mut BytesMut, publisher: ParticipantId, kind: MediaKind, seqs: &[u16]) {
    buf.put_u8(NACK);
    buf.put_u8(kind_byte(kind));
    buf.put_u32(publisher.into());
    for seq in seqs.iter().take(MAX_NACKS) {
        buf.put_u16(*seq);
    }
}

/// Decodes an opened frame.
pub fn decode(frame: Bytes) -> Result<Frame, FrameError> {
    let kind_at = |i: usize| match frame.get(i) {
        Some(0) => Ok(MediaKind::Audio),
        Some(1) => Ok(MediaKind::Video),
        _ => Err(FrameError::Malformed),
    };
    let u32_at = |i: usize| -> Result<u32, FrameError> {
        let b = frame.get(i..i + 4).ok_or(FrameError::Malformed)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match frame.first() {
        Some(&RTP) if frame.len() >= RTP_FIXED => Ok(Frame::Rtp(relayed(&frame)?)),
        Some(&CACHED) if frame.len() >= RTP_FIXED => Ok(Frame::Cached(relayed(&frame)?)),
        Some(&KEYFRAME) if frame.len() == 5 => Ok(Frame::KeyframeRequest {
            publisher: u32_at(1)?.into(),
        }),
        Some(&NACK) if frame.len() >= 6 && frame.len().is_multiple_of(2) => Ok(Frame::Nack {
            kind: kind_at(1)?,
            publisher: u32_at(2)?.into(),
            seqs: frame.slice(6..),
        }),
        Some(&(RTP | KEYFRAME | NACK | CACHED)) | None => Err(FrameError::Malformed),
        Some(_) => Err(FrameError::UnknownType),
    }
}

/// The relayed packet of an RTP or cached frame (at least [`RTP_FIXED`] bytes).
fn relayed(frame: &Bytes) -> Result<RelayedRtp, FrameError> {
    let u32_at = |i: usize| -> u32 {
        u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]])
    };
    Ok(RelayedRtp {
        kind: match frame[1] {
            0 => MediaKind::Audio,
            1 => MediaKind::Video,
            _ => return Err(FrameError::Malformed),
        },
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

fn kind_byte(kind: MediaKind) -> u8 {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp() -> RelayedRtp {
        RelayedRtp {
            publisher: ParticipantId::from(0x0010_0003),
            kind: MediaKind::Video,
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
            level: Some(30),
            marker: false,
            payload: Bytes::new(),
            ..rtp()
        };
        put_rtp(&mut buf, &audio);
        assert_eq!(decode(buf.split().freeze()), Ok(Frame::Rtp(audio)));
        put_cached(&mut buf, &rtp());
        assert_eq!(decode(buf.split().freeze()), Ok(Frame::Cached(rtp())));
        put_keyframe_request(&mut buf, ParticipantId::from(7));
        assert_eq!(
            decode(buf.split().freeze()),
            Ok(Frame::KeyframeRequest {
                publisher: ParticipantId::from(7)
            })
        );
        put_nack(
            &mut buf,
            ParticipantId::from(7),
            MediaKind::Audio,
            &[1, 65_535],
        );
        let Ok(Frame::Nack {
            publisher,
            kind: MediaKind::Audio,
            seqs,
        }) = decode(buf.split().freeze())
        else {
            panic!("not a NACK");
        };
        assert_eq!(publisher, ParticipantId::from(7));
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
        datagram[1] = 2;
        assert_eq!(parse_header(&datagram), Err(FrameError::Malformed));
    }
}
