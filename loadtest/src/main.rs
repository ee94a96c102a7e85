//! `kaskade-loadtest`: full-mesh meetings of synthetic participants against a kaskade node or
//! locator, measured.
//!
//! ```text
//! kaskade-loadtest --sfu http://127.0.0.1:8080 --rooms 10 --participants 10 \
//!     --video-bitrate 500 --resolution 640x360 --fps 20 --duration 60 --ramp 20 \
//!     --server-pid "$(pidof kaskade-sfu)" --json report.json
//! ```
//!
//! Every participant joins the target (`--target`, kaskade by default: the join API at
//! `--sfu`, a standalone node, or `--locator`, signing its token with `--secret` when the
//! deployment requires tokens; or `--target janus --janus-url ws://HOST:8188`, the VideoRoom
//! of a Janus configured as loadtest/janus/ describes), `--ramp` joins per second; it
//! publishes the looped H.264 clip (a latency stamp ahead of each frame, see
//! `kaskade_loadtest::latency`) and the Opus tone, and receives everything its room-mates
//! send (decoding it with `--decode`). Once everyone has joined and receives from every
//! room-mate, the measurement window of `--duration` starts; at its end everyone stops sending, the last packets drain for a second, and
//! everyone leaves.
//!
//! Progress is printed once a second on stderr; the final report goes to stdout as a table
//! and, with `--json PATH` (`-`: stdout, then instead of the table), as JSON (the
//! [`kaskade_loadtest::report::Report`] fields).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kaskade_loadtest::janus::{JanusConfig, JanusParticipant};
use kaskade_loadtest::lean::LeanParticipant;
use kaskade_loadtest::raw::{RawParticipant, RawTarget};
use kaskade_loadtest::report::{
    FrameCounter, FreezeTracker, ParticipantReport, ProcessUsage, RemoteReport, Report, RunParams,
    SeqCounter, loss_percent, parse_cpu_seconds, parse_peak_rss, parse_rss,
};
use kaskade_loadtest::signaling::MediaKind;
use kaskade_loadtest::{
    LoadPeer, LoadSpec, MediaSink, Participant, ParticipantId, ParticipantStats, latency,
};
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use tokio::task::JoinSet;

/// How often frame counters are sampled for freeze detection.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long to wait, after the last join, for media to flow between every pair.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the last packets get to arrive after everyone stopped sending.
const DRAIN: Duration = Duration::from_secs(1);
/// Timeout of each join step.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The kind of server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TargetKind {
    /// A kaskade locator (`--locator`) or standalone node (`--sfu`), through the join API.
    Kaskade,
    /// `kaskade-raw-forwarder` (`--raw-addr`, keyed with `--secret`): the raw forwarding limit.
    Raw,
    /// The VideoRoom plugin of a Janus 1.x (`--janus-url`), through its WebSocket API.
    Janus,
}

/// The client kaskade participants use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientKind {
    /// `LeanParticipant`: its own media path over one UDP socket, light enough for load.
    Lean,
    /// `Participant`: the webrtc crate's peer connection (interceptors, NACKs, reports).
    Webrtc,
}

/// `kaskade-loadtest`: full-mesh meetings of synthetic WebRTC participants, measured.
#[derive(Debug, Parser)]
#[command(name = "kaskade-loadtest", version, about)]
struct Args {
    /// Rooms (meetings).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Participants per room.
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// Video bitrate of each participant, kbit/s.
    #[arg(long, default_value_t = 500)]
    video_bitrate: u32,
    /// Video resolution, WIDTHxHEIGHT (even numbers).
    #[arg(long, default_value = "640x360", value_parser = parse_resolution)]
    resolution: (u32, u32),
    /// Video frames per second.
    #[arg(long, default_value_t = 20)]
    fps: u32,
    /// Measurement window once everyone has joined: seconds or humantime (`90s`, `2m`).
    #[arg(long, default_value = "30", value_parser = parse_duration)]
    duration: Duration,
    /// Joins per second.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// The kind of server under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Kaskade)]
    target: TargetKind,
    /// kaskade: the participants' client.
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    client: ClientKind,
    /// kaskade: locator base URL (join API).
    #[arg(long, conflicts_with = "sfu")]
    locator: Option<String>,
    /// kaskade: node base URL (a standalone node serves the join API too).
    #[arg(long)]
    sfu: Option<String>,
    /// janus: the WebSocket API URL (`ws://HOST:8188`; see loadtest/janus/README.md).
    #[arg(long)]
    janus_url: Option<String>,
    /// raw: the forwarder's UDP address, as its ready line prints it.
    #[arg(long)]
    raw_addr: Option<std::net::SocketAddr>,
    /// Operator secret: sign each participant's token with it (raw: the forwarder's secret).
    #[arg(long, env = "KASKADE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Decode received video with openh264 (checks pictures; costs a core per ~2,000
    /// frames/s, so off for load).
    #[arg(long)]
    decode: bool,
    /// The server's process id: report its CPU seconds and peak RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the report as JSON to this path (`-`: stdout).
    #[arg(long)]
    json: Option<String>,
}

fn parse_resolution(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once('x').ok_or("expected WIDTHxHEIGHT")?;
    let parse = |v: &str| v.trim().parse::<u32>().map_err(|e| e.to_string());
    let (w, h) = (parse(w)?, parse(h)?);
    if w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 {
        return Err("width and height must be even and positive".into());
    }
    Ok((w, h))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Duration::from_secs_f64(seconds),
        Ok(_) => return Err("the duration must be positive".into()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string())?,
    };
    Ok(duration)
}

/// The server under test, as participants reach it.
#[derive(Debug, Clone)]
enum Target {
    /// kaskade's join API at this base URL.
    Kaskade { base: String, client: ClientKind },
    /// The raw forwarder at `url` (`udp://ADDR`).
    Raw { url: String, target: RawTarget },
    /// Janus's VideoRoom.
    Janus(JanusConfig),
}

impl Target {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        match args.target {
            TargetKind::Kaskade => {
                let base = args.locator.clone().or(args.sfu.clone()).context(
                    "--target kaskade needs --sfu URL (a node) or --locator URL (a locator)",
                )?;
                let client = args.client;
                Ok(Self::Kaskade { base, client })
            }
            TargetKind::Raw => {
                let addr = args
                    .raw_addr
                    .context("--target raw needs --raw-addr HOST:PORT")?;
                let secret = args
                    .secret
                    .as_deref()
                    .context("--target raw needs --secret")?;
                let url = format!("udp://{addr}");
                Ok(Self::Raw {
                    url,
                    target: RawTarget::new(addr, secret),
                })
            }
            TargetKind::Janus => {
                let url = args
                    .janus_url
                    .clone()
                    .context("--target janus needs --janus-url URL")?;
                let publishers = u32::try_from(args.participants).unwrap_or(u32::MAX);
                Ok(Self::Janus(JanusConfig::new(url, publishers)))
            }
        }
    }

    /// Where it is, for the report.
    fn url(&self) -> &str {
        match self {
            Self::Kaskade { base, .. } => base,
            Self::Raw { url, .. } => url,
            Self::Janus(config) => &config.url,
        }
    }

    /// Joins one participant.
    async fn join(&self, spec: LoadSpec) -> Result<Box<dyn LoadPeer>, String> {
        match self {
            Self::Kaskade {
                base,
                client: ClientKind::Webrtc,
            } => Participant::join(spec.kaskade_config(base))
                .await
                .map(|p| Box::new(p) as Box<dyn LoadPeer>)
                .map_err(|e| e.to_string()),
            Self::Kaskade {
                base,
                client: ClientKind::Lean,
            } => LeanParticipant::join(spec, base)
                .await
                .map(|p| Box::new(p) as Box<dyn LoadPeer>)
                .map_err(|e| e.to_string()),
            Self::Raw { target, .. } => RawParticipant::join(spec, target)
                .await
                .map(|p| Box::new(p) as Box<dyn LoadPeer>)
                .map_err(|e| format!("{e:#}")),
            Self::Janus(config) => JanusParticipant::join(config, spec)
                .await
                .map(|p| Box::new(p) as Box<dyn LoadPeer>)
                .map_err(|e| format!("{e:#}")),
        }
    }
}

/// What one participant's sink has counted: loss per received stream, complete frames per
/// room-mate, and latency samples (milliseconds) of the measurement window.
#[derive(Debug, Default)]
struct Received {
    streams: HashMap<(ParticipantId, u32), SeqCounter>,
    frames: HashMap<ParticipantId, FrameCounter>,
    latency_ms: Vec<f64>,
}

/// One synthetic participant of the run.
struct Entry {
    name: String,
    room: usize,
    join_ms: Option<f64>,
    joined_at: Option<Instant>,
    error: Option<String>,
    peer: Option<Box<dyn LoadPeer>>,
    id: Option<ParticipantId>,
    received: Arc<Mutex<Received>>,
    window_start: ParticipantStats,
}

type JoinOutcome = (usize, Result<Box<dyn LoadPeer>, String>, Duration);

struct Run {
    args: Args,
    target: Arc<Target>,
    origin: Instant,
    /// Latency samples are kept while this is set (the measurement window).
    measuring: Arc<AtomicBool>,
    entries: Vec<Entry>,
    joins: JoinSet<JoinOutcome>,
    /// Freezes by (receiver index, remote id).
    freezes: HashMap<(usize, ParticipantId), FreezeTracker>,
    next_sample: Instant,
    next_progress: Instant,
    last_totals: (u64, u64, Instant),
}

impl Run {
    fn new(args: Args) -> anyhow::Result<Self> {
        let target = Arc::new(Target::from_args(&args)?);
        let origin = Instant::now();
        let run = std::process::id();
        let mut entries = Vec::new();
        for room in 0..args.rooms {
            for index in 0..args.participants {
                entries.push(Entry {
                    name: format!("lt{run}-r{room}p{index}"),
                    room,
                    join_ms: None,
                    joined_at: None,
                    error: None,
                    peer: None,
                    id: None,
                    received: Arc::default(),
                    window_start: ParticipantStats::default(),
                });
            }
        }
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
            last_totals: (0, 0, origin),
        })
    }

    fn spec(&self, i: usize) -> LoadSpec {
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
            decode_video: args.decode,
            token,
            sink,
            timeout: JOIN_TIMEOUT,
        }
    }

    /// Samples, prints progress and collects finished joins until `deadline` or `done`.
    async fn pump(&mut self, deadline: Instant, done: impl Fn(&Self) -> bool) {
        while Instant::now() < deadline && !done(self) {
            let wake = deadline.min(self.next_sample).min(self.next_progress);
            tokio::select! {
                Some(joined) = self.joins.join_next() => {
                    if let Ok((i, result, took)) = joined {
                        self.joined(i, result, took);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if now >= self.next_sample {
                self.sample(now);
                self.next_sample = now + SAMPLE_EVERY;
            }
            if now >= self.next_progress {
                self.progress(now);
                self.next_progress += Duration::from_secs(1);
            }
        }
    }

    fn joined(&mut self, i: usize, result: Result<Box<dyn LoadPeer>, String>, took: Duration) {
        let entry = &mut self.entries[i];
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

    fn sample(&mut self, now: Instant) {
        let at = now.saturating_duration_since(self.origin);
        for (i, entry) in self.entries.iter().enumerate() {
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

    fn progress(&mut self, now: Instant) {
        let (mut sent, mut received) = (0, 0);
        let (mut expected, mut lost, mut nacks) = (0, 0, 0);
        let mut latency_ms = Vec::new();
        for entry in &self.entries {
            let Some(p) = &entry.peer else {
                continue;
            };
            let stats = p.stats();
            sent += stats.bytes_sent;
            received += stats.bytes_received;
            nacks += stats.nacks_sent;
            if let Ok(r) = entry.received.lock() {
                expected += r.streams.values().map(SeqCounter::expected).sum::<u64>();
                lost += r.streams.values().map(SeqCounter::lost).sum::<u64>();
                latency_ms.extend(r.latency_ms.iter().rev().take(200));
            }
        }
        let (last_sent, last_received, last_at) = self.last_totals;
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let mbps = |bytes: u64| bytes as f64 * 8.0 / secs / 1e6;
        let joined = self.joined_count();
        let latency = kaskade_loadtest::report::Latency::of(&latency_ms);
        let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        eprintln!(
            "[{:6.1}s] joined {joined}/{}  in {:.2} Mbit/s  out {:.2} Mbit/s  loss {:.3} %  \
             latency p50/p99 {}/{} ms  NACKs {nacks}  freezes {}",
            now.duration_since(self.origin).as_secs_f64(),
            self.entries.len(),
            mbps(received.saturating_sub(last_received)),
            mbps(sent.saturating_sub(last_sent)),
            loss_percent(expected, lost),
            ms(latency.p50_ms),
            ms(latency.p99_ms),
            self.freezes
                .values()
                .map(FreezeTracker::freezes)
                .sum::<u64>(),
        );
        self.last_totals = (sent, received, now);
    }

    fn joined_count(&self) -> usize {
        self.entries.iter().filter(|e| e.peer.is_some()).count()
    }

    /// Whether every joined participant receives audio and video from every joined room-mate.
    fn media_flows(&self) -> bool {
        self.entries.iter().all(|entry| {
            let Some(p) = &entry.peer else {
                return true;
            };
            let stats = p.stats();
            self.room_mates(entry).all(|mate| {
                let r = stats.remote(mate.id.unwrap_or_default());
                r.video_bytes > 0 && r.audio_bytes > 0
            })
        })
    }

    fn room_mates<'a>(&'a self, entry: &'a Entry) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.room == entry.room && e.name != entry.name && e.peer.is_some())
    }
}

/// CPU seconds and peak RSS of a process, from /proc.
fn usage(pid: &str) -> anyhow::Result<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(ProcessUsage {
        cpu_seconds: parse_cpu_seconds(&stat).context("malformed /proc stat")?,
        peak_rss_bytes: parse_peak_rss(&status),
        rss_bytes: parse_rss(&status),
    })
}

fn usage_since(pid: &str, start: ProcessUsage) -> anyhow::Result<ProcessUsage> {
    let end = usage(pid)?;
    Ok(ProcessUsage {
        cpu_seconds: end.cpu_seconds - start.cpu_seconds,
        ..end
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc_dtls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.ramp > 0.0, "--ramp must be positive");
    let server_pid = args.server_pid.map(|pid| pid.to_string());
    let server_idle = server_pid.as_deref().map(usage).transpose()?;
    let mut run = Run::new(args)?;

    // ramp: one join every 1/ramp seconds, each in its own task
    let interval = Duration::from_secs_f64(1.0 / run.args.ramp);
    for i in 0..run.entries.len() {
        let spec = run.spec(i);
        let target = Arc::clone(&run.target);
        run.joins.spawn(async move {
            let started = Instant::now();
            let result = target.join(spec).await;
            (i, result, Instant::now().duration_since(started))
        });
        run.pump(Instant::now() + interval, |_| false).await;
    }
    let far = Instant::now() + Duration::from_secs(3600);
    run.pump(far, |r| r.joins.is_empty()).await;
    run.pump(Instant::now() + SETTLE_TIMEOUT, Run::media_flows)
        .await;
    if !run.media_flows() {
        eprintln!("warning: media does not flow between every pair; measuring anyway");
    }

    // the measurement window
    for entry in &mut run.entries {
        if let Some(p) = &entry.peer {
            entry.window_start = p.stats();
        }
    }
    let server_start = server_pid.as_deref().map(usage).transpose()?;
    let generator_start = usage("self")?;
    let window_start = Instant::now();
    run.measuring.store(true, Ordering::Relaxed);
    run.pump(window_start + run.args.duration, |_| false).await;
    run.measuring.store(false, Ordering::Relaxed);
    let window_end = Instant::now();
    let server = server_pid
        .as_deref()
        .zip(server_start)
        .map(|(pid, start)| usage_since(pid, start))
        .transpose()?;
    let generator = usage_since("self", generator_start)?;
    let at_window_end: Vec<Option<ParticipantStats>> = run
        .entries
        .iter()
        .map(|e| e.peer.as_ref().map(|p| p.stats()))
        .collect();
    run.sample(window_end);
    finish_freezes(&mut run, window_end);
    for entry in &run.entries {
        if let Some(p) = &entry.peer
            && let Err(e) = p.stop_sending().await
        {
            eprintln!("{}: stopping media failed: {e}", entry.name);
        }
    }
    tokio::time::sleep(DRAIN).await;
    let finals: Vec<Option<ParticipantStats>> = run
        .entries
        .iter()
        .map(|e| e.peer.as_ref().map(|p| p.stats()))
        .collect();
    let report = build_report(
        &run,
        Snapshots {
            window_end: &at_window_end,
            finals: &finals,
        },
        window_end - window_start,
        Usage {
            server,
            server_idle_rss: server_idle.and_then(|u| u.rss_bytes),
            generator,
        },
    );
    for entry in &mut run.entries {
        if let Some(p) = entry.peer.take() {
            let _ = p.leave().await;
        }
    }
    let json = serde_json::to_string_pretty(&report)?;
    match run.args.json.as_deref() {
        Some("-") => println!("{json}"),
        Some(path) => {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {path}"))?;
            print!("{report}");
        }
        None => print!("{report}"),
    }
    if run.args.json.as_deref() == Some("-") {
        eprint!("{report}");
    }
    Ok(())
}

/// Ends freeze tracking: a trailing gap counts when the remote was still in the meeting.
fn finish_freezes(run: &mut Run, at: Instant) {
    let at = at.saturating_duration_since(run.origin);
    for (i, entry) in run.entries.iter().enumerate() {
        let Some(p) = &entry.peer else {
            continue;
        };
        for ((receiver, remote), tracker) in &mut run.freezes {
            if *receiver == i {
                tracker.finish(at, p.sees(*remote));
            }
        }
    }
}

/// Every participant's statistics at the end of the window and after the drain.
struct Snapshots<'a> {
    window_end: &'a [Option<ParticipantStats>],
    finals: &'a [Option<ParticipantStats>],
}

/// The processes' usage during the window, and the server's RSS before the first join.
struct Usage {
    server: Option<ProcessUsage>,
    server_idle_rss: Option<u64>,
    generator: ProcessUsage,
}

fn build_report(run: &Run, snapshots: Snapshots, window: Duration, usage: Usage) -> Report {
    let args = &run.args;
    let finals = snapshots.finals;
    let sent_in_window = |i: usize| {
        finals[i].as_ref().map_or(0, |s| {
            s.bytes_sent
                .saturating_sub(run.entries[i].window_start.bytes_sent)
        })
    };
    let mut participants = Vec::new();
    let mut latency_ms = Vec::new();
    for (i, entry) in run.entries.iter().enumerate() {
        let mut report = ParticipantReport {
            name: entry.name.clone(),
            room: entry.room,
            joined: entry.peer.is_some(),
            error: entry.error.clone(),
            join_ms: entry.join_ms,
            ..ParticipantReport::default()
        };
        let Some(stats) = &finals[i] else {
            participants.push(report);
            continue;
        };
        report.bytes_sent = sent_in_window(i);
        report.packets_received = snapshots.window_end[i].as_ref().map_or(0, |s| {
            s.packets_received
                .saturating_sub(entry.window_start.packets_received)
        });
        report.nacks_sent = stats.nacks_sent;
        report.plis_sent = stats.plis_sent;
        let received = entry.received.lock().expect("sink lock");
        latency_ms.extend_from_slice(&received.latency_ms);
        let mut remotes = BTreeMap::new();
        for (j, mate) in run.entries.iter().enumerate() {
            let Some(id) = mate.id.filter(|_| mate.room == entry.room && j != i) else {
                continue;
            };
            let now = stats.remote(id);
            let before = entry.window_start.remote(id);
            let bytes = |r: &kaskade_loadtest::RemoteStats| r.video_bytes + r.audio_bytes;
            let from_mate = received.streams.iter().filter(|((from, _), _)| *from == id);
            let frames = received.frames.get(&id).copied().unwrap_or_default();
            let both_joined = entry
                .joined_at
                .max(mate.joined_at)
                .map(|t| t.saturating_duration_since(run.origin));
            let tracker = run.freezes.get(&(i, id)).cloned().unwrap_or_default();
            remotes.insert(
                mate.name.clone(),
                RemoteReport {
                    name: mate.name.clone(),
                    bytes_expected: sent_in_window(j),
                    bytes_received: bytes(&now).saturating_sub(bytes(&before)),
                    packets_expected: from_mate.clone().map(|(_, c)| c.expected()).sum(),
                    packets_lost: from_mate.map(|(_, c)| c.lost()).sum(),
                    frames_received: frames.frames(),
                    frames_decoded: now.video_frames_decoded,
                    decode_errors: now.decode_errors,
                    first_frame_ms: frames
                        .first_at()
                        .zip(both_joined)
                        .map(|(f, j)| f.saturating_sub(j).as_secs_f64() * 1000.0),
                    freezes: tracker.freezes(),
                    longest_gap_ms: tracker.longest_gap().as_secs_f64() * 1000.0,
                },
            );
        }
        report.remotes = remotes;
        participants.push(report);
    }
    let params = RunParams {
        rooms: args.rooms,
        participants_per_room: args.participants,
        video_bitrate_kbps: args.video_bitrate,
        width: args.resolution.0,
        height: args.resolution.1,
        fps: args.fps,
        duration_s: args.duration.as_secs_f64(),
        ramp: args.ramp,
        target: run.target.url().to_owned(),
    };
    Report::new(
        params,
        participants,
        &latency_ms,
        window,
        usage.server,
        usage.server_idle_rss,
        usage.generator,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_target_needs_its_address_and_secret() {
        let raw = |extra: &[&str]| {
            let args = ["kaskade-loadtest", "--target", "raw"].iter().chain(extra);
            Target::from_args(&Args::try_parse_from(args).unwrap())
        };
        assert!(raw(&["--secret", "s"]).is_err());
        assert!(raw(&["--raw-addr", "127.0.0.1:10100"]).is_err());
        let target = raw(&["--raw-addr", "127.0.0.1:10100", "--secret", "s"]).unwrap();
        assert_eq!(target.url(), "udp://127.0.0.1:10100");
    }

    #[test]
    fn options_parse() {
        let args = Args::try_parse_from([
            "kaskade-loadtest",
            "--sfu",
            "http://127.0.0.1:1",
            "--resolution",
            "320x240",
            "--duration",
            "2m",
        ])
        .unwrap();
        assert_eq!(args.resolution, (320, 240));
        assert_eq!(args.duration, Duration::from_secs(120));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_resolution("321x240").is_err());
        assert!(parse_resolution("320").is_err());
        // one kaskade address, exactly
        let bare = Args::try_parse_from(["kaskade-loadtest"]).unwrap();
        assert!(Target::from_args(&bare).is_err());
        assert!(Target::from_args(&args).is_ok());
        assert!(
            Args::try_parse_from(["kaskade-loadtest", "--sfu", "a", "--locator", "b"]).is_err()
        );
        // Janus needs its URL
        let janus = |extra: &[&str]| {
            let args = ["kaskade-loadtest", "--target", "janus"]
                .iter()
                .chain(extra);
            Target::from_args(&Args::try_parse_from(args).unwrap())
        };
        assert!(janus(&[]).is_err());
        assert_eq!(
            janus(&["--janus-url", "ws://j:8188"]).unwrap().url(),
            "ws://j:8188"
        );
    }
}
