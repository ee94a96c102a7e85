//! The locator's Prometheus metrics (`kaskade_locator_*`), rendered as text at `/metrics`.
//! The process gauges and the sizes of the state's maps are sampled when it is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use kaskade_process_gauges::ProcessGauges;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: &'static str,
}

/// Every metric of the locator.
pub struct Metrics {
    registry: Registry,
    joins: Family<ResultLabel, Counter>,
    placements: Family<KindLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    /// Live nodes (set when scraped).
    pub nodes: Gauge,
    /// Known meetings (set when scraped).
    pub meetings: Gauge,
    /// Node reports accepted.
    pub node_reports: Counter,
    /// Recorder reports accepted.
    pub recorder_reports: Counter,
    /// Time to place one join.
    pub placement_seconds: Histogram,
    /// Call detail records stored.
    pub cdr_rows: Counter,
    map_entries: Family<MapLabel, Gauge>,
    process: ProcessGauges,
}

fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("kaskade_locator");
        Self {
            joins: register(
                &mut r,
                "joins",
                "Join requests, by result",
                Family::default(),
            ),
            placements: register(
                &mut r,
                "placements",
                "Joins placed, by kind (stay, cascade, new)",
                Family::default(),
            ),
            rejected: register(
                &mut r,
                "node_reports_rejected",
                "Node and recorder reports (and other node requests) refused, by reason",
                Family::default(),
            ),
            nodes: register(&mut r, "nodes", "Live nodes", Gauge::default()),
            meetings: register(&mut r, "meetings", "Known meetings", Gauge::default()),
            node_reports: register(
                &mut r,
                "node_reports",
                "Node reports accepted",
                Counter::default(),
            ),
            recorder_reports: register(
                &mut r,
                "recorder_reports",
                "Recorder reports accepted",
                Counter::default(),
            ),
            // 1 us .. ~16 ms
            placement_seconds: register(
                &mut r,
                "placement_seconds",
                "Time to place one join on the state's view",
                Histogram::new(exponential_buckets(1e-6, 2.0, 15)),
            ),
            cdr_rows: register(
                &mut r,
                "cdr_rows",
                "Call detail records stored",
                Counter::default(),
            ),
            map_entries: register(
                &mut r,
                "map_entries",
                "Entries of the locator's in-process maps, by map (sampled when scraped)",
                Family::default(),
            ),
            process: ProcessGauges::register(&mut r),
            registry: r,
        }
    }

    /// Sets the size gauge of each named map.
    pub fn set_map_sizes(&self, sizes: &[(&'static str, usize)]) {
        for &(map, entries) in sizes {
            self.map_entries
                .get_or_create(&MapLabel { map })
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
    }

    /// Counts a join with its outcome (`ok` or an error code).
    pub fn join(&self, result: &'static str) {
        self.joins.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a placement of a kind (`stay`, `cascade`, `new`).
    pub fn placement(&self, kind: &'static str) {
        self.placements.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a refused node report.
    pub fn report_rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.process.sample();
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_sizes_and_process_gauges_are_rendered() {
        let metrics = Metrics::new();
        metrics.set_map_sizes(&[("meetings", 2), ("link_keys", 0)]);
        let text = metrics.render();
        assert!(
            text.contains("kaskade_locator_map_entries{map=\"meetings\"} 2"),
            "{text}"
        );
        assert!(text.contains("kaskade_locator_map_entries{map=\"link_keys\"} 0"));
        assert!(text.contains("kaskade_locator_process_open_fds "));
        assert!(text.contains("kaskade_locator_process_resident_memory_bytes "));
        assert!(text.contains("kaskade_locator_tokio_alive_tasks "));
    }
}
