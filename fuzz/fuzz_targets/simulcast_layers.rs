//! A publisher's simulcast layers as the node tracks them (`media::simulcast::VideoLayers`):
//! every packet's layer and SSRC, the picture size of any SPS it carries (`media::sps`, a bit
//! reader over whatever a browser sends), liveness over time, per-layer keyframe requests, and
//! the layer chosen for a tile of any height. Checked against its rules: a layer chosen is one
//! that arrived (or 0 when none did), a keyframe request names that layer's SSRC, and a size
//! read from an SPS is never zero.
//!
//! Input: records `op | len | body`; the op's low 2 bits pick: 0 a packet (`layer | ssrc u32 |
//! payload`, bit 2 of the op marks a keyframe start); 1 time passes (`u16` ms); 2 a choice for a
//! tile (`u32` height, none when the body is empty); 3 a keyframe request of a layer (`u8`),
//! then the due coalesced ones at the time given.
#![no_main]

use std::time::{Duration, Instant};

use kaskade_fuzz::ops::{Fields, Records};
use kaskade_sfu::media::simulcast::{MAX_LAYERS, VideoLayers};
use kaskade_sfu::media::sps::picture_size;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut layers = VideoLayers::default();
    let mut now = Instant::now();
    let mut seen = [None::<u32>; MAX_LAYERS];
    for (op, body) in Records::new(data) {
        let mut f = Fields::new(body);
        match op & 3 {
            0 => {
                let (layer, ssrc) = (f.u8() % 4, f.u32());
                let payload = f.rest();
                if let Some((width, height)) = picture_size(payload) {
                    assert!(width > 0 && height > 0, "{width}x{height}");
                }
                layers.on_packet(now, layer, ssrc, payload, op & 4 != 0);
                if let Some(slot) = seen.get_mut(usize::from(layer)) {
                    *slot = Some(ssrc);
                }
            }
            1 => now += Duration::from_millis(u64::from(f.u16())),
            2 => {
                let wanted = (!body.is_empty()).then(|| f.u32());
                let chosen = layers.choose(now, wanted);
                if seen.iter().all(Option::is_none) {
                    assert_eq!(chosen, 0);
                } else {
                    assert!(
                        seen[usize::from(chosen)].is_some(),
                        "layer {chosen} never arrived"
                    );
                }
            }
            _ => {
                let layer = f.u8() % 4;
                if let Some(ssrc) = layers.request_keyframe(now, layer) {
                    assert_eq!(Some(ssrc), seen.get(usize::from(layer)).copied().flatten());
                }
                for ssrc in layers.due_keyframe_requests(now) {
                    assert!(seen.contains(&Some(ssrc)));
                }
            }
        }
    }
});
