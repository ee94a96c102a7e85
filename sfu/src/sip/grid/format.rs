//! The size, rate and bitrate of the grid a SIP far end receives: the largest picture its
//! H.264 decoder takes, by its level (`profile-level-id`) and the `max-fs` and `max-mbps`
//! it declares (RFC 6184 8.1: they raise the level's limits, never lower them), within what
//! kaskade sends at most (1280x720, level 3.1).

use crate::sip::sdp::VideoLine;

/// The pictures kaskade composes, largest first, as (width, height): 16:9 down to the QCIF
/// that every H.264 decoder takes.
const SIZES: [(u32, u32); 5] = [(1280, 720), (960, 540), (640, 360), (384, 216), (176, 144)];
/// The least frame rate a size is chosen at (else the next smaller one).
const MIN_FPS: u32 = 10;

/// What the far end receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureFormat {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pictures per second.
    pub fps: u32,
    /// Bits per second.
    pub bitrate: u32,
}

/// One H.264 level's limits (ITU-T H.264 table A-1): frame size in macroblocks, macroblocks
/// per second, and the baseline profile's bitrate in kbit/s.
struct Level {
    max_fs: u32,
    max_mbps: u32,
    max_kbps: u32,
}

/// The limits of `level_idc` (10 is level 1.0, 31 is 3.1); an unknown level is taken as 1.0.
fn level(level_idc: u8) -> Level {
    let (max_fs, max_mbps, max_kbps) = match level_idc {
        11 => (396, 3_000, 192),
        12 => (396, 6_000, 384),
        13 => (396, 11_880, 768),
        20 => (396, 11_880, 2_000),
        21 => (792, 19_800, 4_000),
        22 => (1_620, 20_250, 4_000),
        30 => (1_620, 40_500, 10_000),
        31 => (3_600, 108_000, 14_000),
        32 => (5_120, 216_000, 20_000),
        40 | 41 => (8_192, 245_760, 20_000),
        42.. => (8_704, 522_240, 50_000),
        _ => (99, 1_485, 64),
    };
    Level {
        max_fs,
        max_mbps,
        max_kbps,
    }
}

/// Macroblocks in a `width` x `height` picture.
fn macroblocks((width, height): (u32, u32)) -> u32 {
    width.div_ceil(16) * height.div_ceil(16)
}

impl PictureFormat {
    /// The format for the far end of `line`, at most `fps` pictures per second and `bitrate`
    /// bits per second.
    pub fn for_line(line: &VideoLine, fps: u32, bitrate: u32) -> Self {
        let level_idc = line
            .profile_level_id
            .get(4..6)
            .and_then(|l| u8::from_str_radix(l, 16).ok())
            .unwrap_or(10);
        let limits = level(level_idc);
        let max_fs = line.max_fs.unwrap_or(0).max(limits.max_fs);
        let max_mbps = line.max_mbps.unwrap_or(0).max(limits.max_mbps);
        let fps_at = |size| (max_mbps / macroblocks(size)).min(fps).max(1);
        let (width, height) = SIZES
            .into_iter()
            .find(|&size| macroblocks(size) <= max_fs && fps_at(size) >= MIN_FPS.min(fps))
            .unwrap_or(SIZES[SIZES.len() - 1]);
        Self {
            width,
            height,
            fps: fps_at((width, height)),
            bitrate: bitrate.min(limits.max_kbps.saturating_mul(1_000)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(profile: &str, max_fs: Option<u32>, max_mbps: Option<u32>) -> (u32, u32, u32, u32) {
        let line = VideoLine {
            max_fs,
            max_mbps,
            ..VideoLine::example(profile)
        };
        let f = PictureFormat::for_line(&line, 15, 1_000_000);
        (f.width, f.height, f.fps, f.bitrate)
    }

    #[test]
    fn each_level_gets_the_largest_picture_it_decodes() {
        // (profile-level-id, max-fs, max-mbps) -> (width, height, fps, bitrate)
        let cases = [
            ("42e01f", None, None, (1280, 720, 15, 1_000_000)),
            ("42e01e", None, None, (640, 360, 15, 1_000_000)),
            ("42e016", None, None, (640, 360, 15, 1_000_000)),
            ("42e015", None, None, (384, 216, 15, 1_000_000)),
            ("42e00c", None, None, (384, 216, 15, 384_000)),
            ("42e00a", None, None, (176, 144, 15, 64_000)),
            ("", None, None, (176, 144, 15, 64_000)),
            ("zz", None, None, (176, 144, 15, 64_000)),
            // a room system at level 2.2 that says it decodes 720p at 30 frames per second
            (
                "428016",
                Some(8_160),
                Some(245_000),
                (1280, 720, 15, 1_000_000),
            ),
            // max-fs raises the size, the level's macroblock rate then decides the rate
            ("42e01e", Some(3_600), None, (1280, 720, 11, 1_000_000)),
            (
                "42e01e",
                Some(3_600),
                Some(108_000),
                (1280, 720, 15, 1_000_000),
            ),
            // a level above kaskade's own still gets 720p
            ("42e028", None, None, (1280, 720, 15, 1_000_000)),
        ];
        for (profile, max_fs, max_mbps, expected) in cases {
            assert_eq!(
                format(profile, max_fs, max_mbps),
                expected,
                "{profile} {max_fs:?} {max_mbps:?}"
            );
        }
    }

    #[test]
    fn a_slow_decoder_gets_a_smaller_picture_rather_than_a_slide_show() {
        // 3,600 macroblocks but only 20,000 per second: 720p would be 5 fps, 960x540 9
        let (width, height, fps, bitrate) = format("42e00d", Some(3_600), Some(20_000));
        assert_eq!((width, height, fps), (640, 360, 15));
        assert_eq!(bitrate, 768_000, "level 1.3's bitrate");
    }
}
