//! A SIP leg's RTP: the sockets the far end's audio and video arrive on (an even RTP port and
//! RTCP on the next, as room systems expect), what each packet becomes on its way into the
//! meeting, and the RTCP keyframe request kaskade sends to the far end.
//!
//! Into the meeting, a packet keeps its SSRC, sequence number and timestamp (the core's
//! forwarder rewrites them per subscriber) and takes the payload type the leg publishes with:
//! H.264 and Opus pass through with only that byte changed; G.722 and G.711 are transcoded to
//! Opus.

use crate::sip::dtmf::KeyReceiver;
use crate::sip::h264::{fragments, rtp_header, rtp_parts};
use crate::sip::sdp::{Agreement, AudioCodec};
use crate::transcode::{self, AudioTranscoder, Law, SourceAudio};
use bytes::BytesMut;
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::UdpSocket;

/// The payload type a leg's video is published with (its audio: [`transcode::PAYLOAD_TYPE`]).
pub const VIDEO_PAYLOAD_TYPE: u8 = 96;

/// Attempts at finding an even port whose next port is free too.
const PAIR_ATTEMPTS: usize = 32;

/// One media line's sockets: RTP on an even port, RTCP on the next.
pub struct RtpPair {
    /// The RTP socket (shared with what sends on it in the background: DTMF).
    pub rtp: Arc<UdpSocket>,
    /// The RTCP socket.
    pub rtcp: UdpSocket,
}

impl RtpPair {
    /// Binds an even port and the one after it on `ip`.
    pub async fn bind(ip: IpAddr) -> std::io::Result<Self> {
        for _ in 0..PAIR_ATTEMPTS {
            let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let port = rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
                return Ok(Self {
                    rtp: Arc::new(rtp),
                    rtcp,
                });
            }
        }
        Err(std::io::Error::other(
            "no free pair of RTP and RTCP ports for a SIP leg",
        ))
    }

    /// The RTP port.
    pub fn port(&self) -> u16 {
        self.rtp.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

/// Remembers where a socket's packets come from: the first source whose packet is taken
/// (symmetric RTP: the far end may sit behind a NAT that changed its port) is kept, and packets
/// from anywhere else are dropped, so nobody can slip media into the call.
#[derive(Debug, Default)]
pub struct Latch(Option<SocketAddr>);

impl Latch {
    /// Whether a packet from `from` may belong to the call (nothing taken yet, or from there).
    pub fn allows(&self, from: SocketAddr) -> bool {
        self.0.is_none_or(|source| source == from)
    }

    /// A packet from `from` was taken: the call's source is there from now on (on an SRTP
    /// line, only a packet that authenticated is taken, so a stranger's first packet cannot
    /// hold the latch).
    pub fn take(&mut self, from: SocketAddr) {
        self.0.get_or_insert(from);
    }

    /// The far end's address, once it sent something.
    pub fn source(&self) -> Option<SocketAddr> {
        self.0
    }
}

/// How the far end's audio becomes the leg's Opus.
enum AudioIn {
    /// Opus: the payload type changed, nothing else (the subscribers' own jitter buffers take
    /// it as it comes).
    Opus,
    /// G.722 or G.711, put back in order, then transcoded; its timestamps extended past their
    /// 32-bit wrap.
    Transcoded(Box<AudioTranscoder>, Reorder, Extender),
}

/// Keys pressed and not yet taken, at most: a phone pressing faster than the menu reads.
const MAX_KEYS: usize = 32;

/// The largest H.264 payload sent into the meeting: a larger NAL unit of the far end's goes
/// in FU-A fragments (room systems in mode 0 send keyframes of many kilobytes in one packet).
const MAX_VIDEO_PAYLOAD: usize = 1_200;
/// The widest gap in the far end's video numbering kept as a gap (more is a jump, not loss).
const MAX_GAP: u16 = 1_000;

/// The far end's video as the meeting gets it: its payload type, and the numbering of what
/// goes in (fragmenting changes the count).
struct VideoIn {
    payload_type: u8,
    seq: u16,
    last_in: Option<u16>,
    scratch: Vec<u8>,
}

/// What the far end's packets become in the meeting.
pub struct IntoMeeting {
    audio: Option<(u8, AudioIn)>,
    video: Option<VideoIn>,
    /// The SSRC of the far end's video, once seen (what keyframe requests name).
    pub video_ssrc: Option<u32>,
    /// The payload type of the far end's telephone events, and the keys they carried.
    events: Option<(u8, KeyReceiver)>,
    keys: Vec<char>,
}

impl IntoMeeting {
    /// For the media `agreement` names; transcoded audio gets SSRC `ssrc` and sequence numbers
    /// from `seq`.
    pub fn new(agreement: &Agreement, ssrc: u32, seq: u16) -> Result<Self, String> {
        let audio = match &agreement.audio {
            Some(line) if line.flow.receive => {
                let source = match line.codec {
                    AudioCodec::Opus => None,
                    AudioCodec::G722 => Some(SourceAudio::G722),
                    AudioCodec::Pcmu => Some(SourceAudio::G711(Law::MuLaw)),
                    AudioCodec::Pcma => Some(SourceAudio::G711(Law::ALaw)),
                };
                let into = match source {
                    None => AudioIn::Opus,
                    Some(source) => AudioIn::Transcoded(
                        Box::new(AudioTranscoder::new(&source, ssrc, seq)?),
                        Reorder::default(),
                        Extender::default(),
                    ),
                };
                Some((line.receive_payload_type, into))
            }
            _ => None,
        };
        let video = agreement
            .video
            .as_ref()
            .filter(|line| line.flow.receive)
            .map(|line| VideoIn {
                payload_type: line.receive_payload_type,
                seq: 0,
                last_in: None,
                scratch: Vec::new(),
            });
        let events = agreement
            .audio
            .as_ref()
            .filter(|line| line.flow.receive)
            .and_then(|line| line.telephone_event)
            .map(|events| (events.payload_type, KeyReceiver::default()));
        Ok(Self {
            audio,
            video,
            video_ssrc: None,
            events,
            keys: Vec::new(),
        })
    }

    /// The keys the far end pressed (RFC 4733) since the last call.
    pub fn take_keys(&mut self) -> Vec<char> {
        std::mem::take(&mut self.keys)
    }

    /// The sequence number its transcoded audio goes on with, when it transcodes: a new
    /// agreement (a re-INVITE) continues the stream from it, so the meeting sees no jump back.
    pub fn next_seq(&self) -> Option<u16> {
        match &self.audio {
            Some((_, AudioIn::Transcoded(transcoder, ..))) => Some(transcoder.next_seq()),
            _ => None,
        }
    }

    /// An audio datagram from the far end: its Opus packets for the meeting, appended to `out`;
    /// a telephone event's key kept for [`Self::take_keys`]. Anything else (comfort noise,
    /// garbage) is dropped.
    pub fn audio(&mut self, datagram: &[u8], out: &mut Vec<BytesMut>) {
        let Some((payload_type, into)) = &mut self.audio else {
            return;
        };
        let received = rtp_payload_type(datagram);
        if let Some((events, keys)) = &mut self.events
            && received == Some(*events)
        {
            if let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut &datagram[..])
                && let Some(key) = keys.push(packet.header.timestamp, &packet.payload)
                && self.keys.len() < MAX_KEYS
            {
                self.keys.push(key);
            }
            return;
        }
        if received != Some(*payload_type) {
            return;
        }
        match into {
            AudioIn::Opus => out.push(with_payload_type(datagram, transcode::PAYLOAD_TYPE)),
            AudioIn::Transcoded(transcoder, reorder, extender) => {
                let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut &datagram[..]) else {
                    return;
                };
                reorder.push(packet, |packet| {
                    let timestamp = extender.extend(packet.header.timestamp);
                    transcoder.push(timestamp, &packet.payload, out);
                });
            }
        }
    }

    /// A video datagram from the far end: its H.264 packets for the meeting, appended to `out`
    /// (a NAL unit too large for one datagram in FU-A fragments; a loss stays a gap).
    pub fn video(&mut self, datagram: &[u8], out: &mut Vec<BytesMut>) {
        let Some(video) = &mut self.video else {
            return;
        };
        let Some(parts) = rtp_parts(datagram).filter(|p| p.payload_type == video.payload_type)
        else {
            return;
        };
        self.video_ssrc = Some(parts.ssrc);
        match video.last_in {
            None => video.seq = parts.seq,
            Some(last) => {
                let gap = parts.seq.wrapping_sub(last).wrapping_sub(1);
                if gap != 0 && gap < MAX_GAP {
                    video.seq = video.seq.wrapping_add(gap);
                }
            }
        }
        video.last_in = Some(parts.seq);
        let seq = &mut video.seq;
        fragments(
            parts.payload,
            MAX_VIDEO_PAYLOAD,
            &mut video.scratch,
            |payload, last| {
                let marker = parts.marker && last;
                let header = rtp_header(
                    (marker, VIDEO_PAYLOAD_TYPE),
                    *seq,
                    parts.timestamp,
                    parts.ssrc,
                );
                let mut packet = BytesMut::with_capacity(header.len() + payload.len());
                packet.extend_from_slice(&header);
                packet.extend_from_slice(payload);
                out.push(packet);
                *seq = seq.wrapping_add(1);
            },
        );
    }
}

/// The payload type of an RTP packet (version 2, a whole fixed header), or `None`.
pub fn rtp_payload_type(datagram: &[u8]) -> Option<u8> {
    (datagram.len() >= 12 && datagram[0] >> 6 == 2).then(|| datagram[1] & 0x7f)
}

/// The packet with its payload type replaced (the marker bit kept).
fn with_payload_type(datagram: &[u8], payload_type: u8) -> BytesMut {
    let mut packet = BytesMut::from(datagram);
    packet[1] = (packet[1] & 0x80) | payload_type;
    packet
}

/// Out-of-order packets held for the one missing before them: packets that come in order
/// leave at once; a later one waits until the gap fills or [`REORDER_DEPTH`] wait behind it
/// (then the gap is given up as lost); a packet older than what left, or a duplicate, is
/// dropped. The transcoder then sees one stream in order, as a codec wants it.
#[derive(Debug, Default)]
pub struct Reorder {
    next: Option<u16>,
    held: std::collections::BTreeMap<u16, rtc::rtp::Packet>,
}

/// Packets held at most for a missing one (60 ms of 20 ms audio).
const REORDER_DEPTH: usize = 3;

impl Reorder {
    /// Takes one packet; calls `emit` with every packet that leaves, in order.
    pub fn push(&mut self, packet: rtc::rtp::Packet, mut emit: impl FnMut(rtc::rtp::Packet)) {
        let next = *self.next.get_or_insert(packet.header.sequence_number);
        // how far ahead of the next expected packet it is (negative: already past)
        let ahead = packet.header.sequence_number.wrapping_sub(next) as i16;
        if ahead < 0 || self.held.contains_key(&(ahead as u16)) {
            return;
        }
        self.held.insert(ahead as u16, packet);
        loop {
            if let Some(packet) = self.held.remove(&0) {
                emit(packet);
                self.skip(1);
            } else if self.held.len() > REORDER_DEPTH {
                // the missing packet is lost: go on from the first one held
                let first = self.held.keys().next().copied().unwrap_or(0);
                self.skip(first);
            } else {
                break;
            }
        }
    }

    /// Moves the next expected packet `by` on; what is held is counted from there.
    fn skip(&mut self, by: u16) {
        self.next = self.next.map(|n| n.wrapping_add(by));
        self.held = std::mem::take(&mut self.held)
            .into_iter()
            .map(|(offset, packet)| (offset - by, packet))
            .collect();
    }
}

/// Extends 32-bit RTP timestamps past their wrap-around.
#[derive(Debug, Default)]
struct Extender {
    last: Option<(u32, i64)>,
}

impl Extender {
    fn extend(&mut self, timestamp: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(timestamp),
            Some((raw, extended)) => extended + i64::from(timestamp.wrapping_sub(raw) as i32),
        };
        self.last = Some((timestamp, extended));
        extended
    }
}

/// An RTCP compound packet asking the far end's video `media_ssrc` for a keyframe: an empty
/// receiver report, a PLI (RFC 4585) and a FIR (RFC 5104, numbered by `fir_seq`), so an end
/// that understands either acts.
pub fn keyframe_request(sender_ssrc: u32, media_ssrc: u32, fir_seq: u8) -> Vec<u8> {
    use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::receiver_report::ReceiverReport;
    let report = ReceiverReport {
        ssrc: sender_ssrc,
        ..Default::default()
    };
    let pli = PictureLossIndication {
        sender_ssrc,
        media_ssrc,
    };
    let fir = FullIntraRequest {
        sender_ssrc,
        media_ssrc,
        fir: vec![FirEntry {
            ssrc: media_ssrc,
            sequence_number: fir_seq,
        }],
    };
    let mut out = Vec::with_capacity(48);
    for bytes in [report.marshal(), pli.marshal(), fir.marshal()]
        .into_iter()
        .flatten()
    {
        out.extend_from_slice(&bytes);
    }
    out
}

#[cfg(test)]
mod tests;
