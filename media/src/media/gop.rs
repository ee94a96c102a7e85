//! The group of pictures since a producer's last keyframe, kept for producers that cannot be
//! asked for a keyframe (an RTSP camera): a consumer that starts watching such a producer gets
//! the cached keyframe and the frames after it at once, instead of a frozen tile until the
//! source's next keyframe.
//!
//! The replayed frames keep their order and sequence numbers, but their timestamps are
//! squeezed to one tick apart just before the live packet's: to the receiver they are a burst of
//! frames that are all due now (it decodes them and shows the last), not seconds of video that
//! arrived early, which would make a browser's jitter buffer hold every later frame back.

use crate::media::forwarder::InboundPacket;
use std::collections::VecDeque;

/// Packets kept at most; a longer group is dropped until the next keyframe.
const MAX_PACKETS: usize = 1_024;
/// Payload bytes kept at most.
const MAX_BYTES: usize = 2 << 20;

/// The RTP packets from a producer's last keyframe on.
#[derive(Debug, Default)]
pub struct GopCache {
    packets: VecDeque<rtc::rtp::Packet>,
    bytes: usize,
}

impl GopCache {
    /// Keeps `packet`: a keyframe's first packet starts a new group (a keyframe sends its
    /// parameter sets and its first slice in packets that both start it: the group starts at
    /// the first), later ones extend it; a group over the bounds is dropped (nothing is
    /// replayed until the next keyframe).
    pub fn push(&mut self, packet: &rtc::rtp::Packet, keyframe_start: bool) {
        let same_frame = self
            .packets
            .back()
            .is_some_and(|last| last.header.timestamp == packet.header.timestamp);
        if keyframe_start && !same_frame {
            self.clear();
        } else if self.packets.is_empty() {
            return;
        }
        if self.packets.len() == MAX_PACKETS || self.bytes + packet.payload.len() > MAX_BYTES {
            self.clear();
            return;
        }
        self.bytes += packet.payload.len();
        self.packets.push_back(packet.clone());
    }

    /// The group, keyframe first (empty when there is none to replay).
    pub fn packets(&self) -> impl Iterator<Item = &rtc::rtp::Packet> {
        self.packets.iter()
    }

    /// The source timestamp each cached packet is replayed with, in order, ahead of `live`:
    /// frames one tick apart, the last one just before `live`'s frame (or on it, for the
    /// first packets of the frame `live` continues).
    pub fn squeezed_timestamps(&self, live: &InboundPacket) -> Vec<u32> {
        let mut out = vec![0; self.packets.len()];
        let (mut frame_ts, mut squeezed) = (live.timestamp, live.timestamp);
        for (packet, slot) in self.packets.iter().zip(out.iter_mut()).rev() {
            if packet.header.timestamp != frame_ts {
                frame_ts = packet.header.timestamp;
                squeezed = squeezed.wrapping_sub(1);
            }
            *slot = squeezed;
        }
        out
    }

    /// Whether there is a group to replay.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Packets held (map-size gauges).
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, len: usize) -> rtc::rtp::Packet {
        stamped(seq, 0, len)
    }

    fn stamped(seq: u16, timestamp: u32, len: usize) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                sequence_number: seq,
                timestamp,
                ..Default::default()
            },
            payload: vec![1; len].into(),
        }
    }

    fn live(seq: u16, timestamp: u32) -> InboundPacket {
        InboundPacket {
            ssrc: 1,
            seq,
            timestamp,
            keyframe_start: false,
        }
    }

    #[test]
    fn replayed_frames_are_squeezed_to_one_tick_apart_just_before_the_live_frame() {
        let mut gop = GopCache::default();
        // a keyframe in two packets at 1_000, then frames at 7_000 and 13_000
        gop.push(&stamped(10, 1_000, 10), true);
        gop.push(&stamped(11, 1_000, 10), false);
        gop.push(&stamped(12, 7_000, 10), false);
        gop.push(&stamped(13, 13_000, 10), false);
        assert_eq!(
            gop.squeezed_timestamps(&live(14, 19_000)),
            [18_997, 18_997, 18_998, 18_999]
        );
        // the live packet continues the last cached frame: that frame keeps its timestamp
        assert_eq!(
            gop.squeezed_timestamps(&live(14, 13_000)),
            [12_998, 12_998, 12_999, 13_000]
        );
        // across the timestamp wrap
        assert_eq!(
            gop.squeezed_timestamps(&live(14, 1)),
            [u32::MAX - 1, u32::MAX - 1, u32::MAX, 0]
        );
    }

    fn seqs(gop: &GopCache) -> Vec<u16> {
        gop.packets().map(|p| p.header.sequence_number).collect()
    }

    #[test]
    fn a_group_starts_at_a_keyframe_and_the_next_keyframe_replaces_it() {
        let mut gop = GopCache::default();
        gop.push(&packet(1, 10), false);
        assert!(gop.is_empty(), "nothing before the first keyframe");
        gop.push(&stamped(2, 100, 10), true);
        gop.push(&stamped(3, 200, 10), false);
        gop.push(&stamped(4, 300, 10), false);
        assert_eq!(seqs(&gop), [2, 3, 4]);
        gop.push(&stamped(5, 400, 10), true);
        assert_eq!(seqs(&gop), [5]);
    }

    #[test]
    fn a_keyframe_in_several_starting_packets_is_kept_whole() {
        let mut gop = GopCache::default();
        // parameter sets (STAP-A) and the IDR slice's first fragment both start the keyframe
        gop.push(&stamped(1, 3_000, 10), true);
        gop.push(&stamped(2, 3_000, 10), true);
        gop.push(&stamped(3, 3_000, 10), false);
        gop.push(&stamped(4, 6_000, 10), false);
        assert_eq!(seqs(&gop), [1, 2, 3, 4]);
        gop.push(&stamped(5, 9_000, 10), true);
        assert_eq!(seqs(&gop), [5]);
    }

    #[test]
    fn a_group_over_the_bounds_is_dropped_until_the_next_keyframe() {
        let mut gop = GopCache::default();
        gop.push(&packet(0, 10), true);
        for seq in 1..MAX_PACKETS as u16 {
            gop.push(&packet(seq, 10), false);
        }
        assert_eq!(gop.len(), MAX_PACKETS);
        gop.push(&packet(5_000, 10), false);
        assert!(gop.is_empty());
        gop.push(&packet(5_001, 10), false);
        assert!(gop.is_empty(), "not restarted by a delta frame");
        gop.push(&stamped(6_000, 1, MAX_BYTES / 2), true);
        gop.push(&stamped(6_001, 1, MAX_BYTES / 2 + 1), false);
        assert!(gop.is_empty(), "bounded in bytes too");
    }
}
