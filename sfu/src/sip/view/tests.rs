use super::*;
use crate::sip::h264::{rtp_header, rtp_parts};
use rtc::shared::marshal::{Marshal, Unmarshal};

fn line(mode: u8) -> VideoLine {
    VideoLine {
        send_payload_type: 109,
        receive_payload_type: 109,
        packetization_mode: mode,
        ..VideoLine::example("42e01f")
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

/// The one packet (or none) the view makes of `datagram`.
fn one(view: &mut SpeakerView, datagram: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    view.packet(datagram, &mut out);
    assert!(out.len() <= 1, "{} packets", out.len());
    out.pop()
}

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
        one(&mut view, &delivered(0xa, 7, 1_000, P)).is_none(),
        "waits for a keyframe"
    );
    let first = one(&mut view, &delivered(0xa, 8, 4_000, IDR)).unwrap();
    assert_eq!(header(&first), (109, 500, 90_000, 0xca11));
    let next = one(&mut view, &delivered(0xa, 9, 7_000, P)).unwrap();
    assert_eq!(header(&next), (109, 501, 93_000, 0xca11));
    assert_eq!(view.current(), Some(0xa));
    assert!(
        one(&mut view, &delivered(0xb, 1, 1, IDR)).is_none(),
        "another stream is not shown"
    );
}

#[test]
fn a_switch_waits_for_the_new_streams_keyframe_and_continues_the_stream() {
    let mut view = SpeakerView::new(&line(1), 1, 65_534, 0);
    view.show(0xa);
    one(&mut view, &delivered(0xa, 100, 10_000, IDR)).unwrap();
    assert!(view.show(0xb), "the speaker changed");
    assert!(one(&mut view, &delivered(0xb, 40, 777_000, P)).is_none());
    let still_a = one(&mut view, &delivered(0xa, 101, 13_000, P)).unwrap();
    assert_eq!(header(&still_a).1, 65_535, "the old one goes on until then");
    let switched = one(&mut view, &delivered(0xb, 41, 780_000, IDR)).unwrap();
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
        one(&mut view, &delivered(0xa, 102, 16_000, P)).is_none(),
        "the old one is off"
    );
    assert_eq!(view.wanted(), None);
    assert!(!view.show(0xb), "already shown");
}

#[test]
fn a_mode_0_far_end_gets_whole_nal_units_one_per_packet() {
    let mut view = SpeakerView::new(&line(0), 0xca11, 100, 0);
    view.show(0xa);
    let (sps, pps, idr) = (vec![0x67, 1, 2], vec![0x68, 3], vec![0x65; 3_000]);
    let mut stap = vec![0x78];
    for unit in [&sps, &pps] {
        stap.extend_from_slice(&(unit.len() as u16).to_be_bytes());
        stap.extend_from_slice(unit);
    }
    let mut payloads = vec![(stap, false)];
    crate::sip::h264::fragments(&idr, 1_200, &mut Vec::new(), |p, last| {
        payloads.push((p.to_vec(), last))
    });
    let mut out = Vec::new();
    for (n, (payload, last)) in payloads.iter().enumerate() {
        let mut packet = rtp_header((*last, DELIVERED_VIDEO), 40 + n as u16, 9_000, 0xa).to_vec();
        packet.extend_from_slice(payload);
        view.packet(&packet, &mut out);
    }
    let sent: Vec<_> = out.iter().map(|p| rtp_parts(p).unwrap()).collect();
    let units: Vec<&[u8]> = sent.iter().map(|p| p.payload).collect();
    assert_eq!(
        units,
        vec![&sps[..], &pps[..], &idr[..]],
        "SPS, PPS, the IDR whole"
    );
    let seqs: Vec<u16> = sent.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![100, 101, 102]);
    let markers: Vec<bool> = sent.iter().map(|p| p.marker).collect();
    assert_eq!(markers, vec![false, false, true]);
    assert!(
        sent.iter()
            .all(|p| p.ssrc == 0xca11 && p.payload_type == 109)
    );
}

#[test]
fn a_loss_in_the_shown_stream_stays_a_gap() {
    let mut view = SpeakerView::new(&line(1), 1, 10, 0);
    view.show(0xa);
    let first = one(&mut view, &delivered(0xa, 7, 1, IDR)).unwrap();
    let after_loss = one(&mut view, &delivered(0xa, 10, 2, P)).unwrap();
    assert_eq!(header(&after_loss).1, header(&first).1 + 3);
}

#[test]
fn other_payload_types_and_garbage_show_nothing() {
    let mut view = SpeakerView::new(&line(1), 1, 0, 0);
    view.show(0xa);
    let mut audio = delivered(0xa, 1, 1, IDR);
    audio[1] = 111;
    assert!(one(&mut view, &audio).is_none());
    assert!(one(&mut view, &[0x80, 96, 0]).is_none());
    assert!(one(&mut view, &[]).is_none());
}
