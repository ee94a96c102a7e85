//! [`RawParticipant`]: a synthetic participant of the raw forwarder, the same media as
//! kaskade's participants over the raw wire format. One task per participant does everything:
//! the looped H.264 clip at its frame rate (a latency stamp packet ahead of each frame, like
//! kaskade's senders), the Opus clip at 50 packets/s, a hello every second, and receiving:
//! each datagram is opened in place in one reused buffer; the only per-packet allocation is
//! the payload handed to the sink (and to the decoder, which shares it).
//!
//! The raw format has no RTCP and no header extensions: nobody asks for keyframes (the clip
//! has an IDR every 2 s, so a late receiver decodes from the next one), and the audio level
//! is not sent.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use ring::rand::SecureRandom;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::wire::{
    CONTROL_MAGIC, Control, ControlKind, ControlSender, MAX_DATAGRAM, MAX_PARTICIPANT_ID,
    MAX_PAYLOAD, ParticipantKey, RTP_HEADER_LEN, ReplayWindow, RtpHeader, Secret, TAG_LEN, room_id,
    ssrc, ssrc_owner,
};
use crate::load_peer::{LoadPeer, LoadSpec};
use kaskade_client::audio::{OPUS_FRAME_SAMPLES, OpusClip};
use kaskade_client::join::{MediaSink, ReceivedPacket};
use kaskade_client::latency;
use kaskade_client::peer::{H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE};
use kaskade_client::send::frame_packets;
use kaskade_client::signaling::{MediaKind, ParticipantId};
use kaskade_client::state::ParticipantStats;
use kaskade_client::video::{VIDEO_CLOCK_RATE, VideoClip, VideoClipConfig, VideoCursor};
use kaskade_picture::receive::H264Receiver;

/// How often a hello is repeated while joining.
const HELLO_RETRY: Duration = Duration::from_millis(250);
/// How often a joined participant says hello (the forwarder forgets it after 10 s of silence).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// The socket receive buffer asked for.
const RECEIVE_BUFFER: usize = 1 << 20;
/// Datagrams read in one go before the task looks at its timers again.
const RECEIVE_BURST: usize = 64;

/// Where raw participants join: the forwarder's address and the shared secret.
#[derive(Debug, Clone)]
pub struct RawTarget {
    /// The forwarder's UDP address (its ready line names it).
    pub addr: SocketAddr,
    /// The secret given to the forwarder.
    pub secret: Arc<Secret>,
}

impl RawTarget {
    /// The forwarder at `addr`, keyed with `secret`.
    pub fn new(addr: SocketAddr, secret: &str) -> Self {
        Self {
            addr,
            secret: Arc::new(Secret::new(secret.as_bytes())),
        }
    }
}

/// What the participant's task and its owner share.
#[derive(Debug, Default)]
struct Shared {
    stats: Mutex<ParticipantStats>,
    stop_sending: AtomicBool,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, ParticipantStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A synthetic participant of the raw forwarder (a [`LoadPeer`]).
#[derive(Debug)]
pub struct RawParticipant {
    id: ParticipantId,
    shared: Arc<Shared>,
    leave: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A participant id no other participant of this process has, and unlikely in another
/// process: a random base plus a counter.
fn next_participant_id() -> u32 {
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| random_u64() as u32 % MAX_PARTICIPANT_ID);
    base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % MAX_PARTICIPANT_ID
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    u64::from_be_bytes(bytes)
}

impl RawParticipant {
    /// Joins `spec.meeting` at the forwarder: encodes (or fetches) the clips, says hello until
    /// the forwarder acknowledges (within `spec.timeout`), then starts the participant's task.
    pub async fn join(spec: LoadSpec, target: &RawTarget) -> anyhow::Result<Self> {
        let (width, height) = spec.resolution;
        let config = VideoClipConfig::new(width, height, spec.fps, spec.video_bitrate_bps);
        let video = tokio::task::spawn_blocking(move || VideoClip::shared(config))
            .await
            .context("video encoder task")??;
        let audio = OpusClip::shared()?;
        let id = next_participant_id();
        let session = random_u64();
        let key = target.secret.participant_key(id, session);
        let local: IpAddr = match target.addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind((local, 0)).await.context("binding UDP")?;
        let _ =
            super::shell::set_socket_option(socket.as_raw_fd(), libc::SO_RCVBUF, RECEIVE_BUFFER);
        let counter = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let mut client = Client {
            id,
            control: ControlSender {
                room: room_id(&spec.meeting),
                participant: id,
                session,
                counter,
            },
            wire: Wire {
                key,
                socket,
                server: target.addr,
                buf: Box::new([0; MAX_DATAGRAM + 1]),
            },
            shared: Arc::new(Shared::default()),
            sink: spec.sink.clone(),
            decode_video: spec.decode_video,
            video: VideoCursor::new(video),
            audio,
            video_index: u64::from(random_u64() as u16),
            audio_index: u64::from(random_u64() as u16),
            video_ts0: random_u64() as u32,
            audio_ts0: random_u64() as u32,
            streams: HashMap::new(),
        };
        tokio::time::timeout(spec.timeout, client.hello_until_acked())
            .await
            .with_context(|| format!("no ack from the raw forwarder at {}", target.addr))??;
        let shared = Arc::clone(&client.shared);
        let (leave, left) = oneshot::channel();
        let task = tokio::spawn(client.run(spec.fps, left));
        Ok(Self {
            id: ParticipantId::from(id),
            shared,
            leave,
            task,
        })
    }
}

#[async_trait]
impl LoadPeer for RawParticipant {
    fn id(&self) -> ParticipantId {
        self.id
    }

    fn stats(&self) -> ParticipantStats {
        self.shared.stats().clone()
    }

    fn sees(&self, other: ParticipantId) -> bool {
        self.shared.stats().remotes.contains_key(&other)
    }

    async fn stop_sending(&self) -> anyhow::Result<()> {
        self.shared.stop_sending.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn leave(self: Box<Self>) -> anyhow::Result<()> {
        let Self { leave, task, .. } = *self;
        let _ = leave.send(());
        task.await.context("the participant's task")
    }
}

impl Wire {
    /// Seals packet `index` of its stream into the buffer and sends it.
    async fn send_media(&mut self, header: RtpHeader, index: u64, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD {
            tracing::warn!("a {} byte payload does not fit a datagram", payload.len());
            return;
        }
        let len = RTP_HEADER_LEN + payload.len() + TAG_LEN;
        let datagram = &mut self.buf[..len];
        header.write(datagram);
        datagram[RTP_HEADER_LEN..RTP_HEADER_LEN + payload.len()].copy_from_slice(payload);
        self.key.seal_media(datagram, index);
        if let Err(e) = self.socket.send_to(&self.buf[..len], self.server).await {
            tracing::debug!("raw send: {e}");
        }
    }
}

/// One received stream (publisher and kind).
struct RemoteStream {
    window: ReplayWindow,
    decoder: Option<H264Receiver>,
}

/// Everything the participant's task owns.
struct Client {
    id: u32,
    control: ControlSender,
    wire: Wire,
    shared: Arc<Shared>,
    sink: MediaSink,
    decode_video: bool,
    video: VideoCursor,
    audio: Arc<OpusClip>,
    /// Extended sequence numbers of the next packets sent.
    video_index: u64,
    audio_index: u64,
    video_ts0: u32,
    audio_ts0: u32,
    /// Received streams by SSRC.
    streams: HashMap<u32, RemoteStream>,
}

/// The participant's socket, key and datagram buffer.
struct Wire {
    key: ParticipantKey,
    socket: UdpSocket,
    server: SocketAddr,
    /// One datagram, sent or received (one byte more than the largest, to see oversized ones).
    buf: Box<[u8; MAX_DATAGRAM + 1]>,
}

impl Client {
    /// Sends a hello or bye with the next counter.
    async fn send_control(&mut self, kind: ControlKind) -> std::io::Result<()> {
        let datagram = self.control.next(kind, &self.wire.key);
        let wire = &self.wire;
        wire.socket
            .send_to(&datagram, wire.server)
            .await
            .map(|_| ())
    }

    /// Says hello every [`HELLO_RETRY`] until the forwarder acknowledges one.
    async fn hello_until_acked(&mut self) -> anyhow::Result<()> {
        loop {
            self.send_control(ControlKind::Hello).await?;
            let deadline = tokio::time::Instant::now() + HELLO_RETRY;
            let wire = &mut self.wire;
            while let Ok(received) =
                tokio::time::timeout_at(deadline, wire.socket.recv_from(&mut wire.buf[..])).await
            {
                let (len, from) = received.context("receiving")?;
                let datagram = &wire.buf[..len];
                let acked = Control::parse(datagram).is_some_and(|c| {
                    c.kind == ControlKind::Ack
                        && c.participant == self.id
                        && c.session == self.control.session
                        && c.verify(&wire.key, datagram)
                });
                if from == wire.server && acked {
                    return Ok(());
                }
            }
        }
    }

    /// The participant's life after joining, until `leave` fires (or its owner is dropped).
    async fn run(mut self, fps: u32, mut leave: oneshot::Receiver<()>) {
        let mut video_ticker = tokio::time::interval(Duration::from_secs(1) / fps.max(1));
        video_ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut audio_ticker = tokio::time::interval(Duration::from_millis(20));
        audio_ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        keepalive.reset();
        let start = Instant::now();
        let mut was_sending = false;
        let mut audio_sent: u64 = 0;
        loop {
            tokio::select! {
                _ = &mut leave => break,
                tick = video_ticker.tick() => {
                    let sending = !self.shared.stop_sending.load(Ordering::Relaxed);
                    if sending && !was_sending {
                        self.video.force_keyframe();
                    }
                    was_sending = sending;
                    if sending {
                        self.send_frame(tick.into_std(), start).await;
                    }
                }
                _ = audio_ticker.tick() => {
                    if !self.shared.stop_sending.load(Ordering::Relaxed) {
                        self.send_audio(audio_sent, start).await;
                        audio_sent += 1;
                    }
                }
                _ = keepalive.tick() => {
                    if let Err(e) = self.send_control(ControlKind::Hello).await {
                        tracing::debug!("raw hello: {e}");
                    }
                }
                received = self.wire.socket.recv_from(&mut self.wire.buf[..]) => {
                    let Ok((len, from)) = received else { continue };
                    self.receive(len, from);
                    for _ in 1..RECEIVE_BURST {
                        let wire = &mut self.wire;
                        let Ok((len, from)) = wire.socket.try_recv_from(&mut wire.buf[..]) else {
                            break;
                        };
                        self.receive(len, from);
                    }
                }
            }
        }
        if let Err(e) = self.send_control(ControlKind::Bye).await {
            tracing::debug!("raw bye: {e}");
        }
    }

    /// Sends the next video frame of the clip, a latency stamp first (the frame's instant is
    /// its tick's, like kaskade's senders).
    async fn send_frame(&mut self, tick: Instant, start: Instant) {
        let elapsed = tick.saturating_duration_since(start).as_secs_f64();
        let timestamp = self
            .video_ts0
            .wrapping_add((elapsed * f64::from(VIDEO_CLOCK_RATE)) as u32);
        let stamp = Some(latency::instant_us(tick));
        let frame = self.video.next_frame();
        let ssrc = ssrc(self.id, MediaKind::Video);
        let (mut packets, mut bytes) = (0, 0);
        let mut seq = self.video_index as u16;
        for packet in frame_packets(frame, stamp, ssrc, H264_PAYLOAD_TYPE, &mut seq, timestamp) {
            packets += 1;
            bytes += packet.payload.len() as u64;
            let index = self.video_index;
            self.video_index += 1;
            let header = RtpHeader {
                marker: packet.header.marker,
                payload_type: H264_PAYLOAD_TYPE,
                sequence: packet.header.sequence_number,
                timestamp,
                ssrc,
            };
            self.wire.send_media(header, index, &packet.payload).await;
        }
        let keyframe = frame.keyframe;
        let mut stats = self.shared.stats();
        stats.packets_sent += packets;
        stats.bytes_sent += bytes;
        stats.video_frames_sent += 1;
        stats.keyframes_sent += u64::from(keyframe);
    }

    /// Sends Opus packet number `n` of this participant.
    async fn send_audio(&mut self, n: u64, start: Instant) {
        let frame_no = (start.elapsed().as_millis() / 20) as u32;
        let timestamp = self
            .audio_ts0
            .wrapping_add(frame_no.wrapping_mul(OPUS_FRAME_SAMPLES));
        let payload = self.audio.frame(n);
        let index = self.audio_index;
        self.audio_index += 1;
        let header = RtpHeader {
            marker: false,
            payload_type: OPUS_PAYLOAD_TYPE,
            sequence: index as u16,
            timestamp,
            ssrc: ssrc(self.id, MediaKind::Audio),
        };
        self.wire.send_media(header, index, payload).await;
        let mut stats = self.shared.stats();
        stats.packets_sent += 1;
        stats.bytes_sent += payload.len() as u64;
        stats.audio_packets_sent += 1;
    }

    /// Opens, counts, decodes and sinks the datagram of `len` bytes in the buffer.
    fn receive(&mut self, len: usize, from: SocketAddr) {
        if from != self.wire.server {
            return;
        }
        let arrival = Instant::now();
        let datagram = &mut self.wire.buf[..len];
        let key = &self.wire.key;
        if datagram.first() == Some(&CONTROL_MAGIC) {
            return; // acks of keepalive hellos
        }
        let opened = RtpHeader::parse(datagram).and_then(|header| {
            let (publisher, kind) = ssrc_owner(header.ssrc);
            let publisher = ParticipantId::from(publisher);
            if publisher == ParticipantId::from(self.id) {
                return None;
            }
            let window = self
                .streams
                .get(&header.ssrc)
                .map_or_else(ReplayWindow::default, |s| s.window);
            let index = window.index(header.sequence);
            if !window.is_new(index) || !key.open_media(datagram, index) {
                return None;
            }
            // a stream is remembered once a packet of it proved authentic
            let stream = self
                .streams
                .entry(header.ssrc)
                .or_insert_with(|| RemoteStream {
                    window,
                    decoder: (kind == MediaKind::Video && self.decode_video)
                        .then(H264Receiver::default),
                });
            stream.window.mark(index);
            Some((header, publisher, kind, stream))
        });
        let Some((header, publisher, kind, stream)) = opened else {
            self.shared.stats().unattributed_packets += 1;
            return;
        };
        let payload = Bytes::copy_from_slice(&datagram[RTP_HEADER_LEN..len - TAG_LEN]);
        let outcome = stream.decoder.as_mut().map(|decoder| {
            decoder.push(
                arrival,
                header.sequence,
                header.timestamp,
                header.marker,
                payload.clone(),
            )
        });
        let bytes = payload.len() as u64;
        self.shared.stats().count_received(
            Some(publisher),
            kind,
            bytes,
            outcome.as_ref(),
            None,
            arrival,
        );
        (self.sink.0)(ReceivedPacket {
            from: publisher,
            kind,
            packet: rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker: header.marker,
                    payload_type: header.payload_type,
                    sequence_number: header.sequence,
                    timestamp: header.timestamp,
                    ssrc: header.ssrc,
                    ..Default::default()
                },
                payload,
            },
            arrival,
        });
    }
}
