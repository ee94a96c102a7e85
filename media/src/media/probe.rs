//! Probing a subscriber's downlink for room above the ceiling its estimate is held under.
//!
//! A subscriber held under a ceiling its path showed (see `bwe`) while its tiles want more (see
//! `allocation`) is probed: for [`PROBE_DURATION`] the node sends it padding on top of its
//! media, aiming its downlink [`PROBE_RATE`] times over the estimate. If the path carries it
//! cleanly the estimator raises the ceiling and the allocator moves the tiles up; if not, the
//! probe cost a moment's queue, not a keyframe and a freeze, and the next one waits twice as
//! long (up to [`MAX_PROBE_INTERVAL`]). A probe that raised the ceiling is followed by the next
//! at once.

use crate::media::bwe::{DownlinkEstimate, LIFT_MARGIN};
use std::time::{Duration, Instant};

/// How long a probe lasts: long enough to empty a shaper's token bucket, fill the estimator's
/// half-second window and hold there for `bwe::LIFT_AFTER`.
pub const PROBE_DURATION: Duration = Duration::from_millis(1500);
/// A probe aims the subscriber's downlink this many times over its estimate.
pub const PROBE_RATE: f64 = 2.0;
/// The least a probe adds, in bits per second.
const MIN_PROBE_EXTRA: u32 = 32_000;
/// Wire bytes of one padding packet: an RTP header (12) with its transport-wide sequence
/// number (8), four bytes of padding, the SRTP tag (16), UDP and IPv4 (28).
pub const PADDING_PACKET_BYTES: f64 = 68.0;
/// Most padding packets sent after one frame: 48 at 15 frames a second add 390 kbit/s.
const MAX_PADDING_BURST: usize = 48;
/// The wait before the first probe of a subscriber held under a ceiling.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// The wait after a probe that raised the ceiling: the next one looks for more at once, so a
/// lifted cap is found in a few doubling steps.
pub const NEXT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The longest wait between probes that each found the ceiling still there.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(4);

/// Probes a subscriber's downlink for room above the ceiling its estimate is held under.
#[derive(Debug)]
pub struct Prober {
    probe: Option<Probe>,
    next_at: Option<Instant>,
    interval: Duration,
}

#[derive(Debug)]
struct Probe {
    until: Instant,
    extra_bps: f64,
    /// Padding bytes owed.
    credit: f64,
    last: Instant,
    /// The estimate when it began: the probe ends early when it falls.
    from_bps: u32,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            probe: None,
            next_at: None,
            interval: MIN_PROBE_INTERVAL,
        }
    }
}

/// What came of a probe that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The path carried it: the ceiling and the estimate rose.
    Lifted,
    /// The ceiling is still where it was.
    Held,
}

impl Prober {
    /// After each allocation: whether a tile got less than its size asks for (`limited`),
    /// the subscriber's estimate, and the bits per second the allocation sends it. Starts a
    /// probe when one is due; returns the outcome of one that ended.
    pub fn on_allocation(
        &mut self,
        now: Instant,
        estimate: &DownlinkEstimate,
        limited: bool,
        sending: u32,
    ) -> Option<ProbeOutcome> {
        let bps = estimate.get()?;
        if let Some(probe) = &self.probe {
            if now < probe.until && bps >= probe.from_bps && estimate.is_clean() {
                return None;
            }
            let raised = f64::from(bps) >= f64::from(probe.from_bps) * LIFT_MARGIN;
            self.probe = None;
            let outcome = if raised {
                self.interval = MIN_PROBE_INTERVAL;
                self.next_at = Some(now + NEXT_PROBE_INTERVAL);
                ProbeOutcome::Lifted
            } else {
                self.interval = (self.interval * 2).min(MAX_PROBE_INTERVAL);
                self.next_at = Some(now + self.interval);
                ProbeOutcome::Held
            };
            return Some(outcome);
        }
        if !estimate.under_ceiling() {
            self.interval = MIN_PROBE_INTERVAL;
        }
        if !(limited && estimate.under_ceiling()) {
            self.next_at = None;
            return None;
        }
        // a probe on a path still draining a queue, or already sent more than its estimate
        // (the speaker's smallest layer goes out whatever it costs), only adds loss
        if !estimate.is_clean() || sending > bps {
            return None;
        }
        match self.next_at {
            None => self.next_at = Some(now + self.interval),
            Some(at) if now >= at => {
                let aim = f64::from(bps) * PROBE_RATE - f64::from(sending);
                self.probe = Some(Probe {
                    until: now + PROBE_DURATION,
                    extra_bps: aim.max(f64::from(MIN_PROBE_EXTRA)),
                    credit: 0.0,
                    last: now,
                    from_bps: bps,
                });
            }
            Some(_) => {}
        }
        None
    }

    /// Whether a probe is under way.
    pub fn is_probing(&self) -> bool {
        self.probe.is_some()
    }

    /// How many padding packets to send now, after a media packet: none once the probe is
    /// over, or as soon as the path queues it (delivery no longer clean, the estimate falls).
    pub fn padding_due(&mut self, now: Instant, estimate: &DownlinkEstimate) -> usize {
        let falling =
            |p: &Probe| !estimate.is_clean() || estimate.get().is_none_or(|bps| bps < p.from_bps);
        let Some(probe) = self.probe.as_mut().filter(|p| now < p.until && !falling(p)) else {
            return 0;
        };
        let elapsed = now.saturating_duration_since(probe.last).as_secs_f64();
        probe.last = now;
        probe.credit += probe.extra_bps / 8.0 * elapsed;
        let due = ((probe.credit / PADDING_PACKET_BYTES) as usize).min(MAX_PADDING_BURST);
        probe.credit -= due as f64 * PADDING_PACKET_BYTES;
        // what a burst could not send is not owed later
        probe.credit = probe
            .credit
            .min(PADDING_PACKET_BYTES * MAX_PADDING_BURST as f64);
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::bwe::PathState;

    /// Publishes an estimate held under a ceiling, delivering cleanly or not.
    fn under_ceiling(estimate: &DownlinkEstimate, bps: f64, clean: bool) {
        let path = PathState {
            clean,
            ..PathState::default()
        };
        estimate.set(bps, true, path);
    }

    #[test]
    fn a_subscriber_under_a_ceiling_is_probed_less_often_while_it_holds() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let estimate = DownlinkEstimate::default();
        let mut prober = Prober::default();
        assert_eq!(
            prober.on_allocation(t0, &estimate, true, 0),
            None,
            "no estimate"
        );
        under_ceiling(&estimate, 270_000.0, true);
        // the first limited allocation only schedules a probe
        prober.on_allocation(at(0), &estimate, true, 220_000);
        assert!(!prober.is_probing());
        prober.on_allocation(at(1_000), &estimate, true, 220_000);
        assert!(!prober.is_probing());
        prober.on_allocation(at(2_000), &estimate, true, 220_000);
        assert!(prober.is_probing());
        // it pads 2 x 270 - 220 = 320 kbit/s for 1.5 s, spread over the media packets (the
        // last of them here 1.48 s in)
        let mut padding = 0;
        for ms in (2_000..3_600).step_by(20) {
            padding += prober.padding_due(at(ms), &estimate);
        }
        let expected = 320_000.0 / 8.0 * 1.48 / PADDING_PACKET_BYTES;
        assert!(
            (padding as f64 - expected).abs() < 3.0,
            "{padding} vs {expected}"
        );
        // the ceiling held: the next probe waits twice as long
        assert_eq!(
            prober.on_allocation(at(3_500), &estimate, true, 220_000),
            Some(ProbeOutcome::Held)
        );
        prober.on_allocation(at(7_400), &estimate, true, 220_000);
        assert!(!prober.is_probing());
        prober.on_allocation(at(7_500), &estimate, true, 220_000);
        assert!(prober.is_probing());
        // the estimate falls during a probe: it ends at once
        under_ceiling(&estimate, 200_000.0, true);
        assert_eq!(
            prober.on_allocation(at(7_600), &estimate, true, 220_000),
            Some(ProbeOutcome::Held)
        );
        assert_eq!(prober.padding_due(at(7_650), &estimate), 0);
        // the next one (4 s later, the longest wait) raises the ceiling
        prober.on_allocation(at(11_500), &estimate, true, 150_000);
        assert!(!prober.is_probing());
        prober.on_allocation(at(11_600), &estimate, true, 150_000);
        assert!(prober.is_probing());
        under_ceiling(&estimate, 300_000.0, true);
        assert_eq!(
            prober.on_allocation(at(13_100), &estimate, true, 150_000),
            Some(ProbeOutcome::Lifted)
        );
        // and the next looks for more half a second later
        prober.on_allocation(at(13_500), &estimate, true, 150_000);
        assert!(!prober.is_probing());
        prober.on_allocation(at(13_600), &estimate, true, 150_000);
        assert!(prober.is_probing());
        // delivery no longer clean: the probe ends, found wanting
        under_ceiling(&estimate, 300_000.0, false);
        assert_eq!(
            prober.on_allocation(at(13_800), &estimate, true, 150_000),
            Some(ProbeOutcome::Held)
        );
        // nor one whose path still drains a queue, or that is sent more than its estimate
        under_ceiling(&estimate, 270_000.0, false);
        for ms in (16_000..30_000).step_by(250) {
            prober.on_allocation(at(ms), &estimate, true, 220_000);
            assert!(!prober.is_probing());
        }
        under_ceiling(&estimate, 270_000.0, true);
        for ms in (30_000..44_000).step_by(250) {
            prober.on_allocation(at(ms), &estimate, true, 280_000);
            assert!(!prober.is_probing());
        }
        // a probe stops padding the moment delivery is no longer clean
        prober.on_allocation(at(44_000), &estimate, true, 220_000);
        assert!(prober.is_probing());
        assert!(prober.padding_due(at(44_100), &estimate) > 0);
        under_ceiling(&estimate, 270_000.0, false);
        assert_eq!(prober.padding_due(at(44_200), &estimate), 0);
        // a subscriber that gets what it wants is not probed
        under_ceiling(&estimate, 270_000.0, true);
        for ms in (46_000..60_000).step_by(250) {
            prober.on_allocation(at(ms), &estimate, false, 220_000);
            assert!(!prober.is_probing());
        }
    }
}
