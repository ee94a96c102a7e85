//! H.264 sequence parameter sets: the picture size a stream's keyframes announce.
//!
//! The node ranks a publisher's simulcast layers by the height their SPS gives, whatever the
//! layers are called or in which order the publisher offered them. Only the fields up to the
//! frame cropping are read (ITU-T H.264 7.3.2.1.1); anything short or out of range is `None`,
//! never a panic.

/// The width and height of the pictures an RTP payload's SPS describes, when the payload
/// carries one (a single SPS NAL unit, or one inside a STAP-A).
pub fn picture_size(payload: &[u8]) -> Option<(u32, u32)> {
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    let first = *payload.first()?;
    match first & 0x1f {
        SPS => sps_size(payload),
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + size)?;
                if nal.first().is_some_and(|b| b & 0x1f == SPS) {
                    return sps_size(nal);
                }
                rest = &rest[2 + size..];
            }
            None
        }
        _ => None,
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices.
const HIGH_PROFILES: [u8; 12] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134];

/// The size an SPS NAL unit (with its header byte) gives.
fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(nal.get(1..)?);
    let profile = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if HIGH_PROFILES.contains(&profile) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bits(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bits(1)? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    r.skip_scaling_list(if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bits(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?; // mb_adaptive_frame_field_flag
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.bits(1)? == 1 {
        (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let (crop_x, crop_y) = match chroma_format {
        0 | 3 => (1, 2 - frame_mbs_only),
        2 => (2, 2 - frame_mbs_only),
        _ => (2, 2 * (2 - frame_mbs_only)),
    };
    let width = width_mbs
        .checked_mul(16)?
        .checked_sub(left.checked_add(right)?.checked_mul(crop_x)?)?;
    let height = (2 - frame_mbs_only)
        .checked_mul(height_units)?
        .checked_mul(16)?
        .checked_sub(top.checked_add(bottom)?.checked_mul(crop_y)?)?;
    (width > 0 && height > 0).then_some((width, height))
}

/// Reads bits of a NAL unit's payload, skipping emulation prevention bytes.
struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
    bit: u8,
    zeros: u8,
    current: u8,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            bit: 8,
            zeros: 0,
            current: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bit == 8 {
            let mut byte = *self.bytes.get(self.at)?;
            self.at += 1;
            if self.zeros >= 2 && byte == 3 {
                byte = *self.bytes.get(self.at)?;
                self.at += 1;
                self.zeros = 0;
            }
            self.zeros = if byte == 0 { self.zeros + 1 } else { 0 };
            self.current = byte;
            self.bit = 0;
        }
        let value = (self.current >> (7 - self.bit)) & 1;
        self.bit += 1;
        Some(u32::from(value))
    }

    fn bits(&mut self, n: u8) -> Option<u32> {
        (0..n).try_fold(0, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// An unsigned Exp-Golomb code (at most 31 leading zeros).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// A signed Exp-Golomb code.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
        let (mut last, mut next) = (8i64, 8i64);
        for _ in 0..size {
            if next != 0 {
                next = (last + self.se()? + 256) % 256;
            }
            if next != 0 {
                last = next;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// SPSs written by x264 (baseline and high profile) and openh264.
    #[test]
    fn reads_the_picture_size_of_real_sps() {
        let cases = [
            (
                "6742c00bd90141fb011000000300100000030020f142a480",
                (320, 240),
            ),
            (
                "6764000cacd94141fb011000000300100000030020f1429960",
                (320, 240),
            ),
            (
                "6742c028d900780227e5c044000003000400000300083c60c920",
                (1920, 1080),
            ),
            (
                "67640028acd940780227e5c044000003000400000300083c60c658",
                (1920, 1080),
            ),
            (
                "6742c00ad902847e5c044000000300400000030083c48992",
                (160, 120),
            ),
            (
                "6764000aacd942847e5c044000000300400000030083c4896580",
                (160, 120),
            ),
        ];
        for (sps, size) in cases {
            assert_eq!(picture_size(&hex(sps)), Some(size), "{sps}");
        }
    }

    #[test]
    fn finds_the_sps_inside_a_stap_a() {
        let sps = hex("6742c00bd90141fb011000000300100000030020f142a480");
        let mut stap = vec![0x78, 0, 2, 0x09, 0x10];
        stap.extend((sps.len() as u16).to_be_bytes());
        stap.extend(&sps);
        stap.extend([0, 2, 0x68, 0xce]);
        assert_eq!(picture_size(&stap), Some((320, 240)));
    }

    #[test]
    fn anything_else_has_no_size() {
        let sps = hex("6742c00bd90141fb011000000300100000030020f142a480");
        // its first 8 bytes hold every field up to the cropping: any shorter has no size
        for cut in 0..8 {
            assert_eq!(picture_size(&sps[..cut]), None, "cut at {cut}");
        }
        assert_eq!(picture_size(&sps[..8]), Some((320, 240)));
        assert_eq!(picture_size(&[0x65, 0x88, 0x84]), None);
        assert_eq!(picture_size(&[0x78, 0, 40, 0x67]), None);
        assert_eq!(picture_size(&[0x67, 0x64, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    /// Found by the `simulcast_layers` fuzz target: cropping so large that multiplying it by
    /// the crop unit overflowed.
    #[test]
    fn absurd_cropping_is_no_size_not_a_panic() {
        for sps in [
            "6742c00bd91d000000010141fb0110000003001000000300",
            "67425b0ad902847e5c044000000300400000030083c48992",
        ] {
            let _ = picture_size(&hex(sps));
        }
        assert_eq!(
            picture_size(&hex("6742c00bd91d000000010141fb0110000003001000000300")),
            None
        );
    }
}
