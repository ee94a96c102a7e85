//! Seeds of the node's targets: the UDP demux, RTP/RTCP, whole datagrams into a core, media
//! sealed with real keys, and SDP offers.

use super::*;

pub(super) fn udp_demux(c: &mut Corpus, m: &Media) {
    let stun = stun_check(node::FIRST_ID);
    let rtp = rtp_packet(111, 1, 960, 5, false, &m.audio[0], Some(30));
    let rtcp = receiver_report(5);
    c.add(
        "udp_demux",
        "stun-then-media",
        records(&[(0, &stun), (0, &rtp), (0, &rtcp), (1, &rtp)]),
    );
    let mut many = Vec::new();
    for tuple in 0..8u8 {
        record(&mut many, tuple, &stun);
        record(&mut many, tuple | 8, &stun);
    }
    record(&mut many, 0, &rtp);
    c.add("udp_demux", "stun-from-every-tuple", many);
    c.add(
        "udp_demux",
        "stun-remove-media",
        records(&[
            (2, &stun),
            (0x10, &node::FIRST_ID.to_wire().to_be_bytes()),
            (2, &rtp),
        ]),
    );
    c.add(
        "udp_demux",
        "dtls-client-hello",
        records(&[(3, &client_hello())]),
    );
    c.add(
        "udp_demux",
        "stun-other-participant",
        records(&[
            (4, &stun_check(ParticipantId::from(0x0030_0007))),
            (4, &pli(9)),
        ]),
    );
    c.add(
        "udp_demux",
        "garbage",
        records(&[(5, b""), (5, &[0; 3]), (5, &[0xff; 40]), (5, &[0x80, 0xc8])]),
    );
}

pub(super) fn rtp_rtcp(c: &mut Corpus, m: &Media) {
    let mut add = |name: String, selector: u8, packet: Vec<u8>| {
        let mut seed = vec![selector, AUDIO_LEVEL_EXT_ID];
        seed.extend_from_slice(&packet);
        c.add("rtp_rtcp", name, seed);
    };
    for (i, level) in [0u8, 30, 127].into_iter().enumerate() {
        let packet = rtp_packet(
            111,
            i as u16,
            960 * i as u32,
            7,
            false,
            &m.audio[i],
            Some(level),
        );
        add(format!("rtp-opus-level-{level}"), 0, packet);
    }
    for (f, (payloads, keyframe)) in m.video.iter().take(2).enumerate() {
        for (i, payload) in payloads.iter().take(4).enumerate() {
            let last = i + 1 == payloads.len();
            let packet = rtp_packet(102, i as u16, 9000 * f as u32, 8, last, payload, None);
            let kind = if *keyframe { "keyframe" } else { "delta" };
            add(format!("rtp-h264-{kind}-{i}"), 0, packet);
        }
    }
    add("rtcp-pli".into(), 1, pli(8));
    add("rtcp-fir".into(), 1, fir(8));
    add("rtcp-nack".into(), 1, nack(8));
    add("rtcp-rr".into(), 1, receiver_report(8));
    add("rtcp-sr".into(), 1, sender_report(8));
    let mut compound = receiver_report(8);
    compound.extend_from_slice(&pli(8));
    compound.extend_from_slice(&nack(7));
    add("rtcp-compound".into(), 1, compound);
}

pub(super) fn node_datagrams(c: &mut Corpus, m: &Media) {
    let t = "node_datagrams";
    let wait = 50u16.to_be_bytes();
    let hello = client_hello();
    c.add(
        t,
        "ice-then-dtls-garbage",
        records(&[
            (2, b""),
            (6, &wait),
            (2, b""),
            (0, &hello),
            (0, &hello[..20]),
        ]),
    );
    c.add(
        t,
        "ice-then-srtp-unauthenticated",
        records(&[
            (2, b""),
            (6, &wait),
            (
                0,
                &rtp_packet(111, 1, 960, node::AUDIO_SSRC, false, &m.audio[0], Some(20)),
            ),
            (0, &pli(node::VIDEO_SSRC)),
        ]),
    );
    let (keyframe, _) = &m.video[0];
    let mut relayed_video = Vec::new();
    for (i, payload) in keyframe.iter().take(3).enumerate() {
        record(
            &mut relayed_video,
            3,
            &relayed(MediaKind::Video, 10 + i as u16, payload, None),
        );
    }
    record(
        &mut relayed_video,
        3,
        &relayed(MediaKind::Audio, 5, &m.audio[1], Some(12)),
    );
    record(
        &mut relayed_video,
        3,
        &relayed(MediaKind::Audio, 9, &m.audio[2], Some(40)),
    );
    c.add(t, "relayed-media-with-gap", relayed_video);
    let mut requests = BytesMut::new();
    frame::put_keyframe_request(&mut requests, node::FIRST_ID, 0);
    let mut nack_frame = BytesMut::new();
    let video = LinkStream {
        publisher: node::FIRST_ID,
        kind: MediaKind::Video,
        layer: 0,
    };
    frame::put_nack(&mut nack_frame, video, &[1, 2, 3]);
    c.add(
        t,
        "relayed-keyframe-request-and-nack",
        records(&[(3, &requests), (3, &nack_frame), (3, &[9, 9, 9])]),
    );
    let mut control_ops = Vec::new();
    for (_, message) in link_messages() {
        record(&mut control_ops, 4, &json(&message));
    }
    c.add(t, "link-control-messages", control_ops);
    let mut signaling = Vec::new();
    for (name, message) in client_messages() {
        if name != "leave" {
            record(&mut signaling, 5, &json(&message));
        }
    }
    c.add(t, "signaling-frames", signaling);
    c.add(
        t,
        "second-participant",
        records(&[(7, b""), (10, b""), (6, &wait), (2, b""), (8, &hello)]),
    );
    c.add(
        t,
        "ice-tcp",
        records(&[
            (1, &stun_check(node::FIRST_ID)),
            (1, &hello),
            (6, &3000u16.to_be_bytes()),
        ]),
    );
    c.add(
        t,
        "stun-foreign-tuples",
        records(&[
            (8, &stun_check(node::FIRST_ID)),
            (16, &stun_check(node::FIRST_ID)),
            (8, &hello),
        ]),
    );
}

pub(super) fn node_media(c: &mut Corpus, m: &Media) {
    let t = "node_media";
    let media = |kind: u8, marker: bool, step: u16, level: u8, payload: &[u8]| {
        let mut body = vec![kind, u8::from(marker)];
        body.extend_from_slice(&step.to_be_bytes());
        body.push(level);
        body.extend_from_slice(payload);
        body
    };
    let mut video = Vec::new();
    for (f, (payloads, _)) in m.video.iter().take(3).enumerate() {
        for (i, payload) in payloads.iter().enumerate() {
            let step = if i == 0 && f > 0 { 9000 } else { 0 };
            let last = i + 1 == payloads.len();
            record(&mut video, 3, &media(1, last, step, 0, payload));
        }
    }
    record(&mut video, 2, &100u16.to_be_bytes());
    c.add(t, "video-keyframe-then-deltas", video);
    let mut audio = Vec::new();
    for (i, packet) in m.audio.iter().take(20).enumerate() {
        let who = if i % 2 == 0 { 3 } else { 0x13 };
        record(
            &mut audio,
            who,
            &media(0, false, 960, (i * 6) as u8, packet),
        );
        if i % 5 == 4 {
            record(&mut audio, 2, &100u16.to_be_bytes());
        }
    }
    c.add(t, "audio-both-speaking", audio);
    let raw = rtp_packet(111, 7, 960, node::AUDIO_SSRC, false, &m.audio[3], Some(25));
    let raw_video = rtp_packet(
        102,
        8,
        3000,
        node::VIDEO_SSRC + 1,
        true,
        &m.video[1].0[0],
        None,
    );
    c.add(
        t,
        "raw-rtp",
        records(&[(0, &raw), (0x10, &raw_video), (0, &raw[..20])]),
    );
    let mut feedback = Vec::new();
    for packet in [
        pli(node::VIDEO_SSRC),
        fir(node::VIDEO_SSRC),
        nack(node::VIDEO_SSRC),
        receiver_report(node::AUDIO_SSRC),
        sender_report(node::AUDIO_SSRC + 1),
    ] {
        record(&mut feedback, 1, &packet);
        record(&mut feedback, 0x11, &packet);
    }
    record(&mut feedback, 2, &1500u16.to_be_bytes());
    c.add(t, "rtcp-feedback-and-reports", feedback);
    let mut signaling = Vec::new();
    for (name, message) in client_messages() {
        if matches!(name, "mute" | "unmute" | "moderate" | "lock" | "unlock") {
            record(&mut signaling, 4, &json(&message));
            record(&mut signaling, 3, &media(0, false, 960, 10, &m.audio[4]));
        }
    }
    c.add(t, "signaling-between-media", signaling);
    c.add(
        t,
        "time-passes",
        records(&[(2, &5000u16.to_be_bytes()), (2, &30000u16.to_be_bytes())]),
    );
}

pub(super) fn sdp_offer(c: &mut Corpus) {
    for (name, slots, audio, video) in [
        ("lean-1-slot", 1, true, true),
        ("lean-3-slots", 3, true, true),
        ("lean-receive-only", 2, false, false),
        ("lean-audio-only", 1, true, false),
        ("lean-no-slots", 0, true, true),
    ] {
        c.add("sdp_offer", name, offer(slots, audio, video).into_bytes());
    }
    let sendrecv = offer(1, true, true).replace("a=sendonly", "a=sendrecv");
    c.add("sdp_offer", "sendrecv", sendrecv.into_bytes());
    c.add(
        "sdp_offer",
        "minimal",
        b"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".to_vec(),
    );
}

/// SIP SDP: a room system's offer (H.263, G.722.1, BFCP, H.224, a second video), kaskade's own
/// offer, answers with PCMU only and with H.264 renumbered; each followed by the far end's RTP
/// on what it agrees (a PCMU packet, an H.264 packet, a telephone event).
pub(super) fn sip_sdp(c: &mut Corpus) {
    use kaskade_sfu::sip::sdp::{LocalKeys, LocalMedia, OfferedProtection, SrtpPolicy, offer};
    use rand::SeedableRng;
    let room_system = include_str!("../../../sfu/src/sip/testdata/room-system-offer.sdp");
    let local = LocalMedia {
        address: "192.0.2.5".parse().expect("an address"),
        audio_port: 30_000,
        video_port: Some(30_002),
        srtp: SrtpPolicy::BestEffort,
        keys: LocalKeys::random(&mut rand::rngs::StdRng::seed_from_u64(5)),
    };
    let pcmu_answer = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\n\
        t=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
        m=video 0 RTP/AVP 96\r\n";
    let h264_answer = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\n\
        t=0 0\r\nm=audio 30000 RTP/AVP 120\r\na=rtpmap:120 opus/48000/2\r\n\
        m=video 30002 RTP/AVP 126\r\na=rtpmap:126 H264/90000\r\n\
        a=fmtp:126 profile-level-id=42e01f;packetization-mode=1\r\na=sendonly\r\n";
    let media = |pt_audio: u8, pt_video: u8| {
        let rtp = |pt: u8, payload: &[u8]| {
            let mut packet = vec![0x80, pt, 0, 7, 0, 0, 0x03, 0x20, 0, 0, 0xfe, 0xed];
            packet.extend_from_slice(payload);
            packet
        };
        let mut out = Vec::new();
        record(&mut out, 0, &rtp(pt_audio, &[0x7f; 160]));
        record(&mut out, 1, &rtp(pt_video, &[0x65, 0x88, 0x84, 0x00]));
        record(&mut out, 0, &rtp(101, &[1, 0x8a, 0, 160]));
        out
    };
    for (name, mode, text, audio, video) in [
        ("room-system-offer", 0, room_system.to_string(), 0, 109),
        (
            "kaskade-offer",
            0,
            offer(&local, 1, 1, OfferedProtection::BestEffort),
            111,
            96,
        ),
        ("pcmu-answer", 1, pcmu_answer.to_string(), 0, 96),
        ("renumbered-answer", 1, h264_answer.to_string(), 120, 126),
    ] {
        let mut input = vec![mode];
        record(&mut input, 0, text.as_bytes());
        input.extend(media(audio, video));
        c.add("sip_sdp", name, input);
    }
}

pub(super) fn red_audio(c: &mut Corpus, m: &Media) {
    // a publisher's RED, as a browser sends it on a lossy uplink: two earlier frames in each
    let mut encoder = RedEncoder::new(RED_PAYLOAD_TYPE);
    let now = Instant::now();
    encoder.observe_loss(now, 0.1);
    let mut publisher = Vec::new();
    let mut slot = Vec::new();
    record(&mut slot, 2, &[25]);
    for (n, frame) in m.audio.iter().take(8).enumerate() {
        let seq = 100 + n as u16;
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: u32::from(seq) * 960,
                ..Default::default()
            },
            payload: frame.clone(),
        };
        let opus = [
            &seq.to_be_bytes()[..],
            &packet.header.timestamp.to_be_bytes(),
            frame,
        ]
        .concat();
        record(&mut slot, 1, &opus);
        record(&mut slot, 3, &20u16.to_be_bytes());
        let red = encoder.encode(now, &mut packet);
        // every third packet lost on the way
        if n % 3 != 1 {
            let op = if red { 4 } else { 0 };
            record(
                &mut publisher,
                op,
                &[&seq.to_be_bytes()[..], &packet.payload].concat(),
            );
        }
    }
    c.add("red_audio", "lossy-uplink", publisher);
    c.add("red_audio", "lossy-downlink", slot);
}
