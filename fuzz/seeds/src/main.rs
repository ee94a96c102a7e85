//! Writes the seed corpora of kaskade's fuzz targets (`fuzz/corpus/<target>/`) from real
//! traffic made by kaskade's own code: the load generator's encoded H.264 and Opus clips and
//! their RTP packets, its lean client's STUN checks, DTLS ClientHello and SDP offer, the node's
//! cascade frame and control writers and its link cipher, signaling frames and tokens
//! serialized from real values, the locator's API bodies, and fragmented MP4 files the
//! recorder's own pipeline wrote from the clips (whole, cut, encrypted).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml -p seeds [-- OUT_DIR]
//! ```
//!
//! Each seed is laid out as its target reads its input (see the target's documentation and
//! `kaskade_fuzz::ops`). Run again after a change of a target's input layout; the seeds are
//! committed, so CI does not need to run this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kaskade_client::audio::{OpusClip, audio_level_payload};
use kaskade_client::video::{VideoClip, VideoClipConfig};
use kaskade_fuzz::locator::node_report;
use kaskade_fuzz::node;
use kaskade_fuzz::ops::record;
use kaskade_loadtest::lean::dtls::{self, DtlsClient};
use kaskade_loadtest::lean::ice::{Credentials, IceChecks};
use kaskade_loadtest::lean::sdp::{self, AUDIO_LEVEL_EXT_ID, OfferParams};
use kaskade_protocol::cluster::{CallRecord, JoinRequest, node_credential};
use kaskade_protocol::recording::RecorderReport;
use kaskade_protocol::signaling::{
    ClientMessage, LeaveReason, MediaKind, ModerateAction, ParticipantId, ParticipantInfo, Role,
};
use kaskade_protocol::token::{Claims, TokenKey};
use kaskade_recorder::at_rest::{EncryptingWriter, Keyring, Layout};
use kaskade_recorder::participant::{MediaKind as TrackKind, ParticipantRecorder};
use kaskade_recorder::timeline::RtpPacket;
use kaskade_sfu::cascade::cipher::{Channel, LinkCipher};
use kaskade_sfu::cascade::control::{self, LinkMessage, StreamRef};
use kaskade_sfu::cascade::frame::{self, RelayedRtp};
use kaskade_sfu::media::demux::ufrag_for;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::shared::marshal::Marshal;
use std::io::Write as _;

/// The key `recording_at_rest` decrypts with.
const AT_REST_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The token key of the `token` and `signaling_json` targets (seeds of mode 0 must not verify).
const OTHER_SECRET: &[u8] = b"not-the-fuzz-secret";

/// The seeds of every target: target -> (name -> bytes).
#[derive(Default)]
struct Corpus(BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>);

impl Corpus {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: Vec<u8>) {
        self.0.entry(target).or_default().insert(name.into(), bytes);
    }

    fn write(&self, root: &Path) -> std::io::Result<()> {
        for (target, seeds) in &self.0 {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir)?;
            for (name, bytes) in seeds {
                std::fs::write(dir.join(name), bytes)?;
            }
            let total: usize = seeds.values().map(Vec::len).sum();
            println!("{target}: {} seeds, {total} bytes", seeds.len());
        }
        Ok(())
    }
}

/// Records of `(op, body)` in the `ops` layout.
fn records(list: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, body) in list {
        record(&mut out, *op, body);
    }
    out
}

/// The media every seed is cut from: the load generator's clips.
struct Media {
    /// RTP payloads of each video frame (the first a keyframe) and whether it is a keyframe.
    video: Vec<(Vec<Bytes>, bool)>,
    /// Opus packets, 20 ms each.
    audio: Vec<Bytes>,
}

impl Media {
    fn encode() -> Self {
        let clip = VideoClip::encode(VideoClipConfig {
            width: 96,
            height: 64,
            fps: 10,
            bitrate_bps: 60_000,
            frames: 10,
            sync_marks: false,
        })
        .expect("encoding the video clip");
        let video = clip
            .frames()
            .iter()
            .map(|f| (f.payloads.clone(), f.keyframe))
            .collect();
        let audio = OpusClip::encode()
            .expect("encoding the audio clip")
            .frames()
            .to_vec();
        Self { video, audio }
    }
}

fn rtp_packet(
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: &[u8],
    level: Option<u8>,
) -> Vec<u8> {
    let mut header = rtc::rtp::header::Header {
        version: 2,
        marker,
        payload_type,
        sequence_number: seq,
        timestamp,
        ssrc,
        ..Default::default()
    };
    if let Some(level) = level {
        header
            .set_extension(AUDIO_LEVEL_EXT_ID, audio_level_payload(level))
            .expect("a one-byte extension");
    }
    rtc::rtp::Packet {
        header,
        payload: Bytes::copy_from_slice(payload),
    }
    .marshal()
    .expect("marshalling RTP")
    .to_vec()
}

fn marshal(packet: &impl Marshal) -> Vec<u8> {
    packet.marshal().expect("marshalling RTCP").to_vec()
}

fn pli(media_ssrc: u32) -> Vec<u8> {
    marshal(&PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc,
    })
}

fn fir(media_ssrc: u32) -> Vec<u8> {
    marshal(&FullIntraRequest {
        sender_ssrc: 1,
        media_ssrc,
        fir: vec![FirEntry {
            ssrc: media_ssrc,
            sequence_number: 3,
        }],
    })
}

fn nack(media_ssrc: u32) -> Vec<u8> {
    marshal(&TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc,
        nacks: vec![NackPair {
            packet_id: 100,
            lost_packets: 0b101,
        }],
    })
}

fn receiver_report(ssrc: u32) -> Vec<u8> {
    marshal(&ReceiverReport {
        ssrc: 1,
        reports: vec![ReceptionReport {
            ssrc,
            fraction_lost: 3,
            total_lost: 7,
            last_sequence_number: 1000,
            jitter: 20,
            last_sender_report: 0,
            delay: 0,
        }],
        profile_extensions: Bytes::new(),
    })
}

fn sender_report(ssrc: u32) -> Vec<u8> {
    marshal(&SenderReport {
        ssrc,
        ntp_time: 0xE000_0000_0000_0000,
        rtp_time: 90_000,
        packet_count: 10,
        octet_count: 10_000,
        reports: vec![],
        profile_extensions: Bytes::new(),
    })
}

/// A lean client's STUN check to the participant `id` of the node.
fn stun_check(id: ParticipantId) -> Vec<u8> {
    let provider = node::provider();
    let mut ice = IceChecks::new(
        Credentials {
            local_ufrag: "fuzz0".into(),
            remote_ufrag: ufrag_for(id, "abcdefgh"),
            local_pwd: "fuzz-client-password-000".into(),
            remote_pwd: "nodepasswordnodepassword".into(),
        },
        7,
    );
    ice.request(provider.crypto()).expect("a binding request")
}

/// The lean client's first DTLS flight (its ClientHello).
fn client_hello() -> Vec<u8> {
    let mut client = DtlsClient::connect(
        Instant::now(),
        node::client_addr(0),
        node::node_addr(),
        "AB:CD",
    )
    .expect("a DTLS client");
    client.poll_transmit().expect("a ClientHello").to_vec()
}

fn offer(recv_slots: usize, audio: bool, video: bool) -> String {
    let (_, fingerprint) = dtls::identity().expect("a DTLS identity");
    sdp::offer(&OfferParams {
        ufrag: "fuzz0".into(),
        pwd: "fuzz-client-password-000".into(),
        fingerprint: fingerprint.clone(),
        audio_ssrc: audio.then_some(node::AUDIO_SSRC),
        video_ssrc: video.then_some(node::VIDEO_SSRC),
        cname: "fuzzcname0".into(),
        recv_slots,
    })
}

fn relayed(kind: MediaKind, seq: u16, payload: &[u8], level: Option<u8>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame::put_rtp(
        &mut buf,
        &RelayedRtp {
            publisher: node::REMOTE_ID,
            kind,
            level,
            marker: true,
            payload_type: if kind == MediaKind::Audio { 111 } else { 102 },
            seq,
            timestamp: u32::from(seq) * 3000,
            ssrc: 0xABCD_0000 | u32::from(kind == MediaKind::Video),
            payload: Bytes::copy_from_slice(payload),
        },
    );
    buf.to_vec()
}

fn link_messages() -> Vec<(&'static str, LinkMessage)> {
    let meeting = node::MEETING.to_string();
    vec![
        (
            "hello",
            LinkMessage::Hello {
                node: "fuzz-peer".into(),
                index: node::PEER_INDEX,
            },
        ),
        (
            "attach",
            LinkMessage::Attach {
                meeting: meeting.clone(),
                locked: false,
            },
        ),
        (
            "detach",
            LinkMessage::Detach {
                meeting: meeting.clone(),
            },
        ),
        (
            "participant",
            LinkMessage::Participant {
                meeting: meeting.clone(),
                participant: ParticipantInfo {
                    id: ParticipantId::from(u32::from(node::REMOTE_ID) + 1),
                    identity: Some("bob@example.com".into()),
                    name: "Bob".into(),
                    role: Role::Moderator,
                    audio_muted: false,
                    video_muted: true,
                    source: None,
                },
                payload_kinds: vec![(111, MediaKind::Audio), (102, MediaKind::Video)],
                cache_gop: false,
            },
        ),
        (
            "left",
            LinkMessage::Left {
                meeting: meeting.clone(),
                id: node::REMOTE_ID,
                reason: LeaveReason::Disconnected,
            },
        ),
        (
            "subscribe",
            LinkMessage::Subscribe {
                meeting: meeting.clone(),
                streams: vec![
                    StreamRef {
                        publisher: node::FIRST_ID,
                        kind: MediaKind::Audio,
                    },
                    StreamRef {
                        publisher: node::FIRST_ID,
                        kind: MediaKind::Video,
                    },
                ],
            },
        ),
        (
            "moderate",
            LinkMessage::Moderate {
                meeting: meeting.clone(),
                by: node::REMOTE_ID,
                action: ModerateAction::MuteAudio,
                target: node::FIRST_ID,
            },
        ),
        (
            "recording",
            LinkMessage::Recording {
                meeting: meeting.clone(),
                active: true,
            },
        ),
        (
            "lock",
            LinkMessage::Lock {
                meeting,
                locked: true,
                by: node::REMOTE_ID,
            },
        ),
    ]
}

fn client_messages() -> Vec<(&'static str, ClientMessage)> {
    vec![
        (
            "join",
            ClientMessage::Join {
                meeting: "standup".into(),
                name: "  Alice\u{7}  ".into(),
                token: None,
                client: Some("browser".into()),
            },
        ),
        (
            "join-token",
            ClientMessage::Join {
                meeting: "standup".into(),
                name: String::new(),
                token: Some(TokenKey::from_secret(OTHER_SECRET).sign(&claims("standup"))),
                client: Some("synthetic".into()),
            },
        ),
        (
            "offer",
            ClientMessage::Offer {
                sdp: offer(1, true, true),
            },
        ),
        (
            "mute",
            ClientMessage::Mute {
                audio: Some(true),
                video: None,
            },
        ),
        (
            "unmute",
            ClientMessage::Mute {
                audio: Some(false),
                video: Some(false),
            },
        ),
        (
            "moderate",
            ClientMessage::Moderate {
                action: ModerateAction::MuteVideo,
                target: ParticipantId::from(u32::from(node::FIRST_ID) + 1),
            },
        ),
        ("lock", ClientMessage::Lock { locked: true }),
        ("unlock", ClientMessage::Lock { locked: false }),
        ("leave", ClientMessage::Leave),
    ]
}

fn claims(meeting: &str) -> Claims {
    Claims {
        meeting: meeting.into(),
        sub: "alice@example.com".into(),
        name: "Alice".into(),
        role: Role::Moderator,
        exp: 4_000_000_000,
        rejoin: false,
        jti: None,
        aud: None,
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializing")
}

fn udp_demux(c: &mut Corpus, m: &Media) {
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

fn rtp_rtcp(c: &mut Corpus, m: &Media) {
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

fn node_datagrams(c: &mut Corpus, m: &Media) {
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
    frame::put_keyframe_request(&mut requests, node::FIRST_ID);
    let mut nack_frame = BytesMut::new();
    frame::put_nack(
        &mut nack_frame,
        node::FIRST_ID,
        MediaKind::Video,
        &[1, 2, 3],
    );
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

fn node_media(c: &mut Corpus, m: &Media) {
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

fn sdp_offer(c: &mut Corpus) {
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

fn signaling_json(c: &mut Corpus) {
    for (name, message) in client_messages() {
        c.add("signaling_json", name, json(&message));
    }
    c.add(
        "signaling_json",
        "unknown-type",
        br#"{"type":"dance","speed":3}"#.to_vec(),
    );
    c.add(
        "signaling_json",
        "malformed",
        br#"{"type":"mute","audio":"yes"}"#.to_vec(),
    );
    c.add("signaling_json", "not-json", b"join standup".to_vec());
}

fn token(c: &mut Corpus) {
    let other = TokenKey::from_secret(OTHER_SECRET);
    let mode0 = |token: &str| {
        let mut seed = vec![0];
        seed.extend_from_slice(&1_000u64.to_be_bytes());
        seed.extend_from_slice(token.as_bytes());
        seed
    };
    c.add("token", "other-key", mode0(&other.sign(&claims("fuzz"))));
    c.add(
        "token",
        "alg-none",
        mode0("eyJhbGciOiJub25lIn0.eyJtZWV0aW5nIjoiZnV6eiJ9."),
    );
    c.add("token", "three-dots", mode0("a.b.c.d"));
    let mode1 = |meeting: &str, name: &str, role: u8, exp: u64, edits: &[(u16, u8)]| {
        let mut seed = vec![1];
        seed.extend_from_slice(&1_000u64.to_be_bytes());
        for text in [meeting, "alice@example.com", name] {
            seed.push(text.len() as u8);
            seed.extend_from_slice(text.as_bytes());
        }
        seed.push(role);
        seed.extend_from_slice(&exp.to_be_bytes());
        seed.push(0);
        seed.push(edits.len() as u8);
        for (at, byte) in edits {
            seed.extend_from_slice(&at.to_be_bytes());
            seed.push(*byte);
        }
        seed
    };
    c.add("token", "signed", mode1("standup", "Alice", 1, 2_000, &[]));
    c.add(
        "token",
        "signed-expired",
        mode1("standup", "Alice", 0, 999, &[]),
    );
    c.add(
        "token",
        "signed-tampered",
        mode1("board", "Bob", 2, 5_000, &[(40, b'A'), (200, b'.')]),
    );
}

fn cascade(c: &mut Corpus, m: &Media) {
    let video = relayed(MediaKind::Video, 1, &m.video[0].0[0], None);
    let audio = relayed(MediaKind::Audio, 2, &m.audio[0], Some(10));
    let mut keyframe = BytesMut::new();
    frame::put_keyframe_request(&mut keyframe, node::FIRST_ID);
    let mut nack_frame = BytesMut::new();
    frame::put_nack(
        &mut nack_frame,
        node::FIRST_ID,
        MediaKind::Audio,
        &[5, 6, 65_535],
    );
    let mut peer = node::peer_media_cipher();
    let datagram = node::sealed_link_datagram(&mut peer, &video);
    for (name, bytes) in [
        ("frame-rtp-video", &video[..]),
        ("frame-rtp-audio", &audio[..]),
        ("frame-keyframe-request", &keyframe[..]),
        ("frame-nack", &nack_frame[..]),
        ("datagram", &datagram[..]),
    ] {
        let mut seed = vec![0];
        seed.extend_from_slice(bytes);
        c.add("cascade_frame", name, seed);
    }
    let mut built = vec![1, 0, 2, 1, 30, 1, 102];
    built.extend_from_slice(&node::REMOTE_ID.to_wire().to_be_bytes());
    c.add("cascade_frame", "built", built);

    let t = "cascade_cipher";
    let stranger = {
        let mut cipher = LinkCipher::new(&[1; 32], 2, 1, Channel::Media).expect("a 32-byte key");
        node::sealed_link_datagram(&mut cipher, &video)
    };
    let deliver = |index: u8, at: u16, xor: u8, cut: u16| {
        let mut body = vec![index];
        body.extend_from_slice(&at.to_be_bytes());
        body.push(xor);
        body.extend_from_slice(&cut.to_be_bytes());
        body
    };
    c.add(
        t,
        "seal-deliver-replay",
        records(&[
            (1, &video),
            (2, &deliver(0, 0, 0, 0)),
            (2, &deliver(0, 0, 0, 0)),
        ]),
    );
    c.add(
        t,
        "reordered",
        records(&[
            (1, &video),
            (1, &audio),
            (1, &keyframe),
            (2, &deliver(2, 0, 0, 0)),
            (2, &deliver(0, 0, 0, 0)),
            (2, &deliver(1, 0, 0, 0)),
        ]),
    );
    c.add(
        t,
        "tampered-and-cut",
        records(&[
            (1, &audio),
            (2, &deliver(0, 20, 1, 0)),
            (2, &deliver(0, 0, 0, 30)),
            (2, &deliver(0, 5, 0x80, 0)),
            (2, &deliver(0, 0, 0, 0)),
        ]),
    );
    c.add(t, "foreign", records(&[(0, &stranger), (0, &datagram)]));

    let t = "cascade_control";
    let mut sealer = LinkCipher::new(&[3; 32], 2, 1, Channel::Control).expect("a 32-byte key");
    for (name, message) in link_messages() {
        let mut seed = vec![1];
        seed.extend_from_slice(&json(&message));
        c.add(t, format!("json-{name}"), seed);
        if name == "hello" || name == "subscribe" {
            let mut seed = vec![0];
            seed.extend_from_slice(&control::seal(&mut sealer, &message));
            c.add(t, format!("sealed-{name}"), seed);
        }
    }
}

fn split(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    out.push(0);
    out.extend_from_slice(b);
    out
}

fn locator(c: &mut Corpus) {
    let t = "locator_node_report";
    let mut report = node_report(0);
    report.node = "node-x".into();
    let records_json = json(&vec![CallRecord {
        session: "node-x/1048577/1700000000000".into(),
        meeting: "standup".into(),
        identity: "alice@example.com".into(),
        name: "Alice".into(),
        node: "node-x".into(),
        kind: "browser".into(),
        role: Role::Moderator,
        joined_at_ms: 1_700_000_000_000,
        left_at_ms: 1_700_000_060_000,
        bytes_sent: 1_000_000,
        bytes_received: 2_000_000,
        reason: "left".into(),
    }]);
    let recorder = json(&RecorderReport {
        name: "recorder-x".into(),
        url: "http://127.0.0.1:9".into(),
        recordings: 1,
    });
    c.add(
        t,
        "report-then-node-requests",
        records(&[
            (0, &json(&report)),
            (2, &split(b"node-x", &records_json)),
            (3, &split(b"node-x", b"standup")),
            (4, &split(b"node-x", b"node-a")),
            (5, &recorder),
        ]),
    );
    let mut indexed = node_report(1);
    indexed.index = Some(7);
    indexed.region = None;
    c.add(t, "report-with-index", records(&[(0, &json(&indexed))]));
    let stale = node_credential(kaskade_fuzz::locator::SECRET, "node-x", 1_000);
    let mut with_header = vec![stale.len() as u8];
    with_header.extend_from_slice(stale.as_bytes());
    with_header.extend_from_slice(&json(&report));
    c.add(t, "stale-credential", records(&[(1, &with_header)]));
    c.add(
        t,
        "credential-text",
        records(&[(3, b"Kaskade-Node node-a:1700000000:00ff")]),
    );

    let t = "locator_join";
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "named",
            json(&JoinRequest {
                name: "Alice".into(),
                ..JoinRequest::default()
            }),
        ),
        (
            "region",
            json(&JoinRequest {
                name: "Bob".into(),
                region: Some("us".into()),
                ..JoinRequest::default()
            }),
        ),
        (
            "pinned",
            json(&JoinRequest {
                node: Some("node-b".into()),
                ..JoinRequest::default()
            }),
        ),
        (
            "avoid",
            json(&JoinRequest {
                avoid_node: Some("node-a".into()),
                ..JoinRequest::default()
            }),
        ),
    ];
    for (name, body) in &bodies {
        c.add(
            t,
            format!("open-{name}"),
            records(&[(0, &split(b"standup", body))]),
        );
    }
    let token_join = |role: u8, rejoin: bool, body: &[u8]| {
        let mut seed = vec![role];
        seed.extend_from_slice(&600u16.to_be_bytes());
        seed.push(u8::from(rejoin));
        seed.push(5);
        seed.extend_from_slice(b"Carol");
        seed.extend_from_slice(&split(b"standup", body));
        seed
    };
    c.add(
        t,
        "token-joins",
        records(&[
            (1, &token_join(1, false, &bodies[1].1)),
            (1, &token_join(0, true, b"")),
            (1, &token_join(2, false, &bodies[2].1)),
        ]),
    );
    let bearer = b"Bearer not.a.token";
    let mut header = vec![bearer.len() as u8];
    header.extend_from_slice(bearer);
    header.extend_from_slice(&split(b"standup", b""));
    c.add(t, "bad-bearer", records(&[(2, &header)]));
    c.add(
        t,
        "operator-reads",
        records(&[
            (0, &split(b"standup", b"")),
            (3, b"\x00standup"),
            (3, b"\x01"),
            (3, b"\x02"),
        ]),
    );
    let host = b"locator.example.com:8443";
    let mut tokens = vec![host.len() as u8];
    tokens.extend_from_slice(host);
    tokens.extend_from_slice(
        br#"{"meeting":"standup","identity":"dave","name":"Dave","role":"moderator","ttl_seconds":600}"#,
    );
    c.add(t, "operator-token", records(&[(4, &tokens)]));
    c.add(
        t,
        "cdr-csv",
        records(&[
            (5, b"2026-03-01\x002026-03-02"),
            (5, b"1772366400\x00"),
            (5, b"2026-03-01T12:00:00Z\x002026-03-01T13:00:00+01:00"),
        ]),
    );
}

/// The video clip as RTP: `(seq offset, timestamp, marker, payload)` per packet.
fn video_packets(m: &Media, frames: usize) -> Vec<(u16, u32, bool, Bytes)> {
    let mut out = Vec::new();
    for (f, (payloads, _)) in m.video.iter().take(frames).enumerate() {
        for (i, payload) in payloads.iter().enumerate() {
            out.push((
                out.len() as u16,
                9000 * f as u32,
                i + 1 == payloads.len(),
                payload.clone(),
            ));
        }
    }
    out
}

fn recorder_depacketize(c: &mut Corpus, m: &Media) {
    let t = "recorder_depacketize";
    let packets = video_packets(m, 4);
    let push = |step: u16, flags: u8, payload: &[u8]| {
        let mut body = step.to_be_bytes().to_vec();
        body.push(flags);
        body.extend_from_slice(payload);
        body
    };
    let mut whole = Vec::new();
    let mut lossy = Vec::new();
    let mut last_ts = 0;
    for (i, (_, ts, marker, payload)) in packets.iter().enumerate() {
        let step = (ts - last_ts) as u16;
        last_ts = *ts;
        record(&mut whole, 0, &push(step, u8::from(*marker), payload));
        if i != 2 {
            let discontinuity = if i == 3 { 2 } else { 0 };
            record(
                &mut lossy,
                0,
                &push(step, u8::from(*marker) | discontinuity, payload),
            );
        }
    }
    record(&mut whole, 1, b"");
    c.add(t, "clip", whole);
    c.add(t, "clip-with-loss", lossy);
    let mut parsers = Vec::new();
    for packet in m.audio.iter().take(3) {
        record(&mut parsers, 2, packet);
    }
    record(&mut parsers, 2, &[0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 1, 0x68]);
    c.add(t, "parsers", parsers);
}

/// Records of the `recorder_participant` layout for one second of both tracks.
fn participant_records(m: &Media, seconds: usize) -> Vec<u8> {
    let packet = |step: u16, ssrc: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]| {
        let mut body = step.to_be_bytes().to_vec();
        body.push(ssrc);
        body.extend_from_slice(&seq.to_be_bytes());
        body.extend_from_slice(&ts.to_be_bytes());
        body.push(u8::from(marker));
        body.extend_from_slice(payload);
        body
    };
    let video = video_packets(m, 10 * seconds);
    let mut out = Vec::new();
    let mut video_iter = video.iter().peekable();
    for i in 0..50 * seconds {
        let audio = &m.audio[i % m.audio.len()];
        record(
            &mut out,
            0,
            &packet(20, 1, i as u16, 960 * i as u32, false, audio),
        );
        // ten video frames a second: every fifth audio packet
        if i % 5 == 0 {
            let frame_ts = video_iter.peek().map(|p| p.1);
            while let Some(p) = video_iter.next_if(|p| Some(p.1) == frame_ts) {
                record(&mut out, 1, &packet(0, 2, p.0, p.1, p.2, &p.3));
            }
        }
    }
    out
}

/// A fragmented MP4 the recorder's pipeline writes for `seconds` of the clips.
fn fragmented_mp4(m: &Media, audio: bool, video: bool, seconds: usize) -> Vec<u8> {
    let origin = Instant::now();
    let mut recorder = ParticipantRecorder::new(origin, Vec::new());
    let mut now = origin;
    let video_packets = video_packets(m, 10 * seconds);
    let mut next_video = 0;
    for i in 0..50 * seconds {
        now += Duration::from_millis(20);
        if audio {
            let packet = RtpPacket {
                ssrc: 1,
                sequence: i as u16,
                timestamp: 960 * i as u32,
                marker: false,
                payload: m.audio[i % m.audio.len()].to_vec(),
            };
            recorder
                .push(TrackKind::Audio, packet, now)
                .expect("recording audio");
        }
        while video
            && next_video < video_packets.len()
            && video_packets[next_video].1 <= 1800 * i as u32
        {
            let (seq, ts, marker, payload) = &video_packets[next_video];
            let packet = RtpPacket {
                ssrc: 2,
                sequence: *seq,
                timestamp: *ts,
                marker: *marker,
                payload: payload.to_vec(),
            };
            recorder
                .push(TrackKind::Video, packet, now)
                .expect("recording video");
            next_video += 1;
        }
    }
    recorder
        .finish(now + Duration::from_secs(1))
        .expect("finishing")
}

fn recorder(c: &mut Corpus, m: &Media) {
    c.add(
        "recorder_participant",
        "one-second",
        participant_records(m, 1),
    );
    let mut with_timers = participant_records(m, 1);
    record(&mut with_timers, 2, &[0, 200, 0x01, 0x00]);
    c.add(
        "recorder_participant",
        "one-second-then-timers",
        with_timers,
    );

    let both = fragmented_mp4(m, true, true, 2);
    let audio_only = fragmented_mp4(m, true, false, 2);
    let video_only = fragmented_mp4(m, false, true, 1);
    c.add("mp4_recovery", "audio-video", both.clone());
    c.add("mp4_recovery", "audio-only", audio_only.clone());
    c.add("mp4_recovery", "video-only", video_only);
    for (name, cut) in [
        ("cut-in-moov", 600),
        ("cut-mid", both.len() / 2),
        ("cut-tail", both.len() - 7),
    ] {
        c.add("mp4_recovery", name, both[..cut.min(both.len())].to_vec());
    }

    let t = "recording_at_rest";
    let keys = Keyring::parse(AT_REST_KEY).expect("a key");
    let encrypted = |layout: Layout, plain: &[u8], pieces: usize| {
        let mut writer = EncryptingWriter::new(Vec::new(), &keys, layout).expect("a writer");
        for piece in plain.chunks(plain.len().div_ceil(pieces).max(1)) {
            writer.write_all(piece).expect("encrypting");
            writer.flush().expect("flushing");
        }
        writer.finish().expect("finishing")
    };
    let small = &audio_only[..audio_only.len().min(1500)];
    let mut seed = vec![0];
    seed.extend_from_slice(&encrypted(Layout::Fixed, small, 1));
    c.add(t, "file-fixed", seed);
    let mut seed = vec![2];
    let streaming = encrypted(Layout::Streaming, small, 3);
    seed.extend_from_slice(&streaming[..streaming.len() - 5]);
    c.add(t, "file-streaming-cut", seed);
    let written = |mode: u8, repeat: u8, piece: u16, edits: &[(u32, u8)], cut: u32| {
        let mut seed = vec![mode, repeat];
        seed.extend_from_slice(&piece.to_be_bytes());
        seed.push(edits.len() as u8);
        for (at, xor) in edits {
            seed.extend_from_slice(&at.to_be_bytes());
            seed.push(*xor);
        }
        seed.extend_from_slice(&cut.to_be_bytes());
        seed.extend_from_slice(small);
        seed
    };
    c.add(t, "write-fixed", written(1, 0, 0, &[], 0));
    c.add(t, "write-streaming-pieces", written(5 | 2, 3, 400, &[], 0));
    c.add(
        t,
        "write-fixed-multichunk",
        written(1, 7, 19_999, &[(70_000, 1)], 0),
    );
    c.add(t, "write-streaming-cut", written(7, 2, 500, &[], 1200));

    let t = "recorder_http";
    let range = |flags: u8, value: &str| {
        let mut body = vec![flags];
        body.extend_from_slice(value.as_bytes());
        body
    };
    c.add(
        t,
        "ranges",
        records(&[
            (0, &range(3, "bytes=0-99")),
            (0, &range(2, "bytes=-500")),
            (0, &range(3, "bytes=65530-65600")),
            (0, &range(3, "bytes=199000-")),
            (0, &range(2, "bytes=0-1,5-6")),
            (0, &range(1, "bytes=0-10")),
            (0, &range(6, "")),
        ]),
    );
    c.add(
        t,
        "paths-and-lists",
        records(&[
            (1, b"fuzz\0rec-1\0plain.mp4\0x"),
            (1, b"fuzz\0..\0plain.mp4\0"),
            (2, b"fuzz\0x"),
            (3, b"Kaskade-Node locator:1700000000:00ff"),
            (
                5,
                br#"{"meeting":"fuzz","join_url":"http://127.0.0.1:9","token":"x"}"#,
            ),
        ]),
    );
    let mut parse = 200_003u64.to_be_bytes().to_vec();
    parse.push(0);
    parse.extend_from_slice(b"bytes=100-");
    c.add(t, "parse-range", records(&[(4, &parse)]));
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus"));
    let media = Media::encode();
    let mut corpus = Corpus::default();
    udp_demux(&mut corpus, &media);
    rtp_rtcp(&mut corpus, &media);
    node_datagrams(&mut corpus, &media);
    node_media(&mut corpus, &media);
    sdp_offer(&mut corpus);
    signaling_json(&mut corpus);
    token(&mut corpus);
    cascade(&mut corpus, &media);
    locator(&mut corpus);
    recorder_depacketize(&mut corpus, &media);
    recorder(&mut corpus, &media);
    corpus.write(&root).expect("writing the corpus");
}
