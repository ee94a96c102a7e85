//! `kaskade-loadtest`: full-mesh meetings of synthetic participants against a kaskade node or
//! locator, measured.
//!
//! ```text
//! kaskade-loadtest --sfu http://127.0.0.1:8080 --rooms 10 --participants 10 \
//!     --video-bitrate 500 --resolution 640x360 --fps 20 --duration 60 --ramp 20 \
//!     --server-pid "$(pidof kaskade-sfu)" --json report.json
//! ```
//!
//! Every participant joins through the join API at `--sfu` (a standalone node) or
//! `--locator` (signing its token with `--secret` when the deployment requires tokens),
//! `--ramp` joins per second; it publishes the looped H.264 clip and the Opus tone and decodes
//! everything its room-mates send. Once everyone has joined and receives from every room-mate,
//! the measurement window of `--duration` starts; at its end everyone mutes, the last packets
//! drain for a second, and everyone leaves.
//!
//! Progress is printed once a second on stderr; the final report goes to stdout as a table
//! and, with `--json PATH` (`-`: stdout, then instead of the table), as JSON (the
//! [`kaskade_loadtest::report::Report`] fields). End-to-end latency is not measured: the
//! synthetic media carries no send timestamp, and the report says so.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kaskade_loadtest::report::{
    FreezeTracker, ParticipantReport, ProcessUsage, RemoteReport, Report, RunParams, SeqCounter,
    loss_percent, parse_cpu_seconds, parse_peak_rss,
};
use kaskade_loadtest::{JoinConfig, MediaSink, Participant, ParticipantId, ParticipantStats};
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use tokio::task::JoinSet;

/// How often decoded-frame counters are sampled for freeze detection.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long to wait, after the last join, for media to flow between every pair.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the last packets get to arrive after everyone muted.
const DRAIN: Duration = Duration::from_secs(1);

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
    /// Locator base URL (join API).
    #[arg(long, required_unless_present = "sfu", conflicts_with = "sfu")]
    locator: Option<String>,
    /// Node base URL (a standalone node serves the join API too).
    #[arg(long)]
    sfu: Option<String>,
    /// Operator secret: sign each participant's token with it.
    #[arg(long, env = "KASKADE_SECRET", hide_env_values = true)]
    secret: Option<String>,
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

/// Packet counters of one participant's received streams, by (publisher, SSRC).
type Streams = Arc<Mutex<HashMap<(ParticipantId, u32), SeqCounter>>>;

/// One synthetic participant of the run.
struct Entry {
    name: String,
    room: usize,
    join_ms: Option<f64>,
    joined_at: Option<Instant>,
    error: Option<String>,
    participant: Option<Participant>,
    id: Option<ParticipantId>,
    streams: Streams,
    window_start: ParticipantStats,
}

struct Run {
    args: Args,
    base: String,
    origin: Instant,
    entries: Vec<Entry>,
    joins: JoinSet<(usize, Result<Participant, String>, Duration)>,
    /// Freezes by (receiver index, remote id).
    freezes: HashMap<(usize, ParticipantId), FreezeTracker>,
    next_sample: Instant,
    next_progress: Instant,
    last_totals: (u64, u64, Instant),
}

impl Run {
    fn new(args: Args) -> Self {
        let base = args
            .locator
            .clone()
            .or(args.sfu.clone())
            .unwrap_or_default();
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
                    participant: None,
                    id: None,
                    streams: Streams::default(),
                    window_start: ParticipantStats::default(),
                });
            }
        }
        Self {
            args,
            base,
            origin,
            entries,
            joins: JoinSet::new(),
            freezes: HashMap::new(),
            next_sample: origin,
            next_progress: origin + Duration::from_secs(1),
            last_totals: (0, 0, origin),
        }
    }

    fn join_config(&self, i: usize) -> anyhow::Result<JoinConfig> {
        let (args, entry) = (&self.args, &self.entries[i]);
        let meeting = format!("loadtest-{}-room{}", std::process::id(), entry.room);
        let mut cfg = JoinConfig::new("0.0.0.0:0".parse()?, meeting.clone(), entry.name.clone());
        cfg.locator = Some(self.base.clone());
        (cfg.width, cfg.height) = args.resolution;
        cfg.fps = args.fps;
        cfg.video_bitrate_bps = args.video_bitrate.saturating_mul(1000);
        cfg.token = args.secret.as_ref().map(|secret| {
            TokenKey::from_secret(secret.as_bytes()).sign(&Claims {
                meeting,
                sub: format!("{}@loadtest", entry.name),
                name: entry.name.clone(),
                role: Role::Participant,
                exp: unix_now() + args.duration.as_secs() + 3600,
                rejoin: false,
            })
        });
        let streams = Arc::clone(&entry.streams);
        cfg.sink = Some(MediaSink(Arc::new(move |p| {
            if let Ok(mut s) = streams.lock() {
                let key = (p.from, p.packet.header.ssrc);
                s.entry(key)
                    .or_default()
                    .push(p.packet.header.sequence_number);
            }
        })));
        Ok(cfg)
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

    fn joined(&mut self, i: usize, result: Result<Participant, String>, took: Duration) {
        let entry = &mut self.entries[i];
        match result {
            Ok(p) => {
                entry.joined_at = Some(Instant::now());
                entry.join_ms = Some(took.as_secs_f64() * 1000.0);
                entry.id = Some(p.id());
                entry.participant = Some(p);
            }
            Err(e) => {
                eprintln!("{}: join failed: {e}", entry.name);
                entry.error = Some(e);
            }
        }
    }

    fn sample(&mut self, now: Instant) {
        let at = now.saturating_duration_since(self.origin);
        let offset = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(self.origin));
        for (i, entry) in self.entries.iter().enumerate() {
            let Some(p) = &entry.participant else {
                continue;
            };
            for (id, remote) in p.stats().remotes {
                self.freezes.entry((i, id)).or_default().observe(
                    at,
                    remote.video_frames_decoded,
                    offset(remote.last_frame_at),
                );
            }
        }
    }

    fn progress(&mut self, now: Instant) {
        let (mut sent, mut received) = (0, 0);
        let (mut expected, mut lost, mut nacks) = (0, 0, 0);
        for entry in &self.entries {
            let Some(p) = &entry.participant else {
                continue;
            };
            let stats = p.stats();
            sent += stats.bytes_sent;
            received += stats.bytes_received;
            nacks += stats.nacks_sent;
            if let Ok(streams) = entry.streams.lock() {
                expected += streams.values().map(SeqCounter::expected).sum::<u64>();
                lost += streams.values().map(SeqCounter::lost).sum::<u64>();
            }
        }
        let (last_sent, last_received, last_at) = self.last_totals;
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let mbps = |bytes: u64| bytes as f64 * 8.0 / secs / 1e6;
        let joined = self.joined_count();
        eprintln!(
            "[{:6.1}s] joined {joined}/{}  in {:.2} Mbit/s  out {:.2} Mbit/s  loss {:.3} %  \
             NACKs {nacks}  freezes {}",
            now.duration_since(self.origin).as_secs_f64(),
            self.entries.len(),
            mbps(received.saturating_sub(last_received)),
            mbps(sent.saturating_sub(last_sent)),
            loss_percent(expected, lost),
            self.freezes
                .values()
                .map(FreezeTracker::freezes)
                .sum::<u64>(),
        );
        self.last_totals = (sent, received, now);
    }

    fn joined_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.participant.is_some())
            .count()
    }

    /// Whether every joined participant receives audio and video from every joined room-mate.
    fn media_flows(&self) -> bool {
        self.entries.iter().all(|entry| {
            let Some(p) = &entry.participant else {
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
        self.entries.iter().filter(move |e| {
            e.room == entry.room && e.name != entry.name && e.participant.is_some()
        })
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
    let server_start = server_pid.as_deref().map(usage).transpose()?;
    let generator_start = usage("self")?;
    let mut run = Run::new(args);

    // ramp: one join every 1/ramp seconds, each in its own task
    let interval = Duration::from_secs_f64(1.0 / run.args.ramp);
    for i in 0..run.entries.len() {
        let cfg = run.join_config(i)?;
        run.joins.spawn(async move {
            let started = Instant::now();
            let result = Participant::join(cfg).await.map_err(|e| e.to_string());
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
        if let Some(p) = &entry.participant {
            entry.window_start = p.stats();
        }
    }
    let window_start = Instant::now();
    run.pump(window_start + run.args.duration, |_| false).await;
    let window_end = Instant::now();
    run.sample(window_end);
    finish_freezes(&mut run, window_end);
    for entry in &run.entries {
        if let Some(p) = &entry.participant
            && let Err(e) = p.mute(Some(true), Some(true)).await
        {
            eprintln!("{}: mute failed: {e}", entry.name);
        }
    }
    tokio::time::sleep(DRAIN).await;
    let finals: Vec<Option<ParticipantStats>> = run
        .entries
        .iter()
        .map(|e| e.participant.as_ref().map(Participant::stats))
        .collect();
    let server = server_pid
        .as_deref()
        .zip(server_start)
        .map(|(pid, start)| usage_since(pid, start))
        .transpose()?;
    let report = build_report(
        &run,
        &finals,
        window_end - window_start,
        server,
        generator_start,
    )?;
    for entry in &mut run.entries {
        if let Some(p) = entry.participant.take() {
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
        let Some(p) = &entry.participant else {
            continue;
        };
        let present = p.state().participants;
        for ((receiver, remote), tracker) in &mut run.freezes {
            if *receiver == i {
                tracker.finish(at, present.contains_key(remote));
            }
        }
    }
}

fn build_report(
    run: &Run,
    finals: &[Option<ParticipantStats>],
    window: Duration,
    server: Option<ProcessUsage>,
    generator_start: ProcessUsage,
) -> anyhow::Result<Report> {
    let args = &run.args;
    let sent_in_window = |i: usize| {
        finals[i].as_ref().map_or(0, |s| {
            s.bytes_sent
                .saturating_sub(run.entries[i].window_start.bytes_sent)
        })
    };
    let mut participants = Vec::new();
    for (i, entry) in run.entries.iter().enumerate() {
        let mut report = ParticipantReport {
            name: entry.name.clone(),
            room: entry.room,
            joined: entry.participant.is_some(),
            error: entry.error.clone(),
            join_ms: entry.join_ms,
            ..ParticipantReport::default()
        };
        let Some(stats) = &finals[i] else {
            participants.push(report);
            continue;
        };
        report.bytes_sent = sent_in_window(i);
        report.nacks_sent = stats.nacks_sent;
        report.plis_sent = stats.plis_sent;
        let streams = entry.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let mut remotes = BTreeMap::new();
        for (j, mate) in run.entries.iter().enumerate() {
            let Some(id) = mate.id.filter(|_| mate.room == entry.room && j != i) else {
                continue;
            };
            let now = stats.remote(id);
            let before = entry.window_start.remote(id);
            let bytes = |r: &kaskade_loadtest::RemoteStats| r.video_bytes + r.audio_bytes;
            let from_mate = streams.iter().filter(|((from, _), _)| *from == id);
            let both_joined = entry.joined_at.max(mate.joined_at);
            let tracker = run.freezes.get(&(i, id)).cloned().unwrap_or_default();
            remotes.insert(
                mate.name.clone(),
                RemoteReport {
                    name: mate.name.clone(),
                    bytes_expected: sent_in_window(j),
                    bytes_received: bytes(&now).saturating_sub(bytes(&before)),
                    packets_expected: from_mate.clone().map(|(_, c)| c.expected()).sum(),
                    packets_lost: from_mate.map(|(_, c)| c.lost()).sum(),
                    frames_decoded: now.video_frames_decoded,
                    decode_errors: now.decode_errors,
                    first_frame_ms: now
                        .first_frame_at
                        .zip(both_joined)
                        .map(|(f, j)| f.saturating_duration_since(j).as_secs_f64() * 1000.0),
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
        target: run.base.clone(),
    };
    let generator = usage_since("self", generator_start)?;
    Ok(Report::new(params, participants, window, server, generator))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // one target, exactly
        assert!(Args::try_parse_from(["kaskade-loadtest"]).is_err());
        assert!(
            Args::try_parse_from(["kaskade-loadtest", "--sfu", "a", "--locator", "b"]).is_err()
        );
    }
}
