//! Recording keys: loaded from a key file, named by an id, never printed.

use std::fmt;
use std::path::{Path, PathBuf};

use ring::digest;

/// Prefix of the hashed key that gives its id.
const KEY_ID_CONTEXT: &[u8] = b"kaskade recording key id v1\0";

/// Names a key without revealing it: the first 8 bytes of a SHA-256 of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(super) [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// One 256-bit key.
#[derive(Clone)]
pub(super) struct Key {
    bytes: [u8; 32],
    id: KeyId,
}

impl Key {
    fn new(bytes: [u8; 32]) -> Self {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(KEY_ID_CONTEXT);
        context.update(&bytes);
        let id = KeyId(super::array(context.finish().as_ref()));
        Self { bytes, id }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn id(&self) -> KeyId {
        self.id
    }
}

/// Why a key file cannot be used. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("reading the key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file holds no key.
    #[error("the key file holds no key")]
    Empty,
    /// A line is not a key.
    #[error("line {0} of the key file is not a key (64 hex digits: 32 bytes)")]
    Malformed(usize),
}

/// The recording keys: the first encrypts new files; all of them decrypt, so files written
/// before a key rotation stay readable while their key is kept in the file.
#[derive(Clone)]
pub struct Keyring {
    /// Never empty; the first is the current key.
    keys: Vec<Key>,
}

impl Keyring {
    /// Reads a key file: one key per line as 64 hex digits, the current key first; blank
    /// lines and lines starting with `#` are ignored.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the content of a key file (see [`from_file`](Self::from_file)).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let keys = text
            .lines()
            .enumerate()
            .map(|(n, line)| (n + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .map(|(n, line)| {
                parse_hex_key(line)
                    .map(Key::new)
                    .ok_or(KeyError::Malformed(n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// The id of the key new files are encrypted with.
    pub fn current_id(&self) -> KeyId {
        self.current().id
    }

    pub(super) fn current(&self) -> &Key {
        &self.keys[0]
    }

    pub(super) fn find(&self, id: KeyId) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.keys.iter().map(Key::id).collect::<Vec<_>>())
            .finish()
    }
}

/// 64 hex digits as 32 bytes.
fn parse_hex_key(line: &str) -> Option<[u8; 32]> {
    if line.len() != 64 {
        return None;
    }
    let mut key = [0; 32];
    for (byte, pair) in key.iter_mut().zip(line.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn key_files_list_the_current_key_first() {
        let keyring = Keyring::parse(&format!("# rotated 2026-05\n{B}\n\n{A}\n")).unwrap();
        assert_eq!(keyring.current_id(), Key::new(parse_hex_key(B).unwrap()).id);
        let old = Key::new(parse_hex_key(A).unwrap()).id;
        assert!(keyring.find(old).is_some());
        assert_ne!(old, keyring.current_id());
    }

    #[test]
    fn malformed_key_files_are_refused_without_echoing_them() {
        assert!(matches!(Keyring::parse("\n# none\n"), Err(KeyError::Empty)));
        let short = &A[..62];
        let error = Keyring::parse(&format!("{A}\n{short}")).unwrap_err();
        assert!(matches!(error, KeyError::Malformed(2)));
        assert!(!error.to_string().contains(short));
        assert!(matches!(
            Keyring::parse(&A.replace('0', "g")),
            Err(KeyError::Malformed(1))
        ));
        assert!(matches!(
            Keyring::parse(&"é".repeat(32)),
            Err(KeyError::Malformed(1))
        ));
    }

    #[test]
    fn debug_output_names_keys_by_id_only() {
        let keyring = Keyring::parse(A).unwrap();
        let shown = format!("{keyring:?}");
        assert!(shown.contains(&keyring.current_id().to_string()));
        assert!(!shown.contains(&A[..16]));
    }
}
