//! What the node parses of media once SRTP has authenticated and decrypted it: the rtp and rtcp
//! crates' unmarshalling as the core and its interceptors call it, the audio level extension
//! (`media::speaker::audio_level` on `Header::get_extension`), H.264 keyframe detection
//! (`media::keyframe::h264_keyframe_start`), and the RTCP tap's keyframe-request and NACK
//! counting.
//!
//! Input: `selector | extension id | packet`. Selector bit 0: RTP or RTCP (compound).
#![no_main]

use bytes::Bytes;
use kaskade_fuzz::ops::Fields;
use kaskade_sfu::media::keyframe::h264_keyframe_start;
use kaskade_sfu::media::speaker::audio_level;
use libfuzzer_sys::fuzz_target;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::shared::marshal::{Marshal, Unmarshal};

fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let selector = fields.u8();
    let extension_id = fields.u8();
    let packet = fields.rest();
    // the payload-level parsers also see whatever bytes a relayed frame carries
    let _ = h264_keyframe_start(packet);
    if let Some(level) = audio_level(packet) {
        assert!(level <= 127);
    }
    if selector & 1 == 0 {
        let mut buf = Bytes::copy_from_slice(packet);
        let Ok(rtp) = rtc::rtp::Packet::unmarshal(&mut buf) else {
            return;
        };
        if let Some(payload) = rtp.header.get_extension(extension_id) {
            let _ = audio_level(&payload);
        }
        let _ = h264_keyframe_start(&rtp.payload);
        let _ = rtp.marshal();
    } else {
        let mut buf = Bytes::copy_from_slice(packet);
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut buf) else {
            return;
        };
        for p in &packets {
            let _ = p.destination_ssrc();
            let _ = kaskade_rtcp_tap::is_keyframe_request(p.as_ref());
            let any = p.as_any();
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let nacked = kaskade_rtcp_tap::nacked_packets(nack);
                assert!(nacked <= 17 * nack.nacks.len() as u64);
            }
            let _ = any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>();
            let _ = p.marshal();
        }
    }
});
