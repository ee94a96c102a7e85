//! A fragmented MP4 writer for one participant: H.264 video (track 1) and Opus audio (track 2).
//!
//! The writer owns the file layout while recording: the init segment (`ftyp` + `moov`
//! declaring both tracks, so a participant who starts video late needs no second init
//! segment), then one `moof` + `mdat` fragment at least every [`FRAGMENT_DURATION`] of media,
//! so a crash loses at most the fragment being filled. Both tracks are always declared; a
//! track without samples is left out when the file is finalized. Sample times are media
//! times on the recording's clock ([`crate::timeline`]); each fragment's `tfdt` is the
//! first sample's own time, so a track may start late.
//!
//! Durations come from timestamp deltas; a track's last sample repeats the previous delta.
//! Gaps stay gaps, never shifts: a video gap (mute, loss) becomes a longer duration of the
//! frame before it (the picture holds); an audio gap of a whole 20 ms frame or more is filled
//! with Opus silence packets, so players that follow the audio clock stay in sync.
//! Keyframes carry their SPS and PPS in band, so later parameter-set changes need no new
//! sample entry; [`crate::finalize`] derives the final sample entries from them.
//!
//! `shiguredo_mp4` encodes every box: its segment muxer builds the init segment, and the
//! fragments are assembled from its box types because its muxer derives `tfdt` from the
//! running sum of durations and cannot start a track late.

use std::io::{self, Write};
use std::num::NonZeroU32;
use std::time::Duration;

use shiguredo_mp4::bitstream::h264::{H264SampleEntryConfig, LengthSize, build_avc1_box};
use shiguredo_mp4::bitstream::opus::{ChannelCount, OpusSampleEntryConfig, build_opus_box};
use shiguredo_mp4::boxes::{
    Avc1Box, AvccBox, MdatBox, MfhdBox, MoofBox, SampleEntry, TfdtBox, TfhdBox, TrafBox, TrunBox,
    TrunSample, VisualSampleEntryFields,
};
use shiguredo_mp4::mux::{Fmp4SegmentMuxer, MuxError, Sample};
use shiguredo_mp4::{BoxHeader, BoxSize, Encode, SampleFlags, TrackKind, Uint};

use crate::depacketize::{OPUS_SILENCE, nal_units, opus_packet_duration};

/// The longest stretch of media one fragment holds.
pub const FRAGMENT_DURATION: Duration = Duration::from_secs(1);
/// Video timescale (the RTP clock rate of H.264).
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Audio timescale (the RTP clock rate of Opus).
pub const AUDIO_TIMESCALE: u32 = 48_000;
/// Track ID of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track ID of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;

/// Duration given to a lone video frame (one frame at 30 fps).
const DEFAULT_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;
/// One 20 ms Opus frame.
const OPUS_FRAME: u64 = 960;

/// Errors of the writer.
#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    /// The output failed; the file holds every fragment written before.
    #[error("writing the recording: {0}")]
    Io(#[from] io::Error),
    /// A box could not be encoded (a sample or fragment beyond MP4 limits).
    #[error("encoding MP4 boxes: {0}")]
    Encode(#[from] shiguredo_mp4::Error),
    /// The init segment could not be built.
    #[error("building the init segment: {0}")]
    Init(#[from] MuxError),
}

/// A fragment just written and flushed to the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Bytes in the file after this fragment.
    pub file_size: u64,
    /// Media time up to which every sample is now in the file.
    pub media_end: Duration,
}

/// Counters of what the writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Video samples written.
    pub video_samples: u64,
    /// Audio samples written, silence included.
    pub audio_samples: u64,
    /// Opus silence packets inserted into audio gaps.
    pub silence_inserted: u64,
    /// Video samples dropped because the track did not start with a keyframe.
    pub video_dropped_before_keyframe: u64,
    /// Fragments written.
    pub fragments: u64,
}

#[derive(Debug, Clone, Copy)]
struct PendingSample {
    time: u64,
    duration: u32,
    size: u32,
    keyframe: bool,
}

/// Samples of one track waiting for the next fragment. The last one waits for its duration.
#[derive(Debug)]
struct TrackBuffer {
    track_id: u32,
    timescale: u32,
    samples: Vec<PendingSample>,
    data: Vec<u8>,
}

impl TrackBuffer {
    fn new(track_id: u32, timescale: u32) -> Self {
        Self {
            track_id,
            timescale,
            samples: Vec::new(),
            data: Vec::new(),
        }
    }

    fn last(&self) -> Option<&PendingSample> {
        self.samples.last()
    }

    /// Appends a sample; the caller has made `time` later than the previous sample's.
    fn push(&mut self, time: u64, keyframe: bool, data: &[u8]) {
        if let Some(last) = self.samples.last_mut() {
            last.duration = clamp_duration(time - last.time);
        }
        self.samples.push(PendingSample {
            time,
            duration: 0,
            size: u32::try_from(data.len()).unwrap_or(u32::MAX),
            keyframe,
        });
        self.data.extend_from_slice(data);
    }

    /// Samples whose duration is known (all but the last, or all when `finishing`).
    fn complete(&mut self, finishing: bool, default_duration: u32) -> usize {
        let count = self.samples.len();
        if !finishing {
            return count.saturating_sub(1);
        }
        let previous = count.checked_sub(2).map(|i| self.samples[i].duration);
        if let Some(last) = self.samples.last_mut() {
            last.duration = previous.unwrap_or(default_duration).max(1);
        }
        count
    }

    fn nanos(&self, time: u64) -> u128 {
        u128::from(time) * 1_000_000_000 / u128::from(self.timescale)
    }
}

/// Writes one participant's samples as fragmented MP4 to `W`. See the module documentation.
#[derive(Debug)]
pub struct Fmp4Writer<W: Write> {
    out: W,
    video: TrackBuffer,
    audio: TrackBuffer,
    video_entry: Option<Avc1Box>,
    init_written: bool,
    /// Media time (ns) of the sample that opened the fragment being filled (the one pushed
    /// first, or the one that closed the previous fragment and waits for its duration).
    fragment_start: Option<u128>,
    sequence: u32,
    file_size: u64,
    stats: WriterStats,
}

impl<W: Write> Fmp4Writer<W> {
    /// A writer that will write to `out`; nothing is written before the first fragment.
    pub fn new(out: W) -> Self {
        Self {
            out,
            video: TrackBuffer::new(VIDEO_TRACK_ID, VIDEO_TIMESCALE),
            audio: TrackBuffer::new(AUDIO_TRACK_ID, AUDIO_TIMESCALE),
            video_entry: None,
            init_written: false,
            fragment_start: None,
            sequence: 0,
            file_size: 0,
            stats: WriterStats::default(),
        }
    }

    /// Adds one H.264 access unit (AVCC, 4-byte lengths) at `time` in 90 kHz ticks. The track
    /// starts at its first keyframe. Returns the fragment written, if this sample closed one:
    /// then is the moment to make the file durable (e.g. `File::sync_data`).
    pub fn push_video(
        &mut self,
        time: u64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<Option<Fragment>, Fmp4Error> {
        let Some(time) = next_time(self.video.last(), time) else {
            return Ok(None);
        };
        if self.video.last().is_none() && !keyframe {
            self.stats.video_dropped_before_keyframe += 1;
            return Ok(None);
        }
        if keyframe && self.video_entry.is_none() {
            self.video_entry = avc1_from_access_unit(data);
        }
        self.video.push(time, keyframe, data);
        self.after_push(self.video.nanos(time))
    }

    /// Adds one Opus packet at `time` in 48 kHz ticks; see [`push_video`](Self::push_video).
    pub fn push_audio(&mut self, time: u64, data: &[u8]) -> Result<Option<Fragment>, Fmp4Error> {
        let Some(time) = next_time(self.audio.last(), time) else {
            return Ok(None);
        };
        if let Some(last) = self.audio.last() {
            let (last_time, last_size) = (last.time, last.size as usize);
            let last_data = &self.audio.data[self.audio.data.len() - last_size..];
            let natural = opus_packet_duration(last_data).map_or(OPUS_FRAME, u64::from);
            let mut cursor = last_time + natural;
            while time.saturating_sub(cursor) >= OPUS_FRAME {
                self.audio.push(cursor, true, &OPUS_SILENCE);
                self.stats.silence_inserted += 1;
                cursor += OPUS_FRAME;
            }
        }
        self.audio.push(time, true, data);
        self.after_push(self.audio.nanos(time))
    }

    /// Writes every sample still buffered (the last of each track repeats its predecessor's
    /// duration), flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, Fmp4Error> {
        self.write_fragment(true)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// The output, e.g. to `sync_data` it after a fragment.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Counters of samples, silence and fragments written.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    fn after_push(&mut self, time: u128) -> Result<Option<Fragment>, Fmp4Error> {
        let start = *self.fragment_start.get_or_insert(time);
        if time.saturating_sub(start) < FRAGMENT_DURATION.as_nanos() {
            return Ok(None);
        }
        let fragment = self.write_fragment(false)?;
        self.fragment_start = Some(time);
        Ok(fragment)
    }

    fn write_fragment(&mut self, finishing: bool) -> Result<Option<Fragment>, Fmp4Error> {
        let video_count = self.video.complete(finishing, DEFAULT_VIDEO_DURATION);
        let audio_count = self.audio.complete(finishing, OPUS_FRAME as u32);
        if video_count + audio_count == 0 {
            return Ok(None);
        }
        if !self.init_written {
            let init = self.init_segment()?;
            self.out.write_all(&init)?;
            self.file_size += init.len() as u64;
            self.init_written = true;
        }
        self.sequence += 1;
        let runs = [(&self.video, video_count), (&self.audio, audio_count)];
        let mut moof = build_moof(self.sequence, &runs, 0);
        let moof_size = moof.encode_to_vec()?.len();
        let payload: usize = runs.iter().map(|(t, n)| payload_size(t, *n)).sum();
        let mdat_header = BoxHeader {
            box_type: MdatBox::TYPE,
            box_size: BoxSize::with_payload_size(MdatBox::TYPE, payload as u64),
        }
        .encode_to_vec()?;
        moof = build_moof(self.sequence, &runs, moof_size + mdat_header.len());
        self.out.write_all(&moof.encode_to_vec()?)?;
        self.out.write_all(&mdat_header)?;
        let mut media_end = 0;
        for (track, count) in [
            (&mut self.video, video_count),
            (&mut self.audio, audio_count),
        ] {
            let size = payload_size(track, count);
            self.out.write_all(&track.data[..size])?;
            if let Some(last) = track.samples[..count].last() {
                media_end = media_end.max(track.nanos(last.time + u64::from(last.duration)));
            }
            track.data.drain(..size);
            track.samples.drain(..count);
        }
        self.out.flush()?;
        self.file_size += (moof_size + mdat_header.len() + payload) as u64;
        self.stats.video_samples += video_count as u64;
        self.stats.audio_samples += audio_count as u64;
        self.stats.fragments += 1;
        Ok(Some(Fragment {
            file_size: self.file_size,
            media_end: Duration::from_nanos(u64::try_from(media_end).unwrap_or(u64::MAX)),
        }))
    }

    /// `ftyp` + `moov` declaring both tracks, built by `shiguredo_mp4`'s segment muxer, which
    /// learns tracks from samples: it is shown one empty sample per track.
    fn init_segment(&self) -> Result<Vec<u8>, MuxError> {
        let video = SampleEntry::Avc1(self.video_entry.clone().unwrap_or_else(placeholder_avc1));
        let audio = SampleEntry::Opus(build_opus_box(&OpusSampleEntryConfig {
            channel_count: ChannelCount::Stereo,
            pre_skip: 0,
            input_sample_rate: AUDIO_TIMESCALE,
            output_gain: 0,
        }));
        let declare = |track_kind, timescale, entry| Sample {
            track_kind,
            sample_entry: Some(entry),
            keyframe: true,
            timescale: NonZeroU32::new(timescale).unwrap_or(NonZeroU32::MIN),
            duration: 0,
            composition_time_offset: None,
            data_offset: 0,
            data_size: 0,
        };
        let mut muxer = Fmp4SegmentMuxer::new()?;
        muxer.create_media_segment_metadata(&[
            declare(TrackKind::Video, VIDEO_TIMESCALE, video),
            declare(TrackKind::Audio, AUDIO_TIMESCALE, audio),
        ])?;
        muxer.init_segment_bytes()
    }
}

/// The sample time to use after `last`: never earlier, at least one tick later. `None` for a
/// sample so far in the past (a clock jump backwards) that it is dropped.
fn next_time(last: Option<&PendingSample>, time: u64) -> Option<u64> {
    match last {
        None => Some(time),
        Some(last) if time > last.time => Some(time),
        Some(last) if last.time - time > u64::from(u32::MAX) => None,
        Some(last) => Some(last.time + 1),
    }
}

fn clamp_duration(delta: u64) -> u32 {
    u32::try_from(delta).unwrap_or(u32::MAX)
}

fn payload_size(track: &TrackBuffer, count: usize) -> usize {
    track.samples[..count].iter().map(|s| s.size as usize).sum()
}

/// The `moof` of one fragment; `data_start` is the offset of the mdat payload from the
/// start of the `moof` (0 while measuring).
fn build_moof(sequence: u32, runs: &[(&TrackBuffer, usize)], data_start: usize) -> MoofBox {
    let mut data_offset = data_start;
    let traf_boxes = runs
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(track, count)| {
            let samples = &track.samples[..*count];
            let run = TrunBox {
                data_offset: Some(i32::try_from(data_offset).unwrap_or(i32::MAX)),
                first_sample_flags: None,
                samples: samples
                    .iter()
                    .map(|s| TrunSample {
                        duration: Some(s.duration),
                        size: Some(s.size),
                        flags: Some(sample_flags(s.keyframe)),
                        composition_time_offset: None,
                    })
                    .collect(),
            };
            data_offset += payload_size(track, *count);
            TrafBox {
                tfhd_box: TfhdBox {
                    track_id: track.track_id,
                    base_data_offset: None,
                    sample_description_index: None,
                    default_sample_duration: None,
                    default_sample_size: None,
                    default_sample_flags: None,
                    duration_is_empty: false,
                    default_base_is_moof: true,
                },
                tfdt_box: Some(TfdtBox {
                    version: 1,
                    base_media_decode_time: samples[0].time,
                }),
                trun_boxes: vec![run],
                unknown_boxes: Vec::new(),
            }
        })
        .collect();
    MoofBox {
        mfhd_box: MfhdBox {
            sequence_number: sequence,
        },
        traf_boxes,
        unknown_boxes: Vec::new(),
    }
}

/// Sync samples depend on nothing; other samples depend on earlier ones and are not sync.
fn sample_flags(keyframe: bool) -> SampleFlags {
    if keyframe {
        SampleFlags::from_fields(0, 2, 0, 0, 0, false, 0)
    } else {
        SampleFlags::from_fields(0, 1, 0, 0, 0, true, 0)
    }
}

/// The `avc1` sample entry described by the SPS and PPS inside an access unit.
pub(crate) fn avc1_from_access_unit(data: &[u8]) -> Option<Avc1Box> {
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    for nal in nal_units(data) {
        match nal[0] & 0x1f {
            7 => sps.push(nal.to_vec()),
            8 => pps.push(nal.to_vec()),
            _ => {}
        }
    }
    let config = H264SampleEntryConfig {
        length_size: LengthSize::FourBytes,
    };
    build_avc1_box(&sps, &pps, &config).ok()
}

/// The video entry declared before the first keyframe: no parameter sets (they are in band).
fn placeholder_avc1() -> Avc1Box {
    Avc1Box {
        visual: VisualSampleEntryFields {
            data_reference_index: VisualSampleEntryFields::DEFAULT_DATA_REFERENCE_INDEX,
            width: 0,
            height: 0,
            horizresolution: VisualSampleEntryFields::DEFAULT_HORIZRESOLUTION,
            vertresolution: VisualSampleEntryFields::DEFAULT_VERTRESOLUTION,
            frame_count: VisualSampleEntryFields::DEFAULT_FRAME_COUNT,
            compressorname: VisualSampleEntryFields::NULL_COMPRESSORNAME,
            depth: VisualSampleEntryFields::DEFAULT_DEPTH,
        },
        avcc_box: AvccBox {
            avc_profile_indication: 66,
            profile_compatibility: 0xc0,
            avc_level_indication: 31,
            length_size_minus_one: Uint::new(3),
            sps_list: Vec::new(),
            pps_list: Vec::new(),
            chroma_format: None,
            bit_depth_luma_minus8: None,
            bit_depth_chroma_minus8: None,
            sps_ext_list: Vec::new(),
        },
        unknown_boxes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20 ms CELT packet that is not silence.
    const OPUS: [u8; 4] = [0xfc, 1, 2, 3];

    #[test]
    fn audio_gaps_are_filled_with_silence_and_keep_their_length() {
        let mut writer = Fmp4Writer::new(Vec::new());
        writer.push_audio(0, &OPUS).unwrap();
        writer.push_audio(960 * 5 + 100, &OPUS).unwrap();
        assert_eq!(writer.stats().silence_inserted, 4);
        let durations: Vec<u32> = writer.audio.samples.iter().map(|s| s.duration).collect();
        assert_eq!(durations, [960, 960, 960, 960, 1060, 0]);
    }

    #[test]
    fn fragments_are_cut_every_second_of_media() {
        let mut writer = Fmp4Writer::new(Vec::new());
        let mut fragments = Vec::new();
        for frame in 0..250u64 {
            fragments.extend(writer.push_audio(frame * 960, &OPUS).unwrap());
        }
        let ends: Vec<u64> = fragments
            .iter()
            .map(|f| f.media_end.as_millis() as u64)
            .collect();
        assert_eq!(ends, [1000, 2000, 3000, 4000]);
        let sizes = fragments.iter().map(|f| f.file_size);
        assert!(sizes.clone().zip(sizes.skip(1)).all(|(a, b)| a < b));
        let bytes = writer.finish().unwrap();
        assert!(bytes.len() as u64 > fragments[3].file_size);
    }

    #[test]
    fn video_starts_at_a_keyframe_and_times_never_go_back() {
        let mut writer = Fmp4Writer::new(Vec::new());
        writer.push_video(0, false, &[0, 0, 0, 1, 0x41]).unwrap();
        assert_eq!(writer.stats().video_dropped_before_keyframe, 1);
        writer.push_video(9000, true, &[0, 0, 0, 1, 0x65]).unwrap();
        writer.push_video(8000, false, &[0, 0, 0, 1, 0x41]).unwrap();
        let times: Vec<u64> = writer.video.samples.iter().map(|s| s.time).collect();
        assert_eq!(times, [9000, 9001]);
    }
}
