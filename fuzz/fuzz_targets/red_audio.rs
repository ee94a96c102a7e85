//! Redundant audio (`media::red`): a publisher's packets through the node's unwrapper, and a
//! slot's Opus through its encoder and back. Checked against its rules: what the unwrapper
//! hands on is Opus of the packet's stream, older packets first and none twice in one packet,
//! never from beyond the blocks a packet can hold; what the encoder writes parses, carries the
//! packet's own frame as its primary, and unwraps to it.
//!
//! Input: records `op | len | body`; the op's low 2 bits pick: 0 a publisher's packet
//! (`seq u16 | payload`, RED when bit 2 of the op is set, Opus otherwise); 1 a slot's Opus
//! packet to encode (`seq u16 | timestamp u32 | payload`); 2 the loss the subscriber's path
//! shows (`u8`, in 255ths; bit 2 of the op: the path is congested); 3 time passes (`u16` ms).
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use kaskade_fuzz::ops::{Fields, Records};
use kaskade_sfu::media::red::{self, RED_PAYLOAD_TYPE, RedEncoder, RedUnwrap};
use libfuzzer_sys::fuzz_target;
use rtc::rtp;

const OPUS: u8 = 111;
const SSRC: u32 = 0x5eed;

fn packet(payload_type: u8, seq: u16, timestamp: u32, payload: &[u8]) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type,
            sequence_number: seq,
            timestamp,
            ssrc: SSRC,
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(payload),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut unwrap = RedUnwrap::new(RED_PAYLOAD_TYPE, OPUS);
    let mut encoder = RedEncoder::new(RED_PAYLOAD_TYPE);
    let mut now = Instant::now();
    for (op, body) in Records::new(data) {
        let mut f = Fields::new(body);
        match op & 3 {
            0 => {
                let seq = f.u16();
                let payload_type = if op & 4 != 0 { RED_PAYLOAD_TYPE } else { OPUS };
                let payload = f.rest();
                let mut out = Vec::new();
                let result = unwrap.unwrap(
                    packet(payload_type, seq, u32::from(seq) * 960, payload),
                    |p| out.push(p),
                );
                let mut last_back = None::<u16>;
                for p in &out {
                    assert_eq!(p.header.payload_type, OPUS);
                    assert_eq!(p.header.ssrc, SSRC);
                    assert!(p.payload.len() <= payload.len());
                    let back = seq.wrapping_sub(p.header.sequence_number);
                    assert!(back <= 8, "{back} packets back");
                    assert!(
                        last_back.is_none_or(|last| back < last),
                        "older first, once"
                    );
                    last_back = Some(back);
                }
                if result.is_err() {
                    assert!(out.is_empty(), "an unreadable packet goes nowhere");
                }
            }
            1 => {
                let (seq, timestamp) = (f.u16(), f.u32());
                let payload = f.rest();
                let mut p = packet(OPUS, seq, timestamp, payload);
                if encoder.encode(now, &mut p) {
                    assert_eq!(p.header.payload_type, RED_PAYLOAD_TYPE);
                    let blocks = red::parse(&p.payload).expect("what the encoder writes parses");
                    assert_eq!(&p.payload[blocks.primary.data.clone()], payload);
                    assert!(!blocks.redundant().is_empty());
                    let mut back = RedUnwrap::new(RED_PAYLOAD_TYPE, OPUS);
                    let mut out = Vec::new();
                    back.unwrap(p, |q| out.push(q)).expect("readable");
                    let own = out.last().expect("its own frame");
                    assert_eq!(own.header.sequence_number, seq);
                    assert_eq!(&own.payload[..], payload);
                } else {
                    assert_eq!(p.header.payload_type, OPUS);
                    assert_eq!(&p.payload[..], payload);
                }
            }
            2 => {
                if op & 4 != 0 {
                    encoder.stand_down();
                    assert_eq!(encoder.repeating(now), 0);
                } else {
                    encoder.observe_loss(now, f64::from(f.u8()) / 255.0);
                    assert!(encoder.repeating(now) <= 2);
                }
            }
            _ => now += Duration::from_millis(u64::from(f.u16())),
        }
    }
});
