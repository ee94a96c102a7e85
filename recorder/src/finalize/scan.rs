//! Reads the index of a fragmented MP4 written by [`crate::fmp4`]: tracks from the `moov`,
//! every sample's position, time, duration and sync flag from the fragments, and where the
//! last complete fragment ends. Sample data is not read.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::num::NonZeroU32;

use shiguredo_mp4::boxes::{HdlrBox, MoofBox, MoovBox, SampleEntry, TrafBox, TrexBox};
use shiguredo_mp4::{Decode, TrackKind};

use super::FinalizeError;

/// The largest `moov` or `moof` read into memory.
const MAX_INDEX_BOX: u64 = 64 << 20;

/// One sample of the fragmented file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScannedSample {
    pub offset: u64,
    pub size: u32,
    /// Decode time in the track's timescale.
    pub time: u64,
    pub duration: u32,
    pub keyframe: bool,
}

/// One track of the fragmented file.
#[derive(Debug, Clone)]
pub(crate) struct ScannedTrack {
    pub track_id: u32,
    pub kind: TrackKind,
    pub timescale: NonZeroU32,
    pub entry: SampleEntry,
    pub samples: Vec<ScannedSample>,
    trex: Option<TrexBox>,
}

/// What a scan found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub tracks: Vec<ScannedTrack>,
    /// Offset just past the last complete fragment (or past the `moov` without fragments).
    pub complete_end: u64,
    pub file_len: u64,
    pub fragments: u64,
}

/// A top-level box: where it starts, its header size and total size.
struct BoxAt {
    kind: [u8; 4],
    start: u64,
    header: u64,
    size: u64,
}

/// Scans `file` (plain or decrypted: any [`Read`] + [`Seek`]); a box cut off by the end of
/// the file or a malformed fragment ends the scan there (see [`Scan::complete_end`]); a bad
/// `ftyp`/`moov` is an error.
pub(crate) fn scan<R: Read + Seek>(file: &mut R) -> Result<Scan, FinalizeError> {
    let file_len = file.seek(SeekFrom::End(0))?;
    if file_len == 0 {
        return Err(FinalizeError::Empty);
    }
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(0))?;
    let ftyp = read_box_header(&mut reader, 0, file_len)?
        .filter(|b| &b.kind == b"ftyp")
        .ok_or(FinalizeError::NotMp4)?;
    let mut position = ftyp.start + ftyp.size;
    let mut tracks = None;
    while tracks.is_none() {
        let found = read_box_header(&mut reader, position, file_len)?
            .ok_or(FinalizeError::Corrupt("the file ends before its moov box"))?;
        if &found.kind == b"moov" {
            let bytes = read_body(&mut reader, &found)?;
            tracks = Some(parse_moov(&bytes)?);
        }
        position = found.start + found.size;
    }
    let mut scan = Scan {
        tracks: tracks.unwrap_or_default(),
        complete_end: position,
        file_len,
        fragments: 0,
    };
    while let Some(found) = read_box_header(&mut reader, position, file_len)? {
        position = found.start + found.size;
        if &found.kind != b"moof" {
            if &found.kind == b"mdat" {
                break;
            }
            scan.complete_end = position;
            continue;
        }
        let bytes = match read_body(&mut reader, &found) {
            Err(FinalizeError::Corrupt(_)) => break,
            bytes => bytes?,
        };
        let Some(mdat) =
            read_box_header(&mut reader, position, file_len)?.filter(|b| &b.kind == b"mdat")
        else {
            break;
        };
        let payload = (mdat.start + mdat.header)..(mdat.start + mdat.size);
        if add_fragment(&mut scan.tracks, &bytes, found.start, payload).is_err() {
            break;
        }
        position = mdat.start + mdat.size;
        scan.complete_end = position;
        scan.fragments += 1;
    }
    Ok(scan)
}

/// Reads the header of the box at `start`; `None` if the file ends before the box does.
fn read_box_header<R: Read + Seek>(
    reader: &mut BufReader<R>,
    start: u64,
    file_len: u64,
) -> Result<Option<BoxAt>, FinalizeError> {
    if file_len.saturating_sub(start) < 8 {
        return Ok(None);
    }
    reader.seek(SeekFrom::Start(start))?;
    let mut head = [0u8; 8];
    reader.read_exact(&mut head)?;
    let [s0, s1, s2, s3, k0, k1, k2, k3] = head;
    let kind = [k0, k1, k2, k3];
    let (header, size) = match u32::from_be_bytes([s0, s1, s2, s3]) {
        0 => (8, file_len - start),
        1 => {
            if file_len - start < 16 {
                return Ok(None);
            }
            let mut large = [0u8; 8];
            reader.read_exact(&mut large)?;
            (16, u64::from_be_bytes(large))
        }
        size => (8, u64::from(size)),
    };
    if size < header {
        return Err(FinalizeError::Corrupt("a box is smaller than its header"));
    }
    if !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(FinalizeError::Corrupt("a box has no valid type"));
    }
    let end = start.checked_add(size).filter(|&end| end <= file_len);
    Ok(end.map(|_| BoxAt {
        kind,
        start,
        header,
        size,
    }))
}

/// The whole box (header included), read into memory.
fn read_body<R: Read + Seek>(
    reader: &mut BufReader<R>,
    found: &BoxAt,
) -> Result<Vec<u8>, FinalizeError> {
    if found.size > MAX_INDEX_BOX {
        return Err(FinalizeError::Corrupt("an index box is implausibly large"));
    }
    reader.seek(SeekFrom::Start(found.start))?;
    let mut bytes = vec![0; found.size as usize];
    reader.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn parse_moov(bytes: &[u8]) -> Result<Vec<ScannedTrack>, FinalizeError> {
    let (moov, _) = MoovBox::decode(bytes)
        .map_err(|_| FinalizeError::Corrupt("the moov box does not parse"))?;
    let trex = moov
        .mvex_box
        .map(|mvex| mvex.trex_boxes)
        .unwrap_or_default();
    let tracks = moov
        .trak_boxes
        .into_iter()
        .filter_map(|trak| {
            let kind = match trak.mdia_box.hdlr_box.handler_type {
                HdlrBox::HANDLER_TYPE_VIDE => TrackKind::Video,
                HdlrBox::HANDLER_TYPE_SOUN => TrackKind::Audio,
                _ => return None,
            };
            let track_id = trak.tkhd_box.track_id;
            Some(ScannedTrack {
                track_id,
                kind,
                timescale: trak.mdia_box.mdhd_box.timescale,
                entry: trak
                    .mdia_box
                    .minf_box
                    .stbl_box
                    .stsd_box
                    .entries
                    .into_iter()
                    .next()?,
                samples: Vec::new(),
                trex: trex.iter().find(|t| t.track_id == track_id).cloned(),
            })
        })
        .collect::<Vec<_>>();
    if tracks.is_empty() {
        return Err(FinalizeError::Corrupt(
            "the moov box has no audio or video track",
        ));
    }
    Ok(tracks)
}

/// Adds the samples of one `moof` + `mdat`; all or nothing.
fn add_fragment(
    tracks: &mut [ScannedTrack],
    moof_bytes: &[u8],
    moof_start: u64,
    payload: std::ops::Range<u64>,
) -> Result<(), &'static str> {
    let declared = declared_samples(moof_bytes).ok_or("moof does not parse")?;
    if declared > payload.end.saturating_sub(payload.start) {
        return Err("the moof declares more samples than its mdat has bytes");
    }
    let (moof, _) = MoofBox::decode(moof_bytes).map_err(|_| "moof does not parse")?;
    let mut added = Vec::with_capacity(moof.traf_boxes.len());
    for traf in &moof.traf_boxes {
        let Some(index) = tracks
            .iter()
            .position(|t| t.track_id == traf.tfhd_box.track_id)
        else {
            continue;
        };
        added.push((
            index,
            fragment_samples(&tracks[index], traf, moof_start, &payload)?,
        ));
    }
    for (index, samples) in added {
        let track = &mut tracks[index];
        for sample in samples {
            if let Some(last) = track.samples.last_mut()
                && sample.time > last.time
            {
                last.duration = u32::try_from(sample.time - last.time).unwrap_or(u32::MAX);
            }
            track.samples.push(sample);
        }
    }
    Ok(())
}

/// The samples the `trun` boxes of a `moof` box declare, summed; `None` when its boxes do not
/// nest as they should. Read before the `moof` is decoded: a damaged `trun` may claim billions
/// of samples of no bytes each, which the decoder would build one by one (a sample kaskade
/// records is never empty, so a fragment has at most as many samples as its `mdat` has bytes).
fn declared_samples(moof: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    each_box(moof, &mut |kind, moof| {
        if kind != *b"moof" {
            return Some(());
        }
        each_box(moof, &mut |kind, traf| {
            if kind != *b"traf" {
                return Some(());
            }
            each_box(traf, &mut |kind, trun| {
                if kind == *b"trun" {
                    let count: [u8; 4] = trun.get(4..8)?.try_into().ok()?;
                    total += u64::from(u32::from_be_bytes(count));
                }
                Some(())
            })
        })
    })?;
    Some(total)
}

/// What [`each_box`] calls with each box's type and body.
type BoxVisitor<'a> = dyn FnMut([u8; 4], &[u8]) -> Option<()> + 'a;

/// Calls `visit` with the type and body of each box in `bytes`, in order; `None` when a box
/// header is cut or a size overruns, or `visit` says so.
fn each_box(bytes: &[u8], visit: &mut BoxVisitor<'_>) -> Option<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let size = u64::from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?));
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let (header, size) = match size {
            0 => (8, rest.len() as u64),
            1 => (16, u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)),
            size => (8, size),
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s >= header && s <= rest.len())?;
        visit(kind, &rest[header..size])?;
        rest = &rest[size..];
    }
    Some(())
}

/// The samples of one track fragment, checked to lie inside the `mdat` payload.
fn fragment_samples(
    track: &ScannedTrack,
    traf: &TrafBox,
    moof_start: u64,
    payload: &std::ops::Range<u64>,
) -> Result<Vec<ScannedSample>, &'static str> {
    let tfhd = &traf.tfhd_box;
    let trex = track.trex.as_ref();
    // a damaged file's times can sit at the end of the u64 range
    let end_of_track = track
        .samples
        .last()
        .map(|s| s.time.saturating_add(u64::from(s.duration)));
    let mut time = traf
        .tfdt_box
        .as_ref()
        .map(|tfdt| tfdt.base_media_decode_time)
        .or(end_of_track)
        .unwrap_or(0);
    let base = tfhd.base_data_offset.unwrap_or(moof_start);
    let mut samples = Vec::new();
    let mut next_offset = base;
    for run in &traf.trun_boxes {
        if let Some(data_offset) = run.data_offset {
            next_offset = base
                .checked_add_signed(i64::from(data_offset))
                .ok_or("data offset out of range")?;
        }
        for (i, sample) in run.samples.iter().enumerate() {
            let duration = sample
                .duration
                .or(tfhd.default_sample_duration)
                .or(trex.map(|t| t.default_sample_duration))
                .ok_or("sample without duration")?;
            let size = sample
                .size
                .or(tfhd.default_sample_size)
                .or(trex.map(|t| t.default_sample_size))
                .ok_or("sample without size")?;
            let flags = sample
                .flags
                .or(if i == 0 { run.first_sample_flags } else { None })
                .or(tfhd.default_sample_flags)
                .or(trex.map(|t| t.default_sample_flags));
            let end = next_offset
                .checked_add(u64::from(size))
                .ok_or("sample too large")?;
            if next_offset < payload.start || end > payload.end {
                return Err("sample outside its mdat");
            }
            samples.push(ScannedSample {
                offset: next_offset,
                size,
                time,
                duration,
                keyframe: track.kind == TrackKind::Audio
                    || flags.is_some_and(|f| !f.sample_is_non_sync_sample()),
            });
            next_offset = end;
            time = time.saturating_add(u64::from(duration));
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let size = u32::try_from(body.len() + 8).unwrap();
        [&size.to_be_bytes()[..], kind, body].concat()
    }

    /// A `moof` whose track fragments each have one `trun` of `counts` samples.
    fn moof(counts: &[u32]) -> Vec<u8> {
        let mfhd = boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]);
        let trafs: Vec<u8> = counts
            .iter()
            .flat_map(|count| {
                let tfhd = boxed(b"tfhd", &[0, 2, 0, 0, 0, 0, 0, 1]);
                let trun = boxed(b"trun", &[&[0, 0, 0, 0][..], &count.to_be_bytes()].concat());
                boxed(b"traf", &[tfhd, trun].concat())
            })
            .collect();
        boxed(b"moof", &[mfhd, trafs].concat())
    }

    #[test]
    fn the_samples_a_moof_declares_are_summed_before_it_is_decoded() {
        assert_eq!(declared_samples(&moof(&[3, 40])), Some(43));
        assert_eq!(declared_samples(&moof(&[])), Some(0));
        let cut = moof(&[3]);
        assert_eq!(declared_samples(&cut[..cut.len() - 2]), None);
        let mut overrun = moof(&[3]);
        overrun[3] = 200;
        assert_eq!(declared_samples(&overrun), None);
    }

    /// Found by fuzz/fuzz_targets/mp4_recovery.rs: a `trun` of flags 0 (samples of no bytes)
    /// claiming billions of samples kept the decoder pushing them for minutes.
    #[test]
    fn a_fragment_claiming_more_samples_than_bytes_is_refused_undecoded() {
        let mut tracks = Vec::new();
        let refused = add_fragment(&mut tracks, &moof(&[u32::MAX]), 0, 1_000..2_000);
        assert_eq!(
            refused,
            Err("the moof declares more samples than its mdat has bytes")
        );
        assert_eq!(
            add_fragment(&mut tracks, &moof(&[1_000]), 0, 1_000..2_000),
            Ok(())
        );
    }
}
