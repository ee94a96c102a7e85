//! H.264 in and out: one openh264 decoder per participant that keeps the picture due at the
//! current output time, and the openh264 encoder of the composed picture.

use kaskade_picture::Picture;
use kaskade_picture::encode::{EncoderSettings, H264Encoder};
use openh264::decoder::Decoder;
use shiguredo_mp4::boxes::SampleEntry;

use super::source::{SourceError, Track};

/// One participant's video, decoded up to the composer's clock.
pub(super) struct VideoLane {
    track: Track,
    decoder: Decoder,
    /// The sample entry whose parameter sets were given to the decoder last.
    entry: Option<usize>,
    /// The latest picture at or before the last requested time, if any was decoded.
    pub picture: Option<Picture>,
    sample: Vec<u8>,
    annexb: Vec<u8>,
    /// Samples the decoder rejected.
    pub errors: u64,
    /// Samples decoded.
    pub decoded: u64,
}

impl VideoLane {
    pub fn new(track: Track) -> Result<Self, openh264::Error> {
        Ok(Self {
            track,
            decoder: Decoder::new()?,
            entry: None,
            picture: None,
            sample: Vec::new(),
            annexb: Vec::new(),
            errors: 0,
            decoded: 0,
        })
    }

    /// Decodes every sample whose timeline time is at most `time_90k` (90 kHz ticks, scaled
    /// from the track's timescale); only the last picture is kept.
    pub fn advance_to(&mut self, time_90k: i64) -> Result<(), SourceError> {
        let timescale = i128::from(self.track.timescale());
        let due = |time: i64| i128::from(time) * 90_000 <= i128::from(time_90k) * timescale;
        while let Some(sample) = self.track.peek().filter(|s| due(s.time)) {
            self.track.advance();
            self.track.read(&sample, &mut self.sample)?;
            self.annexb.clear();
            let length_size = match self.track.entries().get(sample.entry) {
                Some(SampleEntry::Avc1(avc1)) => {
                    if self.entry != Some(sample.entry) {
                        for set in avc1.avcc_box.sps_list.iter().chain(&avc1.avcc_box.pps_list) {
                            self.annexb.extend_from_slice(&[0, 0, 0, 1]);
                            self.annexb.extend_from_slice(set);
                        }
                        self.entry = Some(sample.entry);
                    }
                    usize::from(avc1.avcc_box.length_size_minus_one.get()) + 1
                }
                _ => {
                    self.errors += 1;
                    continue;
                }
            };
            if !avcc_to_annexb(&self.sample, length_size, &mut self.annexb) {
                self.errors += 1;
                continue;
            }
            let keep = self.track.peek().is_none_or(|next| !due(next.time));
            match self.decoder.decode(&self.annexb) {
                Ok(Some(yuv)) => {
                    self.decoded += 1;
                    if keep {
                        self.picture
                            .get_or_insert_with(Picture::default)
                            .copy_from(&yuv);
                    }
                }
                Ok(None) => {}
                Err(_) => self.errors += 1,
            }
        }
        Ok(())
    }
}

/// Appends the NAL units of AVCC `data` (lengths of `length_size` bytes) to `out` with start
/// codes; false if a length runs past the data.
fn avcc_to_annexb(mut data: &[u8], length_size: usize, out: &mut Vec<u8>) -> bool {
    while !data.is_empty() {
        let Some((length, rest)) = data.split_at_checked(length_size) else {
            return false;
        };
        let length = length
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let Some((nal, rest)) = rest.split_at_checked(length) else {
            return false;
        };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        data = rest;
    }
    true
}

/// The openh264 encoder of the composed picture, producing AVCC access units.
pub(super) struct VideoEncoder {
    encoder: H264Encoder,
}

impl VideoEncoder {
    /// Baseline profile, constant bitrate `bitrate`, a keyframe every two seconds.
    pub fn new(fps: u32, bitrate: u32) -> Result<Self, openh264::Error> {
        let settings = EncoderSettings {
            fps,
            bitrate,
            keyframe_interval: 2 * fps,
            max_nal_size: None,
        };
        Ok(Self {
            encoder: H264Encoder::new(settings)?,
        })
    }

    /// Encodes `picture` into `out` (AVCC, 4-byte lengths; cleared first). Returns whether
    /// it is a keyframe; `out` stays empty if the encoder skipped the frame.
    pub fn encode(
        &mut self,
        picture: &Picture,
        out: &mut Vec<u8>,
    ) -> Result<bool, openh264::Error> {
        out.clear();
        self.encoder.encode(picture, |nal| {
            out.extend_from_slice(&u32::try_from(nal.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(nal);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_lengths_become_start_codes() {
        let mut out = Vec::new();
        assert!(avcc_to_annexb(&[0, 2, 0x65, 1, 0, 1, 0x41], 2, &mut out));
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1, 0, 0, 0, 1, 0x41]);
        assert!(!avcc_to_annexb(&[0, 0, 0, 9, 0x65], 4, &mut Vec::new()));
    }
}
