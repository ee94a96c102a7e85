//! The one task of a lean participant: it owns the media socket, the ICE checks, the DTLS
//! handshake, the SRTP contexts, the senders and the receive slots, and sleeps until the socket
//! is readable or the next of its deadlines (check, handshake retransmission, video frame,
//! audio packet) comes. Nothing per packet leaves the task but the sink call: datagrams are
//! read in bursts, their statistics counted under one lock per burst.
//!
//! Datagrams are told apart by their first byte (RFC 7983): STUN 0..=3, DTLS 20..=63, RTP and
//! RTCP 128..=191 (RTCP by its packet type, RFC 5761).

mod receive;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use rtc::crypto::RTCCryptoProvider;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use tokio::net::UdpSocket;

use super::dtls::{self, DtlsClient, SrtpContexts};
use super::ice::{CHECK_INTERVAL, CONSENT_INTERVAL, Credentials, IceChecks};
use super::sdp::{Answer, MID_EXT_ID, OfferParams, RID_EXT_ID};
use kaskade_client::audio::{OpusClip, parse_audio_level};
use kaskade_client::join::ReceivedPacket;
use kaskade_client::peer::{H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE, Shared, random_u32};
use kaskade_client::receive::{KeyframeWant, sink_packet};
use kaskade_client::send::{AudioSource, SimulcastExtensions, VideoEncodings};
use kaskade_client::session::Media;
use kaskade_client::signaling::MediaKind;
use kaskade_client::state::Event;
use kaskade_picture::receive::{H264Receiver, ReceiveOutcome, starts_keyframe};

/// Datagrams read before the task looks at its deadlines again.
const BURST: usize = 64;
/// Receive buffer per datagram (larger than any the node sends).
const DATAGRAM: usize = 2048;
/// The audio packet interval.
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

/// What the driver is built from.
pub(crate) struct DriverConfig {
    /// The participant's media socket.
    pub socket: UdpSocket,
    /// The participant's shared state.
    pub shared: Arc<Shared>,
    /// The signaling session the media belongs to.
    pub session: u64,
    /// What the offer said.
    pub offer: OfferParams,
    /// The node's answer.
    pub answer: Answer,
    /// The clips to publish.
    pub media: Media,
}

/// One receive slot.
struct RecvSlot {
    mid: String,
    kind: MediaKind,
    level_ext: Option<u8>,
    decoder: Option<H264Receiver>,
    keyframes: KeyframeWant,
}

/// One received packet waiting to be counted (and sunk) with the rest of its burst.
struct Arrival {
    slot: usize,
    len: u64,
    outcome: Option<ReceiveOutcome>,
    level: Option<u8>,
    arrival: Instant,
    sunk: Option<rtp::Packet>,
}

/// The senders, once media flows.
struct Senders {
    video: Option<(VideoEncodings, Duration, Instant)>,
    audio: Option<(AudioSource, Arc<OpusClip>, Instant)>,
    start: Instant,
    audio_sent: u64,
}

/// Everything one lean participant's task owns.
pub(crate) struct Driver {
    socket: UdpSocket,
    local: SocketAddr,
    shared: Arc<Shared>,
    session: u64,
    provider: Arc<dyn RTCCryptoProvider>,
    ice: IceChecks,
    candidates: Vec<SocketAddr>,
    node_fingerprint: String,
    /// The candidate that answered our checks: where media goes.
    node: Option<SocketAddr>,
    next_check: Instant,
    dtls: Option<DtlsClient>,
    srtp: Option<SrtpContexts>,
    media: Media,
    video_pt: u8,
    audio_pt: u8,
    audio_level_ext: Option<u8>,
    video_ssrc: Option<u32>,
    /// Our video's m-line, and how many simulcast layers we offered (none: one stream on
    /// `video_ssrc`).
    video_mid: String,
    video_layers: usize,
    audio_ssrc: Option<u32>,
    senders: Option<Senders>,
    slots: Vec<RecvSlot>,
    slot_by_ssrc: HashMap<u32, usize>,
    batch: Vec<Arrival>,
    buf: Box<[u8; DATAGRAM]>,
}

impl Driver {
    /// A driver for the negotiated session; nothing is sent before [`Driver::run`].
    pub fn new(config: DriverConfig) -> anyhow::Result<Self> {
        let DriverConfig {
            socket,
            shared,
            session,
            offer,
            answer,
            media,
        } = config;
        let local = socket.local_addr().context("the media socket's address")?;
        let candidates: Vec<SocketAddr> = answer
            .candidates
            .iter()
            .copied()
            .filter(|c| c.is_ipv4() == local.is_ipv4())
            .collect();
        anyhow::ensure!(
            !candidates.is_empty(),
            "no UDP candidate of the node in our address family"
        );
        let mut slots = Vec::new();
        let mut slot_by_ssrc = HashMap::new();
        for (ssrc, mid, kind) in answer.slots() {
            let level_ext = answer
                .sections
                .iter()
                .find(|s| s.mid == mid)
                .and_then(|s| s.audio_level_ext);
            slot_by_ssrc.insert(ssrc, slots.len());
            slots.push(RecvSlot {
                mid: mid.to_owned(),
                kind,
                level_ext,
                decoder: (kind == MediaKind::Video && shared.decode_video)
                    .then(H264Receiver::default),
                keyframes: KeyframeWant::default(),
            });
        }
        let accepted = |kind| {
            answer
                .publish_section(kind)
                .map(|s| (s.payload_types.first().copied(), s.audio_level_ext))
        };
        let audio = accepted(MediaKind::Audio);
        let video = accepted(MediaKind::Video);
        let credentials = Credentials::of(&offer, &answer);
        let tie_breaker = u64::from(random_u32()) << 32 | u64::from(random_u32());
        Ok(Self {
            socket,
            local,
            shared,
            session,
            provider: dtls::provider()?,
            ice: IceChecks::new(credentials, tie_breaker),
            candidates,
            node_fingerprint: answer.fingerprint.clone(),
            node: None,
            next_check: Instant::now(),
            dtls: None,
            srtp: None,
            media,
            video_pt: video.and_then(|v| v.0).unwrap_or(H264_PAYLOAD_TYPE),
            audio_pt: audio.and_then(|a| a.0).unwrap_or(OPUS_PAYLOAD_TYPE),
            audio_level_ext: audio.and_then(|a| a.1),
            // publish only what the node accepted
            video_ssrc: offer.video_ssrc.filter(|_| video.is_some()),
            video_mid: answer
                .publish_section(MediaKind::Video)
                .map(|s| s.mid.clone())
                .unwrap_or_default(),
            video_layers: offer.video_rids.len(),
            audio_ssrc: offer.audio_ssrc.filter(|_| audio.is_some()),
            senders: None,
            slots,
            slot_by_ssrc,
            batch: Vec::with_capacity(BURST),
            buf: Box::new([0; DATAGRAM]),
        })
    }

    /// Runs the participant's media until the task is aborted or the handshake fails.
    pub async fn run(mut self) {
        let sleep = tokio::time::sleep_until(self.next_deadline().into());
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().reset(self.next_deadline().into());
            tokio::select! {
                biased;
                ready = self.socket.readable() => {
                    if let Err(e) = ready {
                        tracing::warn!("lean participant: media socket: {e}");
                        break;
                    }
                    self.receive_burst();
                }
                _ = &mut sleep => {}
            }
            if let Err(e) = self.on_deadlines(Instant::now()) {
                tracing::warn!("lean participant: {e:#}");
                self.set_connection_state("failed", Instant::now());
                break;
            }
        }
    }

    /// The earliest of the task's deadlines.
    fn next_deadline(&self) -> Instant {
        let mut next = self.next_check;
        if let Some(t) = self.dtls.as_ref().and_then(DtlsClient::poll_timeout) {
            next = next.min(t);
        }
        if let Some(s) = &self.senders {
            if let Some((_, _, t)) = &s.video {
                next = next.min(*t);
            }
            if let Some((_, _, t)) = &s.audio {
                next = next.min(*t);
            }
        }
        next
    }

    /// Does what is due at `now`: checks, handshake retransmissions, media.
    fn on_deadlines(&mut self, now: Instant) -> anyhow::Result<()> {
        if now >= self.next_check {
            self.check(now)?;
        }
        if let Some(dtls) = &mut self.dtls
            && dtls.poll_timeout().is_some_and(|t| now >= t)
        {
            dtls.handle_timeout(now)?;
            self.flush_dtls();
        }
        self.send_media(now);
        Ok(())
    }

    /// Sends a binding request to the node (to every candidate until one answered).
    fn check(&mut self, now: Instant) -> anyhow::Result<()> {
        let request = self.ice.request(self.provider.crypto())?;
        match self.node {
            Some(node) => self.send_datagram(&request, node),
            None => {
                for i in 0..self.candidates.len() {
                    self.send_datagram(&request, self.candidates[i]);
                }
            }
        }
        let interval = if self.node.is_some() {
            CONSENT_INTERVAL
        } else {
            CHECK_INTERVAL
        };
        self.next_check = now + interval;
        Ok(())
    }

    /// Sends the video frames and audio packets that are due.
    fn send_media(&mut self, now: Instant) {
        let Some(mut senders) = self.senders.take() else {
            return;
        };
        if let Some((camera, period, next)) = &mut senders.video
            && now >= *next
        {
            // the frame's instant is its deadline's, like the ordinary sender's ticks
            for packet in camera.frame(*next, &self.shared) {
                self.send_rtp(&packet);
            }
            advance(next, *period, now);
        }
        if let Some((source, clip, next)) = &mut senders.audio
            && now >= *next
        {
            if self.shared.send_audio.load(Ordering::Relaxed) {
                let elapsed = now.saturating_duration_since(senders.start);
                let frame_no = (elapsed.as_millis() / AUDIO_INTERVAL.as_millis()) as u64;
                let payload = clip.frame(senders.audio_sent).clone();
                senders.audio_sent += 1;
                let packet = source.packet(frame_no, payload, &self.shared);
                self.send_rtp(&packet);
            }
            advance(next, AUDIO_INTERVAL, now);
        }
        self.senders = Some(senders);
    }

    /// Reads what the socket holds (up to [`BURST`] datagrams), then counts and sinks it.
    fn receive_burst(&mut self) {
        let now = Instant::now();
        for _ in 0..BURST {
            match self.socket.try_recv_from(&mut self.buf[..]) {
                Ok((len, from)) => self.on_datagram(now, len, from),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // an ICMP error of an earlier send, say: not the socket's end
                    tracing::debug!("lean participant: receiving: {e}");
                    break;
                }
            }
        }
        self.flush_arrivals();
    }

    fn on_datagram(&mut self, now: Instant, len: usize, from: SocketAddr) {
        let Some(&first) = self.buf.first().filter(|_| len > 0) else {
            return;
        };
        match first {
            0..=3 => self.on_stun(now, len, from),
            20..=63 if self.node == Some(from) => self.on_dtls(now, len),
            128..=191 if self.node == Some(from) => {
                if len > 1 && (192..=223).contains(&self.buf[1]) {
                    self.on_rtcp(len);
                } else {
                    self.on_rtp(now, len);
                }
            }
            _ => {}
        }
    }

    fn on_stun(&mut self, now: Instant, len: usize, from: SocketAddr) {
        if !self.candidates.contains(&from) {
            return;
        }
        let crypto = self.provider.crypto();
        if let Some(answer) = self.ice.answer_request(&self.buf[..len], from, crypto) {
            self.send_datagram(&answer, from);
            if self.node.is_none() {
                // the node's pair is checked now: nominate it at once
                self.next_check = now;
            }
            return;
        }
        if !self
            .ice
            .is_answer(&self.buf[..len], now, self.provider.crypto())
            || self.node.is_some()
        {
            return;
        }
        self.node = Some(from);
        self.next_check = now + CONSENT_INTERVAL;
        match DtlsClient::connect(now, self.local, from, &self.node_fingerprint) {
            Ok(dtls) => {
                self.dtls = Some(dtls);
                self.flush_dtls();
            }
            Err(e) => {
                tracing::warn!("lean participant: {e:#}");
                self.set_connection_state("failed", now);
            }
        }
    }

    fn on_dtls(&mut self, now: Instant, len: usize) {
        let Some(dtls) = &mut self.dtls else {
            return;
        };
        let completed = match dtls.handle(now, &self.buf[..len]) {
            Ok(completed) => completed,
            Err(e) => {
                tracing::debug!("lean participant: {e:#}");
                None
            }
        };
        self.flush_dtls();
        if let Some(srtp) = completed {
            self.srtp = Some(srtp);
            self.start_media(now);
            self.set_connection_state("connected", now);
        }
    }

    /// Starts the senders (DTLS is done): the first frame and packet at once.
    fn start_media(&mut self, now: Instant) {
        let video = self
            .media
            .video()
            .zip(self.video_ssrc)
            .and_then(|(clip, ssrc)| {
                let period = Duration::from_secs(1) / clip.config().fps.max(1);
                // the layers below the top one, which goes out on the offer's SSRC
                let below = self.video_layers.saturating_sub(1);
                let mut ssrcs: Vec<u32> = (0..below).map(|_| random_u32()).collect();
                ssrcs.push(ssrc);
                let ids = SimulcastExtensions {
                    mid: MID_EXT_ID,
                    rid: RID_EXT_ID,
                };
                let mid = Some((self.video_mid.as_str(), ids));
                let camera = self.media.camera(&ssrcs, self.video_pt, mid)?;
                Some((camera, period, now))
            });
        let audio = self.media.audio().zip(self.audio_ssrc).map(|(clip, ssrc)| {
            let source = AudioSource::new(ssrc, self.audio_pt, self.audio_level_ext);
            (source, Arc::clone(clip), now)
        });
        self.senders = Some(Senders {
            video,
            audio,
            start: now,
            audio_sent: 0,
        });
    }

    /// Encrypts and sends one of our RTP packets.
    fn send_rtp(&mut self, packet: &rtp::Packet) {
        let (Some(srtp), Some(node)) = (&mut self.srtp, self.node) else {
            return;
        };
        let sealed = packet
            .marshal()
            .map_err(|e| anyhow!("{e}"))
            .and_then(|plain| {
                srtp.local
                    .encrypt_rtp_with_header(&plain, &packet.header)
                    .map_err(|e| anyhow!("{e}"))
            });
        match sealed {
            Ok(sealed) => self.send_datagram(&sealed, node),
            Err(e) => tracing::debug!("lean participant: sealing RTP: {e}"),
        }
    }

    /// Asks the node for a keyframe on the slot stream `media_ssrc`.
    fn send_pli(&mut self, media_ssrc: u32) {
        let (Some(srtp), Some(node)) = (&mut self.srtp, self.node) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: self.video_ssrc.or(self.audio_ssrc).unwrap_or(1),
            media_ssrc,
        };
        let sealed = pli
            .marshal()
            .map_err(|e| anyhow!("{e}"))
            .and_then(|plain| srtp.local.encrypt_rtcp(&plain).map_err(|e| anyhow!("{e}")));
        match sealed {
            Ok(sealed) => {
                self.send_datagram(&sealed, node);
                self.shared.rtcp.plis_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!("lean participant: sealing a PLI: {e}"),
        }
    }

    fn flush_dtls(&mut self) {
        let Some(node) = self.node else {
            return;
        };
        while let Some(datagram) = self.dtls.as_mut().and_then(DtlsClient::poll_transmit) {
            self.send_datagram(&datagram, node);
        }
    }

    /// Sends without waiting: a datagram the socket cannot take now is dropped (counted as
    /// lost by its receivers, like any loss).
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.try_send_to(datagram, to) {
            tracing::debug!("lean participant: sending to {to}: {e}");
        }
    }

    fn set_connection_state(&self, state: &str, now: Instant) {
        let connected = state == "connected";
        self.shared.update_session(
            self.session,
            Some(Event::Connection(state.to_owned())),
            |s| {
                s.connection_state = state.to_owned();
                if connected && s.connected_at.is_none() {
                    s.connected_at = Some(now);
                }
            },
        );
    }
}

/// Moves a periodic deadline past `now`, skipping the periods missed (like a tokio interval's
/// `MissedTickBehavior::Skip`).
fn advance(next: &mut Instant, period: Duration, now: Instant) {
    *next += period;
    if *next <= now {
        let behind = now.duration_since(*next).as_nanos();
        let periods = behind / period.as_nanos().max(1) + 1;
        *next += period * u32::try_from(periods).unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_skip_missed_periods() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut next = t0;
        advance(&mut next, ms(50), t0);
        assert_eq!(next, t0 + ms(50), "on time: the next period");
        let mut next = t0;
        advance(&mut next, ms(50), t0 + ms(120));
        assert_eq!(next, t0 + ms(150), "late: the first period after now");
        let mut next = t0;
        advance(&mut next, ms(50), t0 + ms(50));
        assert_eq!(next, t0 + ms(100), "a deadline at now is past");
    }
}
