use super::*;

const OPUS: u8 = 111;
const RED: u8 = RED_PAYLOAD_TYPE;
const SSRC: u32 = 4_242;
/// 20 ms of Opus at 48 kHz.
const FRAME: u32 = 960;

fn opus(seq: u16) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: OPUS,
            sequence_number: seq,
            timestamp: 1_000 + u32::from(seq) * FRAME,
            ssrc: SSRC,
            ..Default::default()
        },
        payload: Bytes::from(format!("frame {seq}").into_bytes()),
    }
}

fn unwrapped(unwrap: &mut RedUnwrap, packet: rtp::Packet) -> Vec<rtp::Packet> {
    let mut out = Vec::new();
    unwrap.unwrap(packet, |p| out.push(p)).expect("readable");
    out
}

#[test]
fn block_headers_are_read_or_refused_with_a_reason() {
    // one redundant block: 3 bytes 1,000 ticks back (15 << 6 | 40), then the primary of 2
    let one = [0x80 | OPUS, 15, 40 << 2, 3, OPUS, 1, 2, 3, 4, 5];
    let blocks = parse(&one).unwrap();
    assert_eq!(
        blocks.redundant(),
        [Block {
            payload_type: OPUS,
            timestamp_offset: 1_000,
            data: 5..8,
        }]
    );
    assert_eq!(blocks.primary.data, 8..10);
    assert_eq!(blocks.primary.payload_type, OPUS);

    let primary_only = parse(&[OPUS, 9, 9]).unwrap();
    assert!(primary_only.redundant().is_empty());
    assert_eq!(primary_only.primary.data, 1..3);

    let nine_blocks: Vec<u8> = std::iter::repeat_n([0x80 | OPUS, 0, 4, 0], 9)
        .flatten()
        .chain([OPUS])
        .collect();
    let cases: [(&[u8], RedError); 5] = [
        (&[], RedError::Truncated),
        (&[0x80 | OPUS, 0, 4], RedError::Truncated),
        (&[0x80 | OPUS, 0, 4, 0], RedError::Truncated),
        (&nine_blocks, RedError::TooManyBlocks),
        (
            &[0x80 | OPUS, 0, 4, 9, OPUS, 1, 2],
            RedError::LengthBeyondPayload,
        ),
    ];
    for (payload, error) in cases {
        assert_eq!(parse(payload), Err(error), "{payload:?}");
    }
}

#[test]
fn a_clean_path_gets_plain_opus_and_a_lossy_one_red_until_the_hold_runs_out() {
    let start = Instant::now();
    let mut encoder = RedEncoder::new(RED);
    let mut packet = opus(1);
    assert!(!encoder.encode(start, &mut packet));
    assert_eq!(packet.header.payload_type, OPUS);

    encoder.observe_loss(start, 0.01);
    assert_eq!(encoder.repeating(start), 1);
    let mut packet = opus(2);
    assert!(encoder.encode(start, &mut packet));
    assert_eq!(packet.header.payload_type, RED);
    let blocks = parse(&packet.payload).unwrap();
    assert_eq!(blocks.redundant().len(), 1);
    assert_eq!(
        &packet.payload[blocks.redundant()[0].data.clone()],
        b"frame 1"
    );
    assert_eq!(&packet.payload[blocks.primary.data.clone()], b"frame 2");

    encoder.observe_loss(start, 0.12);
    assert_eq!(encoder.repeating(start), 2, "heavy loss: two repeated");
    encoder.observe_loss(start + Duration::from_secs(1), 0.01);
    assert_eq!(
        encoder.repeating(start + Duration::from_secs(1)),
        2,
        "held at two while losses go on"
    );
    encoder.stand_down();
    assert_eq!(encoder.repeating(start), 0, "a congested path gets none");
    encoder.observe_loss(start, 0.01);
    encoder.observe_loss(start, 0.0);
    assert_eq!(encoder.repeating(start), 1, "no loss is no news");
    let later = start + HOLD;
    assert_eq!(encoder.repeating(later), 0, "the hold ran out");
    let mut packet = opus(3);
    assert!(!encoder.encode(later, &mut packet));
    assert_eq!(packet.payload, Bytes::from_static(b"frame 3"));
}

#[test]
fn only_the_packets_right_before_are_repeated() {
    let now = Instant::now();
    let mut encoder = RedEncoder::new(RED);
    encoder.observe_loss(now, 0.2);
    for seq in [1, 2] {
        encoder.encode(now, &mut opus(seq));
    }
    // the slot's source switched: its next packet follows on, but its timestamp jumped back
    let mut switched = opus(3);
    switched.header.timestamp = 10;
    assert!(!encoder.encode(now, &mut switched), "no offset fits");
    // a gap: 5 is not right after 3, so nothing is repeated with it
    assert!(!encoder.encode(now, &mut opus(5)));
    let mut next = opus(6);
    assert!(encoder.encode(now, &mut next));
    assert_eq!(parse(&next.payload).unwrap().redundant().len(), 1, "5 only");
}

#[test]
fn what_a_lossy_path_drops_is_made_good_by_the_next_packets() {
    let now = Instant::now();
    let mut encoder = RedEncoder::new(RED);
    encoder.observe_loss(now, 0.1);
    let mut unwrap = RedUnwrap::new(RED, OPUS);
    let mut delivered = Vec::new();
    let mut recovered = 0;
    for seq in 1..=30u16 {
        let mut packet = opus(seq);
        encoder.encode(now, &mut packet);
        // two of every five lost, both in a row
        if seq % 5 == 2 || seq % 5 == 3 {
            continue;
        }
        let mut out = Vec::new();
        recovered += unwrap
            .unwrap(packet, |p| out.push(p))
            .expect("readable")
            .recovered;
        delivered.extend(out);
    }
    let seqs: Vec<u16> = delivered.iter().map(|p| p.header.sequence_number).collect();
    let every: Vec<u16> = (1..=30).collect();
    assert_eq!(seqs, every, "each packet once, in order");
    assert_eq!(recovered, 12);
    for packet in &delivered {
        let original = opus(packet.header.sequence_number);
        assert_eq!(packet.payload, original.payload);
        assert_eq!(packet.header.timestamp, original.header.timestamp);
        assert_eq!(packet.header.payload_type, OPUS);
        assert_eq!(packet.header.ssrc, SSRC);
    }
}

#[test]
fn what_arrived_already_is_not_handed_on_twice() {
    let now = Instant::now();
    let mut encoder = RedEncoder::new(RED);
    encoder.observe_loss(now, 0.1);
    let mut unwrap = RedUnwrap::new(RED, OPUS);
    // a plain Opus packet first (a browser switches between Opus and RED freely)
    let mut first = opus(7);
    encoder.encode(now, &mut first);
    let mut second = opus(8);
    encoder.encode(now, &mut second);
    let mut third = opus(9);
    encoder.encode(now, &mut third);
    assert_eq!(unwrapped(&mut unwrap, opus(7)).len(), 1);
    let out = unwrapped(&mut unwrap, third.clone());
    let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
    assert_eq!(seqs, [8, 9], "7 arrived, 8 recovered");
    assert!(
        unwrapped(&mut unwrap, third).is_empty(),
        "a duplicate gives nothing"
    );
    // a packet of another stream passes untouched
    let mut video = opus(8);
    video.header.ssrc = 1;
    video.header.payload_type = 102;
    assert_eq!(unwrapped(&mut unwrap, video.clone()), [video]);
    assert_eq!(
        unwrap.unwrap(
            rtp::Packet {
                payload: Bytes::from_static(&[0x80 | OPUS, 0]),
                ..third_header()
            },
            |_| panic!("nothing goes on")
        ),
        Err(RedError::Truncated)
    );
}

fn third_header() -> rtp::Packet {
    let mut packet = opus(10);
    packet.header.payload_type = RED;
    packet
}

#[test]
fn wrapped_payloads_are_cut_from_one_allocation_and_keep_their_bytes() {
    let now = Instant::now();
    let mut encoder = RedEncoder::new(RED);
    encoder.observe_loss(now, 0.2);
    let wrapped: Vec<rtp::Packet> = (1..=40)
        .map(|seq| {
            let mut packet = opus(seq);
            encoder.encode(now, &mut packet);
            packet
        })
        .collect();
    for pair in wrapped[1..].windows(2) {
        let end_of_first = pair[0].payload.as_ptr_range().end;
        assert_eq!(
            end_of_first,
            pair[1].payload.as_ptr(),
            "each payload follows the one before in the same buffer"
        );
    }
    for (packet, seq) in wrapped.iter().zip(1u16..).skip(2) {
        let red = parse(&packet.payload).expect("RED");
        let data = |block: &Block| &packet.payload[block.data.clone()];
        let blocks: Vec<&[u8]> = red
            .redundant()
            .iter()
            .chain([&red.primary])
            .map(data)
            .collect();
        let sent = [seq - 2, seq - 1, seq].map(|s| opus(s).payload);
        assert_eq!(blocks, sent.iter().map(|p| &p[..]).collect::<Vec<_>>());
    }
}
