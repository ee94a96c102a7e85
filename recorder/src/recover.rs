//! Crash recovery: a fragmented MP4 cut anywhere (kill -9, a full disk) is trimmed to its
//! last complete fragment and finalized into a playable progressive MP4.
//!
//! Everything up to the last complete `moof` + `mdat` pair is kept; a torn fragment after it
//! is discarded and reported. A file without a readable header (`ftyp` + `moov`) or without a
//! single complete sample is an error, never a panic.
//!
//! An encrypted file ([`crate::at_rest`]) is first cut before its first chunk that is torn or
//! fails authentication, then trimmed the same way; the output is encrypted again.

use std::path::Path;

use crate::at_rest::{self, Expect, Keyring};
use crate::finalize::{FinalizeError, Summary, scan, write_progressive};

/// What recovery kept and lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoveryReport {
    /// The recovered file (its duration is how much media was kept).
    pub summary: Summary,
    /// Complete fragments kept.
    pub fragments: u64,
    /// Bytes of the fragmented file that were kept (up to the last complete fragment; of the
    /// decrypted content for an encrypted file).
    pub kept_bytes: u64,
    /// Bytes of a torn fragment discarded at the end (0 when the file was complete), and for
    /// an encrypted file the bytes of a torn last chunk.
    pub discarded_bytes: u64,
}

impl RecoveryReport {
    /// True when the crash cost media: a torn fragment was discarded.
    pub fn lost_data(&self) -> bool {
        self.discarded_bytes > 0
    }
}

/// Recovers the plain fragmented MP4 at `fragmented` into a plain progressive MP4 at
/// `output`: [`recover_with`] without a key.
pub fn recover(fragmented: &Path, output: &Path) -> Result<RecoveryReport, FinalizeError> {
    recover_with(fragmented, output, None)
}

/// Recovers the fragmented MP4 at `fragmented` into a progressive MP4 at `output` (written
/// atomically); the fragmented file is left untouched. An encrypted source is decrypted with
/// `keys`; with `keys` the output is encrypted.
pub fn recover_with(
    fragmented: &Path,
    output: &Path,
    keys: Option<&Keyring>,
) -> Result<RecoveryReport, FinalizeError> {
    let mut source = at_rest::open(fragmented, keys, Expect::Interrupted)?;
    let scan = scan(&mut source)?;
    let summary = write_progressive(&mut source, &scan, output, keys)?;
    Ok(RecoveryReport {
        summary,
        fragments: scan.fragments,
        kept_bytes: scan.complete_end,
        discarded_bytes: scan.file_len - scan.complete_end + source.dropped_bytes(),
    })
}
