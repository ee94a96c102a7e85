//! Finished fragmented MP4 to a moov-first ("faststart") progressive MP4 for playback with
//! seeking.
//!
//! This module owns the progressive layout: `ftyp`, `moov` (sample tables, `stco`/`co64`),
//! `mdat`. `shiguredo_mp4`'s file muxer builds the sample tables; this module adds an edit
//! list to a track that starts after the file's zero (a late joiner, late video), so it
//! plays at its true offset. Video sample entries are derived from the SPS/PPS carried in
//! band by keyframes (one entry per parameter-set change); video before the first usable
//! parameter sets is dropped. Tracks without samples are left out. The output is written
//! to a temporary file, synced, and renamed into place, so it is either whole or absent.
//!
//! The source is read through [`at_rest`] (plain, or decrypted when the recorder has a key)
//! and the output written front to back, so it can be encrypted too: a first pass builds
//! the index (reading only the keyframes, for their parameter sets), then the head with the
//! final `moov` and every sample are written in order.

mod scan;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use shiguredo_mp4::boxes::{
    EdtsBox, ElstBox, ElstEntry, FreeBox, HdlrBox, MoovBox, SampleEntry, TrakBox,
};
use shiguredo_mp4::mux::{
    Mp4FileMuxer, Mp4FileMuxerOptions, MuxError, Sample, estimate_maximum_moov_box_size,
};
use shiguredo_mp4::{BoxHeader, BoxSize, Encode, FixedPointNumber, TrackKind};

use crate::at_rest::{self, AtRestError, Expect, Keyring, Layout};
use crate::fmp4::avc1_from_access_unit;
pub(crate) use scan::{Scan, scan};
use scan::{ScannedSample, ScannedTrack};

/// Room left in the reserved `moov` area for the edit lists added after the muxer is done.
const EDIT_LIST_ALLOWANCE: usize = 256;

/// Why a file could not be finalized or recovered.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    /// Reading the source or writing the output failed (a damaged encrypted chunk included).
    #[error("finalizing the recording: {0}")]
    Io(#[from] io::Error),
    /// The source is encrypted and cannot be opened: no key, an unknown key, a damaged
    /// header, or (for [`finalize`]) a file cut short.
    #[error("opening the recording: {0}")]
    AtRest(#[from] AtRestError),
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// The file does not start with an `ftyp` box: not an MP4 file.
    #[error("not an MP4 file")]
    NotMp4,
    /// The file's header (`moov`) is damaged; nothing can be recovered.
    #[error("corrupt MP4 file: {0}")]
    Corrupt(&'static str),
    /// The file holds no complete sample of any track.
    #[error("the file holds no media")]
    NoMedia,
    /// The file ends inside a fragment: it was cut off; [`crate::recover`] trims it.
    #[error("the file ends inside a fragment (complete up to byte {complete} of {total})")]
    Incomplete {
        /// Bytes up to the end of the last complete fragment.
        complete: u64,
        /// Bytes in the file.
        total: u64,
    },
    /// The MP4 muxer rejected the samples (beyond MP4 limits).
    #[error("building the MP4 index: {0}")]
    Mux(#[from] MuxError),
    /// A box could not be encoded.
    #[error("encoding MP4 boxes: {0}")]
    Encode(#[from] shiguredo_mp4::Error),
}

/// One track of a finalized file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackSummary {
    /// When the track starts on the file's timeline.
    pub start: Duration,
    /// How long it lasts from its start, gaps included.
    pub duration: Duration,
    /// Samples written.
    pub samples: u64,
}

/// What a finalized file holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The end of the longest track: the file's duration.
    pub duration: Duration,
    /// The video track, if any video was kept.
    pub video: Option<TrackSummary>,
    /// The audio track, if any audio was kept.
    pub audio: Option<TrackSummary>,
    /// Size of the output MP4 (before encryption, if it is encrypted).
    pub bytes: u64,
}

/// Finalizes the complete, plain fragmented MP4 at `fragmented` into a plain progressive MP4
/// at `output` (replaced atomically): [`finalize_with`] without a key.
pub fn finalize(fragmented: &Path, output: &Path) -> Result<Summary, FinalizeError> {
    finalize_with(fragmented, output, None)
}

/// Finalizes the complete fragmented MP4 at `fragmented` into a progressive MP4 at `output`
/// (replaced atomically). An encrypted source is decrypted with `keys`; with `keys` the
/// output is encrypted too ([`Layout::Fixed`]). A file cut off inside a fragment is refused
/// with [`FinalizeError::Incomplete`]; use [`crate::recover::recover_with`] for it.
pub fn finalize_with(
    fragmented: &Path,
    output: &Path,
    keys: Option<&Keyring>,
) -> Result<Summary, FinalizeError> {
    let mut source = at_rest::open(fragmented, keys, Expect::Complete)?;
    let scan = scan(&mut source)?;
    if scan.complete_end != scan.file_len {
        return Err(FinalizeError::Incomplete {
            complete: scan.complete_end,
            total: scan.file_len,
        });
    }
    write_progressive(&mut source, &scan, output, keys)
}

/// Writes the samples found by `scan` (read from `source`) as a progressive MP4 at `output`,
/// encrypted with `keys` if given, through a synced temporary file renamed into place.
pub(crate) fn write_progressive<R: Read + Seek>(
    source: &mut R,
    scan: &Scan,
    output: &Path,
    keys: Option<&Keyring>,
) -> Result<Summary, FinalizeError> {
    if scan.tracks.iter().all(|t| t.samples.is_empty()) {
        return Err(FinalizeError::NoMedia);
    }
    let temporary = temporary_path(output);
    let result = write_file(source, scan, &temporary, keys).and_then(|summary| {
        fs::rename(&temporary, output)?;
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(summary)
    });
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Progress of one track while samples are copied.
struct TrackCopy<'a> {
    track: &'a ScannedTrack,
    next: usize,
    entry: Option<SampleEntry>,
    first_time: Option<u64>,
    duration: u64,
    samples: u64,
}

impl TrackCopy<'_> {
    /// Whether [`entry_for`](Self::entry_for) looks at this sample's data.
    fn reads_data(&self, keyframe: bool) -> bool {
        keyframe && self.track.kind == TrackKind::Video
    }

    /// The sample entry to announce with this sample (`Some` when it starts or changes the
    /// entry), or `None` inside the outer option if the sample cannot be decoded and is skipped.
    fn entry_for(&mut self, keyframe: bool, data: &[u8]) -> Option<Option<SampleEntry>> {
        if self.track.kind == TrackKind::Audio {
            let first = self.entry.is_none();
            self.entry.get_or_insert_with(|| self.track.entry.clone());
            return Some(first.then(|| self.track.entry.clone()));
        }
        let found = keyframe
            .then(|| avc1_from_access_unit(data))
            .flatten()
            .map(SampleEntry::Avc1)
            .or_else(|| {
                self.entry
                    .is_none()
                    .then(|| self.declared_video_entry())
                    .flatten()
            });
        match found {
            Some(entry) if self.entry.as_ref() != Some(&entry) => {
                self.entry = Some(entry.clone());
                Some(Some(entry))
            }
            _ => self.entry.as_ref().map(|_| None),
        }
    }

    /// The fragmented file's own video entry, if it names parameter sets.
    fn declared_video_entry(&self) -> Option<SampleEntry> {
        match &self.track.entry {
            SampleEntry::Avc1(avc1) if !avc1.avcc_box.sps_list.is_empty() => {
                Some(self.track.entry.clone())
            }
            _ => None,
        }
    }

    fn summary(&self) -> Option<TrackSummary> {
        let timescale = self.track.timescale.get();
        Some(TrackSummary {
            start: ticks_to_duration(self.first_time?, timescale),
            duration: ticks_to_duration(self.duration, timescale),
            samples: self.samples,
        })
    }
}

/// Writes the progressive MP4 at `path` in two passes over `source`: the index, then the
/// file front to back.
fn write_file<R: Read + Seek>(
    source: &mut R,
    scan: &Scan,
    path: &Path,
    keys: Option<&Keyring>,
) -> Result<Summary, FinalizeError> {
    let counts: Vec<usize> = scan.tracks.iter().map(|t| t.samples.len()).collect();
    let mut muxer = Mp4FileMuxer::with_options(Mp4FileMuxerOptions {
        reserved_moov_box_size: estimate_maximum_moov_box_size(&counts) + EDIT_LIST_ALLOWANCE,
        ..Mp4FileMuxerOptions::default()
    })?;
    let data_start = muxer.initial_boxes_bytes().len() as u64;
    let (copies, kept) = index_samples(source, scan, &mut muxer, data_start)?;
    if copies.iter().all(|c| c.samples == 0) {
        return Err(FinalizeError::NoMedia);
    }
    let (head, tail) = boxes(muxer, &copies, data_start)?;
    let mut out = Sequential {
        out: BufWriter::new(at_rest::create(path, keys, Layout::Fixed)?),
        written: 0,
    };
    for (offset, bytes) in &head {
        out.put(*offset, bytes)?;
    }
    let mut buffer = Vec::new();
    for sample in &kept {
        read_sample(source, sample, &mut buffer)?;
        out.put(out.written, &buffer)?;
    }
    for (offset, bytes) in &tail {
        out.put(*offset, bytes)?;
    }
    let bytes = out.written;
    out.out.into_inner().map_err(|e| e.into_error())?.finish()?;
    Ok(summary(&copies, bytes))
}

/// The first pass: every track's samples in file order, each with its sample entry (a video
/// track's from its keyframes), appended to `muxer` as they will be laid out from
/// `data_start`; returns each track's copy and the samples kept, in that order.
fn index_samples<'a, R: Read + Seek>(
    source: &mut R,
    scan: &'a Scan,
    muxer: &mut Mp4FileMuxer,
    data_start: u64,
) -> Result<(Vec<TrackCopy<'a>>, Vec<ScannedSample>), FinalizeError> {
    let mut position = data_start;
    let mut copies: Vec<TrackCopy> = scan
        .tracks
        .iter()
        .map(|track| TrackCopy {
            track,
            next: 0,
            entry: None,
            first_time: None,
            duration: 0,
            samples: 0,
        })
        .collect();
    let mut kept: Vec<ScannedSample> = Vec::new();
    let mut buffer = Vec::new();
    while let Some(copy) = copies
        .iter_mut()
        .filter(|c| c.next < c.track.samples.len())
        .min_by_key(|c| c.track.samples[c.next].offset)
    {
        let sample = copy.track.samples[copy.next];
        copy.next += 1;
        buffer.clear();
        if copy.reads_data(sample.keyframe) {
            read_sample(source, &sample, &mut buffer)?;
        }
        let Some(sample_entry) = copy.entry_for(sample.keyframe, &buffer) else {
            continue;
        };
        muxer.append_sample(&Sample {
            track_kind: copy.track.kind,
            sample_entry,
            keyframe: sample.keyframe,
            timescale: copy.track.timescale,
            duration: sample.duration,
            composition_time_offset: None,
            data_offset: position,
            data_size: sample.size as usize,
        })?;
        kept.push(sample);
        position += u64::from(sample.size);
        copy.first_time.get_or_insert(sample.time);
        copy.duration += u64::from(sample.duration);
        copy.samples += 1;
    }
    Ok((copies, kept))
}

/// Boxes of a file, each at its offset.
type Boxes = Vec<(u64, Vec<u8>)>;

/// The boxes of the finalized file, with each track's start offset in its edit list, split
/// into those before the media data (the head, with the moov when it is first) and after it.
fn boxes(
    mut muxer: Mp4FileMuxer,
    copies: &[TrackCopy],
    data_start: u64,
) -> Result<(Boxes, Boxes), FinalizeError> {
    let finalized = muxer.finalize()?;
    let mut moov = finalized.moov_box().clone();
    for copy in copies {
        if let Some(start) = copy.first_time.filter(|&t| t > 0) {
            add_start_offset(&mut moov, copy.track, start);
        }
    }
    let mut boxes = finalized
        .offset_and_bytes_pairs()
        .map(|(offset, bytes)| {
            let bytes = if offset == 0 && finalized.is_faststart_enabled() {
                relayout_head(bytes, &moov)?
            } else {
                bytes.to_vec()
            };
            Ok((offset, bytes))
        })
        .collect::<Result<Vec<_>, FinalizeError>>()?;
    boxes.sort_by_key(|(offset, _)| *offset);
    Ok(boxes
        .into_iter()
        .partition(|(offset, _)| *offset < data_start))
}

/// What the written file holds: each track's start and duration, and its size.
fn summary(copies: &[TrackCopy], bytes: u64) -> Summary {
    let pick = |kind| {
        copies
            .iter()
            .find(|c| c.track.kind == kind)
            .and_then(TrackCopy::summary)
    };
    let (video, audio) = (pick(TrackKind::Video), pick(TrackKind::Audio));
    let duration = [video, audio]
        .into_iter()
        .flatten()
        .map(|t| t.start + t.duration)
        .max()
        .unwrap_or_default();
    Summary {
        duration,
        video,
        audio,
        bytes,
    }
}

/// Reads `sample`'s data from `source` into `buffer`.
fn read_sample<R: Read + Seek>(
    source: &mut R,
    sample: &ScannedSample,
    buffer: &mut Vec<u8>,
) -> io::Result<()> {
    buffer.resize(sample.size as usize, 0);
    source.seek(SeekFrom::Start(sample.offset))?;
    source.read_exact(buffer)
}

/// The output, written strictly front to back (an encrypted file cannot be patched).
struct Sequential<W> {
    out: W,
    written: u64,
}

impl<W: Write> Sequential<W> {
    /// Writes `bytes`, which belong at `offset`: right where the file ends so far.
    fn put(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FinalizeError> {
        if offset != self.written {
            return Err(FinalizeError::Corrupt(
                "the MP4 layout does not follow the written bytes",
            ));
        }
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Gives the `trak` of `track`'s kind an edit list that starts its media `start` ticks into
/// the movie (an empty edit first), and lengthens the track and movie durations to match.
fn add_start_offset(moov: &mut MoovBox, track: &ScannedTrack, start: u64) {
    let movie_timescale = u128::from(moov.mvhd_box.timescale.get());
    let handler = match track.kind {
        TrackKind::Video => HdlrBox::HANDLER_TYPE_VIDE,
        _ => HdlrBox::HANDLER_TYPE_SOUN,
    };
    let Some(trak) = moov
        .trak_boxes
        .iter_mut()
        .find(|t| t.mdia_box.hdlr_box.handler_type == handler)
    else {
        return;
    };
    let empty = u128::from(start) * movie_timescale / u128::from(track.timescale.get());
    let empty = u64::try_from(empty).unwrap_or(u64::MAX);
    set_edit_list(trak, empty);
    moov.mvhd_box.duration = moov
        .trak_boxes
        .iter()
        .map(|t| t.tkhd_box.duration)
        .max()
        .unwrap_or(0);
}

fn set_edit_list(trak: &mut TrakBox, empty: u64) {
    let media = trak.tkhd_box.duration;
    let rate = FixedPointNumber::new(1, 0);
    trak.edts_box = Some(EdtsBox {
        elst_box: Some(ElstBox {
            entries: vec![
                ElstEntry {
                    edit_duration: empty,
                    media_time: -1,
                    media_rate: rate,
                },
                ElstEntry {
                    edit_duration: media,
                    media_time: 0,
                    media_rate: rate,
                },
            ],
        }),
        unknown_boxes: Vec::new(),
    });
    trak.tkhd_box.duration = media.saturating_add(empty);
}

/// The head region (`ftyp` + `moov` + `free`) rebuilt around the edited `moov`, same size.
fn relayout_head(head: &[u8], moov: &MoovBox) -> Result<Vec<u8>, FinalizeError> {
    let ftyp_len = head
        .first_chunk::<4>()
        .map(|size| u32::from_be_bytes(*size) as usize)
        .filter(|&len| len <= head.len())
        .ok_or(FinalizeError::Corrupt("the muxer wrote no ftyp"))?;
    let mut bytes = head[..ftyp_len].to_vec();
    bytes.extend_from_slice(&moov.encode_to_vec()?);
    let padding = head
        .len()
        .checked_sub(bytes.len())
        .filter(|&p| p == 0 || p >= BoxHeader::MIN_SIZE)
        .ok_or(FinalizeError::Corrupt(
            "the index outgrew the space reserved for it",
        ))?;
    if padding > 0 {
        let header = BoxHeader {
            box_type: FreeBox::TYPE,
            box_size: BoxSize::U32(u32::try_from(padding).unwrap_or(u32::MAX)),
        };
        bytes.extend_from_slice(&header.encode_to_vec()?);
        bytes.resize(head.len(), 0);
    }
    Ok(bytes)
}

/// `.NAME.tmp` next to `output`.
fn temporary_path(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    output.with_file_name(format!(".{name}.tmp"))
}

fn ticks_to_duration(ticks: u64, timescale: u32) -> Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
