//! The retransmission ring of a publisher's video: the last [`HISTORY`] packets of each of its
//! streams (each simulcast layer is one), kept once however many subscribers receive them.
//!
//! A subscriber's NACK names a sequence number of its own consumer; the consumer's stream
//! (`OutboundStream::source_of`) says which source packet that was, the ring gives it back, and
//! the subscriber's transport resends it (on the consumer's repair stream, RTX, where the
//! subscriber negotiated one). Before this ring every subscriber's transport kept its own copy
//! of every packet it was sent: nine copies of each packet in a room of ten.
//!
//! A packet is kept as the few fields a forwarded packet carries (sequence number, timestamp,
//! marker, payload): the payload is shared with the packet as it was forwarded (`Bytes`), so
//! keeping a packet allocates nothing. Each stream's ring is allocated once, when its first
//! packet arrives.

use bytes::Bytes;

/// Packets kept per stream: 3.2 s at the largest bit rate kaskade takes (1,440 kbit/s, about
/// 160 packets a second), more than a subscriber's round trip keeps a packet worth resending
/// (`nack_filter::MAX_RETENTION`). A power of two.
pub const HISTORY: usize = 512;
/// Streams kept per publisher: three simulcast layers, and one more for an encoder that
/// restarts on a new SSRC. The stream written longest ago gives way to a new one.
const MAX_STREAMS: usize = 4;

/// One kept packet.
#[derive(Debug, Clone)]
pub struct Kept {
    /// Its sequence number, as the publisher sent it.
    pub seq: u16,
    /// Its RTP timestamp, as the publisher sent it.
    pub timestamp: u32,
    /// Its marker bit.
    pub marker: bool,
    /// Its payload.
    pub payload: Bytes,
}

/// One stream's ring.
#[derive(Debug)]
struct Stream {
    ssrc: u32,
    /// The writing order of the stream's last packet, to find the stream written longest ago.
    written: u64,
    ring: Box<[Option<Kept>]>,
}

/// A publisher's video packets, kept per stream to answer its subscribers' NACKs.
#[derive(Debug, Default)]
pub struct RepairHistory {
    streams: Vec<Stream>,
    writes: u64,
}

impl RepairHistory {
    /// Keeps a packet of stream `ssrc` (a padding-only packet, which is never forwarded, is
    /// not kept).
    pub fn keep(&mut self, ssrc: u32, seq: u16, timestamp: u32, marker: bool, payload: &Bytes) {
        if payload.is_empty() {
            return;
        }
        self.writes += 1;
        let index = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(index) => index,
            None => self.add_stream(ssrc),
        };
        let stream = &mut self.streams[index];
        stream.written = self.writes;
        stream.ring[usize::from(seq) % HISTORY] = Some(Kept {
            seq,
            timestamp,
            marker,
            payload: payload.clone(),
        });
    }

    /// Packet `seq` of stream `ssrc`, if it is still kept.
    pub fn get(&self, ssrc: u32, seq: u16) -> Option<&Kept> {
        let stream = self.streams.iter().find(|s| s.ssrc == ssrc)?;
        stream.ring[usize::from(seq) % HISTORY]
            .as_ref()
            .filter(|kept| kept.seq == seq)
    }

    /// The packets kept over all its streams (for the map-size gauges).
    pub fn len(&self) -> usize {
        self.streams
            .iter()
            .map(|s| s.ring.iter().filter(|k| k.is_some()).count())
            .sum()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Makes room for stream `ssrc` (in place of the one written longest ago when full).
    fn add_stream(&mut self, ssrc: u32) -> usize {
        let stream = Stream {
            ssrc,
            written: 0,
            ring: (0..HISTORY).map(|_| None).collect(),
        };
        if self.streams.len() < MAX_STREAMS {
            self.streams.push(stream);
            return self.streams.len() - 1;
        }
        let (oldest, _) = self
            .streams
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.written)
            .expect("MAX_STREAMS is not zero");
        self.streams[oldest] = stream;
        oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(byte: u8) -> Bytes {
        Bytes::from(vec![byte; 3])
    }

    #[test]
    fn a_kept_packet_comes_back_with_its_fields() {
        let mut history = RepairHistory::default();
        history.keep(7, 65_535, 900, true, &payload(1));
        history.keep(7, 0, 3_900, false, &payload(2));
        let kept = history.get(7, 65_535).expect("kept");
        assert_eq!((kept.seq, kept.timestamp, kept.marker), (65_535, 900, true));
        assert_eq!(kept.payload, payload(1));
        assert_eq!(history.get(7, 0).expect("kept").payload, payload(2));
        assert!(history.get(8, 0).is_none(), "another stream");
        assert!(history.get(7, 1).is_none(), "never sent");
    }

    #[test]
    fn a_packet_overwritten_a_lap_later_is_gone() {
        let mut history = RepairHistory::default();
        for seq in 0..=HISTORY as u16 {
            history.keep(7, seq, u32::from(seq), false, &payload(seq as u8));
        }
        assert!(history.get(7, 0).is_none());
        assert_eq!(history.get(7, 1).map(|k| k.seq), Some(1));
        assert_eq!(history.get(7, HISTORY as u16).map(|k| k.seq), Some(512));
    }

    #[test]
    fn padding_is_not_kept() {
        let mut history = RepairHistory::default();
        history.keep(7, 1, 0, false, &Bytes::new());
        assert!(history.get(7, 1).is_none());
        assert!(history.is_empty());
    }

    #[test]
    fn a_new_stream_replaces_the_one_written_longest_ago() {
        let mut history = RepairHistory::default();
        for ssrc in 1..=MAX_STREAMS as u32 {
            history.keep(ssrc, 1, 0, false, &payload(1));
        }
        history.keep(1, 2, 0, false, &payload(1));
        history.keep(99, 1, 0, false, &payload(1));
        assert!(history.get(2, 1).is_none(), "written longest ago");
        for ssrc in [1, 3, 4, 99] {
            assert!(history.get(ssrc, 1).is_some(), "{ssrc} kept");
        }
    }
}
