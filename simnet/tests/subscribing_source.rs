//! A source that takes the meeting's media (a SIP call, as the node's SIP gateway joins it):
//! it gets consumers like any subscriber, and what the core forwards to them leaves the node as
//! plain RTP to the shell's address, one SSRC per slot, audio with payload type 111 and video
//! with 96, never the source's own media.

use kaskade_media::media::ingest::{DELIVERED_AUDIO, DELIVERED_VIDEO, Delivery};
use kaskade_protocol::signaling::MediaKind;
use kaskade_simnet::Sim;
use rtc::shared::marshal::Unmarshal;
use std::collections::BTreeSet;
use std::time::Duration;

const SHELL: &str = "10.9.9.9:4000";

fn packet(payload_type: u8, seq: u16, ssrc: u32, tag: u8) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: true,
            payload_type,
            sequence_number: seq,
            timestamp: u32::from(seq) * 960,
            ssrc,
            ..Default::default()
        },
        payload: vec![if payload_type == 111 { 0xfc } else { 0x65 }, tag, 1, 2, 3].into(),
    }
}

#[test]
fn a_subscribing_source_gets_the_meetings_media_at_its_address_and_never_its_own() {
    let mut sim = Sim::new(11, 1);
    let chair = sim.join(0, "m", "chair", Some((0xa0d1, 0x71de))).unwrap();
    let delivery = Delivery {
        to: SHELL.parse().unwrap(),
        audio_slots: 2,
        video_slots: 1,
        ssrc_base: 0x5000,
    };
    let call = sim
        .join_subscribing_source(0, "m", "room system", delivery)
        .unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();

    let audio_pt = sim.clients[chair]
        .publish_payload_type(MediaKind::Audio)
        .unwrap();
    let video_pt = sim.clients[chair]
        .publish_payload_type(MediaKind::Video)
        .unwrap();
    for seq in 0..50u16 {
        sim.send_rtp(chair, &packet(audio_pt, seq, 0xa0d1, b'C'))
            .unwrap();
        sim.send_rtp(chair, &packet(video_pt, seq, 0x71de, b'C'))
            .unwrap();
        // the call's own media goes into the meeting, and must not come back to it
        sim.ingest(call, &packet(111, seq, 0x5199, b'S')).unwrap();
        sim.run_for(Duration::from_millis(20));
    }

    let packets: Vec<rtc::rtp::Packet> = sim
        .delivered
        .iter()
        .filter(|(to, _)| *to == delivery.to)
        .map(|(_, bytes)| rtc::rtp::Packet::unmarshal(&mut &bytes[..]).unwrap())
        .collect();
    let audio: Vec<_> = packets
        .iter()
        .filter(|p| p.header.payload_type == DELIVERED_AUDIO)
        .collect();
    let video: Vec<_> = packets
        .iter()
        .filter(|p| p.header.payload_type == DELIVERED_VIDEO)
        .collect();
    assert!(audio.len() >= 45, "the chair's audio: {}", audio.len());
    assert!(!video.is_empty(), "the chair's video once a keyframe came");
    assert!(
        packets.iter().all(|p| p.payload[1] == b'C'),
        "only the chair's media, never the call's own"
    );
    let audio_ssrcs: BTreeSet<u32> = audio.iter().map(|p| p.header.ssrc).collect();
    assert_eq!(
        audio_ssrcs.len(),
        1,
        "one consumer SSRC for the chair's audio"
    );
    assert!(
        !audio_ssrcs.contains(&0xa0d1),
        "rewritten to the consumer's SSRC"
    );
    assert!(
        audio
            .windows(2)
            .all(|w| w[1].header.sequence_number == w[0].header.sequence_number.wrapping_add(1)),
        "continuous sequence numbers"
    );

    // once the call leaves, nothing more is delivered
    sim.leave_source(call);
    let before = sim.delivered.len();
    for seq in 50..60u16 {
        sim.send_rtp(chair, &packet(audio_pt, seq, 0xa0d1, b'C'))
            .unwrap();
        sim.run_for(Duration::from_millis(20));
    }
    assert_eq!(sim.delivered.len(), before);
}
