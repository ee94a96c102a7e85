//! Retransmission requests not worth answering. A subscriber's NACKs for packets an outbound
//! stream sent before its current source began (a simulcast layer switch, a publisher's new
//! source, a resync at a keyframe) ask for pictures the subscriber no longer needs: its decoder
//! starts over at the new source's keyframe. Resent, they only deepen the queue that keyframe
//! must cross, and a subscriber squeezed down to a smaller layer for want of bandwidth stands
//! exactly behind such a queue, with the old layer's losses in it.
//!
//! The peer notes where each consumer's current source began ([`FreshFrom`]) before it reads
//! a datagram of RTCP;
//! [`StaleNacks`] sits in the interceptor chain under the NACK responder and takes the
//! sequence numbers from before that point out of inbound NACKs.

use crate::media::forwarder::seq_before;
use crate::metrics::Metrics;
use kaskade_rtcp_tap::{RtcpObserver, RtcpTap, Verdict};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How far a stream may run past the start of its source before that start is forgotten:
/// far beyond what the NACK responder keeps, and short of where sequence numbers wrap.
const FRESH_SPAN: u16 = 16_384;
/// Marks an entry in use.
const IN_USE: u64 = 1 << 63;

/// Where each consumer's current source began (outbound SSRC and first sequence number),
/// written by the peer as it sends and read by its [`StaleNacks`]: lock-free, one atomic per
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

/// The NACK filter in a subscriber's chain.
pub struct StaleNacks {
    fresh: FreshFrom,
    metrics: Arc<Metrics>,
}

/// The filter for a peer whose consumers note their sources in `fresh`.
pub fn tap(fresh: FreshFrom, metrics: Arc<Metrics>) -> RtcpTap<StaleNacks> {
    RtcpTap::new(StaleNacks { fresh, metrics })
}

impl StaleNacks {
    /// What is left of `nack` without the packets sent before its stream's current source
    /// began. Allocates only when it narrows a NACK.
    fn narrow(&self, nack: &TransportLayerNack) -> Narrowed {
        let Some(first) = self.fresh.of(nack.media_ssrc) else {
            return Narrowed::Untouched;
        };
        let asked = || nack.nacks.iter().flat_map(|pair| pair.into_iter());
        let stale = asked().filter(|&seq| seq_before(seq, first)).count();
        if stale == 0 {
            return Narrowed::Untouched;
        }
        self.metrics.nacks_stale.inc_by(stale as u64);
        let fresh: Vec<u16> = asked().filter(|&seq| !seq_before(seq, first)).collect();
        if fresh.is_empty() {
            return Narrowed::Nothing;
        }
        Narrowed::Rest(TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&fresh),
        })
    }
}

/// What is left of a NACK once the stale packets are taken out.
enum Narrowed {
    /// It asks for nothing stale.
    Untouched,
    /// It asks for these packets besides.
    Rest(TransportLayerNack),
    /// It asked for stale packets only.
    Nothing,
}

impl RtcpObserver for StaleNacks {
    fn inbound(&mut self, packets: &mut Vec<Box<dyn RtcpPacket>>) -> Verdict {
        let mut narrowed = false;
        let mut index = 0;
        while index < packets.len() {
            let change = packets[index]
                .as_any()
                .downcast_ref::<TransportLayerNack>()
                .map_or(Narrowed::Untouched, |nack| self.narrow(nack));
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

    fn filter(fresh: &FreshFrom) -> StaleNacks {
        StaleNacks {
            fresh: fresh.clone(),
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
        assert_eq!(f.inbound(&mut packets), Verdict::Pass);
        assert_eq!(asked(&packets), vec![(7, vec![101]), (9, vec![97])]);
        assert_eq!(f.metrics.nacks_stale.get(), 2);
        // a NACK for the old layer alone goes no further
        let mut packets = vec![nack(7, &[98, 99])];
        assert_eq!(f.inbound(&mut packets), Verdict::Drop);
        assert!(packets.is_empty());
    }

    #[test]
    fn a_source_start_is_forgotten_before_sequence_numbers_wrap() {
        let fresh = FreshFrom::new(1);
        fresh.note(0, 7, Some((65_530, 65_530)));
        let mut f = filter(&fresh);
        // across the wrap: 65,529 is before the start, 3 after it
        let mut packets = vec![nack(7, &[65_529, 3])];
        f.inbound(&mut packets);
        assert_eq!(asked(&packets), vec![(7, vec![3])]);
        // the stream ran on far past its start: every NACK is answered again
        fresh.note(0, 7, Some((65_530, 65_530u16.wrapping_add(FRESH_SPAN))));
        let mut packets = vec![nack(7, &[65_529])];
        assert_eq!(f.inbound(&mut packets), Verdict::Pass);
        assert_eq!(asked(&packets), vec![(7, vec![65_529])]);
        // a stream that sent nothing filters nothing
        fresh.note(0, 7, None);
        assert_eq!(fresh.of(7), None);
    }
}
