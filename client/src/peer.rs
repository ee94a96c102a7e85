//! The participant's WebRTC side: one `webrtc` 0.21 peer connection laid out as
//! docs/SIGNALING.md section 2 asks, and the state its tasks share (the media senders live in
//! `send.rs`, the per-slot receivers in `receive.rs`).
//!
//! Codecs: Opus (PT 111) and H.264 constrained baseline 42e01f, packetization mode 1 (PT 102),
//! with the RFC 6464 audio level extension registered for audio. The default interceptors
//! (`register_default_interceptors`) generate NACKs for our losses, answer the node's NACKs from
//! their send buffer, and send RTCP reports; [`crate::rtcp_tap`] counts the feedback and hands
//! PLI/FIR to the video sender, which answers with a keyframe at the next frame.

use crate::join::MediaSink;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{broadcast, mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::audio::{AUDIO_LEVEL_URI, OPUS_CLOCK_RATE};
use crate::rtcp_tap::{self, RtcpCounters};
use crate::state::{Event, MeetingState, ParticipantStats};
use crate::video::VIDEO_CLOCK_RATE;

/// Payload type offered for Opus.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Payload type offered for H.264.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// The H.264 fmtp line offered.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Counters of what was sent (kept as atomics; merged into the stats snapshot).
#[derive(Debug, Default)]
pub struct SendCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub video_frames: AtomicU64,
    pub audio_packets: AtomicU64,
    pub keyframes: AtomicU64,
    pub keyframes_forced: AtomicU64,
}

/// State shared by the participant handle and its tasks.
pub struct Shared {
    pub state: std::sync::Mutex<MeetingState>,
    pub events: broadcast::Sender<Event>,
    pub version: watch::Sender<u64>,
    pub rtcp: Arc<RtcpCounters>,
    pub sent: SendCounters,
    pub audio_level: AtomicU8,
    pub send_audio: AtomicBool,
    pub send_video: AtomicBool,
    pub force_keyframe: AtomicBool,
    pub gathering_done: watch::Sender<bool>,
    /// Decode received video.
    pub decode_video: bool,
    /// Send a latency stamp ahead of each video frame ([`crate::latency`]).
    pub latency_stamps: bool,
    /// Where received packets also go.
    pub sink: Option<MediaSink>,
    /// The current session's number; callbacks of earlier sessions are ignored.
    session: AtomicU64,
}

impl Shared {
    pub fn new(cfg: &crate::JoinConfig) -> Self {
        Self {
            decode_video: cfg.decode_video,
            latency_stamps: cfg.latency_stamps,
            sink: cfg.sink.clone(),
            state: std::sync::Mutex::new(MeetingState::default()),
            events: broadcast::channel(4096).0,
            version: watch::channel(0).0,
            rtcp: Arc::new(RtcpCounters::default()),
            sent: SendCounters::default(),
            audio_level: AtomicU8::new(cfg.audio_level),
            send_audio: AtomicBool::new(true),
            send_video: AtomicBool::new(true),
            force_keyframe: AtomicBool::new(false),
            gathering_done: watch::channel(false).0,
            session: AtomicU64::new(0),
        }
    }

    /// Starts a session and returns its number: from now on the callbacks and tasks of earlier
    /// sessions change nothing, and what belonged to the last session is cleared.
    pub fn begin_session(&self) -> u64 {
        self.gathering_done.send_replace(false);
        let mut state = self.state.lock().expect("state lock");
        let session = self.session.fetch_add(1, Ordering::Relaxed) + 1;
        state.new_session();
        drop(state);
        self.version.send_modify(|v| *v += 1);
        session
    }

    /// Runs `f` on the state while `session` is the current one; `None` once it is not.
    pub fn with_session<R>(
        &self,
        session: u64,
        f: impl FnOnce(&mut MeetingState) -> R,
    ) -> Option<R> {
        let mut state = self.state.lock().expect("state lock");
        self.is_current(session).then(|| f(&mut state))
    }

    /// Whether `session` is the current session.
    pub fn is_current(&self, session: u64) -> bool {
        self.session.load(Ordering::Relaxed) == session
    }

    /// [`Shared::update`] for an event of `session`: dropped if a newer session started.
    pub fn update_session(
        &self,
        session: u64,
        event: Option<Event>,
        f: impl FnOnce(&mut MeetingState),
    ) {
        if self.with_session(session, f).is_some() {
            self.version.send_modify(|v| *v += 1);
            if let Some(event) = event {
                let _ = self.events.send(event);
            }
        }
    }

    /// Runs `f` on the state, bumps the version and emits `event`.
    pub fn update(&self, event: Option<Event>, f: impl FnOnce(&mut MeetingState)) {
        f(&mut self.state.lock().expect("state lock"));
        self.version.send_modify(|v| *v += 1);
        if let Some(event) = event {
            let _ = self.events.send(event);
        }
    }

    /// Waits until the peer connection has connected (DTLS done), so that no media is written
    /// before the SRTP keys exist.
    pub async fn connected(&self) {
        let mut version = self.version.subscribe();
        while self.with_state(|s| s.connected_at.is_none()) {
            if version.changed().await.is_err() {
                return;
            }
        }
    }

    /// Adds what the atomics counted (sent media, RTCP feedback) to `stats`, a snapshot of the
    /// state's statistics.
    pub fn add_counters(&self, stats: &mut ParticipantStats) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (sent, rtcp) = (&self.sent, &self.rtcp);
        stats.packets_sent += get(&sent.packets);
        stats.bytes_sent += get(&sent.bytes);
        stats.video_frames_sent += get(&sent.video_frames);
        stats.audio_packets_sent += get(&sent.audio_packets);
        stats.keyframes_sent += get(&sent.keyframes);
        stats.keyframes_forced += get(&sent.keyframes_forced);
        stats.plis_received += get(&rtcp.plis_received);
        stats.firs_received += get(&rtcp.firs_received);
        stats.plis_sent += get(&rtcp.plis_sent);
        stats.nacks_received += get(&rtcp.nacks_received);
        stats.nacked_packets_received += get(&rtcp.nacked_packets_received);
        stats.nacks_sent += get(&rtcp.nacks_sent);
        stats.nacked_packets_sent += get(&rtcp.nacked_packets_sent);
    }

    /// Runs `f` on the state without notifying (per-packet statistics).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut MeetingState) -> R) -> R {
        f(&mut self.state.lock().expect("state lock"))
    }
}

struct Handler {
    shared: Arc<Shared>,
    session: u64,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete && self.shared.is_current(self.session) {
            self.shared.gathering_done.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let name = state.to_string();
        let connected = state == RTCPeerConnectionState::Connected;
        self.shared
            .update_session(self.session, Some(Event::Connection(name.clone())), |s| {
                s.connection_state = name;
                if connected && s.connected_at.is_none() {
                    s.connected_at = Some(Instant::now());
                }
            });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Called inline by the driver: hand off, never block here.
        let _ = self.tracks.send(track);
    }
}

/// The local sending tracks.
pub struct LocalTracks {
    pub audio: Option<(Arc<TrackLocalStaticRTP>, u32)>,
    /// The video track and the SSRCs of its encodings, lowest first.
    pub video: Option<(Arc<TrackLocalStaticRTP>, Vec<u32>)>,
}

/// A built peer connection with its transceivers.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub local: LocalTracks,
    pub tracks_rx: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: OPUS_CLOCK_RATE,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}

fn h264_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: VIDEO_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![RTCPFeedback {
                typ: "ccm".to_owned(),
                parameter: "fir".to_owned(),
            }],
        },
        payload_type: H264_PAYLOAD_TYPE,
    }
}

/// The RTP stream ids of a simulcast publisher's layers, lowest first, as the web client
/// names them.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];
/// The header extension that names a packet's m-line (RFC 8843).
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// The header extension that names a packet's simulcast layer (RFC 8852).
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// Process-unique pseudo-random 32-bit values (SSRCs, initial sequence numbers).
pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 16) as u32
}

/// A local track of `kind` with one encoding per `(ssrc, rid)` (an empty rid: one stream).
fn local_track(
    kind: RtpCodecKind,
    codec: &RTCRtpCodecParameters,
    encodings: &[(u32, &str)],
) -> TrackLocalStaticRTP {
    let label = format!("kaskade-loadtest-{kind}");
    let ssrc = encodings.first().map_or(0, |(ssrc, _)| *ssrc);
    let codings = encodings
        .iter()
        .map(|&(ssrc, rid)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rid: rid.to_owned(),
                ..Default::default()
            },
            codec: codec.rtp_codec.clone(),
            ..Default::default()
        })
        .collect();
    TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("kaskade-loadtest-{ssrc:08x}"),
        format!("{label}-{ssrc:08x}"),
        label,
        kind,
        codings,
    ))
}

fn init(direction: RTCRtpTransceiverDirection) -> Option<RTCRtpTransceiverInit> {
    Some(RTCRtpTransceiverInit {
        direction,
        streams: vec![],
        send_encodings: vec![],
    })
}

/// Builds the peer connection of `session` and adds transceivers in the protocol's order.
pub async fn build(
    shared: &Arc<Shared>,
    session: u64,
    local_ip: IpAddr,
    publish_audio: bool,
    publish_video: bool,
    video_rids: &[&str],
    recv_slots: usize,
) -> Result<Peer> {
    let mut media_engine = MediaEngine::default();
    let (opus, h264) = (opus_codec(), h264_codec());
    media_engine.register_codec(opus.clone(), RtpCodecKind::Audio)?;
    media_engine.register_codec(h264.clone(), RtpCodecKind::Video)?;
    let mut extensions = vec![(AUDIO_LEVEL_URI, RtpCodecKind::Audio)];
    if !video_rids.is_empty() {
        extensions.extend([MID_URI, RID_URI].map(|uri| (uri, RtpCodecKind::Video)));
    }
    for (uri, kind) in extensions {
        let uri = uri.to_owned();
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri },
            kind,
            None,
        )?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let registry = rtcp_tap::register(registry, Arc::clone(&shared.rtcp));
    let (tracks_tx, tracks_rx) = mpsc::unbounded_channel();
    let handler = Arc::new(Handler {
        shared: Arc::clone(shared),
        session,
        tracks: tracks_tx,
    });
    // kaskade hands out plain IP candidates; mDNS would also need a multicast-capable
    // interface, which a network namespace with only loopback (a recorder's) does not have
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec![SocketAddr::new(local_ip, 0)])
        .build()
        .await
        .context("building peer connection")?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    let mut local = LocalTracks {
        audio: None,
        video: None,
    };
    if publish_audio {
        let ssrc = random_u32();
        let track = Arc::new(local_track(RtpCodecKind::Audio, &opus, &[(ssrc, "")]));
        pc.add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            init(RTCRtpTransceiverDirection::Sendonly),
        )
        .await?;
        local.audio = Some((track, ssrc));
    }
    if publish_video {
        let rids = if video_rids.is_empty() {
            &[""][..]
        } else {
            video_rids
        };
        let encodings: Vec<(u32, &str)> = rids.iter().map(|&rid| (random_u32(), rid)).collect();
        let track = Arc::new(local_track(RtpCodecKind::Video, &h264, &encodings));
        pc.add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            init(RTCRtpTransceiverDirection::Sendonly),
        )
        .await?;
        local.video = Some((track, encodings.iter().map(|(ssrc, _)| *ssrc).collect()));
    }
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        for _ in 0..recv_slots {
            pc.add_transceiver_from_kind(kind, init(RTCRtpTransceiverDirection::Recvonly))
                .await?;
        }
    }
    Ok(Peer {
        pc,
        local,
        tracks_rx,
    })
}

/// Rewrites the answer's UDP candidates to `via` and drops its TCP candidates, so all media of
/// this client goes through a relay at `via`.
pub fn rewrite_candidates(sdp: &str, via: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = trimmed.strip_prefix("a=candidate:") {
            let mut fields: Vec<&str> = rest.split(' ').collect();
            // foundation component transport priority address port typ ...
            if fields.len() >= 6 {
                if !fields[2].eq_ignore_ascii_case("udp") {
                    continue;
                }
                let ip = via.ip().to_string();
                let port = via.port().to_string();
                fields[4] = &ip;
                fields[5] = &port;
                out.push_str("a=candidate:");
                out.push_str(&fields.join(" "));
                out.push_str("\r\n");
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// Negotiated payload type and (optionally) the id of `ext_uri` for a sender.
pub(crate) async fn sender_params(
    sender: &Arc<dyn RtpSender>,
    ext_uri: &str,
) -> Result<(u8, Option<u8>)> {
    let params = sender.get_parameters().await?;
    let pt = params
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or_else(|| anyhow!("sender has no negotiated codec"))?;
    let ext = params
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == ext_uri)
        .map(|e| e.id as u8);
    Ok((pt, ext))
}
