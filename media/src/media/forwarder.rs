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
    /// The first source sequence number that went out with its own timestamp (rewritten by the
    /// offset): those before it went out in a replayed group of pictures, their timestamps
    /// squeezed, and are not resent.
    resend_from: u16,
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

    /// The source packet that went out as `out`, if it is one of this mapping's: the inverse
    /// of [`Self::out_seq`], searched over the few places skips and padding can shift it.
    fn source_seq(&self, out: u16) -> Option<u16> {
        let guess = out.wrapping_sub(self.seq_offset);
        let reach = (self.skipped.len() + self.padded.len()) as u16;
        (0..=reach)
            .flat_map(|d| [guess.wrapping_add(d), guess.wrapping_sub(d)])
            .find(|&seq| {
                !seq_before(seq, self.resend_from)
                    && !seq_before(seq, self.base_seq)
                    && !seq_before(self.highest_seq, seq)
                    && !self.skipped.contains(&seq)
                    && self.out_seq(seq) == out
            })
    }
}

/// Where a packet this stream sent came from: what to resend when its subscriber asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentFrom {
    /// The source stream's SSRC.
    pub ssrc: u32,
    /// The source's sequence number of the packet.
    pub seq: u16,
    /// What the stream adds to the source's timestamps.
    pub ts_offset: u32,
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

    /// The source packet this stream sent as `out`, while it still carries that packet's
    /// source; `None` for a packet of an earlier source, padding the stream sent of its own, a
    /// packet of a replayed group of pictures, or one not sent yet.
    pub fn source_of(&self, out: u16) -> Option<SentFrom> {
        let mapping = self.mapping.as_ref()?;
        let seq = mapping.source_seq(out)?;
        Some(SentFrom {
            ssrc: mapping.ssrc,
            seq,
            ts_offset: mapping.ts_offset,
        })
    }

    /// The packets of the current source up to `seq` went out in a replayed group of pictures
    /// (their timestamps squeezed): they are not resent with their own.
    pub fn replayed_through(&mut self, seq: u16) {
        if let Some(mapping) = self.mapping.as_mut()
            && !seq_before(seq, mapping.resend_from)
        {
            mapping.resend_from = seq.wrapping_add(1);
        }
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
            resend_from: packet.seq,
        });
        self.pending = None;
    }
}

/// `a` comes before `b` in RTP sequence space (RFC 3550 wrap-around arithmetic).
pub(crate) fn seq_before(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

#[cfg(test)]
mod tests;
