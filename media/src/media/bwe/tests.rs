//! Unit tests of `bwe`.

use super::*;
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use std::ops::Range;

/// 1,200-byte packets sent at a steady rate through a bottleneck with a 200 ms queue (a
/// `tbf`), reported on every 50 ms.
struct Path {
    epoch: Instant,
    sent: u64,
    clock: Duration,
    /// When the bottleneck's queue drains.
    drained: Duration,
    /// Packets sent within it arrive no sooner than its end (a machine too busy to run the
    /// receiving process).
    stall: Option<Range<Duration>>,
}

const SIZE: usize = 1200;
const BASE_DELAY: Duration = Duration::from_millis(20);

impl Path {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            sent: 0,
            clock: Duration::ZERO,
            drained: Duration::ZERO,
            stall: None,
        }
    }

    /// `seconds` of sending at `kbps` through a `cap` (kbit/s, none: no bottleneck),
    /// losing every `lose_every`-th packet besides.
    fn run(
        &mut self,
        e: &mut DownlinkEstimator,
        seconds: u64,
        kbps: u64,
        cap: Option<u64>,
        lose_every: Option<u64>,
    ) {
        let gap = Duration::from_micros(SIZE as u64 * 8 * 1000 / kbps);
        let end = self.clock + Duration::from_secs(seconds);
        let mut batch = Vec::new();
        let mut batch_end = self.clock + Duration::from_millis(50);
        while self.clock < end {
            self.sent += 1;
            self.clock += gap;
            let departure = self.clock;
            let arrival = match cap {
                Some(cap) => {
                    let start = self.drained.max(departure);
                    let done = start + Duration::from_micros(SIZE as u64 * 8 * 1000 / cap);
                    if done - departure > Duration::from_millis(200) {
                        None
                    } else {
                        self.drained = done;
                        Some(done + BASE_DELAY)
                    }
                }
                None => Some(departure + BASE_DELAY),
            }
            .map(|arrival| match &self.stall {
                Some(stall) if stall.contains(&departure) => arrival.max(stall.end + BASE_DELAY),
                _ => arrival,
            })
            .filter(|_| lose_every.is_none_or(|n| !self.sent.is_multiple_of(n)));
            batch.push(PacketReport {
                ssrc: 1,
                id: self.sent,
                rtp_sequence_number: self.sent as u16,
                is_twcc: true,
                twcc_sequence_number: self.sent as u16,
                size: SIZE,
                arrived: arrival.is_some(),
                departure: self.epoch + departure,
                arrival,
                ecn: Ecn::default(),
            });
            if self.clock >= batch_end {
                let now = self.epoch + self.clock + Duration::from_millis(250);
                e.on_reports(now, &batch);
                batch.clear();
                batch_end += Duration::from_millis(50);
            }
        }
    }
}

fn estimator() -> (DownlinkEstimate, DownlinkEstimator) {
    let estimate = DownlinkEstimate::default();
    let estimator = DownlinkEstimator::new(estimate.clone(), "test".into());
    (estimate, estimator)
}

#[test]
fn the_round_trip_is_read_from_the_feedback() {
    let (estimate, mut e) = estimator();
    assert_eq!(estimate.rtt(), None);
    // each batch reports its newest packet 250 ms after it left
    Path::new().run(&mut e, 2, 800, None, None);
    let rtt = estimate.rtt().expect("published");
    assert!(
        rtt.abs_diff(Duration::from_millis(250)) < Duration::from_millis(5),
        "{rtt:?}"
    );
}

#[test]
fn nothing_is_published_before_feedback() {
    let (estimate, _estimator) = estimator();
    assert_eq!(estimate.get(), None);
    assert!(!estimate.under_ceiling());
}

#[test]
fn a_calm_path_keeps_the_estimate_up() {
    let (estimate, mut e) = estimator();
    Path::new().run(&mut e, 5, 800, None, None);
    let bps = estimate.get().expect("published");
    assert!(f64::from(bps) >= INITIAL_ESTIMATE, "{bps}");
    assert!(!estimate.under_ceiling());
}

#[test]
fn a_cap_holds_the_estimate_under_it_until_the_path_shows_more() {
    let (estimate, mut e) = estimator();
    let mut path = Path::new();
    // 800 kbit/s into a 300 kbit/s bottleneck: under what gets through, at once
    path.run(&mut e, 2, 800, Some(300), None);
    let capped = estimate.get().expect("published");
    assert!((200_000..300_000).contains(&capped), "{capped}");
    assert!(estimate.under_ceiling());
    // sending what fits: back up to the ceiling, and not past it, however long
    path.run(&mut e, 20, 220, Some(300), None);
    let held = estimate.get().expect("published");
    assert!((capped..=320_000).contains(&held), "{capped} -> {held}");
    assert!(estimate.under_ceiling());
    // the cap lifts and probes deliver clearly more than the ceiling: each raises it (and
    // the estimate) to what got through, until the estimate exceeds what the layers need
    let mut rate = 400;
    let mut seconds = 0;
    while estimate.get().expect("published") < 1_000_000 {
        path.run(&mut e, 2, rate, None, None);
        rate = rate * 3 / 2;
        seconds += 2;
        assert!(seconds <= 8, "{:?} after {seconds} s", estimate.get());
    }
}

#[test]
fn a_cap_that_starts_mid_call_is_read_behind_the_bottleneck_at_once() {
    let (estimate, mut e) = estimator();
    let mut path = Path::new();
    // a call at 700 kbit/s, then a 300 kbit/s cap: the first decrease reads what gets
    // through the cap, not a window that still holds the traffic from before it
    path.run(&mut e, 3, 700, None, None);
    path.run(&mut e, 1, 700, Some(300), None);
    let first = estimate.get().expect("published");
    assert!((200_000..300_000).contains(&first), "{first}");
}

#[test]
fn a_stall_of_a_busy_machine_is_no_congestion() {
    let (estimate, mut e) = estimator();
    let mut path = Path::new();
    path.run(&mut e, 2, 400, None, None);
    // what is sent over 120 ms arrives at its end: a feedback batch shows a queue of 95 ms,
    // the next one none
    path.stall = Some(path.clock..path.clock + Duration::from_millis(120));
    path.run(&mut e, 2, 400, None, None);
    assert!(!estimate.under_ceiling(), "{:?}", estimate.get());
    let bps = estimate.get().expect("published");
    assert!(f64::from(bps) >= INITIAL_ESTIMATE, "{bps}");
}

#[test]
fn arrivals_measure_the_rate_by_the_subscribers_clock() {
    let now = Instant::now();
    let mut rate = ArrivalRate::default();
    assert_eq!(rate.bits_per_second(now), None);
    // 1,000 bytes every 10 ms of arrival time, all reported at one instant: 800 kbit/s
    for i in 0..60u64 {
        rate.add(now, Duration::from_millis(10_000 + 10 * i), 1_000);
    }
    let bps = rate.bits_per_second(now).expect("a span");
    assert!((bps - 800_000.0).abs() < 1_000.0, "{bps}");
    // reordered and stale arrivals count as what they are
    rate.add(now, Duration::from_millis(10_005), 1_000);
    assert!((rate.bits_per_second(now).unwrap() - bps).abs() < 1.0);
    assert_eq!(
        rate.bits_per_second(now + ARRIVAL_WINDOW * 2),
        None,
        "nothing new for a window: no reading"
    );
    // the subscriber's clock starts over: so does the window
    rate.add(now, Duration::from_millis(1), 1_000);
    assert_eq!(rate.bits_per_second(now), None, "one packet is no span");
}

#[test]
fn a_probe_into_the_cap_raises_nothing() {
    let (estimate, mut e) = estimator();
    let mut path = Path::new();
    path.run(&mut e, 2, 800, Some(300), None);
    path.run(&mut e, 5, 220, Some(300), None);
    path.run(&mut e, 2, 400, Some(300), None);
    let after = estimate.get().expect("published");
    assert!(after < 300_000, "{after}");
}

#[test]
fn heavy_loss_brings_it_under_what_gets_through() {
    let (estimate, mut e) = estimator();
    Path::new().run(&mut e, 3, 800, None, Some(4));
    let lossy = estimate.get().expect("published");
    assert!(lossy < 800_000, "{lossy}");
    let loss = estimate.loss();
    assert!((0.15..0.35).contains(&loss), "published loss {loss}");
}

#[test]
fn retransmissions_on_a_repair_stream_are_numbered_for_feedback() {
    use rtc::interceptor::{Packet, RTPHeaderExtension, TwccSenderBuilder};
    use rtc::shared::TransportContext;
    let mut twcc = TwccStreamsOnly(TwccSenderBuilder::new().build());
    twcc.bind_local_stream(&StreamInfo {
        ssrc: 10,
        ssrc_rtx: Some(11),
        payload_type: 102,
        payload_type_rtx: Some(103),
        rtp_header_extensions: vec![RTPHeaderExtension {
            uri: TRANSPORT_CC_URI.into(),
            id: 3,
        }],
        ..Default::default()
    });
    let mut numbered = |ssrc: u32| {
        let header = rtc::rtp::header::Header {
            version: 2,
            ssrc,
            ..Default::default()
        };
        twcc.handle_write(TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: Packet::Rtp(rtc::rtp::Packet {
                header,
                payload: Default::default(),
            })
            .into(),
        })
        .unwrap();
        let Packet::Rtp(out) = twcc.poll_write().unwrap().message.packet else {
            panic!("rtp");
        };
        out.header.get_extension(3).is_some()
    };
    assert!(numbered(10), "the media stream");
    assert!(numbered(11), "its repair stream");
    assert!(!numbered(12), "nothing else");
}
