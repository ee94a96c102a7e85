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
use kaskade_sfu::cascade::frame::{self, LinkStream, RelayedRtp};
use kaskade_sfu::media::demux::ufrag_for;
use kaskade_sfu::media::red::{RED_PAYLOAD_TYPE, RedEncoder};
use kaskade_sfu::media::simulcast::LayerSet;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::shared::marshal::Marshal;
use std::io::Write as _;

mod locator;
mod messages;
mod recorder;
mod sfu;

use locator::locator;
use messages::{cascade, signaling_json, token};
use recorder::{recorder, recorder_depacketize};
use sfu::{node_datagrams, node_media, red_audio, rtp_rtcp, sdp_offer, sip_sdp, udp_demux};

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
        video_rids: Vec::new(),
        cname: "fuzzcname0".into(),
        recv_slots,
        rtx: true,
        red: true,
        congestion_feedback: true,
    })
}

fn relayed(kind: MediaKind, seq: u16, payload: &[u8], level: Option<u8>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame::put_rtp(
        &mut buf,
        &RelayedRtp {
            publisher: node::REMOTE_ID,
            kind,
            layer: 0,
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
                        layers: LayerSet::ALL,
                    },
                    StreamRef {
                        publisher: node::FIRST_ID,
                        kind: MediaKind::Video,
                        layers: LayerSet::NONE.with(1),
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
        dial: false,
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializing")
}

fn split(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    out.push(0);
    out.extend_from_slice(b);
    out
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
    red_audio(&mut corpus, &media);
    node_datagrams(&mut corpus, &media);
    node_media(&mut corpus, &media);
    sdp_offer(&mut corpus);
    sip_sdp(&mut corpus);
    signaling_json(&mut corpus);
    token(&mut corpus);
    cascade(&mut corpus, &media);
    locator(&mut corpus);
    recorder_depacketize(&mut corpus, &media);
    recorder(&mut corpus, &media);
    corpus.write(&root).expect("writing the corpus");
}
