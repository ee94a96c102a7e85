//! One run of `kaskade-loadtest`: its participants ([`Entry`]), what their sinks count
//! ([`Received`]), and the loop that collects joins, samples freezes, churns and prints (and
//! records, with `--series`) the progress once a second ([`Run::pump`]).

mod churning;
mod summary;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaskade_client::signaling::MediaKind;
use kaskade_client::{MediaSink, ParticipantId, ParticipantStats, latency};
use kaskade_loadtest::churn::ChurnSchedule;
use kaskade_loadtest::measure::{FrameCounter, FreezeTracker, SeqCounter, loss_percent};
use kaskade_loadtest::series::{Columns, Row, Scraper, SeriesWriter, Totals};
use kaskade_loadtest::{LoadPeer, LoadSpec};
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use tokio::task::JoinSet;

use crate::{Args, JOIN_TIMEOUT, Target};
pub(crate) use churning::Churn;
pub(crate) use summary::{Snapshots, Usage, Window, build_report, finish_freezes};

/// How often frame counters are sampled for freeze detection (and churn is driven).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What one participant's sink has counted: loss per received stream, complete frames per
/// room-mate, and latency samples (milliseconds) of the measurement window from the
/// room-mates it has settled with.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub streams: HashMap<(ParticipantId, u32), SeqCounter>,
    pub frames: HashMap<ParticipantId, FrameCounter>,
    pub latency_ms: Vec<f64>,
    /// Room-mates whose stamps count: every room-mate once the window opens, a newcomer once
    /// media flows both ways between it and every room-mate.
    pub settled: HashSet<ParticipantId>,
    /// Latency samples already in the per-second figures.
    pub latency_read: usize,
}

/// One synthetic participant of the run.
pub(crate) struct Entry {
    pub name: String,
    pub room: usize,
    pub join_ms: Option<f64>,
    pub joined_at: Option<Instant>,
    pub error: Option<String>,
    pub peer: Option<Box<dyn LoadPeer>>,
    pub id: Option<ParticipantId>,
    pub received: Arc<Mutex<Received>>,
    pub window_start: ParticipantStats,
    /// Joined during the window in place of a leaver.
    pub churned: bool,
    /// When its first join attempt started.
    pub join_started: Option<Instant>,
    /// A newcomer whose media flows both ways with every room-mate (or gave up waiting).
    pub settled_at: Option<Instant>,
    /// Stopped sending to leave (churn).
    pub leaving_since: Option<Instant>,
    /// Left (churn).
    pub left_at: Option<Instant>,
    /// Its statistics when it left.
    pub last_stats: Option<ParticipantStats>,
}

impl Entry {
    fn new(name: String, room: usize) -> Self {
        Self {
            name,
            room,
            join_ms: None,
            joined_at: None,
            error: None,
            peer: None,
            id: None,
            received: Arc::default(),
            window_start: ParticipantStats::default(),
            churned: false,
            join_started: None,
            settled_at: None,
            leaving_since: None,
            left_at: None,
            last_stats: None,
        }
    }

    /// Its statistics now, or when it left.
    pub fn stats(&self) -> Option<ParticipantStats> {
        self.peer
            .as_ref()
            .map(|p| p.stats())
            .or_else(|| self.last_stats.clone())
    }

    /// In its room and not on its way out.
    fn active(&self) -> bool {
        self.peer.is_some() && self.leaving_since.is_none()
    }
}

/// A finished join: the entry, the peer or why not, the last attempt's duration, the retries.
type JoinOutcome = (usize, Result<Box<dyn LoadPeer>, String>, Duration, u32);

/// The per-second series file and the metrics pages it records.
pub(crate) struct Series {
    pub writer: SeriesWriter,
    pub columns: Columns,
    pub scraper: Option<Scraper>,
}

pub(crate) struct Run {
    pub args: Args,
    pub target: Arc<Target>,
    pub origin: Instant,
    /// Latency samples are kept while this is set (the measurement window).
    pub measuring: Arc<AtomicBool>,
    pub entries: Vec<Entry>,
    joins: JoinSet<JoinOutcome>,
    /// Freezes by (receiver index, remote id).
    pub freezes: HashMap<(usize, ParticipantId), FreezeTracker>,
    next_sample: Instant,
    next_progress: Instant,
    last_totals: (Totals, Instant),
    /// Churn (with `--churn-every`).
    pub churn: Option<Churn>,
    series: Option<Series>,
    /// When the measurement window opened.
    pub window_start: Option<Instant>,
}

impl Run {
    pub fn new(args: Args, series: Option<Series>) -> anyhow::Result<Self> {
        let target = Arc::new(Target::from_args(&args)?);
        let origin = Instant::now();
        let run = std::process::id();
        let mut entries = Vec::new();
        for room in 0..args.rooms {
            for index in 0..args.participants {
                entries.push(Entry::new(format!("lt{run}-r{room}p{index}"), room));
            }
        }
        let churn = args
            .churn_every
            .map(|every| Churn::new(ChurnSchedule::new(every, args.rooms, args.duration)));
        Ok(Self {
            args,
            target,
            origin,
            measuring: Arc::default(),
            entries,
            joins: JoinSet::new(),
            freezes: HashMap::new(),
            next_sample: origin,
            next_progress: origin + Duration::from_secs(1),
            last_totals: (Totals::default(), origin),
            churn,
            series,
            window_start: None,
        })
    }

    pub fn spec(&self, i: usize) -> LoadSpec {
        let (args, entry) = (&self.args, &self.entries[i]);
        let meeting = format!("loadtest-{}-room{}", std::process::id(), entry.room);
        let token = args.secret.as_ref().map(|secret| {
            TokenKey::from_secret(secret.as_bytes()).sign(&Claims {
                meeting: meeting.clone(),
                sub: format!("{}@loadtest", entry.name),
                name: entry.name.clone(),
                role: Role::Participant,
                exp: unix_now() + args.duration.as_secs() + 3600,
                rejoin: false,
                jti: None,
                aud: None,
                dial: false,
            })
        });
        let (received, measuring, origin) = (
            Arc::clone(&entry.received),
            Arc::clone(&self.measuring),
            self.origin,
        );
        let sink = MediaSink(Arc::new(move |p| {
            let Ok(mut r) = received.lock() else {
                return;
            };
            let header = &p.packet.header;
            r.streams
                .entry((p.from, header.ssrc))
                .or_default()
                .push(header.sequence_number);
            if p.kind != MediaKind::Video {
                return;
            }
            let at = p.arrival.saturating_duration_since(origin);
            r.frames
                .entry(p.from)
                .or_default()
                .push(header.sequence_number, header.marker, at);
            if measuring.load(Ordering::Relaxed)
                && r.settled.contains(&p.from)
                && let Some(us) = latency::latency_us(&p.packet.payload, p.arrival)
            {
                r.latency_ms.push(us as f64 / 1000.0);
            }
        }));
        LoadSpec {
            meeting,
            name: entry.name.clone(),
            resolution: args.resolution,
            fps: args.fps,
            video_bitrate_bps: args.video_bitrate.saturating_mul(1000),
            simulcast: args.simulcast,
            tile_height: args.tile_height,
            decode_video: args.decode,
            token,
            sink,
            timeout: JOIN_TIMEOUT,
        }
    }

    /// Joins entry `i` in a task of its own: once, or (`retry_until`) again every so often
    /// while the join is refused, until then.
    pub fn spawn_join(&mut self, i: usize, retry_until: Option<Instant>) {
        let spec = self.spec(i);
        let target = Arc::clone(&self.target);
        self.entries[i].join_started = Some(Instant::now());
        self.joins.spawn(async move {
            let mut retries = 0;
            loop {
                let started = Instant::now();
                let result = target.join(spec.clone()).await;
                let took = Instant::now().duration_since(started);
                match (result, retry_until) {
                    (Err(_), Some(until))
                        if Instant::now() + churning::JOIN_RETRY_EVERY < until =>
                    {
                        retries += 1;
                        tokio::time::sleep(churning::JOIN_RETRY_EVERY).await;
                    }
                    (result, _) => return (i, result, took, retries),
                }
            }
        });
    }

    /// Whether joins are still under way.
    pub fn joining(&self) -> bool {
        !self.joins.is_empty()
    }

    /// Samples, churns, prints progress and collects finished joins until `deadline` or
    /// `done`.
    pub async fn pump(&mut self, deadline: Instant, done: impl Fn(&Self) -> bool) {
        while Instant::now() < deadline && !done(self) {
            let wake = deadline.min(self.next_sample).min(self.next_progress);
            tokio::select! {
                Some(joined) = self.joins.join_next() => {
                    if let Ok((i, result, took, retries)) = joined {
                        self.joined(i, result, took, retries);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if now >= self.next_sample {
                self.sample(now);
                self.churn_step(now).await;
                self.next_sample = now + SAMPLE_EVERY;
            }
            if now >= self.next_progress {
                self.progress(now);
                self.next_progress += Duration::from_secs(1);
            }
        }
    }

    fn joined(
        &mut self,
        i: usize,
        result: Result<Box<dyn LoadPeer>, String>,
        took: Duration,
        retries: u32,
    ) {
        let entry = &mut self.entries[i];
        if let Some(churn) = self.churn.as_mut().filter(|_| entry.churned) {
            churn.joined(result.is_ok(), retries);
        }
        match result {
            Ok(p) => {
                entry.joined_at = Some(Instant::now());
                entry.join_ms = Some(took.as_secs_f64() * 1000.0);
                entry.id = Some(p.id());
                entry.peer = Some(p);
            }
            Err(e) => {
                eprintln!("{}: join failed: {e}", entry.name);
                entry.error = Some(e);
            }
        }
    }

    pub fn sample(&mut self, now: Instant) {
        let at = now.saturating_duration_since(self.origin);
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.peer.is_none() {
                continue;
            }
            let Ok(received) = entry.received.lock() else {
                continue;
            };
            for (&id, frames) in &received.frames {
                self.freezes.entry((i, id)).or_default().observe(
                    at,
                    frames.frames(),
                    frames.last_at(),
                );
            }
        }
    }

    /// What every participant of the run sent, received and lost so far, and the latency
    /// stamps read since the last call.
    fn totals(&self) -> (Totals, Vec<f64>, u64) {
        let mut totals = Totals::default();
        let mut latency_ms = Vec::new();
        let mut nacks = 0;
        for entry in &self.entries {
            let Some(stats) = entry.stats() else {
                continue;
            };
            totals.bytes_sent += stats.bytes_sent;
            totals.bytes_received += stats.bytes_received;
            nacks += stats.nacks_sent;
            if let Ok(mut r) = entry.received.lock() {
                totals.packets_expected +=
                    r.streams.values().map(SeqCounter::expected).sum::<u64>();
                totals.packets_lost += r.streams.values().map(SeqCounter::lost).sum::<u64>();
                let read = r.latency_read.min(r.latency_ms.len());
                latency_ms.extend_from_slice(&r.latency_ms[read..]);
                r.latency_read = r.latency_ms.len();
            }
        }
        (totals, latency_ms, nacks)
    }

    /// Prints the last second's figures (and writes them to the series).
    fn progress(&mut self, now: Instant) {
        let (totals, latency_ms, nacks) = self.totals();
        let (last, last_at) = self.last_totals;
        let seconds = now.duration_since(last_at).as_secs_f64();
        let (leaves, joins) = self
            .churn
            .as_ref()
            .map_or((0, 0), |c| (c.report.leaves, c.report.joins));
        let mut row = Row {
            time_s: now.duration_since(self.origin).as_secs_f64(),
            measuring: self.measuring.load(Ordering::Relaxed),
            joined: self.joined_count(),
            churn_leaves: leaves,
            churn_joins: joins,
            ..Row::default()
        }
        .with_rates(&last, &totals, seconds, &latency_ms);
        let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        let churn = self
            .churn
            .as_ref()
            .map_or_else(String::new, |_| format!("  churn -{leaves}/+{joins}"));
        eprintln!(
            "[{:6.1}s] joined {}/{}  in {:.2} Mbit/s  out {:.2} Mbit/s  loss {:.3} %  \
             latency p50/p99 {}/{} ms  NACKs {nacks}  freezes {}{churn}",
            row.time_s,
            row.joined,
            self.args.rooms * self.args.participants,
            row.received_mbps,
            row.sent_mbps,
            loss_percent(totals.packets_expected, totals.packets_lost),
            ms(row.latency_p50_ms),
            ms(row.latency_p99_ms),
            self.freezes
                .values()
                .map(FreezeTracker::freezes)
                .sum::<u64>(),
        );
        if let Some(series) = &mut self.series {
            let pages = series
                .scraper
                .as_ref()
                .map(Scraper::latest)
                .unwrap_or_default();
            row.metrics = series.columns.values(&pages);
            if let Err(e) = series.writer.write(&row) {
                eprintln!("warning: writing the series failed ({e:#}); it stops here");
                self.series = None;
            }
        }
        self.last_totals = (totals, now);
    }

    pub fn joined_count(&self) -> usize {
        self.entries.iter().filter(|e| e.peer.is_some()).count()
    }

    /// Whether every joined participant receives audio and video from every joined room-mate.
    pub fn media_flows(&self) -> bool {
        self.entries.iter().filter(|e| e.active()).all(|entry| {
            let stats = entry.peer.as_ref().map(|p| p.stats()).unwrap_or_default();
            self.room_mates(entry).all(|mate| {
                let r = stats.remote(mate.id.unwrap_or(ParticipantId::NOBODY));
                r.video_bytes > 0 && r.audio_bytes > 0
            })
        })
    }

    /// The active room-mates of `entry`.
    fn room_mates<'a>(&'a self, entry: &'a Entry) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.room == entry.room && e.name != entry.name && e.active())
    }

    /// Opens the measurement window: the window's starting statistics, and every pair of
    /// room-mates settled.
    pub fn open_window(&mut self) {
        for entry in &mut self.entries {
            if let Some(p) = &entry.peer {
                entry.window_start = p.stats();
            }
        }
        for entry in &self.entries {
            let mates: Vec<ParticipantId> = self.room_mates(entry).filter_map(|m| m.id).collect();
            if let Ok(mut r) = entry.received.lock() {
                r.settled.extend(mates);
            }
        }
        self.window_start = Some(Instant::now());
        self.measuring.store(true, Ordering::Relaxed);
    }
}
