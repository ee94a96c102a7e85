//! Crash recovery: a fragmented MP4 cut anywhere (kill -9, a full disk) is trimmed to its
//! last complete fragment and finalized into a playable progressive MP4.
//!
//! Everything up to the last complete `moof` + `mdat` pair is kept; a torn fragment after it
//! is discarded and reported. A file without a readable header (`ftyp` + `moov`) or without a
//! single complete sample is an error, never a panic.

use std::fs::File;
use std::path::Path;

use crate::finalize::{FinalizeError, Summary, scan, write_progressive};

/// What recovery kept and lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoveryReport {
    /// The recovered file (its duration is how much media was kept).
    pub summary: Summary,
    /// Complete fragments kept.
    pub fragments: u64,
    /// Bytes of the fragmented file that were kept (up to the last complete fragment).
    pub kept_bytes: u64,
    /// Bytes of a torn fragment discarded at the end (0 when the file was complete).
    pub discarded_bytes: u64,
}

impl RecoveryReport {
    /// True when the crash cost media: a torn fragment was discarded.
    pub fn lost_data(&self) -> bool {
        self.discarded_bytes > 0
    }
}

/// Recovers the fragmented MP4 at `fragmented` into a progressive MP4 at `output` (written
/// atomically); the fragmented file is left untouched.
pub fn recover(fragmented: &Path, output: &Path) -> Result<RecoveryReport, FinalizeError> {
    let source = File::open(fragmented)?;
    let scan = scan(&source)?;
    let summary = write_progressive(&source, &scan, output)?;
    Ok(RecoveryReport {
        summary,
        fragments: scan.fragments,
        kept_bytes: scan.complete_end,
        discarded_bytes: scan.file_len - scan.complete_end,
    })
}
