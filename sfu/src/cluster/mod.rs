//! The node's life in a cluster: registering with the locator and reporting load every
//! second, handing over call records, finding the other nodes of a meeting it starts to host,
//! and the control connections of cascade links ([`links`]).
//!
//! A node without `--locator` has none of this and serves joins by itself.

mod links;
pub mod locator;

use crate::media::core::NodeLoad;
use crate::metrics::Metrics;
use crate::node::{ClusterEvent, NodeHandle};
use kaskade_protocol::cluster::{CallRecord, NodeReport};
use links::LinkSlot;
use locator::LocatorClient;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How often the node reports.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Call records kept while no locator answers.
const MAX_PENDING_RECORDS: usize = 10_000;
/// Meeting lookups tried before a meeting is left unlinked (until its next change).
const LOOKUP_ATTEMPTS: u32 = 10;
/// Pause between meeting lookups.
const LOOKUP_RETRY: Duration = Duration::from_millis(300);
/// CPU use (in cores, of those available) above which the node reports overload.
const OVERLOAD_CPU_SHARE: f64 = 0.9;
/// Shortest interval over which rates are measured: `/proc` counts CPU time in 10 ms ticks, so
/// over the few milliseconds between the node's first sample and its first report one tick
/// reads as several cores (a node starting up called itself overloaded and got no joins).
const MIN_RATE_INTERVAL: Duration = Duration::from_millis(500);

/// Who the node is in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Locator base URLs.
    pub locators: Vec<String>,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// The node's name.
    pub name: String,
    /// Where clients open signaling.
    pub signaling_url: String,
    /// The node's HTTP base URL.
    pub http_url: String,
    /// The node's UDP media address as peers reach it.
    pub media_addr: SocketAddr,
    /// The node's region.
    pub region: Option<String>,
    /// Participants the node carries.
    pub capacity: u32,
    /// Outbound bitrate the node carries, if limited.
    pub max_bitrate_out_bps: Option<u64>,
}

/// The node's cluster membership; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    locator: LocatorClient,
    node: NodeHandle,
    metrics: Arc<Metrics>,
    index: AtomicU16,
    next_connection: AtomicU64,
    links: Mutex<HashMap<u16, LinkSlot>>,
    records: Mutex<Vec<CallRecord>>,
}

impl Cluster {
    /// Starts reporting to the locator and serving `events` from the core.
    pub fn start(
        config: ClusterConfig,
        node: NodeHandle,
        metrics: Arc<Metrics>,
        events: mpsc::UnboundedReceiver<ClusterEvent>,
    ) -> Self {
        let locator = LocatorClient::new(
            config.locators.clone(),
            config.secret.clone(),
            config.name.clone(),
        );
        let inner = Arc::new(Inner {
            config,
            locator,
            node,
            metrics,
            index: AtomicU16::new(0),
            next_connection: AtomicU64::new(1),
            links: Mutex::new(HashMap::new()),
            records: Mutex::new(Vec::new()),
        });
        tokio::spawn(report_loop(inner.clone()));
        tokio::spawn(event_loop(inner.clone(), events));
        Self { inner }
    }

    /// Serves a peer node's dial of this node's `/cascade` WebSocket.
    pub async fn accept(&self, from: String, socket: axum::extract::ws::WebSocket) {
        links::accept(self.inner.clone(), from, socket).await;
    }
}

async fn event_loop(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<ClusterEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            ClusterEvent::FindPeers(meeting) => {
                tokio::spawn(host_meeting(inner.clone(), meeting));
            }
            ClusterEvent::CallRecord(record) => {
                if let Ok(mut records) = inner.records.lock()
                    && records.len() < MAX_PENDING_RECORDS
                {
                    records.push(*record);
                }
            }
        }
    }
}

/// Links with every other node hosting `meeting` and shares it with them.
async fn host_meeting(inner: Arc<Inner>, meeting: String) {
    let mut attempt = 0;
    let info = loop {
        match inner.locator.meeting(&meeting).await {
            Ok(info) => break info,
            Err(e) if attempt < LOOKUP_ATTEMPTS => {
                debug!(%meeting, attempt, "meeting lookup failed, retrying: {e}");
                attempt += 1;
                tokio::time::sleep(LOOKUP_RETRY).await;
            }
            Err(e) => {
                warn!(%meeting, "cannot learn the meeting's other nodes: {e}");
                return;
            }
        }
    };
    if info.locked {
        let _ = inner.node.set_meeting_locked(meeting.clone(), true).await;
    }
    for peer in info.peers {
        let inner = inner.clone();
        let meeting = meeting.clone();
        tokio::spawn(async move {
            match links::ensure(&inner, &peer).await {
                Ok(()) => {
                    let _ = inner.node.attach(peer.index, meeting).await;
                }
                Err(e) => warn!(%meeting, peer = %peer.node, "meeting not cascaded: {e}"),
            }
        });
    }
}

/// Byte and CPU counters at one instant, to turn into rates.
struct Sample {
    at: Instant,
    bytes_in: u64,
    bytes_out: u64,
    cpu_seconds: f64,
}

impl Sample {
    fn take(metrics: &Metrics) -> Self {
        Self {
            at: Instant::now(),
            bytes_in: metrics.bytes_in.get(),
            bytes_out: metrics.bytes_out.get(),
            cpu_seconds: process_cpu_seconds(),
        }
    }
}

async fn report_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    // after a stall, the next report a full interval later rather than a burst of reports
    // over milliseconds each
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Sample::take(&inner.metrics);
    let mut reachable = None;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    loop {
        tick.tick().await;
        let Ok(load) = inner.node.load().await else {
            return;
        };
        let now = Sample::take(&inner.metrics);
        let report = build_report(&inner, load, &last, &now, cores);
        last = now;
        match inner.locator.report(&report).await {
            Ok(ack) => {
                if inner.index.swap(ack.index, Ordering::Relaxed) != ack.index {
                    info!(index = ack.index, "registered with the locator");
                    let _ = inner.node.set_node_index(ack.index).await;
                }
                if reachable != Some(true) {
                    info!("reporting to the locator");
                }
                reachable = Some(true);
                send_records(&inner).await;
            }
            Err(e) => {
                if reachable != Some(false) {
                    warn!("cannot report to the locator: {e}");
                }
                reachable = Some(false);
            }
        }
    }
}

fn build_report(
    inner: &Inner,
    load: NodeLoad,
    last: &Sample,
    now: &Sample,
    cores: f64,
) -> NodeReport {
    let rates = Rates::between(last, now);
    let bitrate_out_bps = rates.bitrate_out_bps;
    let cpu_cores = rates.cpu_cores;
    let config = &inner.config;
    let overloaded = load.participants >= config.capacity
        || config
            .max_bitrate_out_bps
            .is_some_and(|max| bitrate_out_bps >= max)
        || cpu_cores >= OVERLOAD_CPU_SHARE * cores;
    let index = inner.index.load(Ordering::Relaxed);
    NodeReport {
        node: config.name.clone(),
        index: (index != 0).then_some(index),
        signaling_url: config.signaling_url.clone(),
        http_url: config.http_url.clone(),
        media_addr: config.media_addr,
        region: config.region.clone(),
        capacity: config.capacity,
        max_bitrate_out_bps: config.max_bitrate_out_bps,
        participants: load.participants,
        meetings: load.meetings,
        streams_in: load.streams_in,
        streams_out: load.streams_out,
        bitrate_in_bps: rates.bitrate_in_bps,
        bitrate_out_bps,
        cpu_cores,
        overloaded,
    }
}

/// The rates between two samples; all zero when they are less than [`MIN_RATE_INTERVAL`]
/// apart (the first report, sent as the node starts), too close to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    bitrate_in_bps: u64,
    bitrate_out_bps: u64,
    cpu_cores: f64,
}

impl Rates {
    fn between(last: &Sample, now: &Sample) -> Self {
        let seconds = now.at.saturating_duration_since(last.at).as_secs_f64();
        if seconds < MIN_RATE_INTERVAL.as_secs_f64() {
            return Self {
                bitrate_in_bps: 0,
                bitrate_out_bps: 0,
                cpu_cores: 0.0,
            };
        }
        let rate = |from: u64, to: u64| (to.saturating_sub(from) as f64 * 8.0 / seconds) as u64;
        Self {
            bitrate_in_bps: rate(last.bytes_in, now.bytes_in),
            bitrate_out_bps: rate(last.bytes_out, now.bytes_out),
            cpu_cores: ((now.cpu_seconds - last.cpu_seconds) / seconds).max(0.0),
        }
    }
}

async fn send_records(inner: &Inner) {
    let batch = match inner.records.lock() {
        Ok(mut records) if !records.is_empty() => std::mem::take(&mut *records),
        _ => return,
    };
    if let Err(e) = inner.locator.call_records(&batch).await {
        warn!(records = batch.len(), "call records not delivered yet: {e}");
        if let Ok(mut records) = inner.records.lock() {
            let room = MAX_PENDING_RECORDS.saturating_sub(records.len());
            records.extend(batch.into_iter().take(room));
        }
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn process_cpu_seconds() -> f64 {
    // USER_HZ is 100 on every Linux platform kaskade runs on
    const TICKS_PER_SECOND: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields after the name start at field 3 (state); utime and stime are fields 14 and 15
    let ticks = |field: usize| {
        fields
            .get(field - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / TICKS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, bytes: u64, cpu_seconds: f64) -> Sample {
        Sample {
            at,
            bytes_in: bytes,
            bytes_out: 2 * bytes,
            cpu_seconds,
        }
    }

    #[test]
    fn one_cpu_tick_right_after_the_first_sample_is_no_overload() {
        let t0 = Instant::now();
        // the first report, 2 ms after the first sample, with one 10 ms tick of CPU between
        let first = Rates::between(
            &sample(t0, 0, 0.0),
            &sample(t0 + Duration::from_millis(2), 500, 0.01),
        );
        assert_eq!(first.cpu_cores, 0.0);
        assert_eq!((first.bitrate_in_bps, first.bitrate_out_bps), (0, 0));
        // a second later the rates are measured
        let later = Rates::between(
            &sample(t0, 0, 0.0),
            &sample(t0 + Duration::from_secs(1), 125_000, 0.25),
        );
        assert_eq!(later.bitrate_in_bps, 1_000_000);
        assert_eq!(later.bitrate_out_bps, 2_000_000);
        assert!((later.cpu_cores - 0.25).abs() < 1e-9);
    }
}
