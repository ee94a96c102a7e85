//! Encryption at rest: recordings written as AES-256-GCM chunks that the recorder decrypts
//! while it serves and seeks them.
//!
//! Without a [`Keyring`] every file is plain MP4, exactly as before. With one, every file the
//! recorder writes (the fragmented `.mp4.part` while recording, the finalized `.mp4`) is an
//! encrypted file:
//!
//! ```text
//! header (40 bytes)
//!   magic "KASKADE\0" | version 1 (u8) | layout (u8: 0 fixed, 1 streaming) | 0 (u16)
//!   | plaintext chunk size (u32 BE, 64 KiB) | key id (8 bytes) | salt (16 random bytes)
//! chunk 0, chunk 1, ... each:
//!   word (u32 BE: bit 31 = final chunk, bits 0-30 = plaintext length)
//!   | ciphertext (that many bytes) | GCM tag (16 bytes)
//! ```
//!
//! Each file has its own AES-256-GCM key, HKDF-SHA256 of the configured key with the file's
//! salt, so chunk nonces can simply be the chunk index (4 zero bytes + index as u64 BE) and
//! never repeat under one key. The additional authenticated data of a chunk is the whole
//! header, the chunk index and the chunk's word: a chunk cannot be moved, swapped into another
//! file, shortened, or have its final flag changed without failing authentication, and a file
//! cut at a chunk boundary is caught because its last chunk is not marked final. Every
//! failure is an error ([`AtRestError`]), never a panic.
//!
//! Two layouts share that chunk format:
//! - **fixed**: every chunk but the last holds exactly the chunk size, so a plaintext offset
//!   maps to a chunk by arithmetic. Finalized files are written this way; they are what the
//!   recorder serves with range requests.
//! - **streaming**: a flush seals the partial chunk so far (the next bytes go to a new chunk),
//!   so the file can be synced at every fragment and a crash loses only what came after the
//!   last sync. Readers find the chunks by walking their words once at open. Rewriting a
//!   partial chunk in place instead would either reuse a nonce or, if torn by a crash, lose
//!   the already-synced bytes of that chunk (up to 64 KiB: seconds of audio-only media).
//!
//! A file cut by a crash is opened with [`Expect::Interrupted`]: every chunk is authenticated
//! at open and the file ends before the first that is torn or fails; [`crate::recover`] then
//! trims it to its last complete fragment as for a plain file.
//!
//! Keys: 32 random bytes, hex, one per line in the key file; the first writes, the others
//! (older keys after a rotation) still read. The header names the key by its id (the first 8
//! bytes of a SHA-256 of the key), never the key; a file needs the key it was written with.

mod keys;
mod read;
mod write;

use std::io;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hkdf;

pub use keys::{KeyError, KeyId, Keyring};
pub use read::{DecryptingReader, Expect, FileReader, open};
pub use write::{EncryptingWriter, FileWriter, create};

use keys::Key;

/// The first bytes of every encrypted file.
const MAGIC: [u8; 8] = *b"KASKADE\0";
/// The format version this module writes and reads.
const VERSION: u8 = 1;
/// Bytes of the header.
const HEADER_LEN: usize = 40;
/// Plaintext bytes of a full chunk.
const CHUNK_SIZE: u32 = 64 << 10;
/// The largest chunk size a reader accepts (bounds what a damaged header can make it allocate).
const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Bytes of a chunk's word.
const WORD_LEN: usize = 4;
/// Bytes of a GCM tag.
const TAG_LEN: usize = 16;
/// The final-chunk bit of a chunk's word.
const FINAL: u32 = 1 << 31;
/// HKDF info of the per-file chunk key.
const FILE_KEY_INFO: &[u8] = b"kaskade recording chunks v1";

/// How an encrypted file's chunks are laid out (see the [module](self) documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every chunk but the last is full; a flush does not seal a partial chunk. For files
    /// written in one go and served with range requests.
    Fixed,
    /// A flush seals the partial chunk, so the file can be synced; readers walk the chunks.
    /// For files written while recording.
    Streaming,
}

/// Why an encrypted file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AtRestError {
    /// Reading the file failed.
    #[error("reading an encrypted recording: {0}")]
    Io(#[from] io::Error),
    /// The file is encrypted but the recorder has no key.
    #[error("the file is encrypted and no recording key is configured")]
    KeyRequired,
    /// The file was written with a key that is not in the key file.
    #[error("the file is encrypted with key {0}, which is not in the key file")]
    UnknownKey(KeyId),
    /// A format version this recorder does not know.
    #[error("unsupported encrypted file version {0}")]
    UnsupportedVersion(u8),
    /// The header is damaged.
    #[error("the encrypted file's header is damaged: {0}")]
    BadHeader(&'static str),
    /// A chunk does not authenticate: the file was damaged or tampered with.
    #[error("chunk {0} of the encrypted file fails authentication (damaged or tampered with)")]
    Tampered(u64),
    /// The file ends before its final chunk.
    #[error("the encrypted file is truncated: {0}")]
    Truncated(&'static str),
}

impl From<AtRestError> for io::Error {
    fn from(error: AtRestError) -> Self {
        match error {
            AtRestError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// The header of an encrypted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    layout: Layout,
    chunk_size: u32,
    key_id: KeyId,
    salt: [u8; 16],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8] = VERSION;
        bytes[9] = match self.layout {
            Layout::Fixed => 0,
            Layout::Streaming => 1,
        };
        bytes[12..16].copy_from_slice(&self.chunk_size.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.key_id.0);
        bytes[24..40].copy_from_slice(&self.salt);
        bytes
    }

    /// Decodes a header whose magic has been checked.
    fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, AtRestError> {
        if bytes[8] != VERSION {
            return Err(AtRestError::UnsupportedVersion(bytes[8]));
        }
        let layout = match bytes[9] {
            0 => Layout::Fixed,
            1 => Layout::Streaming,
            _ => return Err(AtRestError::BadHeader("unknown chunk layout")),
        };
        if bytes[10..12] != [0, 0] {
            return Err(AtRestError::BadHeader("reserved bytes are set"));
        }
        let chunk_size = u32::from_be_bytes(array(&bytes[12..]));
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(AtRestError::BadHeader("implausible chunk size"));
        }
        Ok(Self {
            layout,
            chunk_size,
            key_id: KeyId(array(&bytes[16..])),
            salt: array(&bytes[24..]),
        })
    }
}

/// The cipher of one file: its header (authenticated with every chunk) and its chunk key.
struct FileCipher {
    header: Header,
    header_bytes: [u8; HEADER_LEN],
    key: LessSafeKey,
}

impl FileCipher {
    /// The cipher of the file with `header`, whose key is `master`.
    fn new(master: &Key, header: Header) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &header.salt).extract(master.bytes());
        // 32 bytes are always within HKDF-SHA256's output limit
        let okm = prk.expand(&[FILE_KEY_INFO], &AES_256_GCM);
        let key = okm.map_or_else(
            |_| unreachable!("HKDF-SHA256 expands to 32 bytes"),
            UnboundKey::from,
        );
        Self {
            header_bytes: header.encode(),
            header,
            key: LessSafeKey::new(key),
        }
    }

    fn nonce(index: u64) -> Nonce {
        let mut nonce = [0; 12];
        nonce[4..].copy_from_slice(&index.to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    fn aad(&self, index: u64, word: u32) -> [u8; HEADER_LEN + 12] {
        let mut aad = [0; HEADER_LEN + 12];
        aad[..HEADER_LEN].copy_from_slice(&self.header_bytes);
        aad[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&index.to_be_bytes());
        aad[HEADER_LEN + 8..].copy_from_slice(&word.to_be_bytes());
        aad
    }

    /// Encrypts chunk `index` (described by `word`) in place and returns its tag.
    fn seal(&self, index: u64, word: u32, plaintext: &mut [u8]) -> io::Result<Tag> {
        self.key
            .seal_in_place_separate_tag(
                Self::nonce(index),
                Aad::from(self.aad(index, word)),
                plaintext,
            )
            .map_err(|_| io::Error::other("encrypting a recording chunk failed"))
    }

    /// Decrypts chunk `index` (ciphertext and tag) in place; the plaintext is the prefix.
    fn open<'a>(
        &self,
        index: u64,
        word: u32,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], AtRestError> {
        self.key
            .open_in_place(Self::nonce(index), Aad::from(self.aad(index, word)), sealed)
            .map_err(|_| AtRestError::Tampered(index))
    }
}

/// A chunk's word: its plaintext length and whether it is the last.
fn chunk_word(len: usize, last: bool) -> u32 {
    // chunks hold at most MAX_CHUNK_SIZE bytes, far below bit 31
    (len as u32 & !FINAL) | if last { FINAL } else { 0 }
}

/// The first `N` bytes of `bytes` (which holds at least that many).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests;
