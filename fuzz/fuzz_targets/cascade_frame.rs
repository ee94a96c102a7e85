//! Cascade link datagrams (`cascade::frame`): the cleartext header every 0xCA datagram on the
//! node's socket goes through before it is opened (`parse_header`), and the frames an opened
//! datagram holds (`decode`, `nacked`).
//!
//! Input: `mode | ...`. Mode bit 0 clear: the rest is parsed as a datagram header and decoded
//! as a frame. Set: a relayed RTP frame (of any simulcast layer), a keyframe request and a NACK
//! are built from the input with the node's own writers and must decode to what was written.
#![no_main]

use bytes::{Bytes, BytesMut};
use kaskade_fuzz::ops::Fields;
use kaskade_sfu::cascade::frame::{
    self, DatagramHeader, Frame, MAX_NACKS, RelayedRtp, decode, nacked, parse_header,
};
use kaskade_sfu::media::forwarder::MediaKind;
use kaskade_sfu::media::simulcast::MAX_LAYERS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = Fields::new(data);
    if f.u8() & 1 == 0 {
        let rest = f.rest();
        if let Ok(header) = parse_header(rest) {
            assert!(rest.len() >= frame::HEADER_LEN + 16);
            assert_eq!(rest[0], frame::MAGIC);
            let _ = header;
        }
        match decode(Bytes::copy_from_slice(rest)) {
            Ok(Frame::Nack { seqs, .. }) => assert_eq!(nacked(&seqs).count(), seqs.len() / 2),
            Ok(Frame::Rtp(rtp) | Frame::Cached(rtp)) => {
                assert!(rtp.payload_type < 128);
                assert!(rtp.level.is_none_or(|l| l <= 127));
                assert!(usize::from(rtp.layer) < MAX_LAYERS);
            }
            _ => {}
        }
        return;
    }
    let sender = f.u16();
    let mut datagram = frame::start_datagram(sender, 0).to_vec();
    datagram.extend_from_slice(&[0; 16]);
    assert_eq!(
        parse_header(&datagram),
        Ok(DatagramHeader { sender, counter: 0 })
    );
    let kind = if f.bool() {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    let level = f.u8();
    let rtp = RelayedRtp {
        publisher: f.u32().into(),
        kind,
        layer: f.u8() % MAX_LAYERS as u8,
        level: (level != 0xFF).then_some(level & 0x7F),
        marker: f.bool(),
        payload_type: f.u8() & 0x7F,
        seq: f.u16(),
        timestamp: f.u32(),
        ssrc: f.u32(),
        payload: Bytes::copy_from_slice(f.bytes(1500)),
    };
    let mut buf = BytesMut::new();
    frame::put_rtp(&mut buf, &rtp);
    assert_eq!(decode(buf.split().freeze()), Ok(Frame::Rtp(rtp.clone())));
    frame::put_keyframe_request(&mut buf, rtp.publisher, rtp.layer);
    assert_eq!(
        decode(buf.split().freeze()),
        Ok(Frame::KeyframeRequest {
            publisher: rtp.publisher,
            layer: rtp.layer
        })
    );
    let seqs: Vec<u16> = f
        .rest()
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    frame::put_nack(&mut buf, rtp.stream(), &seqs);
    match decode(buf.split().freeze()) {
        Ok(Frame::Nack { stream, seqs: got }) => {
            assert_eq!(stream, rtp.stream());
            let want: Vec<u16> = seqs.iter().copied().take(MAX_NACKS).collect();
            assert_eq!(nacked(&got).collect::<Vec<_>>(), want);
        }
        other => panic!("a NACK decoded as {other:?}"),
    }
});
