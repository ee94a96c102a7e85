//! One participant in-process: the lean client's pieces (a hand-written offer, STUN checks, a
//! DTLS client, SRTP contexts) with no socket. It takes datagrams and time, and hands back the
//! datagrams it sends; what it receives is decrypted and recorded (RED audio as the Opus packets
//! it carries, as a browser plays it). Like a browser, it reports what it received every second
//! (RTCP receiver reports) and NACKs what it misses.

use anyhow::{Context, anyhow};
use bytes::BytesMut;
use kaskade_loadtest::lean::dtls::{self, DtlsClient, SrtpContexts};
use kaskade_loadtest::lean::ice::{Credentials, IceChecks};
use kaskade_loadtest::lean::sdp::{self, Answer, OfferParams};
use kaskade_media::media::red::RedUnwrap;
use kaskade_protocol::signaling::{MediaKind, ParticipantId, Welcome};
use rtc::crypto::RTCCryptoProvider;
use rtc::interceptor::{
    Interceptor, Packet as InterceptedPacket, RTPHeaderExtension, StreamInfo, TaggedPacket,
    TwccReceiverBuilder, TwccReceiverInterceptor,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Consent checks are sent this often once connected.
const CONSENT_INTERVAL: Duration = Duration::from_secs(2);
/// A packet still missing this long after its NACK is NACKed again.
const NACK_INTERVAL: Duration = Duration::from_millis(120);
/// NACKs sent for one packet at most.
const MAX_NACKS: u8 = 8;
/// Receiver reports are sent this often.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// An RTP packet a client received, decrypted.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// The consumer (receive slot) SSRC it came on.
    pub ssrc: u32,
    /// Its sequence number as the node wrote it.
    pub seq: u16,
    /// Its timestamp as the node wrote it.
    pub timestamp: u32,
    /// Its payload type (Opus's for what came as RED).
    pub payload_type: u8,
    /// Its payload.
    pub payload: bytes::Bytes,
}

/// The congestion feedback of a client whose answer numbers what the node sends it.
fn congestion_feedback(answer: &Answer) -> Option<TwccReceiverInterceptor> {
    let id = answer.sections.iter().find_map(|s| s.transport_cc_ext)?;
    let mut feedback = TwccReceiverBuilder::new().build();
    for (ssrc, _, _) in answer.slots() {
        feedback.bind_remote_stream(&StreamInfo {
            ssrc,
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: sdp::TRANSPORT_CC_URI.into(),
                id: id.into(),
            }],
            ..Default::default()
        });
    }
    Some(feedback)
}

/// What arrived on one consumer SSRC, for receiver reports (RFC 3550 appendix A.3).
#[derive(Debug, Default)]
struct Reception {
    /// The highest sequence number, extended with its wrap count.
    highest: Option<u32>,
    first: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
}

impl Reception {
    fn note(&mut self, seq: u16) {
        self.received += 1;
        let extended = match self.highest {
            None => {
                self.first = u32::from(seq);
                u32::from(seq)
            }
            Some(highest) => {
                let delta = seq.wrapping_sub(highest as u16);
                if delta < 0x8000 {
                    highest + u32::from(delta)
                } else {
                    highest
                }
            }
        };
        self.highest = Some(extended);
    }

    /// This interval's report block: the share lost since the last one.
    fn report(&mut self, ssrc: u32) -> ReceptionReport {
        let highest = self.highest.unwrap_or(self.first);
        let expected = highest - self.first + 1;
        let (expected_interval, received_interval) = (
            expected - self.expected_prior,
            self.received - self.received_prior,
        );
        (self.expected_prior, self.received_prior) = (expected, self.received);
        let lost = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost * 256)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost: expected.saturating_sub(self.received),
            last_sequence_number: highest,
            ..Default::default()
        }
    }
}

/// What a client offers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offering<'a> {
    /// The SSRCs of the audio and video it publishes (none: it only receives).
    pub publish: Option<(u32, u32)>,
    /// The RTP stream ids of its video's simulcast layers, lowest first (none: one stream).
    pub video_rids: &'a [&'a str],
    /// It sends transport-wide congestion feedback (as browsers do), from which the node
    /// estimates its downlink.
    pub congestion_feedback: bool,
}

/// A participant whose datagrams the simulation carries.
pub struct Client {
    /// Its participant id.
    pub id: ParticipantId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its node's media address.
    pub node: SocketAddr,
    /// What it offered (its publish SSRCs among it).
    pub offer: OfferParams,
    /// The node's answer (its slots' SSRCs among it).
    pub answer: Answer,
    ice: IceChecks,
    ice_answered: bool,
    dtls: Option<DtlsClient>,
    srtp: Option<SrtpContexts>,
    last_check: Option<Instant>,
    provider: Arc<dyn RTCCryptoProvider>,
    /// Every RTP packet received, in arrival order.
    pub received: Vec<Received>,
    /// Keyframe requests (PLI or FIR) the node sent for its video.
    pub keyframe_requests: usize,
    /// The media SSRC each keyframe request named, in order (a simulcast layer's).
    pub keyframes_asked_of: Vec<u32>,
    /// NACKed sequence numbers the node asked it to send again.
    pub nacks: usize,
    /// Retransmissions received on a repair stream (RTX), recorded as the packets they repair.
    pub rtx_received: usize,
    /// Sequence numbers it NACKed (a gap in what it received), in total.
    pub nacks_sent: usize,
    /// Audio packets that came as RED (RFC 2198).
    pub red_received: usize,
    /// Audio packets lost on the way and made good from the RED packets after them.
    pub red_recovered: usize,
    /// What arrived on each consumer SSRC since the last receiver report.
    reception: HashMap<u32, Reception>,
    last_report: Option<Instant>,
    /// One RED unwrapper per audio slot that got RED.
    red: HashMap<u32, RedUnwrap>,
    /// Transport-wide congestion feedback on what it receives, where the node agreed to it.
    feedback: Option<TwccReceiverInterceptor>,
    /// The highest sequence number received on each consumer SSRC.
    highest: HashMap<u32, u16>,
    /// Sequence numbers missing on each consumer SSRC: when last NACKed, and how often.
    missing: HashMap<(u32, u16), (Instant, u8)>,
}

impl Client {
    /// A client at `addr`, admitted to a meeting (its `welcome`), that offers what `offering`
    /// says; `negotiate` hands its offer to the node and returns the answer. `seed` makes its
    /// ICE tie-breaker.
    pub fn negotiate(
        id: ParticipantId,
        welcome: &Welcome,
        (addr, node): (SocketAddr, SocketAddr),
        offering: &Offering,
        seed: u64,
        negotiate: impl FnOnce(String) -> anyhow::Result<String>,
    ) -> anyhow::Result<Self> {
        let Offering {
            publish,
            video_rids,
            ..
        } = offering;
        let (_, fingerprint) = dtls::identity()?;
        let offer = OfferParams {
            ufrag: format!("sim{seed}"),
            pwd: format!("simnet-client-password-{seed:04}"),
            fingerprint: fingerprint.clone(),
            audio_ssrc: publish.map(|(audio, _)| audio),
            video_ssrc: publish.map(|(_, video)| video),
            video_rids: video_rids.iter().map(|r| r.to_string()).collect(),
            cname: format!("simcname{seed}"),
            recv_slots: welcome.recv_slots,
            rtx: true,
            red: true,
            congestion_feedback: offering.congestion_feedback,
        };
        let answer_sdp = negotiate(sdp::offer(&offer))?;
        let answer = Answer::parse(&answer_sdp).map_err(|e| anyhow!("answer: {e}"))?;
        let ice = IceChecks::new(
            Credentials::of(&offer, &answer),
            0x0123_4567_89ab_cdef ^ seed,
        );
        let feedback = congestion_feedback(&answer);
        Ok(Self {
            id,
            addr,
            node,
            offer,
            answer,
            ice,
            ice_answered: false,
            dtls: None,
            srtp: None,
            last_check: None,
            provider: dtls::provider()?,
            received: Vec::new(),
            keyframe_requests: 0,
            keyframes_asked_of: Vec::new(),
            nacks: 0,
            rtx_received: 0,
            nacks_sent: 0,
            red_received: 0,
            red_recovered: 0,
            reception: HashMap::new(),
            last_report: None,
            red: HashMap::new(),
            feedback,
            highest: HashMap::new(),
            missing: HashMap::new(),
        })
    }

    /// Whether DTLS completed (SRTP keys are there).
    pub fn connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// The consumer SSRC of its receive slot `mid`.
    pub fn slot_ssrc(&self, mid: &str) -> Option<u32> {
        self.answer
            .slots()
            .find(|(_, m, _)| *m == mid)
            .map(|(ssrc, _, _)| ssrc)
    }

    /// The consumer SSRCs of its slots of `kind`.
    pub fn slot_ssrcs(&self, kind: MediaKind) -> Vec<u32> {
        self.answer
            .slots()
            .filter(|(_, _, k)| *k == kind)
            .map(|(ssrc, _, _)| ssrc)
            .collect()
    }

    /// What it sends when its timers are due at `now`: the first ICE check, consent checks,
    /// DTLS retransmissions.
    pub fn poll(&mut self, now: Instant) -> Vec<BytesMut> {
        let mut out = Vec::new();
        let due = match self.last_check {
            None => true,
            Some(t) if !self.ice_answered => {
                now.saturating_duration_since(t) >= Duration::from_millis(50)
            }
            Some(t) => now.saturating_duration_since(t) >= CONSENT_INTERVAL,
        };
        if due && let Ok(request) = self.ice.request(self.provider.crypto()) {
            self.last_check = Some(now);
            out.push(BytesMut::from(&request[..]));
        }
        if let Some(dtls) = &mut self.dtls
            && dtls.poll_timeout().is_some_and(|t| t <= now)
        {
            let _ = dtls.handle_timeout(now);
        }
        self.drain_dtls(&mut out);
        self.renack(now, &mut out);
        self.send_feedback(now, &mut out);
        if self.connected()
            && self
                .last_report
                .is_none_or(|t| now.saturating_duration_since(t) >= REPORT_INTERVAL)
        {
            self.last_report = Some(now);
            out.extend(self.seal_receiver_report());
        }
        out
    }

    /// When [`Self::poll`] must next run.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let check = self.last_check.map(|t| {
            t + if self.ice_answered {
                CONSENT_INTERVAL
            } else {
                Duration::from_millis(50)
            }
        });
        let dtls = self.dtls.as_ref().and_then(DtlsClient::poll_timeout);
        let renack = self
            .missing
            .values()
            .map(|(at, _)| *at + NACK_INTERVAL)
            .min();
        let report = self.last_report.map(|t| t + REPORT_INTERVAL);
        let feedback = self.feedback.as_mut().and_then(|f| f.poll_timeout());
        [check, dtls, renack, report, feedback]
            .into_iter()
            .flatten()
            .min()
    }

    /// Takes one datagram from the node at `now`; returns its answers.
    pub fn receive(&mut self, now: Instant, datagram: &[u8]) -> Vec<BytesMut> {
        let mut out = Vec::new();
        match datagram.first() {
            Some(0..=3) => self.on_stun(now, datagram, &mut out),
            Some(20..=63) => {
                if let Some(dtls) = &mut self.dtls
                    && let Ok(Some(srtp)) = dtls.handle(now, datagram)
                {
                    self.srtp = Some(srtp);
                }
                self.drain_dtls(&mut out);
            }
            Some(128..=191) => {
                if let Some(nack) = self.on_srtp(now, datagram) {
                    out.push(nack);
                }
            }
            _ => {}
        }
        out
    }

    fn on_stun(&mut self, now: Instant, datagram: &[u8], out: &mut Vec<BytesMut>) {
        let crypto = self.provider.crypto();
        if let Some(answer) = self.ice.answer_request(datagram, self.node, crypto) {
            out.push(BytesMut::from(&answer[..]));
        } else if self.ice.is_answer(datagram, now, crypto) && !self.ice_answered {
            self.ice_answered = true;
            if let Ok(dtls) =
                DtlsClient::connect(now, self.addr, self.node, &self.answer.fingerprint)
            {
                self.dtls = Some(dtls);
                self.drain_dtls(out);
            }
        }
    }

    /// Decrypts and records one SRTP or SRTCP datagram; a NACK to send when an RTP packet
    /// shows a gap.
    fn on_srtp(&mut self, now: Instant, datagram: &[u8]) -> Option<BytesMut> {
        let srtp = self.srtp.as_mut()?;
        let is_rtcp = datagram.get(1).is_some_and(|pt| (192..=223).contains(pt));
        if is_rtcp {
            let plain = srtp.remote.decrypt_rtcp(datagram).ok()?;
            let packets = rtc::rtcp::packet::unmarshal(&mut plain.freeze()).ok()?;
            for packet in packets {
                let any = packet.as_any();
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    self.keyframe_requests += 1;
                    self.keyframes_asked_of.push(pli.media_ssrc);
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    self.keyframe_requests += 1;
                    self.keyframes_asked_of
                        .extend(fir.fir.iter().map(|e| e.ssrc));
                }
                if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                    self.nacks += nack
                        .nacks
                        .iter()
                        .map(|n| n.packet_list().len())
                        .sum::<usize>();
                }
            }
            return None;
        }
        let header = rtp::Header::unmarshal(&mut &datagram[..]).ok()?;
        let plain = srtp
            .remote
            .decrypt_rtp_with_header(datagram, &header)
            .ok()?;
        let mut packet = rtp::Packet::unmarshal(&mut &plain[..]).ok()?;
        self.unwrap_repair(&mut packet)?;
        let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
        self.reception.entry(ssrc).or_default().note(seq);
        if let Some(feedback) = &mut self.feedback {
            let _ = feedback.handle_read(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: InterceptedPacket::Rtp(packet.clone()).into(),
            });
            while feedback.poll_read().is_some() {}
        }
        if let Some((red, opus)) = self.red_payload_types()
            && packet.header.payload_type == red
        {
            self.red_received += 1;
            let unwrap = self
                .red
                .entry(ssrc)
                .or_insert_with(|| RedUnwrap::new(red, opus));
            let mut carried = Vec::new();
            let unwrapped = unwrap.unwrap(packet, |p| carried.push(p)).ok()?;
            self.red_recovered += unwrapped.recovered;
            for packet in carried {
                self.record(now, packet);
            }
            return None;
        }
        self.record(now, packet)
            .and_then(|missing| self.seal_nack(ssrc, &missing))
    }

    /// Records a received packet; the sequence numbers it shows missing.
    fn record(&mut self, now: Instant, packet: rtp::Packet) -> Option<Vec<u16>> {
        let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
        self.missing.remove(&(ssrc, seq));
        let missing: Vec<u16> = match self.highest.get(&ssrc) {
            Some(&highest) if seq.wrapping_sub(highest) < 0x8000 => {
                (1..seq.wrapping_sub(highest).min(64))
                    .map(|d| highest.wrapping_add(d))
                    .collect()
            }
            _ => Vec::new(),
        };
        if self
            .highest
            .get(&ssrc)
            .is_none_or(|&h| seq.wrapping_sub(h) < 0x8000)
        {
            self.highest.insert(ssrc, seq);
        }
        self.received.push(Received {
            at: now,
            ssrc,
            seq,
            timestamp: packet.header.timestamp,
            payload_type: packet.header.payload_type,
            payload: packet.payload,
        });
        for &lost in &missing {
            self.missing.insert((ssrc, lost), (now, 1));
        }
        Some(missing)
    }

    /// The payload types the node accepted for RED and for the Opus in it, if it did.
    fn red_payload_types(&self) -> Option<(u8, u8)> {
        self.offer.red.then_some(())?;
        let audio = &self
            .answer
            .sections
            .iter()
            .find(|s| s.kind == Some(MediaKind::Audio))?
            .payload_types;
        let red = audio
            .iter()
            .copied()
            .find(|&pt| pt == sdp::RED_PAYLOAD_TYPE)?;
        let opus = audio.iter().copied().find(|&pt| pt != red)?;
        Some((red, opus))
    }

    /// The transport-wide congestion feedback due at `now`, sealed.
    fn send_feedback(&mut self, now: Instant, out: &mut Vec<BytesMut>) {
        let Some(feedback) = &mut self.feedback else {
            return;
        };
        if feedback.poll_timeout().is_some_and(|t| t <= now) {
            let _ = feedback.handle_timeout(now);
        }
        let mut packets = Vec::new();
        while let Some(message) = feedback.poll_write() {
            if let InterceptedPacket::Rtcp(rtcp) = message.message.packet {
                packets.extend(rtcp);
            }
        }
        for packet in packets {
            let sealed = packet
                .marshal()
                .ok()
                .and_then(|plain| self.seal_rtcp(&plain));
            out.extend(sealed);
        }
    }

    /// A marshalled RTCP packet, sealed (none before DTLS completed).
    fn seal_rtcp(&mut self, plain: &[u8]) -> Option<BytesMut> {
        let sealed = self.srtp.as_mut()?.local.encrypt_rtcp(plain).ok()?;
        Some(BytesMut::from(&sealed[..]))
    }

    /// A receiver report on every consumer SSRC it received from, sealed.
    fn seal_receiver_report(&mut self) -> Option<BytesMut> {
        let reports: Vec<ReceptionReport> = self
            .reception
            .iter_mut()
            .map(|(&ssrc, reception)| reception.report(ssrc))
            .collect();
        if reports.is_empty() {
            return None;
        }
        let report = ReceiverReport {
            ssrc: 1,
            reports,
            ..Default::default()
        };
        self.seal_rtcp(&report.marshal().ok()?)
    }

    /// Turns a retransmission on a slot's repair stream into the packet it repairs (RFC 4588:
    /// the original sequence number leads the payload); `None` for one with nothing to repair.
    fn unwrap_repair(&mut self, packet: &mut rtp::Packet) -> Option<()> {
        let Some(media) = self
            .answer
            .sections
            .iter()
            .flat_map(|s| &s.repairs)
            .find(|&&(_, rtx)| rtx == packet.header.ssrc)
            .map(|&(media, _)| media)
        else {
            return Some(());
        };
        let osn = packet.payload.get(..2)?;
        packet.header.sequence_number = u16::from_be_bytes([osn[0], osn[1]]);
        packet.header.ssrc = media;
        packet.payload = packet.payload.slice(2..);
        self.rtx_received += 1;
        Some(())
    }

    /// NACKs again, an interval after the last NACK, what is still missing (as browsers do;
    /// at most [`MAX_NACKS`] times each).
    fn renack(&mut self, now: Instant, out: &mut Vec<BytesMut>) {
        let mut due: HashMap<u32, Vec<u16>> = HashMap::new();
        self.missing.retain(|&(ssrc, seq), (at, count)| {
            if now.saturating_duration_since(*at) >= NACK_INTERVAL {
                if *count >= MAX_NACKS {
                    return false;
                }
                *at = now;
                *count += 1;
                due.entry(ssrc).or_default().push(seq);
            }
            true
        });
        for (ssrc, mut seqs) in due {
            seqs.sort_unstable();
            out.extend(self.seal_nack(ssrc, &seqs));
        }
    }

    fn seal_nack(&mut self, media_ssrc: u32, seqs: &[u16]) -> Option<BytesMut> {
        if seqs.is_empty() {
            return None;
        }
        self.nacks_sent += seqs.len();
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        };
        self.seal_rtcp(&nack.marshal().ok()?)
    }

    /// The payload type the node accepted for its `kind`.
    pub fn publish_payload_type(&self, kind: MediaKind) -> Option<u8> {
        self.answer
            .publish_section(kind)
            .and_then(|s| s.payload_types.first().copied())
    }

    fn drain_dtls(&mut self, out: &mut Vec<BytesMut>) {
        if let Some(dtls) = &mut self.dtls {
            out.extend(std::iter::from_fn(|| dtls.poll_transmit()));
        }
    }

    /// An RTP packet of its own, sealed for the node.
    pub fn seal_rtp(&mut self, packet: &rtp::Packet) -> anyhow::Result<BytesMut> {
        let srtp = self.srtp.as_mut().context("not connected")?;
        let plain = packet.marshal().map_err(|e| anyhow!("{e}"))?;
        let sealed = srtp
            .local
            .encrypt_rtp_with_header(&plain, &packet.header)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(BytesMut::from(&sealed[..]))
    }

    /// A PLI asking for a keyframe of what its consumer `media_ssrc` carries, sealed.
    pub fn seal_pli(&mut self, media_ssrc: u32) -> anyhow::Result<BytesMut> {
        let srtp = self.srtp.as_mut().context("not connected")?;
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc,
        };
        let plain = pli.marshal().map_err(|e| anyhow!("{e}"))?;
        let sealed = srtp
            .local
            .encrypt_rtcp(&plain)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(BytesMut::from(&sealed[..]))
    }
}
