//! Retransmission requests not worth answering, taken out of a subscriber's NACKs before the
//! core reads them (and resends the rest from the publishers' rings, `media::repair`).
//!
//! Stale: packets an outbound stream sent before its current source began (a simulcast layer
//! switch, a publisher's new source, a resync at a keyframe) ask for pictures the subscriber no
//! longer needs: its decoder starts over at the new source's keyframe. Resent, they only
//! deepen the queue that keyframe must cross, and a subscriber squeezed down to a smaller layer
//! for want of bandwidth stands exactly behind such a queue, with the old layer's losses in it.
//! The peer notes where each consumer's current source began ([`FreshFrom`]) before it reads a
//! datagram of RTCP.
//!
//! Too old: how long a sent packet is worth resending follows the round trip. A subscriber
//! asks for a packet again every round trip, and after a few its decoder has moved on (it asks
//! for a keyframe instead); a packet sent more than [`RETENTION_RTTS`] round trips ago (at
//! least [`MIN_RETENTION`], at most [`MAX_RETENTION`]) is not resent. The peer notes when each
//! consumer's stream reached which sequence number ([`SentMarks`]) as it writes. A
//! publisher's ring (512 packets a stream, 3.2 s at the largest bit rate kaskade takes) holds
//! more than the longest retention.
//!
//! Repeated: a packet resent less than a round trip ago is still on its way. A browser asks
//! again on its own timer (Chromium every 100 ms until it knows the round trip), and behind a
//! capped link the round trip is the shaper's queue: answering every repeat sends each lost
//! packet several times into the queue that lost it. The round trip is the subscriber's
//! congestion feedback's (`bwe::DownlinkEstimate::rtt`); without feedback every NACK is
//! answered.
//!
//! Each WebRTC peer runs its [`NackFilter`] over the participant's RTCP as it opens it, before
//! it hands the NACKs to the core.

use crate::media::bwe::DownlinkEstimate;
use crate::media::forwarder::seq_before;
use crate::metrics::Metrics;
use kaskade_rtcp_tap::{RtcpObserver, Verdict};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far a stream may run past the start of its source before that start is forgotten:
/// far beyond what a publisher's retransmission ring keeps, and short of where sequence
/// numbers wrap.
const FRESH_SPAN: u16 = 16_384;
/// Marks an entry in use.
const IN_USE: u64 = 1 << 63;
/// Resent packets remembered per stream: as many as a retransmission ring keeps.
const RESENT_SPAN: usize = 512;
/// Streams whose resent packets are remembered: a subscriber's video slots.
const MAX_RESENT_STREAMS: usize = 16;
/// The longest a repeat is held back, whatever the round trip.
const MAX_REPEAT_HOLD: Duration = Duration::from_secs(1);
/// Round trips a sent packet stays worth resending.
pub const RETENTION_RTTS: u32 = 6;
/// The least a sent packet stays worth resending, however short the round trip.
pub const MIN_RETENTION: Duration = Duration::from_secs(1);
/// The most a sent packet stays worth resending, however long the round trip.
pub const MAX_RETENTION: Duration = Duration::from_secs(3);
/// Send marks kept per consumer: at one per [`MARK_EVERY`] or less often, they reach further
/// back than [`MAX_RETENTION`].
const MARKS: usize = 32;
/// The least time between two send marks of a consumer.
const MARK_EVERY: Duration = Duration::from_millis(100);

/// How long a packet sent on a path of round trip `rtt` is worth resending.
pub fn retention(rtt: Duration) -> Duration {
    (rtt * RETENTION_RTTS).clamp(MIN_RETENTION, MAX_RETENTION)
}

/// Where each consumer's current source began (outbound SSRC and first sequence number),
/// written by the peer as it sends and read by its [`NackFilter`]: lock-free, one atomic per
/// consumer.
#[derive(Debug, Clone)]
pub struct FreshFrom(Arc<[AtomicU64]>);

impl FreshFrom {
    /// Room for `consumers` consumers (later indices are not tracked).
    pub fn new(consumers: usize) -> Self {
        Self((0..consumers).map(|_| AtomicU64::new(0)).collect())
    }

    /// Consumer `index`, sending on `ssrc`, carries its current source from sequence number
    /// `first` and last sent `last` (see `OutboundStream::fresh_from`). Stores only a change.
    pub fn note(&self, index: usize, ssrc: u32, fresh_from: Option<(u16, u16)>) {
        let Some(entry) = self.0.get(index) else {
            return;
        };
        let value = fresh_from
            .filter(|&(first, last)| last.wrapping_sub(first).wrapping_add(1) <= FRESH_SPAN)
            .map_or(0, |(first, _)| {
                IN_USE | u64::from(ssrc) << 16 | u64::from(first)
            });
        if entry.load(Ordering::Relaxed) != value {
            entry.store(value, Ordering::Relaxed);
        }
    }

    /// The first sequence number of `ssrc`'s current source, if known.
    fn of(&self, ssrc: u32) -> Option<u16> {
        self.0.iter().find_map(|entry| {
            let value = entry.load(Ordering::Relaxed);
            (value & IN_USE != 0 && (value >> 16) as u32 == ssrc).then_some(value as u16)
        })
    }
}

/// When each consumer's stream had sent up to which sequence number: marks at least
/// [`MARK_EVERY`] apart, the last [`MARKS`] of them, written by the peer as it writes and read
/// by its [`NackFilter`]; lock-free, a few atomics per consumer, no allocation.
#[derive(Debug, Clone)]
pub struct SentMarks {
    epoch: Instant,
    consumers: Arc<[ConsumerMarks]>,
}

/// One consumer's send marks: `IN_USE | ms << 16 | seq`, ms from the marks' epoch.
#[derive(Debug)]
struct ConsumerMarks {
    /// `IN_USE | ssrc` of the stream the marks are of.
    ssrc: AtomicU64,
    marks: [AtomicU64; MARKS],
    next: AtomicU64,
}

impl SentMarks {
    /// Room for `consumers` consumers (later indices are not tracked), times counted from
    /// `epoch`.
    pub fn new(epoch: Instant, consumers: usize) -> Self {
        let consumers = (0..consumers)
            .map(|_| ConsumerMarks {
                ssrc: AtomicU64::new(0),
                marks: std::array::from_fn(|_| AtomicU64::new(0)),
                next: AtomicU64::new(0),
            })
            .collect();
        Self { epoch, consumers }
    }

    /// Milliseconds from the marks' epoch to `at` (saturating after 49 days), the clock of
    /// the marks and of the filter's resend logs.
    fn ms(&self, at: Instant) -> u32 {
        let ms = at.saturating_duration_since(self.epoch).as_millis();
        u32::try_from(ms).unwrap_or(u32::MAX)
    }

    /// Consumer `index` sends packet `seq` on `ssrc` at `now`. Marks it unless the
    /// consumer's last mark is less than [`MARK_EVERY`] old.
    pub fn note(&self, index: usize, ssrc: u32, seq: u16, now: Instant) {
        let Some(consumer) = self.consumers.get(index) else {
            return;
        };
        let owner = IN_USE | u64::from(ssrc);
        if consumer.ssrc.load(Ordering::Relaxed) != owner {
            consumer.ssrc.store(owner, Ordering::Relaxed);
            consumer
                .marks
                .iter()
                .for_each(|m| m.store(0, Ordering::Relaxed));
        }
        let now_ms = u64::from(self.ms(now));
        let next = consumer.next.load(Ordering::Relaxed);
        let newest = consumer.marks[(next as usize + MARKS - 1) % MARKS].load(Ordering::Relaxed);
        let every = MARK_EVERY.as_millis() as u64;
        if newest & IN_USE != 0 && ((newest >> 16) & 0xffff_ffff) + every > now_ms {
            return;
        }
        let mark = IN_USE | now_ms << 16 | u64::from(seq);
        consumer.marks[next as usize % MARKS].store(mark, Ordering::Relaxed);
        consumer.next.store(next.wrapping_add(1), Ordering::Relaxed);
    }

    /// Whether `ssrc`'s packet `seq` had been sent by `before`, as far as the marks tell.
    fn sent_by(&self, ssrc: u32, seq: u16, before: Instant) -> bool {
        let owner = IN_USE | u64::from(ssrc);
        let Some(consumer) = self
            .consumers
            .iter()
            .find(|c| c.ssrc.load(Ordering::Relaxed) == owner)
        else {
            return false;
        };
        let before_ms = u64::from(self.ms(before));
        consumer.marks.iter().any(|mark| {
            let mark = mark.load(Ordering::Relaxed);
            let (at_ms, reached) = ((mark >> 16) & 0xffff_ffff, mark as u16);
            mark & IN_USE != 0
                && at_ms < before_ms
                && !seq_before(reached, seq)
                && reached.wrapping_sub(seq) < FRESH_SPAN
        })
    }
}

/// The NACK filter of a subscriber's peer.
pub struct NackFilter {
    fresh: FreshFrom,
    /// What each consumer sent when; their clock times the resend logs too.
    marks: SentMarks,
    estimate: DownlinkEstimate,
    resent: Vec<ResentLog>,
    metrics: Arc<Metrics>,
}

/// When each of a stream's last [`RESENT_SPAN`] NACKed packets was last let through to the
/// core to resend, in milliseconds on the clock of the filter's [`SentMarks`].
struct ResentLog {
    ssrc: u32,
    /// By sequence number modulo the span: the sequence number and the time (0: never).
    at: Box<[(u16, u32); RESENT_SPAN]>,
}

impl NackFilter {
    /// The filter for a peer whose consumers note their sources in `fresh` and their sending
    /// in `marks`, sending on a downlink whose round trip `estimate` carries.
    pub fn new(
        fresh: FreshFrom,
        marks: SentMarks,
        estimate: DownlinkEstimate,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            fresh,
            marks,
            estimate,
            resent: Vec::new(),
            metrics,
        }
    }

    /// What is left of `nack`, read at `now`, without the stale packets, those too old and
    /// those resent less than a round trip ago; notes when the rest is resent. Allocates only
    /// when it narrows a NACK, or the first time a stream is NACKed.
    fn narrow(&mut self, now: Instant, nack: &TransportLayerNack) -> Narrowed {
        let first = self.fresh.of(nack.media_ssrc);
        let rtt = self.estimate.rtt();
        let hold = rtt.map(|rtt| rtt.min(MAX_REPEAT_HOLD));
        let oldest = rtt.and_then(|rtt| now.checked_sub(retention(rtt)));
        if first.is_none() && hold.is_none() {
            return Narrowed::Untouched;
        }
        // 0 marks an entry never resent; saturates after 49 days: every repeat goes through then
        let now_ms = self.marks.ms(now).max(1);
        let mut log = hold.and_then(|hold| {
            let hold_ms = u32::try_from(hold.as_millis()).unwrap_or(u32::MAX);
            log_of(&mut self.resent, nack.media_ssrc).map(|log| (log, hold_ms))
        });
        let asked = || nack.nacks.iter().flat_map(|pair| pair.into_iter());
        let (mut stale, mut too_old, mut repeated) = (0, 0, 0);
        // made at the first packet left out: every one before it was kept
        let mut kept: Option<Vec<u16>> = None;
        for (index, seq) in asked().enumerate() {
            let keep = if first.is_some_and(|first| seq_before(seq, first)) {
                stale += 1;
                false
            } else if oldest.is_some_and(|at| self.marks.sent_by(nack.media_ssrc, seq, at)) {
                too_old += 1;
                false
            } else if let Some((log, hold_ms)) = log.as_mut()
                && !log.let_through(seq, now_ms, *hold_ms)
            {
                repeated += 1;
                false
            } else {
                true
            };
            match (&mut kept, keep) {
                (Some(kept), true) => kept.push(seq),
                (None, false) => kept = Some(asked().take(index).collect()),
                _ => {}
            }
        }
        self.metrics.nacks_stale.inc_by(stale);
        self.metrics.nacks_too_old.inc_by(too_old);
        self.metrics.nacks_repeated.inc_by(repeated);
        match kept {
            None => Narrowed::Untouched,
            Some(kept) if kept.is_empty() => Narrowed::Nothing,
            Some(kept) => Narrowed::Rest(TransportLayerNack {
                sender_ssrc: nack.sender_ssrc,
                media_ssrc: nack.media_ssrc,
                nacks: nack_pairs_from_sequence_numbers(&kept),
            }),
        }
    }
}

impl ResentLog {
    /// Whether `seq`, asked for at `now_ms`, goes on to be resent: not if it was let
    /// through less than `hold_ms` before. Notes the time when it goes on.
    fn let_through(&mut self, seq: u16, now_ms: u32, hold_ms: u32) -> bool {
        let entry = &mut self.at[usize::from(seq) % RESENT_SPAN];
        let repeat = entry.0 == seq && entry.1 != 0 && now_ms.saturating_sub(entry.1) < hold_ms;
        if !repeat {
            *entry = (seq, now_ms);
        }
        !repeat
    }
}

/// The resend log of `ssrc` among `resent`, made the first time it is NACKed (`None` past the
/// streams tracked).
fn log_of(resent: &mut Vec<ResentLog>, ssrc: u32) -> Option<&mut ResentLog> {
    let index = match resent.iter().position(|l| l.ssrc == ssrc) {
        Some(index) => index,
        None if resent.len() < MAX_RESENT_STREAMS => {
            resent.push(ResentLog {
                ssrc,
                at: Box::new([(0, 0); RESENT_SPAN]),
            });
            resent.len() - 1
        }
        None => return None,
    };
    resent.get_mut(index)
}

/// What is left of a NACK once the packets not worth answering are taken out.
enum Narrowed {
    /// All of it is worth answering.
    Untouched,
    /// These packets are.
    Rest(TransportLayerNack),
    /// None is.
    Nothing,
}

impl RtcpObserver for NackFilter {
    fn inbound(&mut self, now: Instant, packets: &mut Vec<Box<dyn RtcpPacket>>) -> Verdict {
        let mut narrowed = false;
        let mut index = 0;
        while index < packets.len() {
            let change = packets[index]
                .as_any()
                .downcast_ref::<TransportLayerNack>()
                .map_or(Narrowed::Untouched, |nack| self.narrow(now, nack));
            match change {
                Narrowed::Untouched => index += 1,
                Narrowed::Rest(rest) => {
                    packets[index] = Box::new(rest);
                    narrowed = true;
                    index += 1;
                }
                Narrowed::Nothing => {
                    packets.remove(index);
                    narrowed = true;
                }
            }
        }
        if narrowed && packets.is_empty() {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::bwe::PathState;

    fn nack(media_ssrc: u32, seqs: &[u16]) -> Box<dyn RtcpPacket> {
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        })
    }

    fn asked(packets: &[Box<dyn RtcpPacket>]) -> Vec<(u32, Vec<u16>)> {
        packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .map(|n| {
                let seqs = n.nacks.iter().flat_map(|p| p.packet_list()).collect();
                (n.media_ssrc, seqs)
            })
            .collect()
    }

    fn filter(fresh: &FreshFrom) -> NackFilter {
        filter_with(fresh, DownlinkEstimate::default())
    }

    fn filter_with(fresh: &FreshFrom, estimate: DownlinkEstimate) -> NackFilter {
        NackFilter {
            fresh: fresh.clone(),
            marks: SentMarks::new(Instant::now(), 2),
            estimate,
            resent: Vec::new(),
            metrics: Arc::new(Metrics::default()),
        }
    }

    #[test]
    fn packets_from_before_the_source_began_are_not_resent() {
        let fresh = FreshFrom::new(2);
        // consumer 1 (SSRC 7) switched layers at 100 and has sent up to 105
        fresh.note(1, 7, Some((100, 105)));
        let mut f = filter(&fresh);
        let mut packets = vec![nack(7, &[97, 98, 101]), nack(9, &[97])];
        assert_eq!(f.inbound(Instant::now(), &mut packets), Verdict::Pass);
        assert_eq!(asked(&packets), vec![(7, vec![101]), (9, vec![97])]);
        assert_eq!(f.metrics.nacks_stale.get(), 2);
        // a NACK for the old layer alone goes no further
        let mut packets = vec![nack(7, &[98, 99])];
        assert_eq!(f.inbound(Instant::now(), &mut packets), Verdict::Drop);
        assert!(packets.is_empty());
    }

    #[test]
    fn a_source_start_is_forgotten_before_sequence_numbers_wrap() {
        let fresh = FreshFrom::new(1);
        fresh.note(0, 7, Some((65_530, 65_530)));
        let mut f = filter(&fresh);
        // across the wrap: 65,529 is before the start, 3 after it
        let mut packets = vec![nack(7, &[65_529, 3])];
        f.inbound(Instant::now(), &mut packets);
        assert_eq!(asked(&packets), vec![(7, vec![3])]);
        // the stream ran on far past its start: every NACK is answered again
        fresh.note(0, 7, Some((65_530, 65_530u16.wrapping_add(FRESH_SPAN))));
        let mut packets = vec![nack(7, &[65_529])];
        assert_eq!(f.inbound(Instant::now(), &mut packets), Verdict::Pass);
        assert_eq!(asked(&packets), vec![(7, vec![65_529])]);
        // a stream that sent nothing filters nothing
        fresh.note(0, 7, None);
        assert_eq!(fresh.of(7), None);
    }

    #[test]
    fn a_packet_resent_less_than_a_round_trip_ago_is_not_resent_again() {
        let estimate = DownlinkEstimate::default();
        estimate.set(
            1e6,
            false,
            PathState {
                clean: true,
                rtt: Some(Duration::from_millis(300)),
                ..PathState::default()
            },
        );
        let fresh = FreshFrom::new(1);
        let mut f = filter_with(&fresh, estimate.clone());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);

        let mut packets = vec![nack(7, &[10, 11])];
        assert_eq!(f.inbound(at(0), &mut packets), Verdict::Pass);
        assert_eq!(
            asked(&packets),
            vec![(7, vec![10, 11])],
            "the first ask is answered"
        );
        // the browser asks again 100 ms later, and for a new loss: only the new one goes on
        let mut packets = vec![nack(7, &[10, 11, 12])];
        f.inbound(at(100), &mut packets);
        assert_eq!(asked(&packets), vec![(7, vec![12])]);
        let mut packets = vec![nack(7, &[10, 11])];
        assert_eq!(f.inbound(at(200), &mut packets), Verdict::Drop);
        assert_eq!(f.metrics.nacks_repeated.get(), 4);
        // a round trip after the resend, the repair is lost too: it is resent again
        let mut packets = vec![nack(7, &[10, 11, 12])];
        f.inbound(at(320), &mut packets);
        assert_eq!(asked(&packets), vec![(7, vec![10, 11])]);

        // without a round trip (no congestion feedback) every ask is answered
        let mut f = filter(&fresh);
        for ms in [0, 50] {
            let mut packets = vec![nack(7, &[10])];
            f.inbound(at(ms), &mut packets);
            assert_eq!(asked(&packets), vec![(7, vec![10])]);
        }
    }

    #[test]
    fn a_packet_sent_more_than_six_round_trips_ago_is_not_resent() {
        let estimate = DownlinkEstimate::default();
        let rtt = Duration::from_millis(200);
        let path = PathState {
            clean: true,
            rtt: Some(rtt),
            ..PathState::default()
        };
        estimate.set(1e6, false, path);
        assert_eq!(retention(rtt), Duration::from_millis(1_200));
        assert_eq!(retention(Duration::from_millis(20)), MIN_RETENTION);
        assert_eq!(retention(Duration::from_secs(2)), MAX_RETENTION);
        let fresh = FreshFrom::new(2);
        let mut f = filter_with(&fresh, estimate);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        f.marks = SentMarks::new(t0, 2);
        // consumer 0 (SSRC 7) sent 100 at 0 ms, 110 at 100 ms, 200 at 1 s, 240 at 1.4 s
        for (ms, last) in [(0, 100), (100, 110), (1_000, 200), (1_400, 240)] {
            f.marks.note(0, 7, last, at(ms));
        }
        // at 1.4 s the retention reaches back to 200 ms: 105 went out before it
        let mut packets = vec![nack(7, &[105, 150, 230])];
        assert_eq!(f.inbound(at(1_400), &mut packets), Verdict::Pass);
        assert_eq!(asked(&packets), vec![(7, vec![150, 230])]);
        assert_eq!(f.metrics.nacks_too_old.get(), 1);
        // another stream's marks say nothing of SSRC 7's packets
        let mut packets = vec![nack(9, &[105])];
        f.inbound(at(1_400), &mut packets);
        assert_eq!(asked(&packets), vec![(9, vec![105])]);
        // the consumer now sends on SSRC 8: its old marks are gone
        f.marks.note(0, 8, 5, at(1_500));
        let mut packets = vec![nack(7, &[104])];
        f.inbound(at(1_500), &mut packets);
        assert_eq!(asked(&packets), vec![(7, vec![104])]);
    }
}
