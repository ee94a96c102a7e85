//! Send-side bandwidth estimation of a subscriber's downlink: how much the node may send it.
//!
//! The node numbers every packet it writes to a WebRTC subscriber with a transport-wide
//! sequence number; the subscriber's TWCC feedback says when each arrived. `rtc`'s congestion
//! control interceptor keeps that send history and resolves the feedback into packet reports;
//! [`DownlinkEstimator`] reads three congestion signals from them: GCC's delay-gradient overuse
//! detector (kept in `rtc`), the queueing delay (one-way delay over its minimum of the last ten
//! seconds: a queue that has filled no longer grows, and a shaper's queue fills in a moment;
//! counted once it has stood for 100 ms, since a busy machine's stall delays a batch as much),
//! and loss; and it runs a rate controller of its own. The rate that gets through is timed by
//! the subscriber's own clock, the arrival times its feedback reports (`ArrivalRate`).
//!
//! The controller differs from GCC's where an SFU differs from a browser: the node cannot send
//! more than its publishers send, so it does not learn a path's capacity by filling it. When the
//! path shows congestion (a growing queue, or heavy loss) the estimate falls under the rate that
//! got through, and that rate becomes the path's *ceiling*: the estimate climbs back towards it
//! (8 % a second) but not past it, so the allocator does not switch a subscriber up into the
//! congestion it just left. Only evidence raises a ceiling: the path delivering clearly more than
//! it for a while, without loss or a growing queue, which the node provokes with short probes of
//! padding (see `probe::Prober`); the ceiling (and the estimate) then rise to what was
//! delivered. Without a ceiling (a path never congested) the estimate grows fast, 50 % a second,
//! and the allocator fills it.
//!
//! The estimate leaves the peer connection through a [`DownlinkEstimate`], an atomic the
//! estimator writes and the core reads at its layer-choice tick: no lock, no allocation. The
//! congestion controller and the TWCC sender sit behind [`TwccStreamsOnly`], so that a
//! subscriber that did not negotiate transport-wide feedback costs no send history, and a
//! stream's retransmissions on its repair SSRC (RTX) are numbered and counted like the rest.

use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, Interceptor, OveruseDetector, PacketReport,
    RateControlState, SlopeEstimator, StreamInfo, TaggedPacket, Usage,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::TRANSPORT_CC_URI;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the estimate starts when the first feedback arrives: enough for a few top layers, so
/// a call starts in full quality and backs off when the path says so.
pub const INITIAL_ESTIMATE: f64 = 2_500_000.0;
/// The floor: a low layer and audio.
pub const MIN_ESTIMATE: f64 = 150_000.0;
/// The ceiling: far above anything a room of ten sends one subscriber.
pub const MAX_ESTIMATE: f64 = 50_000_000.0;
/// The share of the received rate the estimate falls to at congestion (GCC's beta).
const DECREASE_FACTOR: f64 = 0.85;
/// Growth per second back towards a known ceiling.
const CAREFUL_INCREASE: f64 = 1.08;
/// Growth per second where no ceiling is known.
const FAST_INCREASE: f64 = 1.5;
/// Delivering this much more than its ceiling, cleanly, raises it.
pub const LIFT_MARGIN: f64 = 1.15;
/// Loss (share of packets, smoothed and in the latest feedback alike) above which the path is
/// congested.
const HEAVY_LOSS: f64 = 0.10;
/// Loss under which delivery counts as clean.
const CLEAN_LOSS: f64 = 0.02;
/// Queueing delay above which the path is congested.
const QUEUE_CONGESTED_MS: f64 = 50.0;
/// How long a queue over [`QUEUE_CONGESTED_MS`] must stand, in every feedback batch, to count
/// as congestion: a stall of the subscriber's or the node's process (a busy machine) delays a
/// batch or two by as much, and drains at once; a bottleneck's queue stays.
const QUEUE_STANDS: Duration = Duration::from_millis(100);
/// Queueing delay under which delivery counts as clean.
const QUEUE_CLEAN_MS: f64 = 25.0;
/// How long the path must deliver clearly more than its ceiling, cleanly, to raise it: longer
/// than a shaper's token bucket lets a burst through.
pub const LIFT_AFTER: Duration = Duration::from_millis(700);
/// The window of arrival times the received rate is measured over.
const ARRIVAL_WINDOW: Duration = Duration::from_millis(500);
/// The least span of arrivals that measures a rate.
const MIN_ARRIVAL_SPAN: Duration = Duration::from_millis(100);
/// An arrival this far before the latest one means the subscriber's clock started over.
const ARRIVAL_CLOCK_RESET: Duration = Duration::from_secs(5);
/// The window the one-way delay's minimum is taken over.
const BASE_DELAY_WINDOW: Duration = Duration::from_secs(10);
/// Least time between two increases of the estimate, so each acts on new evidence.
const CHANGE_INTERVAL: Duration = Duration::from_millis(200);
/// Least time between two decreases: a subscriber's streams take a keyframe's time to move to
/// smaller layers, and the loss until then says nothing new about the path.
const DECREASE_INTERVAL: Duration = Duration::from_millis(500);
/// Bytes a packet costs on the wire beyond its RTP size: the SRTP tag, UDP and IPv4. Counted
/// so that the estimate is in wire bits, as the layers' rates are, and a probe of small
/// padding packets is measured at what it really costs the path.
const WIRE_OVERHEAD: usize = 16 + 8 + 20;

/// What the latest feedback showed of a subscriber's path, published beside its estimate.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PathState {
    /// Delivering cleanly: no queue to speak of, next to no loss.
    pub clean: bool,
    /// Congested: a growing queue, a standing one, or heavy loss.
    pub congested: bool,
    /// The round trip of its feedback.
    pub rtt: Option<Duration>,
    /// The share of packets lost, smoothed.
    pub loss: f64,
}

/// A subscriber's current downlink estimate, shared between its estimator (inside the peer
/// connection's interceptor chain) and the core.
#[derive(Debug, Clone, Default)]
pub struct DownlinkEstimate(Arc<AtomicU64>);

/// The ceiling flag, above the estimate's 32 bits.
const CEILING_BIT: u64 = 1 << 32;
/// The clean-delivery flag.
const CLEAN_BIT: u64 = 1 << 33;
/// The congestion flag.
const CONGESTED_BIT: u64 = 1 << 34;
/// Where the round-trip time sits, in milliseconds (0: not known), 16 bits.
const RTT_SHIFT: u32 = 40;
/// Where the smoothed loss sits, in 255ths, 8 bits.
const LOSS_SHIFT: u32 = 56;

impl DownlinkEstimate {
    /// The estimate in bits per second; `None` until the subscriber's first feedback (a peer
    /// that sends none is never limited).
    pub fn get(&self) -> Option<u32> {
        match self.0.load(Ordering::Relaxed) as u32 {
            0 => None,
            bps => Some(bps),
        }
    }

    /// Whether the estimate is held under a ceiling the path showed: only evidence (what a
    /// probe gets through) lets it grow past.
    pub fn under_ceiling(&self) -> bool {
        self.0.load(Ordering::Relaxed) & CEILING_BIT != 0
    }

    /// Whether the latest feedback showed clean delivery: no queue to speak of, next to no
    /// loss (a probe starts only then, and stops when it is no longer so).
    pub fn is_clean(&self) -> bool {
        self.0.load(Ordering::Relaxed) & CLEAN_BIT != 0
    }

    /// Whether the latest feedback showed congestion: a growing queue, a standing one, or heavy
    /// loss. Loss on a congested path is the bottleneck's; loss on a path that is not is the
    /// kind redundancy makes good.
    pub fn is_congested(&self) -> bool {
        self.0.load(Ordering::Relaxed) & CONGESTED_BIT != 0
    }

    /// The round-trip time to the subscriber, as its congestion feedback shows it (queueing
    /// included: what a retransmission takes to be asked for and to arrive).
    pub fn rtt(&self) -> Option<Duration> {
        match (self.0.load(Ordering::Relaxed) >> RTT_SHIFT) as u16 {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }

    /// The share of packets the path lost lately, as its feedback shows it (smoothed; 0 before
    /// any feedback).
    pub fn loss(&self) -> f64 {
        f64::from((self.0.load(Ordering::Relaxed) >> LOSS_SHIFT) as u8) / 255.0
    }

    pub(crate) fn set(&self, bits_per_second: f64, ceiling: bool, path: PathState) {
        // the estimate is clamped to MIN..=MAX, far inside u32
        let bps = bits_per_second.clamp(1.0, f64::from(u32::MAX)) as u64;
        let PathState {
            clean,
            congested,
            rtt,
            loss,
        } = path;
        let flag = |on: bool, bit: u64| if on { bit } else { 0 };
        let flags =
            flag(ceiling, CEILING_BIT) | flag(clean, CLEAN_BIT) | flag(congested, CONGESTED_BIT);
        let rtt_ms = rtt.map_or(0, |rtt| {
            rtt.as_millis().clamp(1, u128::from(u16::MAX)) as u64
        });
        let loss = (loss.clamp(0.0, 1.0) * 255.0).round() as u64;
        self.0.store(
            bps | flags | rtt_ms << RTT_SHIFT | loss << LOSS_SHIFT,
            Ordering::Relaxed,
        );
    }
}

/// What one feedback batch says about the path.
#[derive(Debug, Clone, Copy)]
struct Signals {
    /// Congested: a growing queue, a full one, or heavy loss.
    congested: bool,
    /// Delivering cleanly: no queue to speak of, next to no loss.
    clean: bool,
    /// The rate arriving, in wire bits per second.
    received: Option<f64>,
}

/// The one-way delay over its recent minimum: how long packets wait in a queue.
#[derive(Debug, Default)]
struct QueueDelay {
    /// The first departure seen: one-way delays are taken against it.
    epoch: Option<Instant>,
    /// Each batch's smallest one-way delay (ms, up to the clocks' offset), newest last.
    minima: VecDeque<(Instant, f64)>,
}

impl QueueDelay {
    /// The mean queueing delay of `reports` in ms, once a delay is known.
    fn update(&mut self, now: Instant, reports: &[PacketReport]) -> Option<f64> {
        let mut sum = 0.0;
        let mut count = 0u32;
        let mut least = f64::MAX;
        for report in reports {
            let Some(arrival) = report.arrival else {
                continue;
            };
            let epoch = *self.epoch.get_or_insert(report.departure);
            let sent = report.departure.saturating_duration_since(epoch);
            let delay = (arrival.as_secs_f64() - sent.as_secs_f64()) * 1000.0;
            sum += delay;
            count += 1;
            least = least.min(delay);
        }
        if count == 0 {
            return None;
        }
        while self
            .minima
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > BASE_DELAY_WINDOW)
        {
            self.minima.pop_front();
        }
        self.minima.push_back((now, least));
        let base = self.minima.iter().map(|(_, d)| *d).fold(f64::MAX, f64::min);
        Some(sum / f64::from(count) - base)
    }
}

/// The rate packets arrive at the subscriber, timed by its own clock (the arrival times its
/// feedback reports): behind a bottleneck with a queue, exactly what the bottleneck lets
/// through. Timed by when feedback happens to reach the node instead, a window holds a burst of
/// reports and the traffic from before a cap, and reads far above the cap just when the first
/// decrease needs it.
#[derive(Debug, Default)]
struct ArrivalRate {
    /// Arrived packets within the window before the latest arrival: when, and their wire size.
    samples: VecDeque<(Duration, usize)>,
    bytes: usize,
    latest: Duration,
    /// When an arrival was last added, by the node's clock: a window nothing was added to for
    /// longer than itself measures nothing now.
    added_at: Option<Instant>,
}

impl ArrivalRate {
    fn add(&mut self, now: Instant, arrival: Duration, size: usize) {
        if arrival + ARRIVAL_CLOCK_RESET < self.latest {
            *self = Self::default();
        }
        self.latest = self.latest.max(arrival);
        if arrival + ARRIVAL_WINDOW < self.latest {
            return;
        }
        self.samples.push_back((arrival, size));
        self.bytes += size;
        self.added_at = Some(now);
        while let Some(&(at, size)) = self.samples.front() {
            if at + ARRIVAL_WINDOW >= self.latest {
                break;
            }
            self.samples.pop_front();
            self.bytes -= size;
        }
    }

    /// Bits per second over the window: what arrived after its first packet, over the time
    /// from that packet to the latest.
    fn bits_per_second(&self, now: Instant) -> Option<f64> {
        let fresh = self
            .added_at
            .is_some_and(|at| now.saturating_duration_since(at) <= ARRIVAL_WINDOW);
        let &(first, first_size) = self.samples.front().filter(|_| fresh)?;
        let span = self.latest.saturating_sub(first);
        if span < MIN_ARRIVAL_SPAN {
            return None;
        }
        Some(((self.bytes - first_size) * 8) as f64 / span.as_secs_f64())
    }
}

/// GCC's delay detection with a rate controller made for forwarding.
pub struct DownlinkEstimator {
    slope: SlopeEstimator,
    detector: OveruseDetector,
    received: ArrivalRate,
    queue: QueueDelay,
    /// Since when every feedback batch shows a queue over [`QUEUE_CONGESTED_MS`].
    queued_since: Option<Instant>,
    state: RateControlState,
    /// Smoothed share of packets lost.
    loss: Option<f64>,
    /// The rate that got through when the path last showed congestion.
    ceiling: Option<f64>,
    /// Since when the path delivers clearly more than its ceiling, cleanly.
    evidence_since: Option<Instant>,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    target: f64,
    published: DownlinkEstimate,
    /// The smoothed round-trip time: from a packet's departure to the feedback that reports
    /// it, for the newest packet of each batch.
    rtt: Option<Duration>,
    /// Names the subscriber in logs.
    label: String,
}

impl DownlinkEstimator {
    /// An estimator writing its estimate to `published`; `label` names the subscriber in logs.
    pub fn new(published: DownlinkEstimate, label: String) -> Self {
        Self {
            label,
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            received: ArrivalRate::default(),
            queue: QueueDelay::default(),
            queued_since: None,
            state: RateControlState::default(),
            loss: None,
            ceiling: None,
            evidence_since: None,
            last_change: None,
            last_decrease: None,
            target: INITIAL_ESTIMATE,
            rtt: None,
            published,
        }
    }

    /// Folds the round trip of a batch's newest arrived packet into the smoothed RTT.
    fn sample_rtt(&mut self, now: Instant, reports: &[PacketReport]) {
        let Some(newest) = reports
            .iter()
            .filter(|r| r.arrived)
            .map(|r| r.departure)
            .max()
        else {
            return;
        };
        let sample = now.saturating_duration_since(newest);
        self.rtt = Some(self.rtt.map_or(sample, |rtt| (rtt * 7 + sample) / 8));
    }

    /// Folds one batch's signals into the target.
    fn control(&mut self, now: Instant, signals: Signals) {
        let since_change = self
            .last_change
            .map_or(CHANGE_INTERVAL, |last| now.saturating_duration_since(last));
        if signals.congested {
            self.evidence_since = None;
            let since_decrease = self.last_decrease.map_or(DECREASE_INTERVAL, |last| {
                now.saturating_duration_since(last)
            });
            if let Some(received) = signals
                .received
                .filter(|_| since_decrease >= DECREASE_INTERVAL)
            {
                // back off under what the path delivers, not from what was aimed at; the
                // ceiling is measured as the evidence that lifts it will be
                self.target = (received * DECREASE_FACTOR).min(self.target);
                self.ceiling = Some(received);
                self.last_change = Some(now);
                self.last_decrease = Some(now);
            }
            return;
        }
        if let Some(ceiling) = self.ceiling {
            let evidence = signals.clean
                && signals
                    .received
                    .is_some_and(|received| received > ceiling * LIFT_MARGIN);
            let since = if evidence {
                *self.evidence_since.get_or_insert(now)
            } else {
                self.evidence_since = None;
                now
            };
            if now.saturating_duration_since(since) >= LIFT_AFTER
                && let Some(received) = signals.received
            {
                // the path carries clearly more than it did when congested
                self.ceiling = Some(received);
                self.evidence_since = None;
                self.target = self.target.max(received);
            }
        }
        if self.state != RateControlState::Increase || since_change < CHANGE_INTERVAL {
            return;
        }
        let seconds = since_change.as_secs_f64().min(1.0);
        self.target = match self.ceiling {
            Some(ceiling) => {
                (self.target * CAREFUL_INCREASE.powf(seconds)).min(ceiling.max(self.target))
            }
            None => self.target * FAST_INCREASE.powf(seconds),
        };
        self.last_change = Some(now);
    }
}

impl BandwidthEstimator for DownlinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.sample_rtt(now, reports);
        let mut usage = self.detector.usage();
        for report in reports {
            if let Some(arrival) = report.arrival.filter(|_| report.arrived) {
                self.received.add(now, arrival, report.size + WIRE_OVERHEAD);
            }
            if let Some(trend) = self.slope.accumulate(report) {
                usage = self.detector.update(trend.at, trend.estimate_ms);
            }
        }
        self.state = self.state.next(usage);
        let received = self.received.bits_per_second(now);
        let queueing = self.queue.update(now, reports);
        let lost = reports.iter().filter(|r| !r.arrived).count() as f64 / reports.len() as f64;
        let loss = self.loss.map_or(lost, |average| 0.8 * average + 0.2 * lost);
        self.loss = Some(loss);
        let queued = |limit: f64| queueing.is_some_and(|q| q > limit);
        self.queued_since = if queued(QUEUE_CONGESTED_MS) {
            self.queued_since.or(Some(now))
        } else {
            None
        };
        let queue_stands = self
            .queued_since
            .is_some_and(|since| now.saturating_duration_since(since) >= QUEUE_STANDS);
        let signals = Signals {
            congested: self.state == RateControlState::Decrease
                || queue_stands
                || loss.min(lost) > HEAVY_LOSS,
            clean: usage == Usage::Normal && loss < CLEAN_LOSS && !queued(QUEUE_CLEAN_MS),
            received,
        };
        tracing::trace!(
            subscriber = %self.label,
            received_bps = received.map(|r| r as u64),
            queueing_ms = queueing.map(|q| q as u64),
            lost,
            ?usage,
            "feedback"
        );
        let before = self.target;
        self.control(now, signals);
        self.target = self.target.clamp(MIN_ESTIMATE, MAX_ESTIMATE);
        if (self.target - before).abs() > before * 0.1 {
            tracing::debug!(
                subscriber = %self.label,
                target_bps = self.target as u64,
                ceiling_bps = self.ceiling.map(|c| c as u64),
                received_bps = received.map(|r| r as u64),
                queueing_ms = queueing.map(|q| q as u64),
                loss,
                ?usage,
                "downlink estimate"
            );
        }
        self.published.set(
            self.target,
            self.ceiling.is_some(),
            PathState {
                clean: signals.clean,
                congested: signals.congested,
                rtt: self.rtt,
                loss,
            },
        );
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    fn stats(&self) -> EstimatorStats {
        let mut stats = EstimatorStats::default();
        stats.delay_based_bitrate = Some(self.target);
        stats.packet_loss = self.loss;
        stats
    }
}

/// An interceptor that sees only the local streams that negotiated transport-wide congestion
/// control: `rtc`'s congestion controller otherwise keeps a send history of every packet of
/// every stream (for RFC 8888 feedback, which kaskade does not negotiate), and a subscriber
/// that sends no TWCC feedback (kaskade's lean load generator) would cost a history for
/// nothing. A stream's repair SSRC (RTX) is bound beside it: `rtc` binds only the media SSRC,
/// and a retransmission the TWCC sender does not number is one the estimate never sees.
/// Everything else passes straight through.
pub struct TwccStreamsOnly<I>(pub I);

/// The repair stream (RTX) of a local stream that negotiated one, as a stream of its own.
fn repair_stream(info: &StreamInfo) -> Option<StreamInfo> {
    let (ssrc, payload_type) = info.ssrc_rtx.zip(info.payload_type_rtx)?;
    Some(StreamInfo {
        ssrc,
        ssrc_rtx: None,
        payload_type,
        payload_type_rtx: None,
        ..info.clone()
    })
}

fn negotiates_twcc(info: &StreamInfo) -> bool {
    info.rtp_header_extensions
        .iter()
        .any(|e| e.uri == TRANSPORT_CC_URI)
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for TwccStreamsOnly<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.poll_write()
    }

    fn handle_event(&mut self, event: ()) -> Result<(), Error> {
        self.0.handle_event(event)
    }

    fn poll_event(&mut self) -> Option<()> {
        self.0.poll_event()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.0.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for TwccStreamsOnly<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if negotiates_twcc(info) {
            self.0.bind_local_stream(info);
            if let Some(repair) = repair_stream(info) {
                self.0.bind_local_stream(&repair);
            }
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if negotiates_twcc(info) {
            self.0.unbind_local_stream(info);
            if let Some(repair) = repair_stream(info) {
                self.0.unbind_local_stream(&repair);
            }
        }
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests;
