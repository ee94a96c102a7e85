//! End-to-end latency stamps: a publisher sends, ahead of each video frame, one small H.264 SEI
//! NAL unit (user data unregistered, ITU-T H.264 D.1.6) carrying its send instant; a receiver
//! that finds one knows how long that frame's first packet took, whatever the server did to
//! the RTP header (kaskade rewrites SSRC, sequence numbers and timestamps and drops header
//! extensions; Janus rewrites them too). Decoders ignore unknown user data, so the video still
//! decodes everywhere.
//!
//! Instants are microseconds on one process-wide monotonic clock ([`clock_us`]): the load
//! generator's publishers and receivers live in one process, so no clock sync is needed. The
//! stamp is written seven bits per byte with the high bit set, so no zero byte appears and no
//! emulation prevention is needed.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;

/// The SEI payload UUID that marks kaskade's stamps ("kaskade-latency\0" in ASCII).
const UUID: [u8; 16] = *b"kaskade-latency\x01";
/// Stamp bytes: 8 x 7 bits = 56 bits of microseconds.
const STAMP_BYTES: usize = 8;
/// NAL header (SEI), payload type, payload size, UUID, stamp, RBSP trailing bits.
const PACKET_LEN: usize = 1 + 1 + 1 + UUID.len() + STAMP_BYTES + 1;
/// H.264 NAL unit type of SEI.
const NAL_SEI: u8 = 6;
/// SEI payload type "user data unregistered".
const USER_DATA_UNREGISTERED: u8 = 5;

/// The clock's origin: an hour before the first use (when the machine has been up that
/// long), so instants from just before the first use are still on the clock.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(std::time::Duration::from_secs(3600))
            .unwrap_or(now)
    })
}

/// Microseconds on the process-wide latency clock, now.
pub fn clock_us() -> u64 {
    instant_us(Instant::now())
}

/// `instant` on the [`clock_us`] clock.
pub fn instant_us(instant: Instant) -> u64 {
    instant.saturating_duration_since(origin()).as_micros() as u64
}

/// One RTP payload (a single NAL unit packet, RFC 6184 5.6) holding the stamp `sent_us`.
pub fn stamp_payload(sent_us: u64) -> Bytes {
    let mut out = Vec::with_capacity(PACKET_LEN);
    out.push(NAL_SEI);
    out.push(USER_DATA_UNREGISTERED);
    out.push((UUID.len() + STAMP_BYTES) as u8);
    out.extend_from_slice(&UUID);
    for i in (0..STAMP_BYTES).rev() {
        out.push(0x80 | ((sent_us >> (7 * i)) & 0x7f) as u8);
    }
    out.push(0x80);
    Bytes::from(out)
}

/// The stamp in `payload` if it is a [`stamp_payload`] (cheap to call on every packet).
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    if payload.len() != PACKET_LEN
        || payload[0] & 0x1f != NAL_SEI
        || payload[1] != USER_DATA_UNREGISTERED
        || payload[3..3 + UUID.len()] != UUID
    {
        return None;
    }
    let stamp = &payload[3 + UUID.len()..3 + UUID.len() + STAMP_BYTES];
    Some(
        stamp
            .iter()
            .fold(0u64, |acc, byte| (acc << 7) | u64::from(byte & 0x7f)),
    )
}

/// Latency in microseconds of a packet that arrived at `arrival` carrying `payload`, if the
/// payload is a stamp.
pub fn latency_us(payload: &[u8], arrival: Instant) -> Option<u64> {
    read_stamp(payload).map(|sent| instant_us(arrival).saturating_sub(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_without_zero_bytes() {
        for sent in [0, 1, 127, 128, 1_000_000, (1 << 56) - 1] {
            let payload = stamp_payload(sent);
            assert_eq!(payload.len(), PACKET_LEN);
            assert!(!payload.contains(&0), "{payload:?}");
            assert_eq!(read_stamp(&payload), Some(sent));
        }
    }

    #[test]
    fn other_payloads_are_not_stamps() {
        let stamp = stamp_payload(42);
        assert_eq!(read_stamp(&stamp[..stamp.len() - 1]), None);
        let mut foreign = stamp.to_vec();
        foreign[5] ^= 1;
        assert_eq!(read_stamp(&foreign), None);
        let mut idr = stamp.to_vec();
        idr[0] = 0x65;
        assert_eq!(read_stamp(&idr), None);
        assert_eq!(read_stamp(&[]), None);
    }

    #[test]
    fn latency_is_arrival_minus_send() {
        let sent = Instant::now();
        let payload = stamp_payload(instant_us(sent));
        let arrival = sent + std::time::Duration::from_millis(3);
        let latency = latency_us(&payload, arrival).unwrap();
        assert!((2_999..=3_001).contains(&latency), "{latency}");
    }

    #[test]
    fn openh264_ignores_the_stamp() {
        use crate::video::{VideoClip, VideoClipConfig};
        let clip = VideoClip::encode(VideoClipConfig::new(160, 96, 10, 100_000)).unwrap();
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let mut decoded = 0;
        for frame in clip.frames() {
            let mut annex_b = Vec::new();
            let stamp = stamp_payload(1234);
            for payload in std::iter::once(&stamp).chain(&frame.payloads) {
                kaskade_picture::receive::depacketize_into(payload, &mut annex_b).unwrap();
            }
            if decoder.decode(&annex_b).unwrap().is_some() {
                decoded += 1;
            }
        }
        assert_eq!(decoded, clip.frames().len());
    }
}
