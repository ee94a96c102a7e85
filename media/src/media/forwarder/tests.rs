//! Unit tests of `forwarder`.

use super::*;

const A: u32 = 0xA;
const B: u32 = 0xB;

fn pkt(ssrc: u32, seq: u16, timestamp: u32, keyframe_start: bool) -> InboundPacket {
    InboundPacket {
        ssrc,
        seq,
        timestamp,
        keyframe_start,
    }
}

/// One step of a table: the packet, milliseconds since the start, and the expected outcome.
type Step = (InboundPacket, u64, Result<(u16, u32), DropReason>);

fn run(stream: &mut OutboundStream, start: Instant, steps: &[Step]) {
    for (i, (packet, at_ms, want)) in steps.iter().enumerate() {
        let got = stream
            .rewrite(packet, start + Duration::from_millis(*at_ms))
            .map(|r| (r.seq, r.timestamp));
        assert_eq!(got, *want, "step {i}: {packet:?}");
    }
}

#[test]
fn a_stream_knows_how_recently_it_began_at_a_keyframe() {
    let start = Instant::now();
    let window = Duration::from_millis(500);
    let mut s = OutboundStream::new(1, MediaKind::Video, 100, 1000, start);
    assert!(!s.began_within(start, window), "not begun");
    s.attach(A);
    let later = |ms| start + Duration::from_millis(ms);
    assert!(s.rewrite(&pkt(A, 7, 70, false), later(10)).is_err());
    assert!(
        !s.began_within(later(10), window),
        "still waiting for a keyframe"
    );
    s.rewrite(&pkt(A, 8, 80, true), later(20)).unwrap();
    assert!(s.began_within(later(519), window));
    assert!(!s.began_within(later(520), window));
    s.detach();
    assert!(!s.began_within(later(30), window), "detached");
}

#[test]
fn a_stream_tells_from_where_it_carries_its_current_source() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 100, 1000, start);
    assert_eq!(s.fresh_from(), None, "nothing sent");
    s.attach(A);
    for seq in 8..12 {
        s.rewrite(&pkt(A, seq, 80, seq == 8), start).unwrap();
    }
    assert_eq!(s.fresh_from(), Some((100, 103)));
    // a switch to B at its keyframe: B's packets are fresh, A's are not any more
    s.attach(B);
    s.rewrite(&pkt(A, 12, 90, false), start).unwrap();
    s.rewrite(&pkt(B, 50, 90, true), start).unwrap();
    assert_eq!(s.fresh_from(), Some((105, 105)));
    // detached (squeezed off its layer): nothing sent so far is fresh
    s.detach();
    assert_eq!(s.fresh_from(), Some((106, 105)));
}

#[test]
fn idle_stream_drops_everything() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Audio, 100, 1000, start);
    run(
        &mut s,
        start,
        &[(pkt(A, 5, 50, false), 0, Err(DropReason::NoSource))],
    );
}

#[test]
fn first_source_starts_at_the_initial_values_and_follows_the_source() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Audio, 100, 1000, start);
    s.attach(A);
    run(
        &mut s,
        start,
        &[
            (pkt(A, 5000, 777, false), 0, Ok((100, 1000))),
            (pkt(A, 5001, 1737, false), 20, Ok((101, 1960))),
            // reordered and late: same offsets, and the newest packet stays the reference
            (pkt(A, 5003, 3657, false), 60, Ok((103, 3880))),
            (pkt(A, 5002, 2697, false), 61, Ok((102, 2920))),
            (pkt(B, 9, 9, false), 62, Err(DropReason::OtherSource)),
        ],
    );
}

#[test]
fn video_waits_for_a_keyframe_then_switches_seamlessly() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 65534, 0, start);
    s.attach(A);
    run(
        &mut s,
        start,
        &[
            (
                pkt(A, 10, 900, false),
                0,
                Err(DropReason::WaitingForKeyframe),
            ),
            (pkt(A, 11, 900, true), 0, Ok((65534, 0))),
            (pkt(A, 12, 900, false), 1, Ok((65535, 0))),
            // sequence wraps on the way out
            (pkt(A, 13, 4500, false), 50, Ok((0, 3600))),
        ],
    );
    s.attach(B);
    assert!(s.awaits_keyframe());
    run(
        &mut s,
        start,
        &[
            // the old source goes on until the new one's keyframe: no gap in the picture
            (pkt(A, 14, 8100, false), 90, Ok((1, 7200))),
            (
                pkt(B, 40000, 123, false),
                90,
                Err(DropReason::WaitingForKeyframe),
            ),
            // 60 ms after the last packet sent (at 90 ms): 5400 ticks later, seq + 1
            (pkt(B, 40001, 123, true), 150, Ok((2, 7200 + 5400))),
            (pkt(A, 15, 9000, false), 151, Err(DropReason::OtherSource)),
            (pkt(B, 40002, 3123, false), 183, Ok((3, 7200 + 5400 + 3000))),
            // a retransmission from before the switch point of B is dropped
            (
                pkt(B, 40000, 123, false),
                184,
                Err(DropReason::BeforeSwitch),
            ),
        ],
    );
    assert!(s.maps(B) && !s.maps(A));
}

#[test]
fn a_switch_called_off_before_its_keyframe_leaves_the_stream_as_it_was() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 100, 0, start);
    s.attach(A);
    run(&mut s, start, &[(pkt(A, 1, 0, true), 0, Ok((100, 0)))]);
    s.attach(B);
    s.attach(A);
    assert!(!s.awaits_keyframe());
    run(
        &mut s,
        start,
        &[
            (pkt(B, 7, 50, true), 10, Err(DropReason::OtherSource)),
            (pkt(A, 2, 3000, false), 33, Ok((101, 3000))),
        ],
    );
}

#[test]
fn audio_switches_at_once() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Audio, 10, 0, start);
    s.attach(A);
    run(&mut s, start, &[(pkt(A, 1, 0, false), 0, Ok((10, 0)))]);
    s.attach(B);
    run(
        &mut s,
        start,
        &[
            (pkt(A, 2, 960, false), 20, Err(DropReason::OtherSource)),
            (pkt(B, 500, 7, false), 20, Ok((11, 960))),
        ],
    );
}

#[test]
fn source_sequence_wrap_keeps_the_mapping() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Audio, 7, 0, start);
    s.attach(A);
    run(
        &mut s,
        start,
        &[
            (pkt(A, 65535, u32::MAX - 959, false), 0, Ok((7, 0))),
            (pkt(A, 0, 0, false), 20, Ok((8, 960))),
            (pkt(A, 1, 960, false), 40, Ok((9, 1920))),
        ],
    );
}

#[test]
fn resume_after_mute_continues_without_a_sequence_gap() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Audio, 0, 0, start);
    s.attach(A);
    run(
        &mut s,
        start,
        &[(pkt(A, 100, 48_000, false), 0, Ok((0, 0)))],
    );
    s.detach();
    run(
        &mut s,
        start,
        &[(pkt(A, 101, 48_960, false), 20, Err(DropReason::NoSource))],
    );
    s.attach(A);
    // 500 packets were skipped while muted; the subscriber sees seq 1, ts + 1 s
    run(
        &mut s,
        start,
        &[(pkt(A, 601, 96_000, false), 1000, Ok((1, 48_000)))],
    );
}

#[test]
fn skipped_packets_leave_no_gap_even_when_others_arrive_out_of_order() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 500, 0, start);
    s.attach(A);
    run(&mut s, start, &[(pkt(A, 10, 0, true), 0, Ok((500, 0)))]);
    s.skip(&pkt(A, 11, 0, false)); // padding probe
    s.skip(&pkt(A, 12, 0, false));
    run(
        &mut s,
        start,
        &[
            (pkt(A, 14, 3000, false), 30, Ok((502, 3000))),
            // late, but after the skipped ones: still lands right before 14
            (pkt(A, 13, 3000, false), 31, Ok((501, 3000))),
            (pkt(A, 11, 0, false), 32, Err(DropReason::Skipped)),
            (pkt(A, 15, 6000, false), 60, Ok((503, 6000))),
        ],
    );
    s.skip(&pkt(A, 65000, 0, false)); // from before the mapping: ignored
    run(
        &mut s,
        start,
        &[(pkt(A, 16, 6000, false), 61, Ok((504, 6000)))],
    );
}

/// A browser probing for bandwidth sends long runs of padding on its media SSRC: however
/// many are skipped, the packets between them go out without a gap.
#[test]
fn endless_padding_never_opens_a_gap() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 100, 0, start);
    s.attach(A);
    run(&mut s, start, &[(pkt(A, 0, 0, true), 0, Ok((100, 0)))]);
    let mut seq = 1u16;
    for frame in 1..=100u16 {
        for _ in 0..5 {
            s.skip(&pkt(A, seq, 0, false));
            seq += 1;
        }
        let ts = u32::from(frame) * 3000;
        run(
            &mut s,
            start,
            &[(pkt(A, seq, ts, false), 0, Ok((100 + frame, ts)))],
        );
        seq += 1;
    }
    assert_eq!(
        s.rewrite(&pkt(A, 3, 3000, false), start),
        Err(DropReason::BeforeSwitch),
        "a packet older than the skipped ones remembered is dropped"
    );
    assert_eq!(
        s.fresh_from(),
        Some((100, 200)),
        "the source still began where it began: NACKs for its packets are answered"
    );
}

#[test]
fn padding_goes_after_the_newest_packet_and_late_ones_keep_their_numbers() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 100, 0, start);
    assert_eq!(s.pad(&pkt(A, 0, 0, false)), None, "nothing to pad after");
    s.attach(A);
    run(
        &mut s,
        start,
        &[
            (pkt(A, 1, 90, true), 0, Ok((100, 0))),
            (pkt(A, 2, 90, false), 0, Ok((101, 0))),
            (pkt(A, 4, 90, false), 0, Ok((103, 0))),
        ],
    );
    assert_eq!(s.pad(&pkt(A, 2, 90, false)), None, "only after the newest");
    let four = pkt(A, 4, 90, false);
    assert_eq!(
        s.pad(&four),
        Some(Rewritten {
            seq: 104,
            timestamp: 0
        })
    );
    assert_eq!(
        s.pad(&four),
        Some(Rewritten {
            seq: 105,
            timestamp: 0
        })
    );
    run(
        &mut s,
        start,
        &[
            // the late one takes the number left for it, before the padding
            (pkt(A, 3, 90, false), 0, Ok((102, 0))),
            (pkt(A, 5, 3090, false), 0, Ok((106, 3000))),
        ],
    );
    // padding and skipped packets together: still no gap, no number twice
    s.skip(&pkt(A, 6, 3090, false));
    let six = pkt(A, 6, 3090, false);
    assert_eq!(
        s.pad(&six),
        Some(Rewritten {
            seq: 107,
            timestamp: 3000
        })
    );
    run(
        &mut s,
        start,
        &[(pkt(A, 7, 6090, false), 0, Ok((108, 6000)))],
    );
    // endless padding folds into the offset without a gap
    let seven = pkt(A, 7, 6090, false);
    for i in 0..300u16 {
        assert_eq!(s.pad(&seven).map(|r| r.seq), Some(109 + i));
    }
    run(
        &mut s,
        start,
        &[(pkt(A, 8, 9090, false), 0, Ok((409, 9000)))],
    );
}

#[test]
fn attaching_the_current_source_again_changes_nothing() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 0, 0, start);
    s.attach(A);
    run(&mut s, start, &[(pkt(A, 1, 0, true), 0, Ok((0, 0)))]);
    s.attach(A);
    assert!(!s.awaits_keyframe());
    run(&mut s, start, &[(pkt(A, 2, 0, false), 1, Ok((1, 0)))]);
}

#[test]
fn every_packet_sent_of_the_current_source_maps_back_to_it() {
    let start = Instant::now();
    let mut s = OutboundStream::new(1, MediaKind::Video, 65_530, 1000, start);
    assert_eq!(s.source_of(65_530), None, "nothing sent");
    s.attach(A);
    let mut sent = Vec::new();
    for seq in 10..20u16 {
        let packet = pkt(A, seq, 90 * u32::from(seq), seq == 10);
        if seq == 13 {
            s.skip(&packet);
            continue;
        }
        let out = s.rewrite(&packet, start).unwrap();
        sent.push((out.seq, seq));
        if seq == 15 {
            let padding = s.pad(&packet).unwrap();
            assert_eq!(
                s.source_of(padding.seq),
                None,
                "padding is the stream's own"
            );
        }
    }
    let offset = 1000u32.wrapping_sub(900);
    for (out, seq) in &sent {
        assert_eq!(
            s.source_of(*out),
            Some(SentFrom {
                ssrc: A,
                seq: *seq,
                ts_offset: offset
            }),
            "{out} was {seq}"
        );
    }
    let next = sent.last().unwrap().0.wrapping_add(1);
    assert_eq!(s.source_of(next), None, "not sent yet");
    // packets up to 12 went out in a replay: not resent
    s.replayed_through(12);
    assert_eq!(s.source_of(sent[2].0), None);
    assert_eq!(s.source_of(sent[3].0).map(|f| f.seq), Some(14));
    // after a switch to B, A's packets are not B's to resend
    s.attach(B);
    s.rewrite(&pkt(B, 500, 0, true), start).unwrap();
    assert_eq!(s.source_of(sent[5].0), None);
    assert_eq!(s.source_of(next).map(|f| f.seq), Some(500));
}
