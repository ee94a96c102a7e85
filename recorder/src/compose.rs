//! The composed meeting video: every participant's finalized MP4 in, one MP4 out with a
//! grid of the participants present at each instant (the active speaker highlighted, names
//! labelled) and the mixed audio, H.264 + Opus. Natively: openh264 and libopus in process,
//! no ffmpeg, no browser.
//!
//! Inputs are read sample by sample ([`source`]: only their indexes are held in memory), on
//! the recording's common timeline: each track's edit list places it, so a participant's
//! audio and video stay aligned and a late joiner appears at their offset. A participant is
//! in the grid from the start of their first track to the end of their last. Video frames
//! are rendered at [`ComposeConfig::fps`]: each participant's decoder is advanced to the
//! frame's time (plus half a frame, so the nearest picture is shown) and its latest picture
//! is scaled into the tile ([`kaskade_picture`]'s layout and canvas).
//! Audio ([`audio`]) runs on a second thread: it decodes, mixes and re-encodes 20 ms frames
//! and hands each frame's levels to the video side, which picks the active speaker.
//!
//! Output goes through the recorder's own pipeline: [`Fmp4Writer`] into a temporary
//! fragmented file next to the output, then [`finalize`] into a moov-first MP4.

mod audio;
mod source;
mod video;

use std::fs;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::at_rest::{self, Keyring, Layout};
use crate::finalize::{FinalizeError, Summary, finalize_with};
use crate::fmp4::{AUDIO_TIMESCALE, Fmp4Error, Fmp4Writer, VIDEO_TIMESCALE};
use audio::{AudioLane, FRAME, MixError, MixedFrame, Mixer, SAMPLE_RATE, SpeakerDetector};
use kaskade_picture::{Picture, TILE_GAP, Tile, grid};
use source::Source;
pub use source::SourceError;
use video::{VideoEncoder, VideoLane};

/// Audio frames the mixing thread may run ahead of the video.
const AUDIO_AHEAD: usize = 64;

/// One participant's finalized recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeInput {
    /// The participant's MP4 (as written by [`finalize`]).
    pub path: PathBuf,
    /// The name shown on their tile.
    pub label: String,
}

/// How the composed video looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComposeConfig {
    /// Picture width in pixels (even, 64 to 3840).
    pub width: u32,
    /// Picture height in pixels (even, 64 to 2160).
    pub height: u32,
    /// Frames per second (1 to 60).
    pub fps: u32,
    /// Video bitrate in bits per second.
    pub video_bitrate: u32,
    /// Audio bitrate in bits per second.
    pub audio_bitrate: u32,
    /// Draw a highlight around the active speaker's tile.
    pub highlight_speaker: bool,
    /// Write each participant's label on their tile.
    pub labels: bool,
}

impl Default for ComposeConfig {
    /// 1280x720 at 15 fps, 1.5 Mbit/s video, 64 kbit/s audio, highlight and labels on.
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 15,
            video_bitrate: 1_500_000,
            audio_bitrate: 64_000,
            highlight_speaker: true,
            labels: true,
        }
    }
}

impl ComposeConfig {
    fn check(&self) -> Result<(), ComposeError> {
        let even = self.width.is_multiple_of(2) && self.height.is_multiple_of(2);
        if !even || !(64..=3840).contains(&self.width) || !(64..=2160).contains(&self.height) {
            return Err(ComposeError::InvalidConfig(
                "width and height must be even, 64x64 to 3840x2160",
            ));
        }
        if !(1..=60).contains(&self.fps) {
            return Err(ComposeError::InvalidConfig("fps must be 1 to 60"));
        }
        if self.video_bitrate == 0 || self.audio_bitrate == 0 {
            return Err(ComposeError::InvalidConfig("bitrates must not be zero"));
        }
        Ok(())
    }
}

/// What the composition held of one participant.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantSummary {
    /// Their label.
    pub label: String,
    /// When they appear on the timeline.
    pub start: Duration,
    /// When they leave it.
    pub end: Duration,
    /// Video frames decoded.
    pub frames_decoded: u64,
    /// Video samples and audio packets that did not decode (drawn as held pictures and
    /// silence).
    pub decode_errors: u64,
    /// How long they were the active speaker.
    pub speaking: Duration,
}

/// What [`compose`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeSummary {
    /// Length of the composition: the end of the last participant's media.
    pub duration: Duration,
    /// Video frames rendered.
    pub video_frames: u64,
    /// 20 ms audio frames mixed.
    pub audio_frames: u64,
    /// Each input, in input order.
    pub participants: Vec<ParticipantSummary>,
    /// The finalized output file.
    pub file: Summary,
}

/// Why a composition failed; the output is then absent (or the previous file is kept).
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// No input was given.
    #[error("nothing to compose: no input")]
    NoInputs,
    /// The configuration is out of range.
    #[error("invalid composition settings: {0}")]
    InvalidConfig(&'static str),
    /// An input cannot be read: missing, not MP4, or corrupt.
    #[error("participant file {path}: {source}")]
    Input {
        /// The input's path.
        path: PathBuf,
        /// What is wrong with it.
        source: SourceError,
    },
    /// No input holds any media.
    #[error("nothing to compose: the inputs hold no media")]
    NoMedia,
    /// The H.264 encoder or a decoder could not be created or failed.
    #[error("H.264 codec: {0}")]
    Video(#[from] openh264::Error),
    /// The Opus encoder or a decoder could not be created or failed.
    #[error("Opus codec: {0}")]
    Audio(#[from] opus::Error),
    /// Writing the temporary fragmented file failed.
    #[error("writing the composition: {0}")]
    Write(#[from] Fmp4Error),
    /// Finalizing the output failed.
    #[error("finalizing the composition: {0}")]
    Finalize(#[from] FinalizeError),
    /// Creating or syncing the temporary file failed.
    #[error("writing the composition: {0}")]
    Io(#[from] io::Error),
}

/// Composes `inputs` into the MP4 at `output` (replaced atomically); see the module
/// documentation. Single-threaded apart from one audio thread; memory does not grow with
/// the recording's length beyond the inputs' indexes.
pub fn compose(
    inputs: &[ComposeInput],
    output: &Path,
    config: ComposeConfig,
    keys: Option<&Keyring>,
) -> Result<ComposeSummary, ComposeError> {
    config.check()?;
    if inputs.is_empty() {
        return Err(ComposeError::NoInputs);
    }
    let mut participants = Vec::with_capacity(inputs.len());
    let mut video_lanes = Vec::with_capacity(inputs.len());
    let mut audio_lanes = Vec::with_capacity(inputs.len());
    for input in inputs {
        let source = Source::open(&input.path, keys).map_err(|source| ComposeError::Input {
            path: input.path.clone(),
            source,
        })?;
        let (start, end) = source.span().unwrap_or_default();
        participants.push(ParticipantSummary {
            label: input.label.clone(),
            start,
            end,
            frames_decoded: 0,
            decode_errors: 0,
            speaking: Duration::ZERO,
        });
        video_lanes.push(source.video.map(VideoLane::new).transpose()?);
        audio_lanes.push(source.audio.map(AudioLane::new).transpose()?);
    }
    let duration = participants
        .iter()
        .map(|p| p.end)
        .max()
        .filter(|d| !d.is_zero())
        .ok_or(ComposeError::NoMedia)?;
    let video_frames = (duration.as_nanos() * u128::from(config.fps)).div_ceil(1_000_000_000);
    let audio_frames =
        (duration.as_nanos() * u128::from(SAMPLE_RATE)).div_ceil(1_000_000_000 * FRAME as u128);
    let mut job = Job {
        inputs,
        config,
        keys,
        participants,
        video_lanes,
        video_frames: u64::try_from(video_frames).unwrap_or(u64::MAX),
        audio_frames: u64::try_from(audio_frames).unwrap_or(u64::MAX),
    };
    let temporary = temporary_path(output);
    let result = job
        .render(audio_lanes, &temporary)
        .and_then(|()| Ok(finalize_with(&temporary, output, keys)?));
    let _ = fs::remove_file(&temporary);
    Ok(ComposeSummary {
        duration,
        video_frames: job.video_frames,
        audio_frames: job.audio_frames,
        participants: job.participants,
        file: result?,
    })
}

/// One composition under way.
struct Job<'a> {
    inputs: &'a [ComposeInput],
    config: ComposeConfig,
    keys: Option<&'a Keyring>,
    participants: Vec<ParticipantSummary>,
    video_lanes: Vec<Option<VideoLane>>,
    video_frames: u64,
    audio_frames: u64,
}

impl Job<'_> {
    /// Renders into the fragmented file at `path`, audio on a second thread.
    fn render(
        &mut self,
        audio_lanes: Vec<Option<AudioLane>>,
        path: &Path,
    ) -> Result<(), ComposeError> {
        let mut mixer = Mixer::new(audio_lanes, self.audio_frames, self.config.audio_bitrate)?;
        let (sender, receiver) = mpsc::sync_channel(AUDIO_AHEAD);
        let (rendered, audio_errors) = std::thread::scope(|scope| {
            let mixing = scope.spawn(move || {
                while let Some(frame) = mixer.next_frame().transpose() {
                    let failed = frame.is_err();
                    if sender.send(frame).is_err() || failed {
                        break;
                    }
                }
                let lanes = mixer.lanes();
                lanes
                    .iter()
                    .map(|lane| lane.as_ref().map_or(0, |l| l.errors))
                    .collect::<Vec<_>>()
            });
            let rendered = self.render_video(receiver, path);
            (rendered, mixing.join().unwrap_or_default())
        });
        for (participant, errors) in self.participants.iter_mut().zip(audio_errors) {
            participant.decode_errors += errors;
        }
        rendered
    }

    /// The video loop: between frames, writes the audio frames due and follows the speaker.
    fn render_video(
        &mut self,
        audio: mpsc::Receiver<Result<MixedFrame, MixError>>,
        path: &Path,
    ) -> Result<(), ComposeError> {
        let (width, height) = (self.config.width as usize, self.config.height as usize);
        let file = at_rest::create(path, self.keys, Layout::Streaming)?;
        let mut writer = Fmp4Writer::new(BufWriter::new(file));
        let mut encoder = VideoEncoder::new(self.config.fps, self.config.video_bitrate)?;
        let mut canvas = Picture::filled(width, height, (0, 128, 128));
        let mut detector = SpeakerDetector::default();
        let mut speaker = None;
        let mut audio = audio.into_iter();
        let mut next_audio = audio.next();
        let mut encoded = Vec::new();
        for frame in 0..self.video_frames {
            let time = frame * u64::from(VIDEO_TIMESCALE) / u64::from(self.config.fps);
            while let Some(mixed) = next_audio.take_if(|m| {
                m.as_ref().map_or(true, |m| {
                    u128::from(m.time) * u128::from(VIDEO_TIMESCALE)
                        <= u128::from(time) * u128::from(AUDIO_TIMESCALE)
                })
            }) {
                let mixed = mixed.map_err(|e| self.mix_error(e))?;
                writer.push_audio(mixed.time, &mixed.packet)?;
                speaker = detector.update(&mixed.levels);
                if let Some(index) = speaker {
                    self.participants[index].speaking += Duration::from_millis(20);
                }
                next_audio = audio.next();
            }
            let at = Duration::from_nanos(time * 1_000_000_000 / u64::from(VIDEO_TIMESCALE));
            self.draw(&mut canvas, at, time, speaker)?;
            let keyframe = encoder.encode(&canvas, &mut encoded)?;
            if !encoded.is_empty() {
                writer.push_video(time, keyframe, &encoded)?;
            }
        }
        for mixed in next_audio.into_iter().chain(audio) {
            let mixed = mixed.map_err(|e| self.mix_error(e))?;
            writer.push_audio(mixed.time, &mixed.packet)?;
        }
        writer
            .finish()?
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .finish()?;
        for (participant, lane) in self.participants.iter_mut().zip(&self.video_lanes) {
            if let Some(lane) = lane {
                participant.frames_decoded = lane.decoded;
                participant.decode_errors += lane.errors;
            }
        }
        Ok(())
    }

    /// Draws the grid of the participants present at `at` (`time` in 90 kHz ticks).
    fn draw(
        &mut self,
        canvas: &mut Picture,
        at: Duration,
        time: u64,
        speaker: Option<usize>,
    ) -> Result<(), ComposeError> {
        canvas.clear();
        let present: Vec<usize> = (0..self.participants.len())
            .filter(|&i| (self.participants[i].start..self.participants[i].end).contains(&at))
            .collect();
        let tiles = grid(present.len(), self.config.width, self.config.height);
        for (&index, &tile) in present.iter().zip(&tiles) {
            let picture = match &mut self.video_lanes[index] {
                Some(lane) => {
                    // The picture nearest the frame's time: audio and video stay within
                    // half a frame of each other.
                    let half_frame = u64::from(VIDEO_TIMESCALE / 2 / self.config.fps);
                    let time = i64::try_from(time + half_frame).unwrap_or(i64::MAX);
                    lane.advance_to(time)
                        .map_err(|source| ComposeError::Input {
                            path: self.inputs[index].path.clone(),
                            source,
                        })?;
                    lane.picture.as_ref()
                }
                None => None,
            };
            match picture {
                Some(picture) => canvas.draw_scaled(tile, picture),
                None => canvas.empty_tile(tile),
            }
            self.decorate(canvas, tile, index, speaker);
        }
        Ok(())
    }

    fn decorate(&self, canvas: &mut Picture, tile: Tile, index: usize, speaker: Option<usize>) {
        if self.config.labels {
            canvas.label(tile, &self.inputs[index].label);
        }
        if self.config.highlight_speaker && speaker == Some(index) {
            canvas.highlight(tile, TILE_GAP);
        }
    }

    fn mix_error(&self, error: MixError) -> ComposeError {
        match error {
            MixError::Input(index, source) => ComposeError::Input {
                path: self.inputs[index].path.clone(),
                source,
            },
            MixError::Encode(error) => ComposeError::Audio(error),
        }
    }
}

/// `.NAME.compose.fmp4` next to `output`.
fn temporary_path(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    output.with_file_name(format!(".{name}.compose.fmp4"))
}
