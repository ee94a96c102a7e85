//! The recorder's H.264 depacketizer (`depacketize::H264Depacketizer`: single NAL units,
//! STAP-A, FU-A into access units, keyframe sync after loss) over arbitrary payload sequences,
//! and the payload parsers beside it: `nal_units` (AVCC) and `opus_packet_duration` (the Opus
//! TOC byte).
//!
//! Input: records `op | len | body`. Op 0: push `time step (u16) | flags (bit 0 marker, bit 1
//! discontinuity) | payload`; 1: flush; 2: `nal_units` and `opus_packet_duration` of the body.
//! Every access unit that comes out must be well-formed AVCC whose NAL units cover it exactly,
//! and a keyframe must carry an SPS and a PPS (the MP4 writer builds its sample entry from
//! them); the counters must add up.
#![no_main]

use kaskade_fuzz::ops::{Fields, Records};
use kaskade_recorder::depacketize::{H264Depacketizer, nal_units, opus_packet_duration};
use libfuzzer_sys::fuzz_target;

fn check_unit(data: &[u8], keyframe: bool) {
    let mut covered = 0;
    let (mut sps, mut pps) = (false, false);
    for nal in nal_units(data) {
        assert!(!nal.is_empty());
        assert_eq!(nal[0] & 0x80, 0, "a NAL unit with its forbidden bit set");
        sps |= nal[0] & 0x1f == 7;
        pps |= nal[0] & 0x1f == 8;
        covered += 4 + nal.len();
    }
    assert_eq!(covered, data.len(), "an access unit that is not whole AVCC");
    if keyframe {
        assert!(sps && pps, "a keyframe without its parameter sets");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut depacketizer = H264Depacketizer::new();
    let mut time = 0u64;
    let mut popped = 0u64;
    for (op, body) in Records::new(data) {
        match op % 3 {
            0 => {
                let mut f = Fields::new(body);
                time += u64::from(f.u16());
                let flags = f.u8();
                depacketizer.push(time, flags & 1 != 0, flags & 2 != 0, f.rest());
            }
            1 => depacketizer.flush(),
            _ => {
                let total: usize = nal_units(body).map(|n| 4 + n.len()).sum();
                assert!(total <= body.len());
                if let Some(ticks) = opus_packet_duration(body) {
                    assert!((120..=5760).contains(&ticks), "{ticks} ticks");
                }
            }
        }
        while let Some(unit) = depacketizer.pop() {
            check_unit(&unit.data, unit.keyframe);
            popped += 1;
        }
        if let Some((sps, pps)) = depacketizer.parameter_sets() {
            assert_eq!(sps[0] & 0x1f, 7);
            assert_eq!(pps[0] & 0x1f, 8);
        }
    }
    depacketizer.flush();
    while let Some(unit) = depacketizer.pop() {
        check_unit(&unit.data, unit.keyframe);
        popped += 1;
    }
    assert_eq!(depacketizer.stats().emitted, popped);
});
