//! Per-subscriber outbound stream rewriting.
//!
//! Every receive slot of a subscriber is one [`OutboundStream`]: a fixed SSRC, and sequence
//! numbers and timestamps that advance without gaps or jumps whoever feeds the slot. When the
//! source changes (another participant, a simulcast layer, or the same source resuming after a
//! mute), the stream waits for a keyframe (video), then maps the new source so that its first
//! packet follows the last one sent: sequence number + 1, and a timestamp advanced by the wall
//! time since the last packet. Packets of a source from before the switch are dropped, so a
//! late retransmission can never land in the middle of another source's frames. Packets the
//! node chooses not to forward (padding-only probes) are [`OutboundStream::skip`]ped: later
//! sequence numbers close up over them, so a subscriber never sees a gap it would NACK.
//! Padding the node sends of its own (its bandwidth probes) is [`OutboundStream::pad`]ded in
//! after the newest packet: later packets make room for it, while a late one from before it
//! keeps its number.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Skipped sequence numbers, and those padding went in after, remembered per stream (older
/// ones no longer shift anything that can still arrive).
const MAX_SKIPPED: usize = 128;

pub use kaskade_protocol::signaling::MediaKind;

/// The RTP clock rate of the codec kaskade forwards for `kind` (Opus 48 kHz, H.264 90 kHz).
pub fn clock_rate(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48_000,
        MediaKind::Video => 90_000,
    }
}

/// The fields of an inbound packet that rewriting looks at.
#[derive(Debug, Clone, Copy)]
pub struct InboundPacket {
    /// SSRC of the source stream.
    pub ssrc: u32,
    /// Sequence number as sent by the source.
    pub seq: u16,
    /// RTP timestamp as sent by the source.
    pub timestamp: u32,
    /// The packet starts a keyframe (H.264: carries an SPS or the first part of an IDR slice).
    pub keyframe_start: bool,
}

/// Sequence number and timestamp to write on the forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Outbound sequence number.
    pub seq: u16,
    /// Outbound RTP timestamp.
    pub timestamp: u32,
}

/// Why a packet was not forwarded on a slot (each is a metrics reason, see `Dropped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The slot has no source attached (idle, or the source is muted).
    NoSource,
    /// The packet belongs to a source other than the slot's current one.
    OtherSource,
    /// Video after a switch: waiting for the new source's next keyframe.
    WaitingForKeyframe,
    /// A late packet from before the current mapping began.
    BeforeSwitch,
    /// A packet already left out with [`OutboundStream::skip`].
    Skipped,
}

#[derive(Debug, Clone)]
struct Mapping {
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// First source sequence number of this mapping; anything older is dropped.
    base_seq: u16,
    highest_seq: u16,
    /// Source sequence numbers skipped since the mapping began, oldest first.
    skipped: VecDeque<u16>,
    /// Source sequence numbers a padding packet was sent after, oldest first.
    padded: VecDeque<u16>,
    /// When the mapping began (at a keyframe, for video).
    began: Instant,
    /// The outbound sequence number of its first packet.
    first_out: u16,
}

impl Mapping {
    /// Where `seq` goes out: shifted by the mapping's offset, closed up over the packets
    /// skipped before it and moved on past the padding sent before it.
    fn out_seq(&self, seq: u16) -> u16 {
        let before = |list: &VecDeque<u16>| list.iter().filter(|s| seq_before(**s, seq)).count();
        seq.wrapping_add(self.seq_offset)
            .wrapping_sub(before(&self.skipped) as u16)
            .wrapping_add(before(&self.padded) as u16)
    }
}

#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u16,
    timestamp: u32,
    at: Instant,
}

/// One outbound stream of one subscriber: fixed SSRC, continuous sequence and timestamps.
#[derive(Debug)]
pub struct OutboundStream {
    ssrc: u32,
    kind: MediaKind,
    /// The source to map at its next acceptable packet.
    pending: Option<u32>,
    mapping: Option<Mapping>,
    last: LastSent,
    sent_any: bool,
}

impl OutboundStream {
    /// A stream with the given SSRC; its first packet gets `initial_seq` and `initial_ts`
    /// (random in production, fixed in tests).
    pub fn new(
        ssrc: u32,
        kind: MediaKind,
        initial_seq: u16,
        initial_ts: u32,
        now: Instant,
    ) -> Self {
        Self {
            ssrc,
            kind,
            pending: None,
            mapping: None,
            last: LastSent {
                seq: initial_seq.wrapping_sub(1),
                timestamp: initial_ts,
                at: now,
            },
            sent_any: false,
        }
    }

    /// The SSRC every packet of this stream carries.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// The source currently mapped or about to be, if any.
    pub fn source(&self) -> Option<u32> {
        self.pending.or(self.mapping.as_ref().map(|m| m.ssrc))
    }

    /// Whether the stream waits for a keyframe from its source before it can forward.
    pub fn awaits_keyframe(&self) -> bool {
        self.kind == MediaKind::Video && self.pending.is_some()
    }

    /// Feed the stream from `source_ssrc` from its next acceptable packet on. Attaching the
    /// source that is already mapped is a no-op (and cancels a switch not yet made);
    /// re-attaching after [`Self::detach`] re-syncs. Video keeps forwarding the source it maps
    /// until the new source's keyframe arrives, so a switch (of simulcast layer, say) shows no
    /// gap; audio switches at once.
    pub fn attach(&mut self, source_ssrc: u32) {
        if self.maps(source_ssrc) {
            self.pending = None;
            return;
        }
        if self.pending != Some(source_ssrc) {
            if self.kind == MediaKind::Audio {
                self.mapping = None;
            }
            self.pending = Some(source_ssrc);
        }
    }

    /// The source whose packets are forwarded now, if any (a switch may be pending).
    pub fn mapped(&self) -> Option<u32> {
        self.mapping.as_ref().map(|m| m.ssrc)
    }

    /// Whether packets of `source_ssrc` are forwarded now (it is the mapped source).
    pub fn maps(&self, source_ssrc: u32) -> bool {
        self.mapping.as_ref().is_some_and(|m| m.ssrc == source_ssrc)
    }

    /// Whether the stream's current mapping began (for video: at a keyframe) less than
    /// `window` before `now`.
    pub fn began_within(&self, now: Instant, window: Duration) -> bool {
        self.mapping
            .as_ref()
            .is_some_and(|m| now.saturating_duration_since(m.began) < window)
    }

    /// The outbound sequence number from which this stream carries its current source (its
    /// first packet, a keyframe for video), and the last one sent; `None` before anything was
    /// sent. Detached, everything sent so far belongs to no current source.
    pub fn fresh_from(&self) -> Option<(u16, u16)> {
        let first = match &self.mapping {
            Some(m) => m.first_out,
            None => self.last.seq.wrapping_add(1),
        };
        self.sent_any.then_some((first, self.last.seq))
    }

    /// Stop forwarding (source muted or gone). The next [`Self::attach`] re-syncs.
    pub fn detach(&mut self) {
        self.mapping = None;
        self.pending = None;
    }

    /// Decides whether `packet` is forwarded on this stream, and with which sequence number and
    /// timestamp.
    pub fn rewrite(
        &mut self,
        packet: &InboundPacket,
        now: Instant,
    ) -> Result<Rewritten, DropReason> {
        if self.pending == Some(packet.ssrc) {
            if self.kind == MediaKind::Video && !packet.keyframe_start {
                return Err(DropReason::WaitingForKeyframe);
            }
            self.begin_mapping(packet, now);
        }
        let Some(mapping) = self.mapping.as_mut() else {
            return Err(if self.pending.is_some() {
                DropReason::OtherSource
            } else {
                DropReason::NoSource
            });
        };
        if mapping.ssrc != packet.ssrc {
            return Err(DropReason::OtherSource);
        }
        if seq_before(packet.seq, mapping.base_seq) {
            return Err(DropReason::BeforeSwitch);
        }
        if mapping.skipped.contains(&packet.seq) {
            return Err(DropReason::Skipped);
        }
        let out = Rewritten {
            seq: mapping.out_seq(packet.seq),
            timestamp: packet.timestamp.wrapping_add(mapping.ts_offset),
        };
        if !seq_before(packet.seq, mapping.highest_seq) {
            mapping.highest_seq = packet.seq;
            self.last = LastSent {
                seq: out.seq,
                timestamp: out.timestamp,
                at: now,
            };
        }
        self.sent_any = true;
        Ok(out)
    }

    /// Leaves `packet` out of this stream without a gap: later packets close up over it. A
    /// packet that would start a mapping is simply not used to start it.
    pub fn skip(&mut self, packet: &InboundPacket) {
        let Some(mapping) = self.mapping.as_mut() else {
            return;
        };
        if mapping.ssrc != packet.ssrc || seq_before(packet.seq, mapping.base_seq) {
            return;
        }
        if mapping.skipped.len() == MAX_SKIPPED
            && let Some(oldest) = mapping.skipped.pop_front()
        {
            // folded into the offset, so that later packets keep their place; anything from
            // before it is now too old to forward
            mapping.seq_offset = mapping.seq_offset.wrapping_sub(1);
            mapping.base_seq = oldest.wrapping_add(1);
        }
        mapping.skipped.push_back(packet.seq);
        if !seq_before(packet.seq, mapping.highest_seq) {
            mapping.highest_seq = packet.seq;
        }
    }

    /// The sequence number and timestamp of a padding-only packet to send right after the
    /// source's packet `after` (the end of a frame: a receiver assembles a frame from
    /// consecutive numbers); `None` unless `after` is the newest packet of the mapped source.
    pub fn pad(&mut self, after: &InboundPacket) -> Option<Rewritten> {
        let mapping = self
            .mapping
            .as_mut()
            .filter(|m| m.ssrc == after.ssrc && m.highest_seq == after.seq)?;
        if mapping.padded.len() == MAX_SKIPPED
            && let Some(oldest) = mapping.padded.pop_front()
        {
            // folded into the offset, as in `skip`
            mapping.seq_offset = mapping.seq_offset.wrapping_add(1);
            mapping.base_seq = oldest.wrapping_add(1);
        }
        mapping.padded.push_back(mapping.highest_seq);
        self.last.seq = self.last.seq.wrapping_add(1);
        Some(Rewritten {
            seq: self.last.seq,
            timestamp: self.last.timestamp,
        })
    }

    fn begin_mapping(&mut self, packet: &InboundPacket, now: Instant) {
        let out_seq = self.last.seq.wrapping_add(1);
        let out_ts = if self.sent_any {
            let elapsed = now.saturating_duration_since(self.last.at);
            let ticks =
                (elapsed.as_micros() as u64 * u64::from(clock_rate(self.kind)) / 1_000_000).max(1);
            self.last.timestamp.wrapping_add(ticks as u32)
        } else {
            self.last.timestamp
        };
        self.mapping = Some(Mapping {
            ssrc: packet.ssrc,
            seq_offset: out_seq.wrapping_sub(packet.seq),
            ts_offset: out_ts.wrapping_sub(packet.timestamp),
            base_seq: packet.seq,
            highest_seq: packet.seq,
            skipped: VecDeque::new(),
            padded: VecDeque::new(),
            began: now,
            first_out: out_seq,
        });
        self.pending = None;
    }
}

/// `a` comes before `b` in RTP sequence space (RFC 3550 wrap-around arithmetic).
pub(crate) fn seq_before(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u32 = 0xA;
    const B: u32 = 0xB;

    fn pkt(ssrc: u32, seq: u16, timestamp: u32, keyframe_start: bool) -> InboundPacket {
        InboundPacket {
            ssrc,
            seq,
            timestamp,
            keyframe_start,
        }
    }

    /// One step of a table: the packet, milliseconds since the start, and the expected outcome.
    type Step = (InboundPacket, u64, Result<(u16, u32), DropReason>);

    fn run(stream: &mut OutboundStream, start: Instant, steps: &[Step]) {
        for (i, (packet, at_ms, want)) in steps.iter().enumerate() {
            let got = stream
                .rewrite(packet, start + Duration::from_millis(*at_ms))
                .map(|r| (r.seq, r.timestamp));
            assert_eq!(got, *want, "step {i}: {packet:?}");
        }
    }

    #[test]
    fn a_stream_knows_how_recently_it_began_at_a_keyframe() {
        let start = Instant::now();
        let window = Duration::from_millis(500);
        let mut s = OutboundStream::new(1, MediaKind::Video, 100, 1000, start);
        assert!(!s.began_within(start, window), "not begun");
        s.attach(A);
        let later = |ms| start + Duration::from_millis(ms);
        assert!(s.rewrite(&pkt(A, 7, 70, false), later(10)).is_err());
        assert!(
            !s.began_within(later(10), window),
            "still waiting for a keyframe"
        );
        s.rewrite(&pkt(A, 8, 80, true), later(20)).unwrap();
        assert!(s.began_within(later(519), window));
        assert!(!s.began_within(later(520), window));
        s.detach();
        assert!(!s.began_within(later(30), window), "detached");
    }

    #[test]
    fn a_stream_tells_from_where_it_carries_its_current_source() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Video, 100, 1000, start);
        assert_eq!(s.fresh_from(), None, "nothing sent");
        s.attach(A);
        for seq in 8..12 {
            s.rewrite(&pkt(A, seq, 80, seq == 8), start).unwrap();
        }
        assert_eq!(s.fresh_from(), Some((100, 103)));
        // a switch to B at its keyframe: B's packets are fresh, A's are not any more
        s.attach(B);
        s.rewrite(&pkt(A, 12, 90, false), start).unwrap();
        s.rewrite(&pkt(B, 50, 90, true), start).unwrap();
        assert_eq!(s.fresh_from(), Some((105, 105)));
        // detached (squeezed off its layer): nothing sent so far is fresh
        s.detach();
        assert_eq!(s.fresh_from(), Some((106, 105)));
    }

    #[test]
    fn idle_stream_drops_everything() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Audio, 100, 1000, start);
        run(
            &mut s,
            start,
            &[(pkt(A, 5, 50, false), 0, Err(DropReason::NoSource))],
        );
    }

    #[test]
    fn first_source_starts_at_the_initial_values_and_follows_the_source() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Audio, 100, 1000, start);
        s.attach(A);
        run(
            &mut s,
            start,
            &[
                (pkt(A, 5000, 777, false), 0, Ok((100, 1000))),
                (pkt(A, 5001, 1737, false), 20, Ok((101, 1960))),
                // reordered and late: same offsets, and the newest packet stays the reference
                (pkt(A, 5003, 3657, false), 60, Ok((103, 3880))),
                (pkt(A, 5002, 2697, false), 61, Ok((102, 2920))),
                (pkt(B, 9, 9, false), 62, Err(DropReason::OtherSource)),
            ],
        );
    }

    #[test]
    fn video_waits_for_a_keyframe_then_switches_seamlessly() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Video, 65534, 0, start);
        s.attach(A);
        run(
            &mut s,
            start,
            &[
                (
                    pkt(A, 10, 900, false),
                    0,
                    Err(DropReason::WaitingForKeyframe),
                ),
                (pkt(A, 11, 900, true), 0, Ok((65534, 0))),
                (pkt(A, 12, 900, false), 1, Ok((65535, 0))),
                // sequence wraps on the way out
                (pkt(A, 13, 4500, false), 50, Ok((0, 3600))),
            ],
        );
        s.attach(B);
        assert!(s.awaits_keyframe());
        run(
            &mut s,
            start,
            &[
                // the old source goes on until the new one's keyframe: no gap in the picture
                (pkt(A, 14, 8100, false), 90, Ok((1, 7200))),
                (
                    pkt(B, 40000, 123, false),
                    90,
                    Err(DropReason::WaitingForKeyframe),
                ),
                // 60 ms after the last packet sent (at 90 ms): 5400 ticks later, seq + 1
                (pkt(B, 40001, 123, true), 150, Ok((2, 7200 + 5400))),
                (pkt(A, 15, 9000, false), 151, Err(DropReason::OtherSource)),
                (pkt(B, 40002, 3123, false), 183, Ok((3, 7200 + 5400 + 3000))),
                // a retransmission from before the switch point of B is dropped
                (
                    pkt(B, 40000, 123, false),
                    184,
                    Err(DropReason::BeforeSwitch),
                ),
            ],
        );
        assert!(s.maps(B) && !s.maps(A));
    }

    #[test]
    fn a_switch_called_off_before_its_keyframe_leaves_the_stream_as_it_was() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Video, 100, 0, start);
        s.attach(A);
        run(&mut s, start, &[(pkt(A, 1, 0, true), 0, Ok((100, 0)))]);
        s.attach(B);
        s.attach(A);
        assert!(!s.awaits_keyframe());
        run(
            &mut s,
            start,
            &[
                (pkt(B, 7, 50, true), 10, Err(DropReason::OtherSource)),
                (pkt(A, 2, 3000, false), 33, Ok((101, 3000))),
            ],
        );
    }

    #[test]
    fn audio_switches_at_once() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Audio, 10, 0, start);
        s.attach(A);
        run(&mut s, start, &[(pkt(A, 1, 0, false), 0, Ok((10, 0)))]);
        s.attach(B);
        run(
            &mut s,
            start,
            &[
                (pkt(A, 2, 960, false), 20, Err(DropReason::OtherSource)),
                (pkt(B, 500, 7, false), 20, Ok((11, 960))),
            ],
        );
    }

    #[test]
    fn source_sequence_wrap_keeps_the_mapping() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Audio, 7, 0, start);
        s.attach(A);
        run(
            &mut s,
            start,
            &[
                (pkt(A, 65535, u32::MAX - 959, false), 0, Ok((7, 0))),
                (pkt(A, 0, 0, false), 20, Ok((8, 960))),
                (pkt(A, 1, 960, false), 40, Ok((9, 1920))),
            ],
        );
    }

    #[test]
    fn resume_after_mute_continues_without_a_sequence_gap() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Audio, 0, 0, start);
        s.attach(A);
        run(
            &mut s,
            start,
            &[(pkt(A, 100, 48_000, false), 0, Ok((0, 0)))],
        );
        s.detach();
        run(
            &mut s,
            start,
            &[(pkt(A, 101, 48_960, false), 20, Err(DropReason::NoSource))],
        );
        s.attach(A);
        // 500 packets were skipped while muted; the subscriber sees seq 1, ts + 1 s
        run(
            &mut s,
            start,
            &[(pkt(A, 601, 96_000, false), 1000, Ok((1, 48_000)))],
        );
    }

    #[test]
    fn skipped_packets_leave_no_gap_even_when_others_arrive_out_of_order() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Video, 500, 0, start);
        s.attach(A);
        run(&mut s, start, &[(pkt(A, 10, 0, true), 0, Ok((500, 0)))]);
        s.skip(&pkt(A, 11, 0, false)); // padding probe
        s.skip(&pkt(A, 12, 0, false));
        run(
            &mut s,
            start,
            &[
                (pkt(A, 14, 3000, false), 30, Ok((502, 3000))),
                // late, but after the skipped ones: still lands right before 14
                (pkt(A, 13, 3000, false), 31, Ok((501, 3000))),
                (pkt(A, 11, 0, false), 32, Err(DropReason::Skipped)),
                (pkt(A, 15, 6000, false), 60, Ok((503, 6000))),
            ],
        );
        s.skip(&pkt(A, 65000, 0, false)); // from before the mapping: ignored
        run(
            &mut s,
            start,
            &[(pkt(A, 16, 6000, false), 61, Ok((504, 6000)))],
        );
    }

    /// A browser probing for bandwidth sends long runs of padding on its media SSRC: however
    /// many are skipped, the packets between them go out without a gap.
    #[test]
    fn endless_padding_never_opens_a_gap() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Video, 100, 0, start);
        s.attach(A);
        run(&mut s, start, &[(pkt(A, 0, 0, true), 0, Ok((100, 0)))]);
        let mut seq = 1u16;
        for frame in 1..=100u16 {
            for _ in 0..5 {
                s.skip(&pkt(A, seq, 0, false));
                seq += 1;
            }
            let ts = u32::from(frame) * 3000;
            run(
                &mut s,
                start,
                &[(pkt(A, seq, ts, false), 0, Ok((100 + frame, ts)))],
            );
            seq += 1;
        }
        assert_eq!(
            s.rewrite(&pkt(A, 3, 3000, false), start),
            Err(DropReason::BeforeSwitch),
            "a packet older than the skipped ones remembered is dropped"
        );
        assert_eq!(
            s.fresh_from(),
            Some((100, 200)),
            "the source still began where it began: NACKs for its packets are answered"
        );
    }

    #[test]
    fn padding_goes_after_the_newest_packet_and_late_ones_keep_their_numbers() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Video, 100, 0, start);
        assert_eq!(s.pad(&pkt(A, 0, 0, false)), None, "nothing to pad after");
        s.attach(A);
        run(
            &mut s,
            start,
            &[
                (pkt(A, 1, 90, true), 0, Ok((100, 0))),
                (pkt(A, 2, 90, false), 0, Ok((101, 0))),
                (pkt(A, 4, 90, false), 0, Ok((103, 0))),
            ],
        );
        assert_eq!(s.pad(&pkt(A, 2, 90, false)), None, "only after the newest");
        let four = pkt(A, 4, 90, false);
        assert_eq!(
            s.pad(&four),
            Some(Rewritten {
                seq: 104,
                timestamp: 0
            })
        );
        assert_eq!(
            s.pad(&four),
            Some(Rewritten {
                seq: 105,
                timestamp: 0
            })
        );
        run(
            &mut s,
            start,
            &[
                // the late one takes the number left for it, before the padding
                (pkt(A, 3, 90, false), 0, Ok((102, 0))),
                (pkt(A, 5, 3090, false), 0, Ok((106, 3000))),
            ],
        );
        // padding and skipped packets together: still no gap, no number twice
        s.skip(&pkt(A, 6, 3090, false));
        let six = pkt(A, 6, 3090, false);
        assert_eq!(
            s.pad(&six),
            Some(Rewritten {
                seq: 107,
                timestamp: 3000
            })
        );
        run(
            &mut s,
            start,
            &[(pkt(A, 7, 6090, false), 0, Ok((108, 6000)))],
        );
        // endless padding folds into the offset without a gap
        let seven = pkt(A, 7, 6090, false);
        for i in 0..300u16 {
            assert_eq!(s.pad(&seven).map(|r| r.seq), Some(109 + i));
        }
        run(
            &mut s,
            start,
            &[(pkt(A, 8, 9090, false), 0, Ok((409, 9000)))],
        );
    }

    #[test]
    fn attaching_the_current_source_again_changes_nothing() {
        let start = Instant::now();
        let mut s = OutboundStream::new(1, MediaKind::Video, 0, 0, start);
        s.attach(A);
        run(&mut s, start, &[(pkt(A, 1, 0, true), 0, Ok((0, 0)))]);
        s.attach(A);
        assert!(!s.awaits_keyframe());
        run(&mut s, start, &[(pkt(A, 2, 0, false), 1, Ok((1, 0)))]);
    }
}
