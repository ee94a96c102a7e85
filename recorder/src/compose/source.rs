//! Reads one finalized participant MP4 for the composer, sample by sample.
//!
//! Only the `moov` (the index) is held in memory; sample data is read from the file when it
//! is needed. Each track's edit list is applied: empty edits shift the track on the
//! recording's timeline (a late joiner), and the first media edit says where its media
//! starts. Sample times are handed out on that timeline, in the track's timescale.

use std::io::{self, Read, Seek, SeekFrom};
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use shiguredo_mp4::aux::SampleTableAccessor;
use shiguredo_mp4::boxes::{FtypBox, HdlrBox, MoovBox, SampleEntry, StblBox, TrakBox};
use shiguredo_mp4::{BoxHeader, Decode};

use crate::at_rest::{self, AtRestError, Expect, FileReader, Keyring};

/// The largest `moov` read into memory (an hour of media indexes in a few MB).
const MAX_MOOV: u64 = 256 << 20;
/// Media beyond this point of the timeline means a damaged index, not a meeting.
const MAX_TIMELINE: Duration = Duration::from_secs(24 * 3600);

/// Why an input file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the file failed (a sample beyond its end included).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file is not an MP4 file, or its index is damaged.
    #[error("corrupt MP4 file: {0}")]
    Corrupt(String),
    /// The file is encrypted and cannot be decrypted (no key, another key, tampered).
    #[error("{0}")]
    AtRest(#[from] AtRestError),
}

fn corrupt(reason: impl ToString) -> SourceError {
    SourceError::Corrupt(reason.to_string())
}

/// One sample, its time placed on the recording's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SampleInfo {
    /// Timeline time in the track's timescale; negative before the timeline's zero.
    pub time: i64,
    /// Index of the track's sample entry (0-based) that describes this sample.
    pub entry: usize,
    offset: u64,
    size: u32,
}

/// One audio or video track of an input.
#[derive(Debug)]
pub(super) struct Track {
    file: FileReader,
    table: SampleTableAccessor<StblBox>,
    timescale: NonZeroU32,
    /// Added to a sample's media time to place it on the timeline.
    shift: i64,
    next: u32,
}

impl Track {
    fn new(
        file: FileReader,
        trak: TrakBox,
        movie_timescale: NonZeroU32,
    ) -> Result<Self, SourceError> {
        let timescale = trak.mdia_box.mdhd_box.timescale;
        let (empty, media_start) = edit_offsets(&trak);
        let empty = rescale(empty, movie_timescale.get(), timescale.get());
        let table = SampleTableAccessor::new(trak.mdia_box.minf_box.stbl_box)
            .map_err(|e| corrupt(format!("sample table: {e}")))?;
        Ok(Self {
            file,
            table,
            timescale,
            shift: i64::try_from(empty).unwrap_or(i64::MAX) - media_start,
            next: 1,
        })
    }

    /// The track's timescale (ticks per second).
    pub fn timescale(&self) -> u32 {
        self.timescale.get()
    }

    /// The sample entries (`stsd`).
    pub fn entries(&self) -> &[SampleEntry] {
        &self.table.stbl_box().stsd_box.entries
    }

    /// The next sample, without consuming it.
    pub fn peek(&self) -> Option<SampleInfo> {
        let sample = self.table.get_sample(NonZeroU32::new(self.next)?)?;
        let media = i64::try_from(sample.timestamp()).unwrap_or(i64::MAX);
        Some(SampleInfo {
            time: media.saturating_add(self.shift),
            entry: sample.chunk().sample_entry_index(),
            offset: sample.data_offset(),
            size: sample.data_size(),
        })
    }

    /// Consumes the sample [`peek`](Self::peek) returned.
    pub fn advance(&mut self) {
        self.next = self.next.saturating_add(1);
    }

    /// Reads `sample`'s data into `buffer` (replacing its contents).
    pub fn read(&mut self, sample: &SampleInfo, buffer: &mut Vec<u8>) -> Result<(), SourceError> {
        buffer.resize(sample.size as usize, 0);
        read_at(&mut self.file, buffer, sample.offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt("a sample lies beyond the end of the file"),
            _ => SourceError::Io(e),
        })
    }

    /// When the track starts and ends on the timeline; `None` without samples.
    pub fn span(&self) -> Option<(Duration, Duration)> {
        let count = NonZeroU32::new(self.table.sample_count())?;
        let last = self.table.get_sample(count)?;
        let end = last.timestamp().saturating_add(u64::from(last.duration()));
        let end = i64::try_from(end).unwrap_or(i64::MAX);
        let first = self.table.get_sample(NonZeroU32::MIN)?;
        let start = i64::try_from(first.timestamp()).unwrap_or(i64::MAX);
        let to_duration = |media: i64| {
            let ticks = u64::try_from(media.saturating_add(self.shift)).unwrap_or(0);
            Duration::from_nanos(rescale(ticks, self.timescale.get(), 1_000_000_000))
        };
        Some((to_duration(start), to_duration(end)))
    }
}

/// A participant's finalized MP4, open for reading.
#[derive(Debug)]
pub(super) struct Source {
    /// The H.264 track, if any.
    pub video: Option<Track>,
    /// The Opus track, if any.
    pub audio: Option<Track>,
}

impl Source {
    /// Opens `path` (decrypting it with `keys` if it is encrypted) and reads its index.
    pub fn open(path: &Path, keys: Option<&Keyring>) -> Result<Self, SourceError> {
        let open = || at_rest::open(path, keys, Expect::Complete);
        let moov = read_moov(&mut open()?)?;
        let movie_timescale = moov.mvhd_box.timescale;
        let (mut video, mut audio) = (None, None);
        for trak in moov.trak_boxes {
            let slot = match trak.mdia_box.hdlr_box.handler_type {
                HdlrBox::HANDLER_TYPE_VIDE => &mut video,
                HdlrBox::HANDLER_TYPE_SOUN => &mut audio,
                _ => continue,
            };
            if slot.is_none() {
                // each track reads on its own (a decrypting reader cannot be shared)
                *slot = Some(Track::new(open()?, trak, movie_timescale)?);
            }
        }
        if video.is_none() && audio.is_none() {
            return Err(corrupt("no audio or video track"));
        }
        let source = Self { video, audio };
        if source.span().is_some_and(|(_, end)| end > MAX_TIMELINE) {
            return Err(corrupt(
                "media placed more than 24 hours into the recording",
            ));
        }
        Ok(source)
    }

    /// When the participant's media starts and ends on the timeline (both tracks together).
    pub fn span(&self) -> Option<(Duration, Duration)> {
        let spans = [&self.video, &self.audio]
            .into_iter()
            .flatten()
            .filter_map(Track::span);
        spans.reduce(|(s1, e1), (s2, e2)| (s1.min(s2), e1.max(e2)))
    }
}

/// Finds and decodes the `moov` among the top-level boxes.
fn read_moov(file: &mut FileReader) -> Result<MoovBox, SourceError> {
    let file_len = file.len();
    let mut position = 0;
    let mut first = true;
    loop {
        let mut head = [0u8; 16];
        let available = usize::try_from(file_len.saturating_sub(position))
            .unwrap_or(usize::MAX)
            .min(head.len());
        if available < BoxHeader::MIN_SIZE {
            return Err(corrupt("no moov box"));
        }
        read_at(file, &mut head[..available], position)?;
        let (header, _) = BoxHeader::decode(&head[..available]).map_err(corrupt)?;
        if first && header.box_type != FtypBox::TYPE {
            return Err(corrupt("not an MP4 file (no ftyp box)"));
        }
        first = false;
        let size = match header.box_size.get() {
            0 => file_len - position,
            size => size,
        };
        if size < BoxHeader::MIN_SIZE as u64 || size > file_len - position {
            return Err(corrupt("a top-level box is cut off or malformed"));
        }
        if header.box_type == MoovBox::TYPE {
            if size > MAX_MOOV {
                return Err(corrupt("the moov box is implausibly large"));
            }
            let mut bytes = vec![0; size as usize];
            read_at(file, &mut bytes, position)?;
            let (moov, _) = MoovBox::decode(&bytes).map_err(corrupt)?;
            return Ok(moov);
        }
        position += size;
    }
}

/// Reads exactly `buffer.len()` bytes at `position`.
fn read_at(file: &mut FileReader, buffer: &mut [u8], position: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(position))?;
    file.read_exact(buffer)
}

/// (Empty time before the media in movie ticks, media time the track starts at in its own
/// ticks) from the track's edit list.
fn edit_offsets(trak: &TrakBox) -> (u64, i64) {
    let entries = trak
        .edts_box
        .as_ref()
        .and_then(|edts| edts.elst_box.as_ref())
        .map_or(&[][..], |elst| &elst.entries[..]);
    let mut empty = 0u64;
    for entry in entries {
        if entry.media_time < 0 {
            empty = empty.saturating_add(entry.edit_duration);
        } else {
            return (empty, entry.media_time);
        }
    }
    (empty, 0)
}

/// `value` ticks of timescale `from` in timescale `to`.
fn rescale(value: u64, from: u32, to: u32) -> u64 {
    let scaled = u128::from(value) * u128::from(to) / u128::from(from.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}
