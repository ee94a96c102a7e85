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
//! `kaskade_client::latency`) and the Opus tone, and receives everything its room-mates
//! send (decoding it with `--decode`). Once everyone has joined and receives from every
//! room-mate, the measurement window of `--duration` starts; at its end everyone stops sending, the last packets drain for a second, and
//! everyone leaves.
//!
//! With `--churn-every 3s`, every interval of the window one participant leaves cleanly and
//! a fresh one joins its room (see `kaskade_loadtest::churn`).
//!
//! Progress is printed once a second on stderr; the final report goes to stdout as a table
//! and, with `--json PATH` (`-`: stdout, then instead of the table), as JSON (the
//! [`kaskade_loadtest::report::Report`] fields). `--series PATH` writes the same figures once
//! a second as CSV, with the gauges of the servers' metrics pages (`--metrics-url`).

mod run;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kaskade_client::{Participant, ParticipantStats};
use kaskade_loadtest::janus::{JanusConfig, JanusParticipant};
use kaskade_loadtest::lean::LeanParticipant;
use kaskade_loadtest::raw::{RawParticipant, RawTarget};
use kaskade_loadtest::report::{ProcessUsage, parse_cpu_seconds, parse_peak_rss, parse_rss};
use kaskade_loadtest::series::{Scraper, SeriesWriter};
use kaskade_loadtest::{LoadPeer, LoadSpec};

use run::{Run, Series, Snapshots, Usage, Window, build_report, finish_freezes};

/// How long to wait, after the last join, for media to flow between every pair.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long simulcast layers get to settle once media flows, before the window opens.
const LAYERS_SETTLE: Duration = Duration::from_secs(2);
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
    /// kaskade: publish the video in three simulcast layers (a quarter, a half and the whole
    /// of `--resolution`, at about 1/8, 3/10 and all of `--video-bitrate`), pausing each
    /// while the node says nobody receives it, as the web client does.
    #[arg(long)]
    simulcast: bool,
    /// kaskade, lean client: show every room-mate's video this many pixels tall and tell the
    /// node (`viewing`), which then sends each the simulcast layer that fills the tile
    /// (without it: the best layer).
    #[arg(long)]
    tile_height: Option<u32>,
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
    /// Churn: every this often during the window (seconds or humantime), one participant
    /// leaves (the rooms in turn, the oldest member) and a fresh one joins its room.
    #[arg(long, value_parser = parse_duration)]
    churn_every: Option<Duration>,
    /// Write a CSV row every second to this path: time, participants, bitrates, loss and
    /// latency of that second, and the gauges of every `--metrics-url`.
    #[arg(long)]
    series: Option<String>,
    /// A server metrics page (Prometheus text) whose gauges go into the series, read once a
    /// second (repeatable, e.g. the all-in-one's /metrics and /node/metrics).
    #[arg(long, requires = "series")]
    metrics_url: Vec<String>,
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
    anyhow::ensure!(
        args.churn_every.is_none_or(|every| !every.is_zero()),
        "--churn-every must be positive"
    );
    anyhow::ensure!(
        !args.simulcast || args.target == TargetKind::Kaskade,
        "--simulcast needs --target kaskade"
    );
    anyhow::ensure!(
        args.tile_height.is_none()
            || (args.target == TargetKind::Kaskade && args.client == ClientKind::Lean),
        "--tile-height needs --target kaskade --client lean"
    );
    let server_pid = args.server_pid.map(|pid| pid.to_string());
    let server_idle = server_pid.as_deref().map(usage).transpose()?;
    let series = open_series(&args).await?;
    let mut run = Run::new(args, series)?;
    ramp_up(&mut run).await;
    let measured = measure(&mut run, server_pid.as_deref()).await?;
    let report = finish(&mut run, measured, server_idle.and_then(|u| u.rss_bytes)).await;
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

/// The series file of `--series`, its columns fixed by a first read of every `--metrics-url`
/// (before anyone joins: the servers' idle figures).
async fn open_series(args: &Args) -> anyhow::Result<Option<Series>> {
    let Some(path) = &args.series else {
        return Ok(None);
    };
    let (scraper, columns) = if args.metrics_url.is_empty() {
        (None, Default::default())
    } else {
        let (scraper, columns) = Scraper::start(args.metrics_url.clone()).await?;
        (Some(scraper), columns)
    };
    Ok(Some(Series {
        writer: SeriesWriter::create(path, &columns)?,
        columns,
        scraper,
    }))
}

/// Joins everyone, one every 1/ramp seconds each in its own task, and waits for media to
/// flow between every pair.
async fn ramp_up(run: &mut Run) {
    let interval = Duration::from_secs_f64(1.0 / run.args.ramp);
    for i in 0..run.entries.len() {
        run.spawn_join(i, None);
        run.pump(Instant::now() + interval, |_| false).await;
    }
    let far = Instant::now() + Duration::from_secs(3600);
    run.pump(far, |r| !r.joining()).await;
    run.pump(Instant::now() + SETTLE_TIMEOUT, Run::media_flows)
        .await;
    if !run.media_flows() {
        eprintln!("warning: media does not flow between every pair; measuring anyway");
    }
    if run.args.simulcast {
        // the node chooses layers every 250 ms and pauses those nobody receives once a
        // keyframe told their size: the window measures the layers it settled on
        run.pump(Instant::now() + LAYERS_SETTLE, |_| false).await;
    }
}

/// What the measurement window left: its bounds, the processes' usage in it, everyone's
/// statistics at its end.
struct Measured {
    window: Window,
    server: Option<ProcessUsage>,
    generator: ProcessUsage,
    at_window_end: Vec<Option<ParticipantStats>>,
}

/// The measurement window (with its churn).
async fn measure(run: &mut Run, server_pid: Option<&str>) -> anyhow::Result<Measured> {
    let server_start = server_pid.map(usage).transpose()?;
    let generator_start = usage("self")?;
    run.open_window();
    let start = run.window_start.unwrap_or_else(Instant::now);
    run.pump(start + run.args.duration, |_| false).await;
    run.measuring
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let end = Instant::now();
    let server = server_pid
        .zip(server_start)
        .map(|(pid, start)| usage_since(pid, start))
        .transpose()?;
    let generator = usage_since("self", generator_start)?;
    let at_window_end = run.entries.iter().map(run::Entry::stats).collect();
    run.sample(end);
    finish_freezes(run, end);
    Ok(Measured {
        window: Window { start, end },
        server,
        generator,
        at_window_end,
    })
}

/// Lets churn under way complete, stops everyone's media, drains, reports and leaves.
async fn finish(
    run: &mut Run,
    measured: Measured,
    server_idle_rss: Option<u64>,
) -> kaskade_loadtest::report::Report {
    run.pump(Instant::now() + JOIN_TIMEOUT, |r| !r.churn_busy())
        .await;
    for entry in &run.entries {
        if let Some(p) = &entry.peer
            && let Err(e) = p.stop_sending().await
        {
            eprintln!("{}: stopping media failed: {e}", entry.name);
        }
    }
    tokio::time::sleep(DRAIN).await;
    let finals: Vec<Option<ParticipantStats>> = run.entries.iter().map(run::Entry::stats).collect();
    let mut at_window_end = measured.at_window_end;
    at_window_end.resize(finals.len(), None);
    let report = build_report(
        run,
        Snapshots {
            window_end: &at_window_end,
            finals: &finals,
        },
        measured.window,
        Usage {
            server: measured.server,
            server_idle_rss,
            generator: measured.generator,
        },
    );
    for entry in &mut run.entries {
        if let Some(p) = entry.peer.take() {
            let _ = p.leave().await;
        }
    }
    run.finish_leaves().await;
    report
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
