//! The node's own send path to a participant: what the fan-out writes to its consumers (and
//! resends on their repair streams) is numbered for transport-wide congestion control, noted
//! in the send history its TWCC feedback is matched against, sealed once with the
//! participant's SRTP key into a datagram, and counted for the sender reports the node sends
//! for its consumers' SSRCs itself. No packet crosses the peer connection's pipeline.
//!
//! Transport-wide numbering and the send history stay rtc's interceptors (`TwccSender` and
//! the congestion controller around `bwe::DownlinkEstimator`), called directly: two calls a
//! packet, no chain, no queue between them.

use crate::media::bwe::{DownlinkEstimate, DownlinkEstimator, TwccStreamsOnly};
use crate::media::surroundings::WallClock;
use bytes::BytesMut;
use rtc::interceptor::{
    AttributedPacket, CongestionControlBuilder, CongestionControlInterceptor, Interceptor, Packet,
    StreamInfo, TaggedPacket, TwccSenderBuilder, TwccSenderInterceptor,
};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error as RtcError;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use std::time::{Duration, Instant};

/// How often each consumer that sent anything gets a sender report (rtc's interval, and
/// Chromium's for video).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// The largest RTP packet the node writes, header included.
const MAX_PACKET: usize = 1_500;

/// What a consumer sent, for its sender reports.
#[derive(Debug, Clone)]
struct Sent {
    ssrc: u32,
    clock_rate: u32,
    packets: u32,
    octets: u32,
    /// The newest RTP timestamp sent and when.
    last: Option<(u32, Instant)>,
    /// Sent anything since the last report.
    fresh: bool,
}

/// A participant's send path.
pub struct SendPath {
    twcc: TwccStreamsOnly<TwccSenderInterceptor>,
    congestion: TwccStreamsOnly<CongestionControlInterceptor<DownlinkEstimator>>,
    sent: Vec<Sent>,
    wall: WallClock,
    next_report: Instant,
    /// Where a packet is marshalled before it is sealed.
    scratch: Vec<u8>,
}

impl SendPath {
    /// A send path whose congestion feedback drives `downlink` (`label` names the
    /// participant in the estimator's logs); `wall` dates its sender reports.
    pub fn new(now: Instant, downlink: DownlinkEstimate, label: String, wall: WallClock) -> Self {
        Self {
            twcc: TwccStreamsOnly(TwccSenderBuilder::new().build()),
            congestion: TwccStreamsOnly(
                CongestionControlBuilder::new(DownlinkEstimator::new(downlink, label)).build(),
            ),
            sent: Vec::new(),
            wall,
            next_report: now + REPORT_INTERVAL,
            scratch: vec![0; MAX_PACKET],
        }
    }

    /// Adds a consumer's stream (and its repair stream, which `info` names), in consumer
    /// order.
    pub fn add_stream(&mut self, info: &StreamInfo) {
        self.twcc.bind_local_stream(info);
        self.congestion.bind_local_stream(info);
        self.sent.push(Sent {
            ssrc: info.ssrc,
            clock_rate: info.clock_rate,
            packets: 0,
            octets: 0,
            last: None,
            fresh: false,
        });
    }

    /// Numbers `packet` of consumer `index` (a resend on its repair stream when `resend`),
    /// notes it in the send history and seals it with `key`: the datagram to send.
    pub fn seal(
        &mut self,
        now: Instant,
        index: usize,
        packet: rtc::rtp::Packet,
        resend: bool,
        key: &mut Context,
    ) -> Result<BytesMut, RtcError> {
        if !resend && let Some(sent) = self.sent.get_mut(index) {
            sent.packets = sent.packets.wrapping_add(1);
            sent.octets = sent.octets.wrapping_add(packet.payload.len() as u32);
            sent.last = Some((packet.header.timestamp, now));
            sent.fresh = true;
        }
        let held = || RtcError::Other("the congestion control interceptors held a packet".into());
        let mut packet = tagged(now, Packet::Rtp(packet));
        self.twcc.handle_write(packet)?;
        packet = self.twcc.poll_write().ok_or_else(held)?;
        self.congestion.handle_write(packet)?;
        packet = self.congestion.poll_write().ok_or_else(held)?;
        let Packet::Rtp(rtp) = packet.message.packet else {
            return Err(held());
        };
        if rtp.marshal_size() > self.scratch.len() {
            return Err(RtcError::ErrBufferTooSmall);
        }
        let len = rtp.marshal_to(&mut self.scratch)?;
        key.encrypt_rtp_with_header(&self.scratch[..len], &rtp.header)
    }

    /// The participant's RTCP, as it arrived: its congestion feedback reaches the estimator.
    pub fn handle_rtcp(&mut self, now: Instant, packets: Vec<Box<dyn RtcpPacket>>) {
        if self
            .congestion
            .handle_read(tagged(now, Packet::Rtcp(packets)))
            .is_ok()
        {
            while self.congestion.poll_read().is_some() {}
        }
    }

    /// Sender reports of the consumers that sent since the last, when they are due.
    pub fn poll_reports(&mut self, now: Instant) -> Option<Vec<Box<dyn RtcpPacket>>> {
        if now < self.next_report {
            return None;
        }
        self.next_report = now + REPORT_INTERVAL;
        let ntp_time = ntp(self.wall.unix_micros(now));
        let reports: Vec<Box<dyn RtcpPacket>> = self
            .sent
            .iter_mut()
            .filter(|s| s.fresh)
            .filter_map(|sent| {
                sent.fresh = false;
                let (timestamp, at) = sent.last?;
                let elapsed = now.saturating_duration_since(at);
                let ticks = elapsed.as_micros() as u64 * u64::from(sent.clock_rate) / 1_000_000;
                Some(Box::new(SenderReport {
                    ssrc: sent.ssrc,
                    ntp_time,
                    rtp_time: timestamp.wrapping_add(ticks as u32),
                    packet_count: sent.packets,
                    octet_count: sent.octets,
                    ..Default::default()
                }) as Box<dyn RtcpPacket>)
            })
            .collect();
        (!reports.is_empty()).then_some(reports)
    }

    /// When [`Self::handle_timeout`] or [`Self::poll_reports`] is due next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let reports = self
            .sent
            .iter()
            .any(|s| s.fresh)
            .then_some(self.next_report);
        [
            reports,
            self.congestion.poll_timeout(),
            self.twcc.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drives the congestion controller's timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        self.congestion.handle_timeout(now)?;
        self.twcc.handle_timeout(now)
    }
}

fn tagged(now: Instant, packet: Packet) -> TaggedPacket {
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(packet),
    }
}

/// A Unix time in microseconds as a 64-bit NTP timestamp (RFC 3550 §4).
fn ntp(unix_micros: u64) -> u64 {
    let seconds = unix_micros / 1_000_000 + NTP_UNIX_OFFSET;
    let fraction = ((unix_micros % 1_000_000) << 32) / 1_000_000;
    seconds << 32 | fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::protection_profile::ProtectionProfile;

    fn key() -> Context {
        let provider = rtc::crypto::default_provider().unwrap();
        Context::new(
            &[7; 32],
            &[9; 12],
            ProtectionProfile::AeadAes256Gcm,
            None,
            None,
            provider.crypto(),
        )
        .unwrap()
    }

    fn packet(seq: u16, timestamp: u32) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 102,
                sequence_number: seq,
                timestamp,
                ssrc: 7,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[1; 100]),
        }
    }

    #[test]
    fn a_consumer_that_sent_gets_a_sender_report_with_its_counts_and_clock() {
        let start = Instant::now();
        let wall = WallClock::new(start, 1_700_000_000_000);
        let mut path = SendPath::new(start, DownlinkEstimate::default(), "t".into(), wall);
        path.add_stream(&StreamInfo {
            ssrc: 7,
            clock_rate: 90_000,
            ..Default::default()
        });
        let mut key = key();
        assert_eq!(path.poll_timeout(), None, "nothing sent, nothing to report");
        for seq in 0..3 {
            let sealed = path
                .seal(start, 0, packet(seq, 1_000), false, &mut key)
                .unwrap();
            assert_eq!(sealed.len(), 12 + 100 + 16, "header, payload, tag");
        }
        path.seal(start, 0, packet(1, 1_000), true, &mut key)
            .unwrap();
        let due = path.poll_timeout().expect("a report is due");
        assert!(path.poll_reports(due - Duration::from_millis(1)).is_none());
        let at = start + Duration::from_millis(1_500);
        let reports = path.poll_reports(at).expect("reports");
        let report = reports[0].as_any().downcast_ref::<SenderReport>().unwrap();
        assert_eq!(
            (report.ssrc, report.packet_count),
            (7, 3),
            "the resend is not counted"
        );
        assert_eq!(report.octet_count, 300);
        assert_eq!(
            report.rtp_time,
            1_000 + 135_000,
            "1.5 s after the last packet"
        );
        assert_eq!(report.ntp_time, ntp(1_700_000_001_500_000));
        assert!(
            path.poll_reports(at + REPORT_INTERVAL).is_none(),
            "nothing new sent"
        );
    }

    #[test]
    fn ntp_time_counts_from_1900_with_a_binary_fraction() {
        assert_eq!(ntp(0) >> 32, NTP_UNIX_OFFSET);
        assert_eq!(ntp(1_500_000), (NTP_UNIX_OFFSET + 1) << 32 | 1 << 31);
    }
}
