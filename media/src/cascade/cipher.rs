//! AES-256-GCM sealing of everything that crosses a cascade link, with replay protection.
//!
//! Both ends of a link hold the same key, handed out by the locator. A nonce is the sender's
//! node index, a channel byte (media datagrams or control frames) and a 64-bit counter, so the
//! two directions and the two channels never reuse a nonce. The receiver keeps a sliding
//! window of counters it has accepted and drops anything replayed or too old.

use bytes::BytesMut;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Bytes of the authentication tag appended to each sealed message.
pub const TAG_LEN: usize = 16;
/// Counters accepted behind the highest one seen (reordering tolerated on UDP).
const REPLAY_WINDOW: u64 = 1024;

/// Which stream of a link a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// UDP datagrams: media, NACKs, keyframe requests.
    Media = 0,
    /// The ordered control connection.
    Control = 1,
}

/// Why a sealed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It does not authenticate under the link key (wrong key, foreign or tampered).
    #[error("authentication failed")]
    Forged,
    /// Its counter was seen already or is behind the window.
    #[error("replayed or too old")]
    Replayed,
}

/// The key of one link and the state of both directions on one channel.
pub struct LinkCipher {
    key: LessSafeKey,
    local: u16,
    peer: u16,
    channel: Channel,
    next_counter: u64,
    replay: ReplayWindow,
}

impl LinkCipher {
    /// A cipher for the link between `local` and `peer` on `channel`; `None` if the key is not
    /// 32 bytes.
    pub fn new(key: &[u8], local: u16, peer: u16, channel: Channel) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
            local,
            peer,
            channel,
            next_counter: 0,
            replay: ReplayWindow::default(),
        })
    }

    /// Encrypts `buf[plain_start..]` in place under the next counter, authenticating
    /// `buf[..plain_start]` (the cleartext header) too, and appends the tag. Returns the counter.
    pub fn seal(&mut self, buf: &mut BytesMut, plain_start: usize, counter_at: usize) -> u64 {
        let counter = self.next_counter;
        self.next_counter += 1;
        buf[counter_at..counter_at + 8].copy_from_slice(&counter.to_be_bytes());
        let (header, plain) = buf.split_at_mut(plain_start);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(self.local, self.channel, counter),
                Aad::from(&*header),
                plain,
            )
            .expect("AES-GCM sealing of less than 2^32 blocks cannot fail");
        buf.extend_from_slice(tag.as_ref());
        counter
    }

    /// Authenticates and decrypts `message[plain_start..]` (ciphertext and tag) sealed by the
    /// peer under `counter`, with `message[..plain_start]` as associated data; returns the
    /// plaintext's length (it now starts at `plain_start`).
    pub fn open(
        &mut self,
        message: &mut [u8],
        plain_start: usize,
        counter: u64,
    ) -> Result<usize, OpenError> {
        if !self.replay.fresh(counter) {
            return Err(OpenError::Replayed);
        }
        let (header, sealed) = message.split_at_mut(plain_start);
        let plain = self
            .key
            .open_in_place(
                nonce(self.peer, self.channel, counter),
                Aad::from(&*header),
                sealed,
            )
            .map_err(|_| OpenError::Forged)?;
        let len = plain.len();
        self.replay.accept(counter);
        Ok(len)
    }
}

fn nonce(sender: u16, channel: Channel, counter: u64) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[..2].copy_from_slice(&sender.to_be_bytes());
    bytes[2] = channel as u8;
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Counters accepted so far: the highest, and a bitmap of the `REPLAY_WINDOW` before it.
#[derive(Default)]
struct ReplayWindow {
    highest: Option<u64>,
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// Whether `counter` has not been accepted and is not behind the window.
    fn fresh(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(highest) if counter > highest => true,
            Some(highest) => {
                let behind = highest - counter;
                behind < REPLAY_WINDOW && !self.bit(counter)
            }
        }
    }

    /// Records `counter` (which [`Self::fresh`] approved and which authenticated).
    fn accept(&mut self, counter: u64) {
        if let Some(highest) = self.highest
            && counter <= highest
        {
            self.set_bit(counter);
            return;
        }
        let advance = self.highest.map_or(REPLAY_WINDOW, |h| counter - h);
        if advance >= REPLAY_WINDOW {
            self.seen = Default::default();
        } else {
            let from = self.highest.unwrap_or(0);
            for c in from + 1..counter {
                self.clear_bit(c);
            }
        }
        self.highest = Some(counter);
        self.set_bit(counter);
    }

    fn slot(counter: u64) -> (usize, u64) {
        let i = counter % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn bit(&self, counter: u64) -> bool {
        let (word, mask) = Self::slot(counter);
        self.seen[word] & mask != 0
    }

    fn set_bit(&mut self, counter: u64) {
        let (word, mask) = Self::slot(counter);
        self.seen[word] |= mask;
    }

    fn clear_bit(&mut self, counter: u64) {
        let (word, mask) = Self::slot(counter);
        self.seen[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: usize = 12;

    fn pair(key_a: &[u8; 32], key_b: &[u8; 32]) -> (LinkCipher, LinkCipher) {
        (
            LinkCipher::new(key_a, 1, 2, Channel::Media).unwrap(),
            LinkCipher::new(key_b, 2, 1, Channel::Media).unwrap(),
        )
    }

    fn sealed(a: &mut LinkCipher, text: &[u8]) -> (BytesMut, u64) {
        let mut buf = BytesMut::from(&[0xCA; HEADER][..]);
        buf.extend_from_slice(text);
        let counter = a.seal(&mut buf, HEADER, 4);
        (buf, counter)
    }

    #[test]
    fn round_trips_and_refuses_replays() {
        let (mut a, mut b) = pair(&[7; 32], &[7; 32]);
        let (mut first, c1) = sealed(&mut a, b"hello");
        let replay = first.clone();
        let len = b.open(&mut first, HEADER, c1).unwrap();
        assert_eq!(&first[HEADER..HEADER + len], b"hello");
        let mut again = replay;
        assert_eq!(b.open(&mut again, HEADER, c1), Err(OpenError::Replayed));
    }

    #[test]
    fn refuses_a_wrong_key_a_tampered_header_and_the_other_direction() {
        let (mut a, mut b) = pair(&[7; 32], &[8; 32]);
        let (mut m, c) = sealed(&mut a, b"x");
        assert_eq!(b.open(&mut m, HEADER, c), Err(OpenError::Forged));

        let (mut a, mut b) = pair(&[7; 32], &[7; 32]);
        let (mut m, c) = sealed(&mut a, b"x");
        m[1] ^= 1;
        assert_eq!(b.open(&mut m, HEADER, c), Err(OpenError::Forged));

        // a's own message reflected back to a: the nonce names a as sender, a expects b
        let (mut m, c) = sealed(&mut a, b"x");
        assert_eq!(a.open(&mut m, HEADER, c), Err(OpenError::Forged));
    }

    #[test]
    fn a_failed_open_does_not_burn_the_counter() {
        let (mut a, mut b) = pair(&[7; 32], &[7; 32]);
        let (good, c) = sealed(&mut a, b"x");
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(b.open(&mut forged, HEADER, c), Err(OpenError::Forged));
        let mut good = good;
        assert!(b.open(&mut good, HEADER, c).is_ok());
    }

    #[test]
    fn window_tolerates_reordering_but_not_ancient_counters() {
        let mut w = ReplayWindow::default();
        for c in [5, 3, 4, 2000, 1999] {
            assert!(w.fresh(c), "{c}");
            w.accept(c);
        }
        assert!(!w.fresh(1999));
        assert!(!w.fresh(4), "behind the window");
        assert!(w.fresh(1998));
        w.accept(5000);
        assert!(!w.fresh(2000));
        assert!(w.fresh(4999 - 1000));
        assert!(!w.fresh(5000 - REPLAY_WINDOW));
    }
}
