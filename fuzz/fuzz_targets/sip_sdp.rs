//! SDP from a SIP far end (`kaskade_sfu::sip::sdp`): an offer kaskade answers (a call dialling
//! in, a re-INVITE) or the answer to kaskade's own offer, and then RTP that the far end sends on
//! what was agreed (`sip::media::IntoMeeting`: payload types rewritten, G.711 transcoded).
//!
//! Input: `mode | SDP text as a record | datagrams as records` (`kaskade_fuzz::ops`: op,
//! length, body; op bit 0 clear: an audio datagram, set: a video one). Mode bit 0
//! clear: the text is an offer to answer; set: an answer to read. Mode bit 1 set: the leg is a
//! phone's (no video port). Mode bits 2-3: the SRTP policy (off, best effort, mandatory), and
//! for an answer, the offer it answers (plain, best effort, secure). An answer kaskade writes
//! must read back as the same agreement (the codec and payload type it sends with on each
//! line) when it is plain RTP, and carry one key per line when it is SRTP. Asserts inside the
//! Opus encoder unwind to kaskade, which drops the frame (`contain_the_opus_encoders_asserts`).
#![no_main]

use kaskade_fuzz::ops::Records;
use kaskade_sfu::sip::media::IntoMeeting;
use kaskade_sfu::sip::sdp::{self, LocalKeys, LocalMedia, OfferedProtection, SrtpPolicy};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Once;

/// Lets panics inside mousiki (the pure-Rust Opus) unwind instead of aborting: its encoder
/// asserts on some loud frames, which `sfu::transcode` catches and drops (a finding of this
/// target); any other panic still aborts as libFuzzer's hook has it.
fn contain_the_opus_encoders_asserts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info
                .location()
                .is_some_and(|l| l.file().contains("/mousiki-"))
            {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    contain_the_opus_encoders_asserts();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut records = Records::new(rest);
    let Some((_, text)) = records.next() else {
        return;
    };
    let text = String::from_utf8_lossy(text).into_owned();
    let local = LocalMedia {
        address: "192.0.2.9".parse().expect("an address"),
        audio_port: 40_000,
        // a room system's leg, or a phone's (sound only)
        video_port: (mode & 2 == 0).then_some(40_002),
        srtp: [
            SrtpPolicy::Off,
            SrtpPolicy::BestEffort,
            SrtpPolicy::Mandatory,
        ][usize::from(mode >> 2 & 3) % 3],
        keys: LocalKeys::random(&mut StdRng::seed_from_u64(u64::from(mode))),
    };
    let offered = [
        OfferedProtection::Plain,
        OfferedProtection::BestEffort,
        OfferedProtection::Secure,
    ][usize::from(mode >> 2 & 3) % 3];
    let agreement = if mode & 1 == 0 {
        let Ok((answer, agreed)) = sdp::answer(&text, &local, 1, 1) else {
            return;
        };
        let secured = [
            agreed.audio.as_ref().map(|l| l.srtp),
            agreed.video.as_ref().map(|l| l.srtp),
        ];
        let keyed = secured
            .iter()
            .flatten()
            .filter(|keys| keys.is_some())
            .count();
        if keyed > 0 {
            assert_eq!(answer.matches("a=crypto:").count(), keyed, "{answer}");
        } else {
            let read = sdp::read_answer(&answer, &local, OfferedProtection::Plain)
                .expect("kaskade's answer reads back");
            let audio =
                |a: &sdp::Agreement| a.audio.as_ref().map(|l| (l.codec, l.send_payload_type));
            let video = |a: &sdp::Agreement| {
                a.video
                    .as_ref()
                    .map(|l| (l.packetization_mode, l.send_payload_type))
            };
            assert_eq!(audio(&read), audio(&agreed), "{answer}");
            assert_eq!(video(&read), video(&agreed), "{answer}");
        }
        agreed
    } else {
        let Ok(agreed) = sdp::read_answer(&text, &local, offered) else {
            return;
        };
        agreed
    };
    let Ok(mut into) = IntoMeeting::new(&agreement, 7, 1) else {
        return;
    };
    let mut out = Vec::new();
    for (line, datagram) in records {
        if line & 1 == 0 {
            into.audio(datagram, &mut out);
        } else {
            into.video(datagram, &mut out);
        }
    }
});
