use super::*;
use crate::sip::sdp::Flow;

fn line(mode: u8) -> VideoLine {
    VideoLine {
        remote: "192.0.2.1:5002".parse().unwrap(),
        send_payload_type: 109,
        receive_payload_type: 109,
        packetization_mode: mode,
        profile_level_id: "42e01f".into(),
        max_fs: None,
        max_mbps: None,
        flow: Flow {
            send: true,
            receive: true,
        },
    }
}

/// A delivered packet of stream `ssrc`: an IDR slice when `key`, else a P slice (or `nal`).
fn delivered(ssrc: u32, seq: u16, timestamp: u32, nal: u8) -> Vec<u8> {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: true,
            payload_type: DELIVERED_VIDEO,
            sequence_number: seq,
            timestamp,
            ssrc,
            ..Default::default()
        },
        payload: vec![nal, 0x88, 1, 2].into(),
    }
    .marshal()
    .unwrap()
    .to_vec()
}

const IDR: u8 = 0x65;
const P: u8 = 0x41;

fn header(packet: &[u8]) -> (u8, u16, u32, u32) {
    let p = rtc::rtp::Packet::unmarshal(&mut &packet[..]).unwrap();
    (
        p.header.payload_type,
        p.header.sequence_number,
        p.header.timestamp,
        p.header.ssrc,
    )
}

#[test]
fn the_first_stream_shows_from_its_keyframe_on_as_the_calls_own() {
    let mut view = SpeakerView::new(&line(1), 0xca11, 500, 90_000);
    assert!(view.show(0xa));
    assert!(!view.show(0xa), "already wanted");
    assert!(
        view.packet(&delivered(0xa, 7, 1_000, P)).is_none(),
        "waits for a keyframe"
    );
    let first = view.packet(&delivered(0xa, 8, 4_000, IDR)).unwrap();
    assert_eq!(header(&first), (109, 500, 90_000, 0xca11));
    let next = view.packet(&delivered(0xa, 9, 7_000, P)).unwrap();
    assert_eq!(header(&next), (109, 501, 93_000, 0xca11));
    assert_eq!(view.current(), Some(0xa));
    assert!(
        view.packet(&delivered(0xb, 1, 1, IDR)).is_none(),
        "another stream is not shown"
    );
}

#[test]
fn a_switch_waits_for_the_new_streams_keyframe_and_continues_the_stream() {
    let mut view = SpeakerView::new(&line(1), 1, 65_534, 0);
    view.show(0xa);
    view.packet(&delivered(0xa, 100, 10_000, IDR)).unwrap();
    assert!(view.show(0xb), "the speaker changed");
    assert!(view.packet(&delivered(0xb, 40, 777_000, P)).is_none());
    let still_a = view.packet(&delivered(0xa, 101, 13_000, P)).unwrap();
    assert_eq!(header(&still_a).1, 65_535, "the old one goes on until then");
    let switched = view.packet(&delivered(0xb, 41, 780_000, IDR)).unwrap();
    assert_eq!(
        header(&switched).1,
        0,
        "one sequence across the switch (and the wrap)"
    );
    assert_eq!(
        header(&switched).2,
        6_000,
        "a frame after the last timestamp sent"
    );
    assert!(
        view.packet(&delivered(0xa, 102, 16_000, P)).is_none(),
        "the old one is off"
    );
    assert_eq!(view.wanted(), None);
    assert!(!view.show(0xb), "already shown");
}

#[test]
fn a_mode_0_far_end_gets_single_nal_units_only() {
    let mut view = SpeakerView::new(&line(0), 1, 0, 0);
    view.show(0xa);
    assert!(view.packet(&delivered(0xa, 1, 1, IDR)).is_some());
    assert!(view.packet(&delivered(0xa, 2, 1, 0x7c)).is_none(), "FU-A");
    assert!(view.packet(&delivered(0xa, 3, 1, 0x78)).is_none(), "STAP-A");
    assert!(view.packet(&delivered(0xa, 4, 2, P)).is_some());
    assert_eq!(view.left_out, 2);
}

#[test]
fn other_payload_types_and_garbage_show_nothing() {
    let mut view = SpeakerView::new(&line(1), 1, 0, 0);
    view.show(0xa);
    let mut audio = delivered(0xa, 1, 1, IDR);
    audio[1] = 111;
    assert!(view.packet(&audio).is_none());
    assert!(view.packet(&[0x80, 96, 0]).is_none());
    assert!(view.packet(&[]).is_none());
}
