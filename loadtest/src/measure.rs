//! Counters over received streams, free of I/O and of the clock (times come in as offsets
//! from the start of the run), so every figure is unit-tested with fixed numbers:
//!
//! - [`percentile`] and [`Summary`]: nearest-rank percentiles of join, settle and first-frame
//!   times.
//! - [`SeqCounter`]: packet loss of one received RTP stream, RFC 3550 style (expected from the
//!   extended highest sequence number, against packets received).
//! - [`FrameCounter`]: complete video frames of one received stream (every packet from one
//!   marker bit to the next arrived), without decoding.
//! - [`FreezeTracker`]: freezes of one remote participant's video, from periodic samples of
//!   its frame counter and last-frame time.

use std::time::Duration;

use serde::Serialize;

/// A gap between two decoded frames longer than this is a freeze.
pub const FREEZE_GAP: Duration = Duration::from_millis(500);

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `values`; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    nearest_rank(&sorted(values), p)
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// The nearest-rank `p`-th percentile of values already sorted.
fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and max of a set of durations in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

impl Summary {
    /// Summarizes `values`.
    pub fn of(values: &[f64]) -> Self {
        let sorted = sorted(values);
        Self {
            count: values.len(),
            p50: nearest_rank(&sorted, 50.0),
            p99: nearest_rank(&sorted, 99.0),
            max: sorted.last().copied(),
        }
    }
}

/// Loss of one received RTP stream (one SSRC): packets expected from the first sequence number
/// seen to the extended highest one, against packets received (RFC 3550 A.3; duplicates count
/// as received, reordering is tolerated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqCounter {
    base: Option<u64>,
    highest: u64,
    received: u64,
}

impl SeqCounter {
    /// Counts one packet.
    pub fn push(&mut self, seq: u16) {
        self.received += 1;
        let Some(base) = self.base else {
            // start one cycle up so that packets reordered before the first stay positive
            let first = (1 << 16) + u64::from(seq);
            self.base = Some(first);
            self.highest = first;
            return;
        };
        // the extended value closest to the highest so far
        let delta = seq.wrapping_sub(self.highest as u16);
        let extended = if delta < 0x8000 {
            self.highest + u64::from(delta)
        } else {
            self.highest
                .saturating_sub(u64::from(delta.wrapping_neg()))
                .max(base)
        };
        self.highest = self.highest.max(extended);
    }

    /// Packets expected so far.
    pub fn expected(&self) -> u64 {
        self.base.map_or(0, |base| self.highest - base + 1)
    }

    /// Packets received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets lost so far (never negative: duplicates do not make up for losses elsewhere
    /// in the report, they only hide them here, as in RTCP receiver reports).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// Loss as a percentage of expected packets (0 when nothing was expected).
pub fn loss_percent(expected: u64, lost: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        lost as f64 * 100.0 / expected as f64
    }
}

/// Counts the complete frames of one received video stream: a frame is complete when its
/// marker packet arrives and every sequence number since the previous frame's marker did too
/// (a reordered packet counts as a break: conservative on loopback, where it is rare).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounter {
    next_seq: Option<u16>,
    broken: bool,
    frames: u64,
    first_at: Option<Duration>,
    last_at: Option<Duration>,
}

impl FrameCounter {
    /// Counts one packet arriving at `at` (an offset from the start of the run).
    pub fn push(&mut self, seq: u16, marker: bool, at: Duration) {
        if self.next_seq.is_some_and(|next| next != seq) {
            self.broken = true;
        }
        self.next_seq = Some(seq.wrapping_add(1));
        if marker {
            if !self.broken {
                self.frames += 1;
                self.first_at.get_or_insert(at);
                self.last_at = Some(at);
            }
            self.broken = false;
        }
    }

    /// Complete frames so far (the first frame counts only if its first packet was seen).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// When the first complete frame ended.
    pub fn first_at(&self) -> Option<Duration> {
        self.first_at
    }

    /// When the last complete frame ended.
    pub fn last_at(&self) -> Option<Duration> {
        self.last_at
    }
}

/// Counts freezes of one remote participant's video from samples of its decoded-frame counter
/// and the time of its last decoded frame, taken every few tens of milliseconds.
///
/// Between two samples whose last-frame times differ (`a` then `b`), the first new frame came
/// after the previous sample. When exactly one frame was decoded in between, the gap is exact
/// (`b - a`); otherwise it is at least `previous sample - a`, and that lower bound is used, so
/// a freeze is never counted that did not happen (one may be missed by up to one sampling
/// interval).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreezeTracker {
    frames: u64,
    last_frame: Option<Duration>,
    last_sample: Option<Duration>,
    freezes: u64,
    longest: Duration,
}

impl FreezeTracker {
    /// One sample at `at`: `frames` decoded so far, the last one at `last_frame`.
    pub fn observe(&mut self, at: Duration, frames: u64, last_frame: Option<Duration>) {
        if let (Some(previous), Some(now)) = (self.last_frame, last_frame)
            && frames > self.frames
            && now > previous
        {
            let gap = if frames == self.frames + 1 {
                now - previous
            } else {
                self.last_sample
                    .unwrap_or(previous)
                    .saturating_sub(previous)
            };
            self.gap(gap);
        }
        if frames >= self.frames {
            self.frames = frames;
            self.last_frame = last_frame.or(self.last_frame);
        }
        self.last_sample = Some(at);
    }

    /// The end of the measurement at `at`: a trailing gap counts as a freeze when the remote
    /// participant was still there (and so still sending).
    pub fn finish(&mut self, at: Duration, still_sending: bool) {
        if let Some(previous) = self.last_frame
            && still_sending
        {
            self.gap(at.saturating_sub(previous));
        }
    }

    fn gap(&mut self, gap: Duration) {
        if gap > FREEZE_GAP {
            self.freezes += 1;
        }
        self.longest = self.longest.max(gap);
    }

    /// Freezes counted.
    pub fn freezes(&self) -> u64 {
        self.freezes
    }

    /// The longest gap seen between decoded frames (lower bound, see the type's doc).
    pub fn longest_gap(&self) -> Duration {
        self.longest
    }
}

#[cfg(test)]
mod tests;
