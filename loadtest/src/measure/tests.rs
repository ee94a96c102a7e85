//! Unit tests of the stream counters, with fixed numbers.

use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn percentiles_are_nearest_rank() {
    let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    assert_eq!(percentile(&values, 50.0), Some(50.0));
    assert_eq!(percentile(&values, 99.0), Some(99.0));
    assert_eq!(percentile(&values, 100.0), Some(100.0));
    assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), Some(2.0));
    assert_eq!(percentile(&[], 50.0), None);
    let s = Summary::of(&[10.0, 30.0, 20.0]);
    assert_eq!(
        (s.count, s.p50, s.p99, s.max),
        (3, Some(20.0), Some(30.0), Some(30.0))
    );
}

#[test]
fn loss_counts_gaps_across_wraparound_and_tolerates_reordering() {
    let mut c = SeqCounter::default();
    for seq in [65_533, 65_534, 65_535, 0, 2, 1, 5] {
        c.push(seq);
    }
    // 65533..=5 is 9 packets; 3 and 4 are missing
    assert_eq!((c.expected(), c.received(), c.lost()), (9, 7, 2));
    assert!((loss_percent(c.expected(), c.lost()) - 22.222).abs() < 0.01);
    let mut late = SeqCounter::default();
    for seq in [10, 9, 11] {
        late.push(seq);
    }
    // a packet older than the first does not extend the range
    assert_eq!((late.expected(), late.lost()), (2, 0));
    assert_eq!(SeqCounter::default().expected(), 0);
    assert_eq!(loss_percent(0, 0), 0.0);
}

#[test]
fn frames_count_only_when_every_packet_arrived() {
    let mut f = FrameCounter::default();
    // frame 1: 65534, 65535 (marker); frame 2: 0, 1 (marker); frame 3 loses 3
    for (seq, marker, at) in [
        (65_534, false, 1),
        (65_535, true, 2),
        (0, false, 3),
        (1, true, 4),
        (2, false, 5),
        (4, true, 6),
        (5, true, 7),
    ] {
        f.push(seq, marker, ms(at));
    }
    assert_eq!(f.frames(), 3);
    assert_eq!((f.first_at(), f.last_at()), (Some(ms(2)), Some(ms(7))));
    assert_eq!(FrameCounter::default().frames(), 0);
}

#[test]
fn exact_gaps_over_500_ms_are_freezes() {
    let mut t = FreezeTracker::default();
    t.observe(ms(100), 1, Some(ms(100)));
    t.observe(ms(200), 2, Some(ms(166)));
    // 600 ms without a frame, then exactly one: a freeze of 600 ms
    t.observe(ms(700), 2, Some(ms(166)));
    t.observe(ms(800), 3, Some(ms(766)));
    // exactly 500 ms is not over the limit
    t.observe(ms(1300), 4, Some(ms(1266)));
    t.finish(ms(1300), true);
    assert_eq!(t.freezes(), 1);
    assert_eq!(t.longest_gap(), ms(600));
}

#[test]
fn bursts_after_a_gap_use_the_lower_bound() {
    let mut t = FreezeTracker::default();
    t.observe(ms(0), 1, Some(ms(0)));
    t.observe(ms(450), 1, Some(ms(0)));
    // three frames by 550: the first came after 450, so the gap is at least 450: not
    // provably a freeze
    t.observe(ms(550), 4, Some(ms(540)));
    assert_eq!(t.freezes(), 0);
    t.observe(ms(1200), 4, Some(ms(540)));
    // two frames by 1300, the first after 1200: at least 660 ms
    t.observe(ms(1300), 6, Some(ms(1290)));
    assert_eq!(t.freezes(), 1);
    assert_eq!(t.longest_gap(), ms(660));
}

#[test]
fn trailing_gaps_count_only_while_the_remote_sends() {
    let mut t = FreezeTracker::default();
    t.observe(ms(0), 1, Some(ms(0)));
    t.finish(ms(2000), false);
    assert_eq!(t.freezes(), 0);
    t.finish(ms(2000), true);
    assert_eq!(t.freezes(), 1);
    // no frame at all: nothing to measure a gap from (reported as a missing first frame)
    let mut never = FreezeTracker::default();
    never.observe(ms(0), 0, None);
    never.finish(ms(5000), true);
    assert_eq!(never.freezes(), 0);
}
