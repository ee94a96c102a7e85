//! The encoder works on the caller's thread only: openh264's own worker threads raced its
//! teardown when slices are cut to a size (a heap use-after-free the `sip_grid` fuzz target
//! found when a grid ended). The only test of its binary, so no other test's threads come
//! and go while it counts the process's threads.

use kaskade_picture::Picture;
use kaskade_picture::encode::{EncoderSettings, H264Encoder};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("the process's threads")
        .count()
}

#[test]
fn the_encoder_starts_no_threads_of_its_own() {
    let before = threads();
    let mut encoder = H264Encoder::new(EncoderSettings {
        fps: 15,
        bitrate: 1_000_000,
        keyframe_interval: 30,
        max_nal_size: Some(1_200),
    })
    .unwrap();
    let mut picture = Picture::filled(1280, 720, (0, 128, 128));
    for frame in 0..3u8 {
        for (n, pixel) in picture.y.iter_mut().enumerate() {
            *pixel = (n as u8)
                .wrapping_mul(31)
                .wrapping_add(frame.wrapping_mul(7));
        }
        encoder.encode(&picture, |_| {}).unwrap();
        assert_eq!(threads(), before, "picture {frame}");
    }
    drop(encoder);
    assert_eq!(threads(), before);
}
