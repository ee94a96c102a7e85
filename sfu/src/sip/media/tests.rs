use super::*;
use crate::sip::sdp::{AudioLine, Flow, TelephoneEvent, VideoLine};

const BOTH_WAYS: Flow = Flow {
    send: true,
    receive: true,
};

fn agreement(codec: AudioCodec, audio_pt: u8, video_pt: u8) -> Agreement {
    Agreement {
        audio: Some(AudioLine {
            remote: "192.0.2.1:5000".parse().unwrap(),
            codec,
            send_payload_type: audio_pt,
            receive_payload_type: audio_pt,
            telephone_event: Some(TelephoneEvent {
                payload_type: 101,
                clock_rate: 8_000,
            }),
            flow: BOTH_WAYS,
            srtp: None,
        }),
        video: Some(VideoLine {
            remote: "192.0.2.1:5002".parse().unwrap(),
            send_payload_type: video_pt,
            receive_payload_type: video_pt,
            packetization_mode: 1,
            profile_level_id: "42e01f".into(),
            max_fs: None,
            max_mbps: None,
            flow: BOTH_WAYS,
            srtp: None,
        }),
    }
}

fn rtp(payload_type: u8, marker: bool, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker,
            payload_type,
            sequence_number: seq,
            timestamp,
            ssrc: 0xfeed,
            ..Default::default()
        },
        payload: payload.to_vec().into(),
    }
    .marshal()
    .unwrap()
    .to_vec()
}

fn parsed(packet: &BytesMut) -> rtc::rtp::Packet {
    rtc::rtp::Packet::unmarshal(&mut &packet[..]).unwrap()
}

#[test]
fn h264_and_opus_pass_through_with_only_the_payload_type_changed() {
    let mut into = IntoMeeting::new(&agreement(AudioCodec::Opus, 120, 109), 1, 1).unwrap();
    let mut out = Vec::new();
    into.video(&rtp(109, true, 7, 9000, &[0x65, 1, 2]), &mut out);
    into.audio(&rtp(120, false, 8, 960, &[0xfc, 3]), &mut out);
    let (video, audio) = (parsed(&out[0]), parsed(&out[1]));
    assert_eq!(video.header.payload_type, VIDEO_PAYLOAD_TYPE);
    assert!(video.header.marker, "the marker bit is kept");
    assert_eq!(
        (
            video.header.sequence_number,
            video.header.timestamp,
            video.header.ssrc
        ),
        (7, 9000, 0xfeed)
    );
    assert_eq!(&video.payload[..], &[0x65, 1, 2]);
    assert_eq!(audio.header.payload_type, transcode::PAYLOAD_TYPE);
    assert_eq!(&audio.payload[..], &[0xfc, 3]);
    assert_eq!(into.video_ssrc, Some(0xfeed));
}

#[test]
fn a_mode_0_keyframe_in_one_packet_reaches_the_meeting_in_fragments_numbered_on() {
    let mut into = IntoMeeting::new(&agreement(AudioCodec::Pcmu, 0, 97), 1, 1).unwrap();
    let mut out = Vec::new();
    let idr = vec![0x65; 5_000];
    into.video(&rtp(97, true, 300, 9_000, &idr), &mut out);
    into.video(&rtp(97, true, 301, 12_000, &[0x41, 1]), &mut out);
    // a loss: 302 never came
    into.video(&rtp(97, true, 303, 18_000, &[0x41, 2]), &mut out);
    let packets: Vec<_> = out.iter().map(parsed).collect();
    let fragments = &packets[..packets.len() - 2];
    assert_eq!(fragments.len(), 5, "5,000 bytes in 1,200-byte fragments");
    assert!(
        fragments
            .iter()
            .all(|p| p.payload[0] & 0x1f == 28 && p.payload.len() <= 1_200)
    );
    let markers: Vec<bool> = packets.iter().map(|p| p.header.marker).collect();
    assert_eq!(markers, [false, false, false, false, true, true, true]);
    let seqs: Vec<u16> = packets.iter().map(|p| p.header.sequence_number).collect();
    assert_eq!(
        seqs,
        [300, 301, 302, 303, 304, 305, 307],
        "numbered on, the loss a gap"
    );
    let mut whole = Vec::new();
    let mut depacketizer = crate::sip::h264::Depacketizer::default();
    for p in fragments {
        depacketizer.push(&p.payload, |unit| whole = unit.to_vec());
    }
    assert_eq!(
        whole, idr,
        "the fragments put back together are the keyframe"
    );
}

#[test]
fn a_new_agreement_numbers_the_transcoded_audio_on_from_where_the_last_stopped() {
    let pcmu = agreement(AudioCodec::Pcmu, 0, 96);
    let mut into = IntoMeeting::new(&pcmu, 0xabc, 65_530).unwrap();
    let mut out = Vec::new();
    for i in 0..10u32 {
        into.audio(&rtp(0, false, i as u16, i * 160, &[0x7f; 160]), &mut out);
    }
    let next = into.next_seq().expect("it transcodes");
    assert_eq!(next, 65_530u16.wrapping_add(out.len() as u16));
    // a re-INVITE agrees G.722 now: the stream goes on from `next`
    let mut into = IntoMeeting::new(&agreement(AudioCodec::G722, 9, 96), 0xabc, next).unwrap();
    let mut after = Vec::new();
    for i in 0..10u32 {
        into.audio(
            &rtp(9, false, 10 + i as u16, (10 + i) * 160, &[0x55; 160]),
            &mut after,
        );
    }
    assert!(!after.is_empty());
    assert_eq!(parsed(&after[0]).header.sequence_number, next);
    assert_eq!(
        IntoMeeting::new(&agreement(AudioCodec::Opus, 111, 96), 1, 0)
            .unwrap()
            .next_seq(),
        None
    );
}

#[test]
fn pcmu_becomes_20_ms_opus_packets_and_other_payload_types_are_dropped() {
    let mut into = IntoMeeting::new(&agreement(AudioCodec::Pcmu, 0, 96), 0xabc, 100).unwrap();
    let mut out = Vec::new();
    // 200 ms of µ-law in 20 ms packets, the timestamp wrapping midway
    let start = u32::MAX - 800;
    for i in 0..10u32 {
        into.audio(
            &rtp(
                0,
                false,
                i as u16,
                start.wrapping_add(i * 160),
                &[0x7f; 160],
            ),
            &mut out,
        );
    }
    into.audio(&rtp(101, false, 11, 0, &[1, 0, 0, 160]), &mut out);
    into.audio(&rtp(8, false, 12, 0, &[0xd5; 160]), &mut out);
    into.audio(&[0x80, 0], &mut out);
    assert!((9..=10).contains(&out.len()), "{} Opus packets", out.len());
    let packets: Vec<_> = out.iter().map(parsed).collect();
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.header.payload_type, transcode::PAYLOAD_TYPE);
        assert_eq!(p.header.ssrc, 0xabc);
        assert_eq!(p.header.sequence_number, 100 + i as u16);
    }
    for pair in packets.windows(2) {
        assert_eq!(
            pair[1]
                .header
                .timestamp
                .wrapping_sub(pair[0].header.timestamp),
            960,
            "continuous across the wrap"
        );
    }
}

#[test]
fn short_and_empty_datagrams_are_dropped_without_a_panic() {
    // found by the sip_sdp fuzz target: an empty datagram was indexed before its length was
    // checked
    let mut into = IntoMeeting::new(&agreement(AudioCodec::Pcmu, 0, 96), 1, 1).unwrap();
    let mut out = Vec::new();
    for datagram in [&[][..], &[0x80], &[0x80, 0, 0, 1], &[0x80; 11]] {
        into.audio(datagram, &mut out);
        into.video(datagram, &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(into.video_ssrc, None);
}

#[test]
fn a_line_kaskade_does_not_receive_passes_nothing() {
    let mut held = agreement(AudioCodec::Opus, 111, 96);
    held.video.as_mut().unwrap().flow.receive = false;
    held.audio = None;
    let mut into = IntoMeeting::new(&held, 1, 1).unwrap();
    let mut out = Vec::new();
    into.video(&rtp(96, false, 1, 1, &[0x65]), &mut out);
    into.audio(&rtp(111, false, 1, 1, &[0xfc]), &mut out);
    assert!(out.is_empty());
}

#[test]
fn the_latch_takes_the_first_source_only() {
    let mut latch = Latch::default();
    let far: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let stranger: SocketAddr = "192.0.2.66:5000".parse().unwrap();
    assert!(
        latch.allows(stranger) && latch.allows(far),
        "nothing taken yet"
    );
    latch.take(far);
    assert!(latch.allows(far));
    assert!(!latch.allows(stranger));
    latch.take(stranger);
    assert_eq!(latch.source(), Some(far), "the first source stays");
}

#[test]
fn the_keyframe_request_is_a_compound_of_report_pli_and_fir() {
    let bytes = keyframe_request(1, 0xfeed, 3);
    let packets = rtc::rtcp::packet::unmarshal(&mut &bytes[..]).unwrap();
    assert_eq!(packets.len(), 3);
    let pli = packets[1]
        .as_any()
        .downcast_ref::<rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication>()
        .unwrap();
    assert_eq!(pli.media_ssrc, 0xfeed);
    let fir = packets[2]
        .as_any()
        .downcast_ref::<rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest>()
        .unwrap();
    assert_eq!((fir.fir[0].ssrc, fir.fir[0].sequence_number), (0xfeed, 3));
}

#[tokio::test]
async fn rtp_ports_come_in_even_odd_pairs() {
    let pair = RtpPair::bind("127.0.0.1".parse().unwrap()).await.unwrap();
    let rtp = pair.rtp.local_addr().unwrap().port();
    assert_eq!(rtp % 2, 0);
    assert_eq!(pair.rtcp.local_addr().unwrap().port(), rtp + 1);
    assert_eq!(pair.port(), rtp);
}

/// The sequence numbers `Reorder` lets out for packets arriving in `order`.
fn reordered(order: &[u16]) -> Vec<u16> {
    let mut reorder = Reorder::default();
    let mut out = Vec::new();
    for &seq in order {
        let packet = rtc::rtp::Packet::unmarshal(&mut &rtp(0, false, seq, 0, &[0x7f])[..]).unwrap();
        reorder.push(packet, |p| out.push(p.header.sequence_number));
    }
    out
}

#[test]
fn the_far_ends_audio_is_put_back_in_order_before_transcoding() {
    // in order: at once
    assert_eq!(reordered(&[5, 6, 7]), [5, 6, 7]);
    // swapped: held for the one before, then both
    assert_eq!(reordered(&[5, 7, 6, 8]), [5, 6, 7, 8]);
    // across the wrap
    assert_eq!(reordered(&[65_534, 0, 65_535, 1]), [65_534, 65_535, 0, 1]);
    // late (already past) and duplicates: dropped
    assert_eq!(reordered(&[5, 6, 6, 4, 7]), [5, 6, 7]);
    // lost: given up once three wait behind it
    assert_eq!(reordered(&[5, 7, 8, 9]), [5], "still waiting for 6");
    assert_eq!(reordered(&[5, 7, 8, 9, 10]), [5, 7, 8, 9, 10]);
    // a late arrival of the given-up packet is dropped
    assert_eq!(reordered(&[5, 7, 8, 9, 10, 6, 11]), [5, 7, 8, 9, 10, 11]);
}

/// Found by fuzz/fuzz_targets/sip_sdp.rs after 40 minutes: loud G.711 frames on which
/// mousiki's Opus encoder asserts (its SILK pitch analysis divides by an energy that wrapped to
/// zero). The frame is dropped and the encoder made anew; the call's audio goes on. The input
/// is the fuzz target's: a mode byte, then records (op, length, body): the far end's answer,
/// then its datagrams (op bit 0 clear: audio).
#[test]
fn loud_g711_that_trips_the_opus_encoder_is_dropped_without_a_panic() {
    let input = include_bytes!("../testdata/g711-that-trips-the-opus-encoder.fuzz");
    let mut records = Vec::new();
    let mut rest = &input[1..];
    while let [op, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        records.push((*op, &tail[..len]));
        rest = &tail[len..];
    }
    let (_, answer) = records[0];
    let local = crate::sip::sdp::LocalMedia {
        address: "192.0.2.9".parse().unwrap(),
        audio_port: 40_000,
        video_port: Some(40_002),
        srtp: crate::sip::sdp::SrtpPolicy::Off,
        keys: crate::sip::sdp::LocalKeys::random(&mut rand::rng()),
    };
    let plain = crate::sip::sdp::OfferedProtection::Plain;
    let answer = String::from_utf8_lossy(answer);
    let agreement = crate::sip::sdp::read_answer(&answer, &local, plain).unwrap();
    assert_ne!(
        agreement.audio.as_ref().unwrap().codec,
        AudioCodec::Opus,
        "transcoded"
    );
    let mut into = IntoMeeting::new(&agreement, 7, 1).unwrap();
    let mut out = Vec::new();
    let audio: Vec<_> = records[1..].iter().filter(|(op, _)| op & 1 == 0).collect();
    assert!(audio.len() > 1, "{} audio datagrams", audio.len());
    for (_, datagram) in audio {
        into.audio(datagram, &mut out);
    }
}
