//! The grid a SIP far end sees (`kaskade_sfu::sip::grid::Compositor`): the H.264 that
//! publishers send reaches the node's openh264 decoders through it, so whatever a browser puts
//! in its video must neither crash the decoder nor the composition, nor hang it.
//!
//! Input: records (`kaskade_fuzz::ops`: op, length, body). Op % 4 = 0 or 1: the body is the
//! H.264 RTP payload of a packet on the first or second tile's delivered stream (numbered on,
//! op bit 2: the marker); 2: render a picture (a 15 fps step of the clock) and check its
//! packets; 3: the far end asks for a keyframe, and the second tile changes owner when body's
//! first byte is odd (its stream starts over).
#![no_main]

use bytes::Bytes;
use kaskade_fuzz::ops::Records;
use kaskade_sfu::media::demux::ParticipantId;
use kaskade_sfu::media::ingest::DELIVERED_VIDEO;
use kaskade_sfu::sip::grid::format::PictureFormat;
use kaskade_sfu::sip::grid::{Compositor, GridTile};
use kaskade_sfu::sip::h264::{rtp_header, rtp_parts};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const STREAMS: [u32; 2] = [0x100, 0x200];

fn tiles(second_owner: u32) -> Vec<GridTile> {
    [(1, STREAMS[0]), (second_owner, STREAMS[1])]
        .into_iter()
        .map(|(owner, ssrc)| GridTile {
            owner: ParticipantId::from(owner),
            label: format!("P{owner}"),
            video: Some(ssrc),
            speaking: owner == 1,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let format = PictureFormat {
        width: 176,
        height: 144,
        fps: 15,
        bitrate: 64_000,
    };
    let start = Instant::now();
    let Ok(mut compositor) = Compositor::new(format, (7, 109), (0, 0), start) else {
        return;
    };
    let mut owner = 2;
    compositor.lay_out(tiles(owner));
    let (mut now, mut seqs, mut out) = (start, [0u16; 2], Vec::new());
    for (op, body) in Records::new(data) {
        match op % 4 {
            stream @ (0 | 1) => {
                let stream = usize::from(stream);
                let marker = op & 4 != 0;
                let timestamp = (now - start).as_millis() as u32 * 90;
                let header = rtp_header(
                    (marker, DELIVERED_VIDEO),
                    seqs[stream],
                    timestamp,
                    STREAMS[stream],
                );
                seqs[stream] = seqs[stream].wrapping_add(1);
                let mut packet = header.to_vec();
                packet.extend_from_slice(body);
                if let Some(ssrc) = compositor.packet(now, &Bytes::from(packet)) {
                    assert!(
                        STREAMS.contains(&ssrc),
                        "a keyframe asked of a shown stream"
                    );
                }
            }
            2 => {
                now += Duration::from_millis(66);
                out.clear();
                if compositor.render(now, &mut out).is_ok() {
                    for packet in &out {
                        let parts = rtp_parts(packet).expect("an RTP packet");
                        assert_eq!((parts.ssrc, parts.payload_type), (7, 109));
                        assert!(parts.payload.len() <= 1_200, "{}", parts.payload.len());
                    }
                }
            }
            _ => {
                compositor.force_keyframe(now);
                if body.first().is_some_and(|b| b & 1 == 1) {
                    owner += 1;
                    compositor.lay_out(tiles(owner));
                }
            }
        }
    }
});
