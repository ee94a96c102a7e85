//! The per-second series of a load run (`kaskade-loadtest --series PATH`): one CSV row a
//! second with what the participants saw in that second (bitrates, loss, latency percentiles)
//! and the gauges of the servers' `/metrics` pages (`--metrics-url`, repeatable: resident
//! memory, file descriptors, tasks, map sizes), so a soak run can be plotted and its slopes
//! fitted.
//!
//! The row building, the CSV text and the Prometheus text parsing are pure; [`Scraper`] reads
//! the pages once a second in a task of its own, so a slow server never holds up the run.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hyper::Method;
use tokio::task::JoinHandle;

use crate::measure::{Summary, loss_percent};

/// How often the servers' metrics are read.
pub const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// How long one read of a metrics page may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(900);
/// How long the first read of every page may keep failing (the server starting).
const FIRST_SCRAPE_PATIENCE: Duration = Duration::from_secs(10);
/// Metrics pages are a few kilobytes.
const MAX_PAGE: usize = 1 << 20;

/// The samples of one metrics page: `(sample, value)` in page order.
pub type Samples = Vec<(String, f64)>;

/// The columns every row starts with.
const FIXED_COLUMNS: [&str; 12] = [
    "time_s",
    "measuring",
    "joined",
    "churn_leaves",
    "churn_joins",
    "sent_mbps",
    "received_mbps",
    "expected_packets",
    "lost_packets",
    "loss_percent",
    "latency_p50_ms",
    "latency_p99_ms",
];

/// The samples of every gauge of a Prometheus text exposition, in order, as
/// `(name{label=value,...}, value)` with the quotes of label values removed (column names).
pub fn parse_gauges(text: &str) -> Samples {
    let mut gauge: Option<&str> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut fields = rest.split_whitespace();
            gauge = match (fields.next(), fields.next()) {
                (Some(name), Some("gauge")) => Some(name),
                _ => None,
            };
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some(name) = gauge else {
            continue;
        };
        let Some((sample, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = sample.split('{').next().unwrap_or_default();
        if metric != name {
            continue;
        }
        if let Ok(value) = value.trim().parse::<f64>() {
            samples.push((column_name(sample), value));
        }
    }
    samples
}

/// A sample's name as a CSV column: label values unquoted, label separators `;`.
fn column_name(sample: &str) -> String {
    sample.replace('"', "").replace(',', ";")
}

/// What every participant of the run has sent, received and lost so far (departed ones at
/// their departure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Packets expected from sequence numbers.
    pub packets_expected: u64,
    /// Packets lost.
    pub packets_lost: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Seconds since the generator started.
    pub time_s: f64,
    /// Inside the measurement window.
    pub measuring: bool,
    /// Participants in their rooms now.
    pub joined: usize,
    /// Churn leaves so far.
    pub churn_leaves: u64,
    /// Churn joins so far.
    pub churn_joins: u64,
    /// Sent by every participant in this second, Mbit/s.
    pub sent_mbps: f64,
    /// Received by every participant in this second, Mbit/s.
    pub received_mbps: f64,
    /// Packets expected (from sequence numbers) in this second.
    pub expected_packets: u64,
    /// Packets lost in this second (as far as known: a late packet lowers a later second's).
    pub lost_packets: u64,
    /// Packets lost in this second over packets expected in it (none expected: empty).
    pub loss_percent: Option<f64>,
    /// Median latency of this second's stamps.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of this second's stamps.
    pub latency_p99_ms: Option<f64>,
    /// The metrics columns ([`Columns`]); empty cells for pages that did not answer.
    pub metrics: Vec<Option<f64>>,
}

impl Row {
    /// Fills in the rates and percentiles of `seconds` from the totals before and after it
    /// and the latency stamps read in it.
    pub fn with_rates(
        mut self,
        before: &Totals,
        after: &Totals,
        seconds: f64,
        latency_ms: &[f64],
    ) -> Self {
        let seconds = seconds.max(1e-3);
        let mbps = |a: u64, b: u64| b.saturating_sub(a) as f64 * 8.0 / seconds / 1e6;
        self.sent_mbps = mbps(before.bytes_sent, after.bytes_sent);
        self.received_mbps = mbps(before.bytes_received, after.bytes_received);
        let expected = after
            .packets_expected
            .saturating_sub(before.packets_expected);
        let lost = after
            .packets_lost
            .saturating_sub(before.packets_lost)
            .min(expected);
        self.expected_packets = expected;
        self.lost_packets = lost;
        self.loss_percent = (expected > 0).then(|| loss_percent(expected, lost));
        let latency = Summary::of(latency_ms);
        self.latency_p50_ms = latency.p50;
        self.latency_p99_ms = latency.p99;
        self
    }

    /// The row as one CSV line (no newline).
    pub fn csv(&self) -> String {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or_else(String::new, |v| format!("{v:.digits$}"));
        let mut cells = vec![
            format!("{:.3}", self.time_s),
            u8::from(self.measuring).to_string(),
            self.joined.to_string(),
            self.churn_leaves.to_string(),
            self.churn_joins.to_string(),
            format!("{:.4}", self.sent_mbps),
            format!("{:.4}", self.received_mbps),
            self.expected_packets.to_string(),
            self.lost_packets.to_string(),
            opt(self.loss_percent, 4),
            opt(self.latency_p50_ms, 3),
            opt(self.latency_p99_ms, 3),
        ];
        cells.extend(
            self.metrics
                .iter()
                .map(|v| v.map_or_else(String::new, |v| v.to_string())),
        );
        cells.join(",")
    }
}

/// The metrics columns of a series: every gauge sample of every page as first read. A name
/// two pages share gets its page's index as a prefix (`1:name`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    /// `(page, sample)` of each column.
    columns: Vec<(usize, String)>,
    headers: Vec<String>,
}

impl Columns {
    /// The columns of the pages' first reads.
    pub fn new(first: &[Samples]) -> Self {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for page in first {
            for (name, _) in page {
                *count.entry(name).or_default() += 1;
            }
        }
        let mut columns = Vec::new();
        let mut headers = Vec::new();
        for (index, page) in first.iter().enumerate() {
            for (name, _) in page {
                columns.push((index, name.clone()));
                headers.push(if count[name.as_str()] > 1 {
                    format!("{index}:{name}")
                } else {
                    name.clone()
                });
            }
        }
        Self { columns, headers }
    }

    /// The CSV header line (no newline).
    pub fn header(&self) -> String {
        FIXED_COLUMNS
            .iter()
            .map(|c| (*c).to_string())
            .chain(self.headers.iter().cloned())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The column values of the latest reads (`None`: that page did not answer).
    pub fn values(&self, pages: &[Option<Samples>]) -> Vec<Option<f64>> {
        let lookup: Vec<Option<HashMap<&str, f64>>> = pages
            .iter()
            .map(|page| {
                page.as_ref()
                    .map(|samples| samples.iter().map(|(n, v)| (n.as_str(), *v)).collect())
            })
            .collect();
        self.columns
            .iter()
            .map(|(index, name)| {
                lookup
                    .get(*index)
                    .and_then(Option::as_ref)
                    .and_then(|m| m.get(name.as_str()).copied())
            })
            .collect()
    }
}

/// The series file: a header, then one line per second, flushed as written (a run that dies
/// leaves what it measured).
pub struct SeriesWriter {
    out: BufWriter<File>,
}

impl SeriesWriter {
    /// Creates `path` and writes the header of `columns`.
    pub fn create(path: &str, columns: &Columns) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {path}"))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "{}", columns.header())?;
        out.flush()?;
        Ok(Self { out })
    }

    /// Appends one row.
    pub fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        writeln!(self.out, "{}", row.csv())?;
        self.out.flush()?;
        Ok(())
    }
}

/// Reads metrics pages once a second in the background and keeps the latest read of each.
pub struct Scraper {
    latest: Arc<Mutex<Vec<Option<Samples>>>>,
    task: JoinHandle<()>,
}

impl Scraper {
    /// Reads every page once (waiting up to 10 s for a server that does not answer yet) to fix
    /// the columns, then starts reading them every [`SCRAPE_EVERY`].
    pub async fn start(urls: Vec<String>) -> anyhow::Result<(Self, Columns)> {
        let mut first = Vec::with_capacity(urls.len());
        for url in &urls {
            first.push(first_read(url).await?);
        }
        let columns = Columns::new(&first);
        let latest: Arc<Mutex<Vec<Option<Samples>>>> =
            Arc::new(Mutex::new(first.into_iter().map(Some).collect()));
        let shared = Arc::clone(&latest);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SCRAPE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                for (index, url) in urls.iter().enumerate() {
                    let page = read(url).await.ok();
                    if let Ok(mut latest) = shared.lock() {
                        latest[index] = page;
                    }
                }
            }
        });
        Ok((Self { latest, task }, columns))
    }

    /// The latest read of every page.
    pub fn latest(&self) -> Vec<Option<Samples>> {
        self.latest.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gauges of the page at `url`, once.
pub async fn read(url: &str) -> anyhow::Result<Samples> {
    let (status, body) = tokio::time::timeout(
        SCRAPE_TIMEOUT,
        kaskade_client::http_client::request(Method::GET, url, None, MAX_PAGE),
    )
    .await
    .with_context(|| format!("GET {url}: timed out"))??;
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(parse_gauges(&String::from_utf8_lossy(&body)))
}

async fn first_read(url: &str) -> anyhow::Result<Samples> {
    let deadline = tokio::time::Instant::now() + FIRST_SCRAPE_PATIENCE;
    loop {
        match read(url).await {
            Ok(samples) => return Ok(samples),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context("the metrics page never answered"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "# HELP kaskade_sfu_rooms Rooms with participants.
# TYPE kaskade_sfu_rooms gauge
kaskade_sfu_rooms 2
# HELP kaskade_sfu_packets_in Datagrams received.
# TYPE kaskade_sfu_packets_in counter
kaskade_sfu_packets_in_total 1234
# TYPE kaskade_sfu_map_entries gauge
kaskade_sfu_map_entries{map=\"demux_tuples\"} 20
kaskade_sfu_map_entries{map=\"rooms\"} 2
# TYPE kaskade_sfu_forward_seconds histogram
kaskade_sfu_forward_seconds_sum 0.5
kaskade_sfu_forward_seconds_bucket{le=\"+Inf\"} 10
# TYPE kaskade_sfu_cascade_streams_sent gauge
kaskade_sfu_cascade_streams_sent{peer=\"b\",kind=\"x\"} 4
# TYPE kaskade_sfu_process_resident_memory_bytes gauge
kaskade_sfu_process_resident_memory_bytes 52428800
# EOF
";

    #[test]
    fn reads_only_gauges_with_their_labels() {
        assert_eq!(
            parse_gauges(NODE),
            vec![
                ("kaskade_sfu_rooms".to_string(), 2.0),
                (
                    "kaskade_sfu_map_entries{map=demux_tuples}".to_string(),
                    20.0
                ),
                ("kaskade_sfu_map_entries{map=rooms}".to_string(), 2.0),
                (
                    "kaskade_sfu_cascade_streams_sent{peer=b;kind=x}".to_string(),
                    4.0
                ),
                (
                    "kaskade_sfu_process_resident_memory_bytes".to_string(),
                    52428800.0
                ),
            ]
        );
        assert!(parse_gauges("garbage\n# TYPE x gauge\nx notanumber\n").is_empty());
    }

    #[test]
    fn columns_follow_the_first_reads_and_missing_pages_leave_empty_cells() {
        let locator = vec![
            ("kaskade_locator_meetings".to_string(), 1.0),
            ("up".to_string(), 1.0),
        ];
        let node = vec![
            ("kaskade_sfu_rooms".to_string(), 2.0),
            ("up".to_string(), 1.0),
        ];
        let columns = Columns::new(&[locator.clone(), node.clone()]);
        assert!(
            columns
                .header()
                .ends_with(",kaskade_locator_meetings,0:up,kaskade_sfu_rooms,1:up")
        );
        assert!(
            columns
                .header()
                .starts_with("time_s,measuring,joined,churn_leaves,churn_joins,")
        );
        let later = vec![("kaskade_sfu_rooms".to_string(), 3.0)];
        assert_eq!(
            columns.values(&[None, Some(later)]),
            vec![None, None, Some(3.0), None]
        );
        assert_eq!(
            columns.values(&[Some(locator), Some(node)]),
            vec![Some(1.0), Some(1.0), Some(2.0), Some(1.0)]
        );
    }

    #[test]
    fn a_row_holds_the_rates_of_its_second() {
        let before = Totals {
            bytes_sent: 1_000_000,
            bytes_received: 2_000_000,
            packets_expected: 10_000,
            packets_lost: 5,
        };
        let after = Totals {
            bytes_sent: 1_250_000,
            bytes_received: 2_750_000,
            packets_expected: 12_000,
            packets_lost: 7,
        };
        let latency: Vec<f64> = (1..=100).map(f64::from).collect();
        let row = Row {
            time_s: 12.5,
            measuring: true,
            joined: 100,
            churn_leaves: 3,
            churn_joins: 2,
            metrics: vec![Some(52428800.0), None],
            ..Row::default()
        }
        .with_rates(&before, &after, 0.5, &latency);
        assert_eq!(row.sent_mbps, 4.0);
        assert_eq!(row.received_mbps, 12.0);
        assert_eq!(row.loss_percent, Some(0.1));
        assert_eq!(
            (row.latency_p50_ms, row.latency_p99_ms),
            (Some(50.0), Some(99.0))
        );
        assert_eq!(
            row.csv(),
            "12.500,1,100,3,2,4.0000,12.0000,2000,2,0.1000,50.000,99.000,52428800,"
        );
    }

    #[test]
    fn a_quiet_second_has_no_loss_figure_and_late_packets_never_make_it_negative() {
        let t = Totals {
            packets_expected: 100,
            packets_lost: 9,
            ..Totals::default()
        };
        let recovered = Totals {
            packets_lost: 4,
            ..t
        };
        let row = Row::default().with_rates(&t, &t, 1.0, &[]);
        assert_eq!((row.loss_percent, row.latency_p50_ms), (None, None));
        assert_eq!(row.csv(), "0.000,0,0,0,0,0.0000,0.0000,0,0,,,");
        let more = Totals {
            packets_expected: 200,
            ..recovered
        };
        assert_eq!(
            Row::default().with_rates(&t, &more, 1.0, &[]).loss_percent,
            Some(0.0)
        );
    }
}
