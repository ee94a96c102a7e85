//! A [`Picture`] encoded into H.264 (constrained baseline) NAL units with openh264.

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;

use crate::canvas::Picture;

/// How a stream of pictures is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Pictures per second.
    pub fps: u32,
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// Pictures from one keyframe to the next (more are forced on request).
    pub keyframe_interval: u32,
    /// The largest NAL unit in bytes (pictures are cut into slices that fit), for streams sent
    /// one NAL unit per packet; `None`: one slice per picture.
    pub max_nal_size: Option<u32>,
}

/// An openh264 encoder at a constant bitrate that never skips a picture.
pub struct H264Encoder {
    encoder: Encoder,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder").finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// An encoder for `settings`.
    pub fn new(settings: EncoderSettings) -> Result<Self, openh264::Error> {
        let mut config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .skip_frames(false)
            // openh264's own worker threads race its teardown when slices are cut to a size
            // (a use-after-free the sip_grid fuzz target found); one picture is encoded on the
            // caller's thread, which also keeps a call's encoding to one core
            .num_threads(1)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval,
            ));
        if let Some(size) = settings.max_nal_size {
            config = config.max_slice_len(size);
        }
        Ok(Self {
            encoder: Encoder::with_api_config(OpenH264API::from_source(), config)?,
        })
    }

    /// Makes the next picture a keyframe (IDR with its parameter sets).
    pub fn force_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// Encodes `picture`, handing each NAL unit (without start code) to `emit` in order.
    /// Returns whether it is a keyframe; nothing is emitted if the encoder skipped it.
    pub fn encode(
        &mut self,
        picture: &Picture,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<bool, openh264::Error> {
        let source = YUVSlices::new(
            (&picture.y, &picture.u, &picture.v),
            (picture.width, picture.height),
            (picture.width, picture.width / 2, picture.width / 2),
        );
        let stream = self.encoder.encode(&source)?;
        for layer in (0..stream.num_layers()).filter_map(|i| stream.layer(i)) {
            for nal in (0..layer.nal_count()).filter_map(|i| layer.nal_unit(i)) {
                emit(strip_start_code(nal));
            }
        }
        Ok(stream.frame_type() == FrameType::IDR)
    }
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&[0, 0, 0, 1])
        .or_else(|| nal.strip_prefix(&[0, 0, 1]))
        .unwrap_or(nal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_nal_size: Option<u32>) -> EncoderSettings {
        EncoderSettings {
            fps: 15,
            bitrate: 500_000,
            keyframe_interval: 30,
            max_nal_size,
        }
    }

    fn noisy(width: usize, height: usize) -> Picture {
        let mut picture = Picture::filled(width, height, (0, 128, 128));
        let mut state = 1u32;
        for pixel in &mut picture.y {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *pixel = (state >> 24) as u8;
        }
        picture
    }

    #[test]
    fn the_first_picture_is_a_keyframe_with_its_parameter_sets_and_a_forced_one_follows() {
        let mut encoder = H264Encoder::new(settings(None)).unwrap();
        let picture = noisy(320, 240);
        let mut types = Vec::new();
        assert!(
            encoder
                .encode(&picture, |nal| types.push(nal[0] & 0x1f))
                .unwrap()
        );
        assert!(
            types.contains(&7) && types.contains(&8) && types.contains(&5),
            "{types:?}"
        );
        assert!(
            !encoder.encode(&picture, |_| {}).unwrap(),
            "then a P picture"
        );
        encoder.force_keyframe();
        assert!(
            encoder.encode(&picture, |_| {}).unwrap(),
            "a keyframe on request"
        );
    }

    #[test]
    fn a_nal_size_limit_cuts_a_keyframe_into_slices_that_fit() {
        let mut encoder = H264Encoder::new(settings(Some(1_000))).unwrap();
        let mut sizes = Vec::new();
        encoder
            .encode(&noisy(640, 480), |nal| sizes.push(nal.len()))
            .unwrap();
        assert!(sizes.len() > 4, "many slices: {sizes:?}");
        assert!(sizes.iter().all(|&s| s <= 1_000), "{sizes:?}");
    }
}
