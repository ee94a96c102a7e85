//! The raw forwarder's wire format, shared by the forwarder and its participants.
//!
//! **Keys.** Both sides hold the same secret (`--secret`). HKDF-SHA256 (salt
//! [`HKDF_SALT`]) turns it into a [`Secret`]; a participant's key and salt are expanded from it
//! with the participant id and a random session id chosen at each join
//! ([`Secret::participant_key`]), so there is no handshake, and a participant that joins again
//! gets fresh keys (its sequence numbers may start over without repeating a nonce).
//!
//! **Media** is an RTP packet: a 12-byte header in clear (version 2, no CSRC, no extension),
//! the AES-256-GCM sealed payload and the 16-byte tag; the header is the AAD. The nonce is
//! SRTP AEAD's (RFC 7714 section 8.1): `(0x0000 || SSRC || ROC || SEQ) XOR salt`, where ROC is
//! the rollover counter of the 48-bit extended sequence number ([`estimate_index`]). The SSRC
//! names the publisher and the kind ([`ssrc`]), so the forwarder knows whose key opens a
//! packet without looking at addresses, and no two streams under one key share a nonce.
//!
//! **Control** datagrams (hello, ack, bye) are [`CONTROL_LEN`] bytes: magic `K`, type, version,
//! a zero byte, room id, participant id, session id and a counter (big-endian), then the tag of
//! an empty plaintext sealed with the participant's key over those 32 bytes, nonce
//! `(0xFF || type || 0x0000 || counter) XOR salt` (never a media nonce, whose first byte is 0).
//! Counters only grow, so a replayed hello or bye is refused.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use ring::hkdf;

use kaskade_client::signaling::MediaKind;

/// Length of the clear RTP header.
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of a control datagram.
pub const CONTROL_LEN: usize = 48;
/// Length of a control datagram's clear part (its AAD).
const CONTROL_AAD_LEN: usize = CONTROL_LEN - TAG_LEN;
/// The largest datagram either side handles; longer ones are malformed.
pub const MAX_DATAGRAM: usize = 1500;
/// The largest RTP payload that fits in [`MAX_DATAGRAM`].
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - RTP_HEADER_LEN - TAG_LEN;
/// The first byte of every control datagram (outside RTP's 0x80..=0xBF).
pub const CONTROL_MAGIC: u8 = b'K';
/// The control format version.
pub const CONTROL_VERSION: u8 = 1;
/// Participant ids are below this (the SSRC carries the id and one kind bit).
pub const MAX_PARTICIPANT_ID: u32 = 1 << 31;
/// The HKDF salt of [`Secret::new`].
pub const HKDF_SALT: &[u8] = b"kaskade raw forwarder v1";
/// Extended sequence numbers (ROC and SEQ) are 48 bits.
const INDEX_MASK: u64 = (1 << 48) - 1;

/// What a control datagram says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// A participant joins its room, or says it is still there (sent every second).
    Hello,
    /// The forwarder accepted a hello.
    Ack,
    /// A participant leaves.
    Bye,
}

impl ControlKind {
    fn byte(self) -> u8 {
        match self {
            ControlKind::Hello => b'H',
            ControlKind::Ack => b'A',
            ControlKind::Bye => b'B',
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'H' => Some(ControlKind::Hello),
            b'A' => Some(ControlKind::Ack),
            b'B' => Some(ControlKind::Bye),
            _ => None,
        }
    }
}

/// The clear fields of a control datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Hello, ack or bye.
    pub kind: ControlKind,
    /// The room ([`room_id`] of its name).
    pub room: u64,
    /// The participant (below [`MAX_PARTICIPANT_ID`]).
    pub participant: u32,
    /// The participant's session (random at each join); it selects the key.
    pub session: u64,
    /// Grows with every hello and bye of the participant; an ack echoes its hello's.
    pub counter: u64,
}

impl Control {
    /// Reads the clear fields of a control datagram (not yet authenticated).
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        if datagram.len() != CONTROL_LEN
            || datagram[0] != CONTROL_MAGIC
            || datagram[2] != CONTROL_VERSION
        {
            return None;
        }
        let u64_at = |at: usize| u64::from_be_bytes(datagram[at..at + 8].try_into().expect("8"));
        Some(Self {
            kind: ControlKind::from_byte(datagram[1])?,
            room: u64_at(4),
            participant: u32::from_be_bytes(datagram[12..16].try_into().expect("4")),
            session: u64_at(16),
            counter: u64_at(24),
        })
    }

    /// Writes the sealed datagram into `out` (at least [`CONTROL_LEN`] bytes); returns its
    /// length.
    pub fn seal(&self, key: &ParticipantKey, out: &mut [u8]) -> usize {
        let out = &mut out[..CONTROL_LEN];
        out[0] = CONTROL_MAGIC;
        out[1] = self.kind.byte();
        out[2] = CONTROL_VERSION;
        out[3] = 0;
        out[4..12].copy_from_slice(&self.room.to_be_bytes());
        out[12..16].copy_from_slice(&self.participant.to_be_bytes());
        out[16..24].copy_from_slice(&self.session.to_be_bytes());
        out[24..32].copy_from_slice(&self.counter.to_be_bytes());
        let (aad, tag) = out.split_at_mut(CONTROL_AAD_LEN);
        let sealed = key
            .key
            .seal_in_place_separate_tag(
                key.control_nonce(self.kind, self.counter),
                Aad::from(&*aad),
                &mut [],
            )
            .expect("sealing an empty plaintext");
        tag.copy_from_slice(sealed.as_ref());
        CONTROL_LEN
    }

    /// Whether `datagram` (whose fields are `self`) carries a valid tag under `key`.
    pub fn verify(&self, key: &ParticipantKey, datagram: &[u8]) -> bool {
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&datagram[CONTROL_AAD_LEN..CONTROL_LEN]);
        key.key
            .open_in_place(
                key.control_nonce(self.kind, self.counter),
                Aad::from(&datagram[..CONTROL_AAD_LEN]),
                &mut tag,
            )
            .is_ok()
    }
}

/// One participant's side of the control exchange: who and where it is, and the counter its
/// hellos and byes grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlSender {
    /// The room ([`room_id`] of its name).
    pub room: u64,
    /// The participant.
    pub participant: u32,
    /// The participant's session.
    pub session: u64,
    /// The last counter used.
    pub counter: u64,
}

impl ControlSender {
    /// The next control datagram of `kind`, sealed with `key` (the counter grows).
    pub fn next(&mut self, kind: ControlKind, key: &ParticipantKey) -> [u8; CONTROL_LEN] {
        self.counter += 1;
        let control = Control {
            kind,
            room: self.room,
            participant: self.participant,
            session: self.session,
            counter: self.counter,
        };
        let mut datagram = [0; CONTROL_LEN];
        control.seal(key, &mut datagram);
        datagram
    }
}

/// The shared secret, extracted once (HKDF-SHA256).
pub struct Secret(hkdf::Prk);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// HKDF output length: a 32-byte AES-256 key and a 12-byte salt.
struct KeyAndSalt;

impl hkdf::KeyType for KeyAndSalt {
    fn len(&self) -> usize {
        32 + NONCE_LEN
    }
}

impl Secret {
    /// Extracts the secret given on the command lines.
    pub fn new(secret: &[u8]) -> Self {
        Self(hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret))
    }

    /// The key and salt of `participant` in `session`.
    pub fn participant_key(&self, participant: u32, session: u64) -> ParticipantKey {
        let (id, session) = (participant.to_be_bytes(), session.to_be_bytes());
        let info: [&[u8]; 3] = [b"participant", &id, &session];
        let mut okm = [0u8; 32 + NONCE_LEN];
        self.0
            .expand(&info, KeyAndSalt)
            .and_then(|okm_| okm_.fill(&mut okm))
            .expect("HKDF output of 44 bytes");
        let key = UnboundKey::new(&AES_256_GCM, &okm[..32]).expect("a 32-byte AES key");
        let mut salt = [0u8; NONCE_LEN];
        salt.copy_from_slice(&okm[32..]);
        ParticipantKey {
            key: LessSafeKey::new(key),
            salt,
        }
    }
}

/// One participant's AES-256-GCM key and nonce salt.
pub struct ParticipantKey {
    key: LessSafeKey,
    salt: [u8; NONCE_LEN],
}

impl std::fmt::Debug for ParticipantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParticipantKey(..)")
    }
}

impl ParticipantKey {
    /// The RFC 7714 nonce of packet `index` (48-bit extended sequence number) of `ssrc`.
    fn media_nonce(&self, ssrc: u32, index: u64) -> Nonce {
        let mut iv = [0u8; NONCE_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&(index & INDEX_MASK).to_be_bytes()[2..]);
        self.xor_salt(iv)
    }

    /// A control datagram's nonce.
    fn control_nonce(&self, kind: ControlKind, counter: u64) -> Nonce {
        let mut iv = [0u8; NONCE_LEN];
        iv[0] = 0xff;
        iv[1] = kind.byte();
        iv[4..12].copy_from_slice(&counter.to_be_bytes());
        self.xor_salt(iv)
    }

    fn xor_salt(&self, mut iv: [u8; NONCE_LEN]) -> Nonce {
        for (byte, salt) in iv.iter_mut().zip(self.salt) {
            *byte ^= salt;
        }
        Nonce::assume_unique_for_key(iv)
    }

    /// Seals `packet` in place: its first [`RTP_HEADER_LEN`] bytes are the header (AAD), the
    /// rest up to its last [`TAG_LEN`] bytes the payload; the tag is written into those last
    /// bytes. `index` is the packet's extended sequence number.
    pub fn seal_media(&self, packet: &mut [u8], index: u64) {
        let (header, rest) = packet.split_at_mut(RTP_HEADER_LEN);
        let (payload, tag_out) = rest.split_at_mut(rest.len() - TAG_LEN);
        let ssrc = u32::from_be_bytes(header[8..12].try_into().expect("4"));
        let tag: Tag = self
            .key
            .seal_in_place_separate_tag(self.media_nonce(ssrc, index), Aad::from(&*header), payload)
            .expect("AES-GCM seals any RTP-sized payload");
        tag_out.copy_from_slice(tag.as_ref());
    }

    /// Opens a sealed media `packet` in place; on success its payload (between the header
    /// and the tag) is plaintext.
    pub fn open_media(&self, packet: &mut [u8], index: u64) -> bool {
        if packet.len() < RTP_HEADER_LEN + TAG_LEN {
            return false;
        }
        let (header, rest) = packet.split_at_mut(RTP_HEADER_LEN);
        let ssrc = u32::from_be_bytes(header[8..12].try_into().expect("4"));
        self.key
            .open_in_place(self.media_nonce(ssrc, index), Aad::from(&*header), rest)
            .is_ok()
    }
}

/// The clear header of a media datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit.
    pub marker: bool,
    /// The payload type.
    pub payload_type: u8,
    /// The sequence number.
    pub sequence: u16,
    /// The RTP timestamp.
    pub timestamp: u32,
    /// The SSRC ([`ssrc`] of the publisher and kind).
    pub ssrc: u32,
}

impl RtpHeader {
    /// Reads the header of a media datagram: version 2, no CSRC, no extension, room for the
    /// tag. `None` for anything else.
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        if datagram.len() < RTP_HEADER_LEN + TAG_LEN
            || datagram.len() > MAX_DATAGRAM
            || datagram[0] & 0xdf != 0x80
        {
            return None;
        }
        Some(Self {
            marker: datagram[1] & 0x80 != 0,
            payload_type: datagram[1] & 0x7f,
            sequence: u16::from_be_bytes([datagram[2], datagram[3]]),
            timestamp: u32::from_be_bytes(datagram[4..8].try_into().expect("4")),
            ssrc: u32::from_be_bytes(datagram[8..12].try_into().expect("4")),
        })
    }

    /// Writes the header into the first [`RTP_HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = 0x80;
        out[1] = u8::from(self.marker) << 7 | (self.payload_type & 0x7f);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

/// The SSRC of `participant`'s stream of `kind`: the id shifted left, the low bit set for
/// video.
pub fn ssrc(participant: u32, kind: MediaKind) -> u32 {
    participant << 1 | u32::from(kind == MediaKind::Video)
}

/// The publisher and kind an SSRC names.
pub fn ssrc_owner(ssrc: u32) -> (u32, MediaKind) {
    let kind = if ssrc & 1 == 1 {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    (ssrc >> 1, kind)
}

/// The room id of a room name (64-bit FNV-1a: names differ, ids differ, for any practical
/// number of rooms).
pub fn room_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The extended sequence number (ROC and SEQ, RFC 3711 appendix A) of `sequence`, relative
/// to the highest one seen so far.
pub fn estimate_index(highest: Option<u64>, sequence: u16) -> u64 {
    let Some(highest) = highest else {
        return u64::from(sequence);
    };
    let roc = highest >> 16;
    let (seq, top) = (i32::from(sequence), i32::from(highest as u16));
    let roc = if top < 0x8000 {
        if seq - top > 0x8000 && roc > 0 {
            roc - 1
        } else {
            roc
        }
    } else if top - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    ((roc << 16) | u64::from(sequence)) & INDEX_MASK
}

/// Which extended sequence numbers of one stream were seen: the highest and a 128-packet
/// window behind it. A nonce (stream, index) is accepted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `i`: `highest - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    /// The extended sequence number of `sequence` in this stream.
    pub fn index(&self, sequence: u16) -> u64 {
        estimate_index(self.highest, sequence)
    }

    /// Whether `index` is new (not seen, not behind the window).
    pub fn is_new(&self, index: u64) -> bool {
        match self.highest {
            None => true,
            Some(highest) if index > highest => true,
            Some(highest) => {
                let behind = highest - index;
                behind < 128 && self.seen & (1 << behind) == 0
            }
        }
    }

    /// Marks `index` seen (call after authenticating it).
    pub fn mark(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => {
                let behind = highest - index;
                if behind < 128 {
                    self.seen |= 1 << behind;
                }
            }
            Some(highest) => {
                let ahead = index - highest;
                self.seen = if ahead >= 128 { 0 } else { self.seen << ahead };
                self.seen |= 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_round_trips_and_binds_header_and_index() {
        let secret = Secret::new(b"s3cret");
        let key = secret.participant_key(7, 1);
        let header = RtpHeader {
            marker: true,
            payload_type: 102,
            sequence: 65_535,
            timestamp: 1234,
            ssrc: ssrc(7, MediaKind::Video),
        };
        let mut packet = [0u8; RTP_HEADER_LEN + 5 + TAG_LEN];
        header.write(&mut packet);
        packet[RTP_HEADER_LEN..RTP_HEADER_LEN + 5].copy_from_slice(b"hello");
        key.seal_media(&mut packet, 65_535);
        assert_ne!(&packet[RTP_HEADER_LEN..RTP_HEADER_LEN + 5], b"hello");
        assert_eq!(RtpHeader::parse(&packet), Some(header));

        let mut copy = packet;
        assert!(
            !key.open_media(&mut copy, 65_535 + (1 << 16)),
            "another ROC"
        );
        let mut copy = packet;
        copy[1] ^= 0x80;
        assert!(
            !key.open_media(&mut copy, 65_535),
            "the header is authenticated"
        );
        let mut copy = packet;
        assert!(!secret.participant_key(7, 2).open_media(&mut copy, 65_535));
        assert!(!secret.participant_key(8, 1).open_media(&mut copy, 65_535));
        assert!(
            !Secret::new(b"other")
                .participant_key(7, 1)
                .open_media(&mut copy, 65_535)
        );
        assert!(key.open_media(&mut packet, 65_535));
        assert_eq!(&packet[RTP_HEADER_LEN..RTP_HEADER_LEN + 5], b"hello");
    }

    #[test]
    fn control_datagrams_round_trip_and_verify() {
        let key = Secret::new(b"s").participant_key(3, 9);
        let hello = Control {
            kind: ControlKind::Hello,
            room: room_id("standup"),
            participant: 3,
            session: 9,
            counter: 42,
        };
        let mut out = [0u8; 64];
        assert_eq!(hello.seal(&key, &mut out), CONTROL_LEN);
        let datagram = &out[..CONTROL_LEN];
        assert_eq!(Control::parse(datagram), Some(hello));
        assert!(hello.verify(&key, datagram));
        let mut forged = out;
        forged[4] ^= 1;
        let fields = Control::parse(&forged[..CONTROL_LEN]).unwrap();
        assert!(!fields.verify(&key, &forged[..CONTROL_LEN]));
        assert!(!hello.verify(&Secret::new(b"t").participant_key(3, 9), datagram));
        assert_eq!(Control::parse(&out[..CONTROL_LEN - 1]), None);
        assert_eq!(RtpHeader::parse(datagram), None, "never taken for RTP");
    }

    #[test]
    fn extended_sequence_numbers_follow_wraps_and_reordering() {
        assert_eq!(estimate_index(None, 65_000), 65_000);
        assert_eq!(estimate_index(Some(65_535), 0), 1 << 16);
        assert_eq!(estimate_index(Some(65_535), 65_530), 65_530);
        assert_eq!(
            estimate_index(Some((1 << 16) + 3), 65_534),
            65_534,
            "late, before the wrap"
        );
        assert_eq!(estimate_index(Some(100), 90), 90);
        assert_eq!(estimate_index(Some(40_000), 40_100), 40_100);
    }

    #[test]
    fn the_replay_window_accepts_each_index_once() {
        let mut window = ReplayWindow::default();
        assert!(window.is_new(10));
        window.mark(10);
        assert!(!window.is_new(10));
        assert!(window.is_new(9), "late but new");
        window.mark(9);
        assert!(!window.is_new(9));
        window.mark(300);
        assert!(!window.is_new(10), "behind the window");
        assert!(window.is_new(299));
        assert!(!window.is_new(300));
        assert_eq!(window.index(301), 301);
    }

    #[test]
    fn ssrcs_carry_the_publisher_and_kind() {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            assert_eq!(
                ssrc_owner(ssrc(MAX_PARTICIPANT_ID - 1, kind)),
                (MAX_PARTICIPANT_ID - 1, kind)
            );
        }
        assert_ne!(room_id("a"), room_id("b"));
    }
}
