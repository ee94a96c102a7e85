//! Unit tests of `simulcast`.

use super::*;

/// SPS of 320x240 (x264 baseline): a keyframe's first packet on the middle layer.
pub(crate) const SPS_240: [u8; 24] = [
    0x67, 0x42, 0xc0, 0x0b, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
    0x00, 0x03, 0x00, 0x20, 0xf1, 0x42, 0xa4, 0x80,
];
/// SPS of 160x120.
pub(crate) const SPS_120: [u8; 24] = [
    0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x02, 0x84, 0x7e, 0x5c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
    0x00, 0x00, 0x03, 0x00, 0x83, 0xc4, 0x89, 0x92,
];
/// SPS of 1920x1080.
pub(crate) const SPS_1080: [u8; 26] = [
    0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00,
    0x04, 0x00, 0x00, 0x03, 0x00, 0x08, 0x3c, 0x60, 0xc9, 0x20,
];

/// Layers offered top first (`f`, `h`, `q`): ranked by their SPS, not by their order.
fn three_layers(now: Instant) -> VideoLayers {
    let mut v = VideoLayers::default();
    v.on_packet(now, 0, 0xF, &SPS_1080, true);
    v.on_packet(now, 1, 0xB, &SPS_240, true);
    v.on_packet(now, 2, 0x1, &SPS_120, true);
    v
}

#[test]
fn chooses_the_smallest_live_layer_that_fills_the_tile() {
    let t0 = Instant::now();
    let v = three_layers(t0);
    let cases = [
        (None, 0),
        (Some(0), 2),
        (Some(100), 2),
        (Some(120), 2),
        (Some(121), 1),
        (Some(240), 1),
        (Some(700), 0),
        (Some(4000), 0),
    ];
    for (wanted, layer) in cases {
        assert_eq!(v.choose(t0, wanted), layer, "tile {wanted:?}");
    }
    assert!(v.is_simulcast());
    assert_eq!(v.layer_of(0xB), Some(1));
    assert_eq!(v.ssrc(2), Some(0x1));
}

#[test]
fn a_layer_not_measured_yet_is_taken_to_cost_what_its_size_does() {
    let t0 = Instant::now();
    let ladder = three_layers(t0).ladder(t0);
    let rates: Vec<(u8, u32)> = ladder
        .rungs()
        .iter()
        .map(|r| (r.layer, r.bitrate))
        .collect();
    assert_eq!(rates, [(2, 100_000), (1, 200_000), (0, 1_500_000)]);
}

#[test]
fn a_paused_layer_is_passed_over_until_it_comes_back() {
    let t0 = Instant::now();
    let mut v = three_layers(t0);
    let later = t0 + LAYER_TIMEOUT + Duration::from_millis(1);
    // the top layer stops (the browser's encoder dropped it); the others go on
    v.on_packet(later, 1, 0xB, &[0x41], false);
    v.on_packet(later, 2, 0x1, &[0x41], false);
    assert_eq!(v.choose(later, None), 1);
    assert_eq!(v.choose(later, Some(700)), 1);
    assert_eq!(v.choose(later, Some(100)), 2);
    v.on_packet(later, 0, 0xF, &[0x41], false);
    assert_eq!(v.choose(later, Some(700)), 0);
    // nothing live at all: the best that ever came
    let silent = later + LAYER_TIMEOUT * 2;
    assert_eq!(v.choose(silent, Some(100)), 2);
    assert_eq!(v.choose(silent, None), 0);
}

#[test]
fn held_layers_follow_a_new_picture_size_of_the_live_one() {
    let t0 = Instant::now();
    let mut v = VideoLayers::default();
    v.on_packet(t0, 0, 0xF, &SPS_240, true);
    v.on_packet(t0, 1, 0xB, &SPS_120, true);
    // only the top layer is received: the small one is paused
    assert_eq!(v.hold(t0, [true, false, false]), Some(vec![true, false]));
    // the camera goes from 320x240 to 1920x1080; the paused layer sends nothing to say so
    v.on_packet(t0, 0, 0xF, &SPS_1080, true);
    let heights: Vec<_> = v.ladder(t0).rungs().iter().map(|r| r.height).collect();
    assert_eq!(heights, [Some(540), Some(1080)]);
    // a tile 294 px tall now takes the paused layer (its old 120 px would not fill it)
    assert_eq!(v.choose(t0, Some(294)), 1);
    // once it sends again, its own keyframe tells its size
    v.on_packet(t0, 1, 0xB, &SPS_240, true);
    assert_eq!(v.ladder(t0).rungs()[0].height, Some(240));
}

#[test]
fn a_layer_that_falls_behind_the_others_is_paused() {
    let t0 = Instant::now();
    let mut v = three_layers(t0);
    let at = |ms| t0 + Duration::from_millis(ms);
    // the top layer skips a few frames (its encoder dropped them): still live
    v.on_packet(at(300), 1, 0xB, &[0x41], false);
    assert_eq!(v.choose(at(300), None), 0);
    // half a second behind the others: paused, long before LAYER_TIMEOUT
    v.on_packet(at(500), 1, 0xB, &[0x41], false);
    assert_eq!(v.choose(at(500), None), 1);
    // every layer silent alike (the video is muted): nothing is passed over
    assert_eq!(v.choose(at(5_000), None), 0);
}

#[test]
fn layers_nobody_receives_are_held_and_still_chosen_when_they_fit() {
    let t0 = Instant::now();
    let mut v = three_layers(t0);
    // only the 1080 layer (0) is received: the others are paused
    assert_eq!(
        v.hold(t0, [true, false, false]),
        Some(vec![true, false, false])
    );
    assert_eq!(v.hold(t0, [true, false, false]), None, "told once");
    // the paused layers fall silent, but a small tile still gets the small layer, which
    // asks the publisher for it again
    let later = t0 + LAYER_TIMEOUT;
    v.on_packet(later, 0, 0xF, &[0x41], false);
    assert_eq!(v.choose(later, Some(100)), 2);
    assert_eq!(
        v.hold(later, [true, false, true]),
        Some(vec![true, false, true])
    );
    // nobody receives anything: nothing is held
    assert_eq!(v.hold(later, [false; 3]), Some(vec![true; 3]));
    // a layer its publisher paused itself is left to it (it takes it up again when it
    // can), and passed over while silent
    let paused = later + PAUSE_GAP;
    v.on_packet(paused, 0, 0xF, &[0x41], false);
    v.on_packet(paused, 1, 0xB, &[0x41], false);
    assert_eq!(
        v.hold(paused, [true, true, false]),
        None,
        "all still wanted or paused by it"
    );
    assert_eq!(
        v.choose(paused, Some(100)),
        1,
        "the silent small layer is passed over"
    );
    // a layer whose size no keyframe has told yet is not held: it cannot be ranked
    let mut unknown_size = VideoLayers::default();
    unknown_size.on_packet(t0, 0, 0xF, &[0x41], false);
    unknown_size.on_packet(t0, 1, 0xB, &SPS_240, true);
    assert_eq!(unknown_size.hold(t0, [false, true, false]), None);
    unknown_size.on_packet(t0, 0, 0xF, &SPS_1080, true);
    assert_eq!(
        unknown_size.hold(t0, [false, true, false]),
        Some(vec![false, true])
    );
    // a publisher without simulcast is never told
    let mut one = VideoLayers::default();
    one.on_packet(t0, 0, 0x5, &[0x65], true);
    assert_eq!(one.hold(t0, [false; 3]), None);
}

#[test]
fn a_relayed_video_nobody_here_receives_is_asked_for_not_at_all() {
    let t0 = Instant::now();
    let mut v = three_layers(t0);
    assert_eq!(v.requested(), LayerSet::ALL, "asked for whole until told");
    // every consumer here is paused for want of bandwidth: nothing is asked of the peer
    assert!(v.watch(false));
    v.hold(t0, [false; 3]);
    assert_eq!(v.requested(), LayerSet::NONE);
    assert!(!v.watch(false), "no change");
    // a consumer is given the small layer again: it is asked for, the others held
    assert!(v.watch(true));
    v.hold(t0, [false, false, true]);
    assert_eq!(v.requested(), LayerSet::NONE.with(2));
}

#[test]
fn a_link_carries_what_its_peer_asks_and_a_stand_in_for_a_paused_layer() {
    let t0 = Instant::now();
    let mut v = three_layers(t0);
    let (top, middle, small) = (LayerSet::NONE.with(0), 1, 2);
    assert_eq!(v.carried(t0, top), top, "all live: just what was asked");
    assert_eq!(v.requested(), LayerSet::ALL, "nothing held yet");
    // the 1080 layer pauses (its encoder is short of bandwidth): the 240 one stands in
    let paused = t0 + PAUSE_GAP;
    v.on_packet(paused, 1, 0xB, &[0x41], false);
    v.on_packet(paused, 2, 0x1, &[0x41], false);
    assert_eq!(v.carried(paused, top), top.with(middle));
    // the small layer, asked for alone and paused, has nothing below it: the lowest
    // live one stands in
    let later = paused + PAUSE_GAP;
    v.on_packet(later, 0, 0xF, &[0x41], false);
    v.on_packet(later, 1, 0xB, &[0x41], false);
    let small_only = LayerSet::NONE.with(small);
    assert_eq!(v.carried(later, small_only), small_only.with(middle));
    // held layers (nobody here receives them) are not asked of a peer
    v.hold(later, [true, false, false]);
    assert_eq!(v.requested(), LayerSet::NONE.with(0).with(small));
    assert_eq!(
        LayerSet::ALL.without(v.requested()).collect::<Vec<_>>(),
        [middle]
    );
}

#[test]
fn one_stream_is_layer_zero_whatever_is_asked() {
    let t0 = Instant::now();
    let mut v = VideoLayers::default();
    assert_eq!(v.choose(t0, Some(240)), 0);
    v.on_packet(t0, 0, 0x5, &[0x65], true);
    assert!(!v.is_simulcast());
    for wanted in [None, Some(1), Some(5000)] {
        assert_eq!(v.choose(t0, wanted), 0);
    }
    v.on_packet(t0, 7, 0x6, &[0x65], true);
    assert_eq!(v.layer_of(0x6), None, "out-of-range layers are ignored");
}

#[test]
fn keyframe_requests_are_throttled_per_layer() {
    let t0 = Instant::now();
    let mut v = three_layers(t0);
    assert_eq!(v.request_keyframe(t0, 1), Some(0xB));
    assert_eq!(
        v.request_keyframe(t0, 2),
        Some(0x1),
        "another layer is asked at once"
    );
    assert_eq!(v.request_keyframe(t0, 1), None, "folded into a later one");
    let due = v.poll_timeout().expect("a coalesced request");
    assert_eq!(v.due_keyframe_requests(due).collect::<Vec<_>>(), [0xB]);
    assert_eq!(v.poll_timeout(), None);
    assert_eq!(VideoLayers::default().request_keyframe(t0, 0), None);
}
