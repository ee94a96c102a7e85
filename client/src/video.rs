//! Synthetic H.264 video source: an openh264-encoded, looped test-pattern clip.
//!
//! The clip is encoded once per [`VideoClipConfig`] (and shared between participants through
//! [`VideoClip::shared`]): constrained baseline, one IDR at the start of the loop and only P
//! frames after it, so looping back to frame 0 is always a valid bitstream. Every frame is
//! pre-split into RTP payloads with H.264 packetization mode 1 (single NAL, STAP-A, FU-A), so
//! sending costs no encoding and no copying. A keyframe on demand (PLI/FIR) is served by
//! restarting the loop at its IDR, see [`VideoCursor`].
//!
//! A sync-mark clip ([`VideoClipConfig::sync_marks`]) is different: dark frames with one white
//! frame at [`sync_mark_second`] of each loop, and every frame an IDR, so the sender can pick
//! frames by wall-clock time (and skip or repeat none) without ever breaking the bitstream.

use std::sync::{Arc, OnceLock};

use crate::clip_cache::ClipCache;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVBuffer;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

/// RTP payload budget per packet (bytes), leaving room for SRTP and header extensions.
pub const RTP_PAYLOAD_MTU: usize = 1160;
/// The least bitrate of a simulcast layer (bits/s).
pub const MIN_LAYER_BITRATE: u32 = 30_000;
/// The RTP clock rate of video.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// Parameters of an encoded clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VideoClipConfig {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in bits per second.
    pub bitrate_bps: u32,
    /// Clip length in frames; the clip starts with its only IDR.
    pub frames: u32,
    /// Encode the sync-mark clip instead of the test pattern: dark frames except a white one at
    /// [`mark_frame`](Self::mark_frame), every frame an IDR. `frames` must then be a whole
    /// number of seconds, so the loop matches the audio's (see
    /// [`OpusClip::sync_marks`](crate::audio::OpusClip::sync_marks)).
    pub sync_marks: bool,
}

impl VideoClipConfig {
    /// A 2 s clip (IDR every 2 s) at the given resolution, frame rate and bitrate.
    pub fn new(width: u32, height: u32, fps: u32, bitrate_bps: u32) -> Self {
        Self {
            width,
            height,
            fps,
            bitrate_bps,
            frames: fps.max(1) * 2,
            sync_marks: false,
        }
    }

    /// The three simulcast layers of this picture, lowest first, as a browser encodes them:
    /// a quarter and a half of its size at about 1/8 and 3/10 of its bitrate (at least
    /// [`MIN_LAYER_BITRATE`]), then the picture itself.
    pub fn simulcast_layers(&self) -> [VideoClipConfig; 3] {
        let scaled = |divisor: u32, bitrate_bps: u32| VideoClipConfig {
            width: (self.width / divisor).max(16) & !1,
            height: (self.height / divisor).max(16) & !1,
            bitrate_bps: bitrate_bps.max(MIN_LAYER_BITRATE),
            ..*self
        };
        [
            scaled(4, self.bitrate_bps / 8),
            scaled(2, self.bitrate_bps / 10 * 3),
            *self,
        ]
    }

    /// The index of the white frame in a sync-mark clip (`None` for the test pattern): the
    /// first frame of whole second [`sync_mark_second`] of the loop.
    pub fn mark_frame(&self) -> Option<u32> {
        self.sync_marks
            .then(|| sync_mark_second(self.frames / self.fps.max(1)) * self.fps)
    }
}

/// Where the sync mark of a loop of `loop_seconds` whole seconds falls: at the start of its
/// middle second (second 1 of a 2 s loop; second 0 of a 1 s loop). Video and audio clips of
/// the same length put their marks at the same instant.
pub fn sync_mark_second(loop_seconds: u32) -> u32 {
    loop_seconds / 2
}

/// One encoded frame of the clip.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// The Annex B access unit as the encoder produced it.
    pub annexb: Bytes,
    /// The access unit split into RTP payloads (packetization mode 1); the last one ends the
    /// frame and gets the marker bit.
    pub payloads: Vec<Bytes>,
    /// Whether the frame is an IDR (with SPS and PPS in front).
    pub keyframe: bool,
}

/// A looped, pre-encoded and pre-packetized H.264 clip.
#[derive(Debug)]
pub struct VideoClip {
    config: VideoClipConfig,
    frames: Vec<EncodedFrame>,
}

impl VideoClip {
    /// Encodes a new clip of the moving test pattern.
    pub fn encode(config: VideoClipConfig) -> Result<Self> {
        if !config.width.is_multiple_of(2) || !config.height.is_multiple_of(2) || config.width == 0
        {
            bail!("video size {}x{} must be even", config.width, config.height);
        }
        if config.fps == 0 || config.frames == 0 {
            bail!("fps and clip length must be positive");
        }
        if config.sync_marks && !config.frames.is_multiple_of(config.fps) {
            bail!("a sync-mark clip must last whole seconds");
        }
        // A sync-mark clip is all IDRs, so any frame may follow any other.
        let intra_period = if config.sync_marks { 1 } else { config.frames };
        let enc_config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(config.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(config.fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .skip_frames(false)
            .scene_change_detect(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(intra_period));
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), enc_config)
            .context("creating openh264 encoder")?;
        let (w, h) = (config.width as usize, config.height as usize);
        let mut payloader = H264Payloader::default();
        let mut frames = Vec::with_capacity(config.frames as usize);
        let mark = config.mark_frame();
        for index in 0..config.frames {
            let picture = match mark {
                Some(mark) => sync_mark_picture(w, h, index == mark),
                None => test_pattern(w, h, index),
            };
            let yuv = YUVBuffer::from_vec(picture, w, h);
            let intra = index == 0 || config.sync_marks;
            if intra {
                encoder.force_intra_frame();
            }
            let bitstream = encoder.encode(&yuv).context("encoding test pattern")?;
            let frame_type = bitstream.frame_type();
            let annexb = Bytes::from(bitstream.to_vec());
            if annexb.is_empty() {
                bail!("encoder skipped frame {index}");
            }
            let keyframe = frame_type == FrameType::IDR;
            if intra != keyframe {
                bail!("unexpected frame type {frame_type:?} at clip frame {index}");
            }
            let payloads = payloader
                .payload(RTP_PAYLOAD_MTU, &annexb)
                .context("packetizing H.264")?;
            frames.push(EncodedFrame {
                annexb,
                payloads,
                keyframe,
            });
        }
        Ok(Self { config, frames })
    }

    /// Returns the clip for `config`, encoding it on first use (process-wide cache).
    pub fn shared(config: VideoClipConfig) -> Result<Arc<Self>> {
        static CACHE: OnceLock<ClipCache<VideoClipConfig, VideoClip>> = OnceLock::new();
        CACHE
            .get_or_init(ClipCache::default)
            .get_or_encode(config, || Self::encode(config))
    }

    /// The clip's parameters.
    pub fn config(&self) -> &VideoClipConfig {
        &self.config
    }

    /// All frames in order; frame 0 is the IDR (every frame is, in a sync-mark clip).
    pub fn frames(&self) -> &[EncodedFrame] {
        &self.frames
    }

    /// RTP timestamp increment per frame.
    pub fn timestamp_step(&self) -> u32 {
        VIDEO_CLOCK_RATE / self.config.fps
    }
}

/// Walks a [`VideoClip`] in a loop and serves keyframe requests.
#[derive(Debug)]
pub struct VideoCursor {
    clip: Arc<VideoClip>,
    next: usize,
}

impl VideoCursor {
    /// Starts at the clip's IDR.
    pub fn new(clip: Arc<VideoClip>) -> Self {
        Self { clip, next: 0 }
    }

    /// Makes the next frame a keyframe by restarting the loop at its IDR.
    pub fn force_keyframe(&mut self) {
        self.next = 0;
    }

    /// The frame to send now; advances the loop.
    pub fn next_frame(&mut self) -> &EncodedFrame {
        let index = self.next;
        self.next = (self.next + 1) % self.clip.frames.len();
        &self.clip.frames[index]
    }

    /// The underlying clip.
    pub fn clip(&self) -> &Arc<VideoClip> {
        &self.clip
    }
}

/// Draws frame `index` of the moving test pattern as I420: a diagonal luma gradient that
/// scrolls, a bright square that moves across, and slowly cycling chroma.
pub fn test_pattern(width: usize, height: usize, index: u32) -> Vec<u8> {
    let mut yuv = vec![0u8; width * height * 3 / 2];
    let (luma, chroma) = yuv.split_at_mut(width * height);
    let shift = index as usize * 4;
    for (y, row) in luma.chunks_exact_mut(width).enumerate() {
        for (x, px) in row.iter_mut().enumerate() {
            *px = (((x + y + shift) * 255 / (width + height)) % 224 + 16) as u8;
        }
    }
    let side = (height / 4).max(2);
    let bx = (index as usize * 8) % width.saturating_sub(side).max(1);
    let by = height / 2 - side / 2;
    for row in luma.chunks_exact_mut(width).skip(by).take(side) {
        for px in row.iter_mut().skip(bx).take(side) {
            *px = 235;
        }
    }
    let (u, v) = chroma.split_at_mut(width * height / 4);
    let cu = (128 + ((index * 3) % 64) as i32 - 32) as u8;
    let cv = (128 - ((index * 5) % 64) as i32 + 32) as u8;
    u.fill(cu);
    v.fill(cv);
    yuv
}

/// Luma of a sync-mark clip's dark frames.
const DARK_LUMA: u8 = 32;
/// Luma of its white (mark) frame.
const WHITE_LUMA: u8 = 235;

/// A flat I420 picture of a sync-mark clip: white for the mark, dark otherwise, no colour.
pub fn sync_mark_picture(width: usize, height: usize, white: bool) -> Vec<u8> {
    let mut yuv = vec![128u8; width * height * 3 / 2];
    let luma = if white { WHITE_LUMA } else { DARK_LUMA };
    yuv[..width * height].fill(luma);
    yuv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulcast_layers_are_a_quarter_a_half_and_the_whole() {
        let sizes = |c: VideoClipConfig| {
            c.simulcast_layers()
                .map(|l| (l.width, l.height, l.bitrate_bps, l.fps))
        };
        assert_eq!(
            sizes(VideoClipConfig::new(640, 360, 20, 500_000)),
            [
                (160, 90, 62_500, 20),
                (320, 180, 150_000, 20),
                (640, 360, 500_000, 20)
            ]
        );
        assert_eq!(
            sizes(VideoClipConfig::new(36, 20, 15, 200_000)),
            [
                (16, 16, 30_000, 15),
                (18, 16, 60_000, 15),
                (36, 20, 200_000, 15)
            ],
            "at least 16x16 (even) and 30 kbit/s"
        );
    }

    fn sync_clip(fps: u32, seconds: u32) -> VideoClipConfig {
        let mut config = VideoClipConfig::new(64, 48, fps, 100_000);
        config.frames = fps * seconds;
        config.sync_marks = true;
        config
    }

    #[test]
    fn the_mark_is_the_first_frame_of_the_middle_second() {
        assert_eq!(sync_clip(15, 2).mark_frame(), Some(15));
        assert_eq!(sync_clip(20, 4).mark_frame(), Some(40));
        assert_eq!(sync_clip(15, 1).mark_frame(), Some(0));
        assert_eq!(VideoClipConfig::new(64, 48, 15, 100_000).mark_frame(), None);
    }

    #[test]
    fn a_sync_mark_clip_is_all_idrs_and_decodes_to_one_white_frame() {
        let config = sync_clip(10, 2);
        let clip = VideoClip::encode(config).expect("encode");
        assert!(clip.frames().iter().all(|f| f.keyframe));
        let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
        let mut bright = Vec::new();
        for (index, frame) in clip.frames().iter().enumerate() {
            use openh264::formats::YUVSource;
            let picture = decoder
                .decode(&frame.annexb)
                .expect("decodes")
                .expect("a picture per frame");
            let y = picture.y();
            let mean = y.iter().map(|&v| u64::from(v)).sum::<u64>() / y.len() as u64;
            if mean > 128 {
                bright.push(index as u32);
            }
        }
        assert_eq!(bright, vec![config.mark_frame().unwrap()]);
    }

    #[test]
    fn a_sync_mark_clip_must_last_whole_seconds() {
        let mut config = sync_clip(10, 2);
        config.frames = 15;
        assert!(VideoClip::encode(config).is_err());
    }
}
