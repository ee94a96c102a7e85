//! One track's RTP packets onto the recording's clock.
//!
//! A [`Timeline`] owns the reorder buffer (released in sequence order, holes given up after a
//! short wait), sequence-number and timestamp unwrapping, loss accounting, and the mapping of
//! RTP time to media time. Media time counts ticks of the track's clock rate (90 kHz video,
//! 48 kHz audio) from the recording's origin, an [`Instant`] the caller picks (the recording
//! start). A track is anchored on the arrival of its first packet, so a late joiner starts at
//! its true offset; afterwards RTP timestamp deltas rule, so a mute (a timestamp jump with no
//! packets) stays a gap instead of shifting what follows. A new SSRC, a sequence jump, or a
//! timestamp that disagrees with arrival time by more than [`REANCHOR_THRESHOLD`] re-anchors
//! the track on arrival time. Time is always an argument: nothing here reads a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a packet after a hole waits for the missing one before the hole is declared lost.
pub const REORDER_WINDOW: Duration = Duration::from_millis(150);
/// How many sequence numbers the reorder buffer spans.
pub const REORDER_CAPACITY: usize = 64;
/// A disagreement between RTP time and arrival time beyond which the source is taken to have
/// restarted (a new encoder, a paused clock): the track re-anchors on arrival.
pub const REANCHOR_THRESHOLD: Duration = Duration::from_secs(1);
/// A sequence number further than this from the expected one means the sender restarted.
const MAX_SEQUENCE_JUMP: i64 = 3000;

/// The RTP header fields the timeline needs, with the payload in whatever owned buffer the
/// caller has (no copy is made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<P> {
    /// Synchronization source.
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The RTP payload.
    pub payload: P,
}

/// A packet released in sequence order, placed on the recording's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedPacket<P> {
    /// Media time in ticks of the clock rate since the recording's origin.
    pub time: u64,
    /// RTP marker bit.
    pub marker: bool,
    /// Packets were lost (or the source restarted) just before this one.
    pub discontinuity: bool,
    /// The RTP payload.
    pub payload: P,
}

/// What happened to the packets of one track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineStats {
    /// Packets accepted into the reorder buffer.
    pub received: u64,
    /// Sequence numbers given up as lost.
    pub lost: u64,
    /// Packets that arrived after their slot was released or given up.
    pub late: u64,
    /// Packets received twice.
    pub duplicate: u64,
    /// Packets released after arriving out of order.
    pub reordered: u64,
    /// Times the track re-anchored on arrival time (new SSRC, jumps).
    pub reanchored: u64,
}

#[derive(Debug)]
struct Held<P> {
    sequence: i64,
    arrival: Instant,
    packet: TimedPacket<P>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    timestamp: i64,
    time: i64,
}

/// Per-track reorder buffer and RTP-to-media-time mapping. See the module documentation.
#[derive(Debug)]
pub struct Timeline<P> {
    origin: Instant,
    clock_rate: u32,
    ssrc: Option<u32>,
    /// Extended sequence number released next; `None` before the first packet.
    next_sequence: Option<i64>,
    highest_sequence: i64,
    highest_timestamp: i64,
    anchor: Option<Anchor>,
    slots: Vec<Option<Held<P>>>,
    held: usize,
    ready: VecDeque<TimedPacket<P>>,
    pending_discontinuity: bool,
    flushing: bool,
    stats: TimelineStats,
}

impl<P> Timeline<P> {
    /// A track whose media time counts `clock_rate` ticks from `origin`.
    pub fn new(origin: Instant, clock_rate: u32) -> Self {
        Self {
            origin,
            clock_rate: clock_rate.max(1),
            ssrc: None,
            next_sequence: None,
            highest_sequence: 0,
            highest_timestamp: 0,
            anchor: None,
            slots: (0..REORDER_CAPACITY).map(|_| None).collect(),
            held: 0,
            ready: VecDeque::with_capacity(REORDER_CAPACITY),
            pending_discontinuity: false,
            flushing: false,
            stats: TimelineStats::default(),
        }
    }

    /// The clock rate media times are counted in.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Takes one packet that arrived at `arrival`. Call [`poll`](Self::poll) afterwards.
    pub fn push(&mut self, packet: RtpPacket<P>, arrival: Instant) {
        self.flushing = false;
        if self.ssrc.is_some_and(|ssrc| ssrc != packet.ssrc) {
            self.restart();
        }
        self.ssrc = Some(packet.ssrc);
        let next = *self.next_sequence.get_or_insert_with(|| {
            self.highest_sequence = i64::from(packet.sequence);
            self.highest_sequence
        });
        let mut sequence = unwrap(self.highest_sequence, u64::from(packet.sequence), 16);
        if (sequence - next).abs() > MAX_SEQUENCE_JUMP {
            self.restart();
            sequence = i64::from(packet.sequence);
            self.next_sequence = Some(sequence);
            self.highest_sequence = sequence;
        } else if sequence < next {
            self.stats.late += 1;
            return;
        }
        self.highest_sequence = self.highest_sequence.max(sequence);
        let time = self.media_time(packet.timestamp, arrival);
        let window_end = self.next_sequence.unwrap_or(sequence) + REORDER_CAPACITY as i64;
        if sequence >= window_end {
            self.advance_to(sequence + 1 - REORDER_CAPACITY as i64);
        }
        let slot = &mut self.slots[slot_index(sequence)];
        if slot.is_some() {
            self.stats.duplicate += 1;
            return;
        }
        if sequence != self.highest_sequence {
            self.stats.reordered += 1;
        }
        *slot = Some(Held {
            sequence,
            arrival,
            packet: TimedPacket {
                time,
                marker: packet.marker,
                discontinuity: false,
                payload: packet.payload,
            },
        });
        self.held += 1;
        self.stats.received += 1;
    }

    /// The next packet in sequence order, if one may be released at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<TimedPacket<P>> {
        loop {
            if let Some(packet) = self.ready.pop_front() {
                return Some(packet);
            }
            let next = self.next_sequence?;
            if self.slots[slot_index(next)].is_some() {
                return self.step();
            }
            let deadline = self.hole_deadline()?;
            if !self.flushing && now < deadline {
                return None;
            }
            self.step();
        }
    }

    /// When [`poll`](Self::poll) may next release a packet although none arrives: the moment
    /// a hole is given up. `None` when nothing waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.ready.is_empty() {
            return Some(self.origin);
        }
        self.hole_deadline()
    }

    /// Gives up every hole, so that [`poll`](Self::poll) releases all held packets (at stop).
    pub fn flush(&mut self) {
        self.flushing = true;
    }

    /// Counters of received, lost, late, duplicate and reordered packets.
    pub fn stats(&self) -> TimelineStats {
        self.stats
    }

    /// Arrival of the first held packet after the hole at the head, plus the window.
    fn hole_deadline(&self) -> Option<Instant> {
        if self.held == 0 {
            return None;
        }
        let next = self.next_sequence?;
        (next..next + REORDER_CAPACITY as i64)
            .find_map(|sequence| {
                self.slots[slot_index(sequence)]
                    .as_ref()
                    .filter(|held| held.sequence == sequence)
            })
            .map(|held| held.arrival + REORDER_WINDOW)
    }

    /// Releases the head slot or declares it lost; advances the head.
    fn step(&mut self) -> Option<TimedPacket<P>> {
        let next = self.next_sequence?;
        self.next_sequence = Some(next + 1);
        match self.slots[slot_index(next)].take() {
            Some(held) => {
                self.held -= 1;
                let mut packet = held.packet;
                packet.discontinuity = std::mem::take(&mut self.pending_discontinuity);
                Some(packet)
            }
            None => {
                self.stats.lost += 1;
                self.pending_discontinuity = true;
                None
            }
        }
    }

    /// Moves the head to `target`, queueing held packets on the way and counting holes lost.
    fn advance_to(&mut self, target: i64) {
        while self.held > 0 && self.next_sequence.is_some_and(|next| next < target) {
            if let Some(packet) = self.step() {
                self.ready.push_back(packet);
            }
        }
        if let Some(next) = self.next_sequence.filter(|&next| next < target) {
            self.stats.lost += (target - next).unsigned_abs();
            self.pending_discontinuity = true;
            self.next_sequence = Some(target);
        }
    }

    /// Queues everything held and forgets sequence and timing state (a new source).
    fn restart(&mut self) {
        while self.held > 0 {
            if let Some(packet) = self.step() {
                self.ready.push_back(packet);
            }
        }
        self.next_sequence = None;
        self.anchor = None;
        self.pending_discontinuity = true;
        self.stats.reanchored += 1;
    }

    /// Media time of an RTP timestamp, anchoring (or re-anchoring) on arrival when needed.
    fn media_time(&mut self, timestamp: u32, arrival: Instant) -> u64 {
        let arrival_time = self.ticks(arrival.saturating_duration_since(self.origin));
        let threshold = self.ticks(REANCHOR_THRESHOLD);
        let timestamp = match self.anchor {
            None => i64::from(timestamp),
            Some(_) => unwrap(self.highest_timestamp, u64::from(timestamp), 32),
        };
        let anchor = match self.anchor {
            Some(anchor)
                if (anchor.time + (timestamp - anchor.timestamp) - arrival_time).abs()
                    <= threshold =>
            {
                anchor
            }
            previous => {
                if previous.is_some() {
                    self.stats.reanchored += 1;
                }
                Anchor {
                    timestamp,
                    time: arrival_time,
                }
            }
        };
        if self.anchor.is_none() || timestamp > self.highest_timestamp {
            self.highest_timestamp = timestamp;
        }
        self.anchor = Some(anchor);
        u64::try_from(anchor.time + (timestamp - anchor.timestamp)).unwrap_or(0)
    }

    fn ticks(&self, duration: Duration) -> i64 {
        let ticks = duration.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        i64::try_from(ticks).unwrap_or(i64::MAX / 4)
    }
}

/// Extends a `bits`-wide counter `value` to the 64-bit value nearest to `reference`.
fn unwrap(reference: i64, value: u64, bits: u32) -> i64 {
    let modulus = 1i64 << bits;
    let delta = (value as i64 - reference).rem_euclid(modulus);
    if delta >= modulus / 2 {
        reference + delta - modulus
    } else {
        reference + delta
    }
}

fn slot_index(sequence: i64) -> usize {
    sequence.rem_euclid(REORDER_CAPACITY as i64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO: u32 = 48_000;
    const FRAME: u32 = 960;

    struct Track {
        timeline: Timeline<u32>,
        start: Instant,
    }

    impl Track {
        fn new(clock_rate: u32) -> Self {
            let start = Instant::now();
            Self {
                timeline: Timeline::new(start, clock_rate),
                start,
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.start + Duration::from_millis(ms)
        }

        /// Pushes a packet (payload = its sequence number) arriving at `ms`.
        fn push(&mut self, ssrc: u32, sequence: u16, timestamp: u32, ms: u64) {
            let packet = RtpPacket {
                ssrc,
                sequence,
                timestamp,
                marker: true,
                payload: u32::from(sequence),
            };
            self.timeline.push(packet, self.at(ms));
        }

        /// (payload, time, discontinuity) of every packet released at `ms`.
        fn poll(&mut self, ms: u64) -> Vec<(u32, u64, bool)> {
            let now = self.at(ms);
            std::iter::from_fn(|| self.timeline.poll(now))
                .map(|p| (p.payload, p.time, p.discontinuity))
                .collect()
        }
    }

    #[test]
    fn in_order_packets_are_released_at_once_from_the_arrival_anchor() {
        let mut t = Track::new(AUDIO);
        t.push(1, 100, 5000, 1000);
        t.push(1, 101, 5000 + FRAME, 1020);
        assert_eq!(t.poll(1020), [(100, 48_000, false), (101, 48_960, false)]);
        assert_eq!(t.timeline.poll_timeout(), None);
    }

    #[test]
    fn reordered_packets_come_out_in_sequence_order() {
        let mut t = Track::new(AUDIO);
        t.push(1, 10, 0, 0);
        t.push(1, 12, 2 * FRAME, 40);
        assert_eq!(t.poll(40), [(10, 0, false)]);
        assert_eq!(t.timeline.poll_timeout(), Some(t.at(190)));
        t.push(1, 11, FRAME, 45);
        assert_eq!(t.poll(45), [(11, 960, false), (12, 1920, false)]);
        assert_eq!(t.timeline.stats().reordered, 1);
        assert_eq!(t.timeline.stats().lost, 0);
    }

    #[test]
    fn a_hole_is_given_up_after_the_window_and_flagged() {
        let mut t = Track::new(AUDIO);
        t.push(1, 10, 0, 0);
        t.push(1, 12, 2 * FRAME, 40);
        t.poll(40);
        assert!(t.poll(189).is_empty());
        assert_eq!(t.poll(190), [(12, 1920, true)]);
        t.push(1, 11, FRAME, 200);
        assert!(t.poll(200).is_empty());
        let stats = t.timeline.stats();
        assert_eq!((stats.lost, stats.late), (1, 1));
    }

    #[test]
    fn a_full_buffer_releases_without_waiting() {
        let mut t = Track::new(AUDIO);
        t.push(1, 0, 0, 0);
        t.poll(0);
        for sequence in 2..=REORDER_CAPACITY as u16 {
            t.push(1, sequence, u32::from(sequence) * FRAME, 1);
        }
        assert!(t.poll(1).is_empty());
        let beyond = REORDER_CAPACITY as u16 + 1;
        t.push(1, beyond, u32::from(beyond) * FRAME, 1);
        assert_eq!(t.poll(1)[0], (2, 2 * 960, true));
        assert_eq!(t.timeline.stats().lost, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut t = Track::new(AUDIO);
        t.push(1, 10, 0, 0);
        t.push(1, 12, 2 * FRAME, 1);
        t.push(1, 12, 2 * FRAME, 2);
        assert_eq!(t.timeline.stats().duplicate, 1);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let mut t = Track::new(AUDIO);
        let ts0 = u32::MAX - FRAME;
        t.push(1, u16::MAX, ts0, 0);
        t.push(1, 0, ts0.wrapping_add(FRAME), 20);
        t.push(1, 1, ts0.wrapping_add(2 * FRAME), 40);
        let out = t.poll(40);
        assert_eq!(out.iter().map(|p| p.1).collect::<Vec<_>>(), [0, 960, 1920]);
        assert!(out.iter().all(|p| !p.2));
    }

    #[test]
    fn a_mute_gap_stays_a_gap() {
        let mut t = Track::new(90_000);
        t.push(1, 1, 0, 0);
        t.push(1, 2, 5 * 90_000, 5000);
        assert_eq!(t.poll(5000), [(1, 0, false), (2, 450_000, false)]);
    }

    #[test]
    fn a_late_joiner_starts_at_its_arrival_offset() {
        let mut t = Track::new(90_000);
        t.push(7, 500, 123_456, 10_000);
        assert_eq!(t.poll(10_000), [(500, 900_000, false)]);
    }

    #[test]
    fn jitter_does_not_move_the_anchor() {
        let mut t = Track::new(AUDIO);
        t.push(1, 1, 0, 0);
        t.push(1, 2, FRAME, 300);
        assert_eq!(t.poll(300)[1].1, 960);
    }

    #[test]
    fn a_new_ssrc_reanchors_on_arrival() {
        let mut t = Track::new(AUDIO);
        t.push(1, 1, 0, 0);
        t.push(2, 9000, 777, 3000);
        assert_eq!(t.poll(3000), [(1, 0, false), (9000, 144_000, true)]);
        assert_eq!(t.timeline.stats().reanchored, 1);
    }

    #[test]
    fn a_timestamp_jump_reanchors_on_arrival() {
        let mut t = Track::new(AUDIO);
        t.push(1, 1, 0, 0);
        t.push(1, 2, 1_000_000_000, 20);
        t.push(1, 3, 1_000_000_000 + FRAME, 40);
        assert_eq!(
            t.poll(40),
            [(1, 0, false), (2, 960, false), (3, 1920, false)]
        );
        assert_eq!(t.timeline.stats().reanchored, 1);
    }

    #[test]
    fn a_sequence_restart_reanchors() {
        let mut t = Track::new(AUDIO);
        t.push(1, 40_000, 0, 0);
        t.push(1, 5, 100, 2000);
        t.push(1, 6, 100 + FRAME, 2020);
        let out = t.poll(2020);
        assert_eq!(
            out,
            [(40_000, 0, false), (5, 96_000, true), (6, 96_960, false)]
        );
    }

    #[test]
    fn flush_releases_everything_held() {
        let mut t = Track::new(AUDIO);
        t.push(1, 1, 0, 0);
        t.push(1, 3, 2 * FRAME, 10);
        t.timeline.flush();
        assert_eq!(t.poll(10), [(1, 0, false), (3, 1920, true)]);
    }

    #[test]
    fn unwrap_picks_the_nearest_value() {
        assert_eq!(unwrap(65_535, 0, 16), 65_536);
        assert_eq!(unwrap(65_536, 65_535, 16), 65_535);
        assert_eq!(unwrap(10, 5, 16), 5);
        assert_eq!(unwrap(i64::from(u32::MAX), 3, 32), i64::from(u32::MAX) + 4);
    }
}
