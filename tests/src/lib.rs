//! Helpers for kaskade end-to-end tests: start real node processes (optionally inside a network
//! namespace of their own), read their metrics, and clean up after themselves.

use anyhow::{Context, Result, bail};
use kaskade_client::JoinConfig;
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod loadtest;
pub mod media_file;
pub mod sip_peers;

/// The node binary to test: `KASKADE_SFU_BIN` when set (e.g. a release build for benchmark
/// runs), else the one Cargo built for the tests (`built`).
pub fn node_binary(built: &str) -> String {
    std::env::var("KASKADE_SFU_BIN").unwrap_or_else(|_| built.to_string())
}

/// The recorder binary to test: `KASKADE_RECORDER_BIN` when set (a release build for
/// benchmark runs), else the one Cargo built for the tests (`built`).
pub fn recorder_binary(built: &str) -> String {
    std::env::var("KASKADE_RECORDER_BIN").unwrap_or_else(|_| built.to_string())
}

/// Starts the node under test on loopback with `args` (see [`node_binary`]); panics if it
/// cannot start, which fails the calling test.
pub fn start_node(built: &str, args: &[&str]) -> Node {
    Node::start(Command::new(node_binary(built)), args).expect("node starts")
}

/// Joining `meeting` as `name` at `server` (directly; set `locator` to go through the join
/// API) with the tests' media: 320x240 video at 15 fps and 200 kbit/s.
pub fn small_media_config(server: SocketAddr, meeting: &str, name: &str) -> JoinConfig {
    let mut cfg = JoinConfig::new(server, meeting, name);
    cfg.width = 320;
    cfg.height = 240;
    cfg.fps = 15;
    cfg.video_bitrate_bps = 200_000;
    cfg
}

/// A token for `name` (identity `name@example.com`) in `meeting`, valid for ten minutes, signed
/// with `secret` as an operator's backend would sign it.
pub fn sign_token(secret: &str, meeting: &str, name: &str, role: Role) -> String {
    TokenKey::from_secret(secret.as_bytes()).sign(&claims(meeting, name, role))
}

/// The claims of [`sign_token`], for a test that adds to them (a one-time id, the dial right).
pub fn claims(meeting: &str, name: &str, role: Role) -> Claims {
    Claims {
        meeting: meeting.into(),
        sub: format!("{name}@example.com"),
        name: name.into(),
        role,
        exp: unix_now() + 600,
        rejoin: false,
        jti: None,
        aud: None,
        dial: false,
    }
}

/// A private network namespace with loopback up, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a name unique to this process and call.
    pub fn new(prefix: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        run(Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// Adds a veth pair to the namespace, `address` (CIDR) on one end and a default route
    /// through it: for peers that do not use loopback alone (libnice in Janus, baresip).
    pub fn add_veth(&self, address: &str) -> Result<()> {
        let steps: [&[&str]; 5] = [
            &[
                "link", "add", "kjv0", "type", "veth", "peer", "name", "kjv1",
            ],
            &["addr", "add", address, "dev", "kjv0"],
            &["link", "set", "kjv0", "up"],
            &["link", "set", "kjv1", "up"],
            &["route", "add", "default", "dev", "kjv0"],
        ];
        for step in steps {
            run(self.command("ip").args(step))?;
        }
        Ok(())
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Joins this namespace to `far` with a veth pair: `device` here with `address` (CIDR),
    /// `far_address` on its peer in `far`. Traffic between the two crosses a real link, which
    /// `tc` can shape on either end.
    pub fn link_to(
        &self,
        far: &Netns,
        device: &str,
        address: &str,
        far_address: &str,
    ) -> Result<()> {
        let peer = format!("{device}p");
        run(self
            .command("ip")
            .args(["link", "add", device, "type", "veth", "peer", "name", &peer]))?;
        run(self
            .command("ip")
            .args(["link", "set", &peer, "netns", &far.name]))?;
        run(self
            .command("ip")
            .args(["addr", "add", address, "dev", device]))?;
        run(self.command("ip").args(["link", "set", device, "up"]))?;
        run(far
            .command("ip")
            .args(["addr", "add", far_address, "dev", &peer]))?;
        run(far.command("ip").args(["link", "set", &peer, "up"]))?;
        Ok(())
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A scratch directory in the temporary directory, unique to this process and call, removed
/// on drop (call records, recordings: never the source tree).
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A fresh, empty directory.
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kaskade-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Self(dir)
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// `command` with each `(flag, value)` of `defaults` whose flag `args` does not give.
fn with_defaults(mut command: Command, args: &[&str], defaults: &[(&str, &str)]) -> Command {
    for (flag, value) in defaults {
        if !args.contains(flag) {
            command.args([flag, value]);
        }
    }
    command
}

/// A running kaskade process (an SFU node or a locator), killed (SIGKILL) on drop.
pub struct Node {
    child: Child,
    /// The HTTP address it printed.
    pub http: SocketAddr,
    /// The media UDP address it printed.
    pub udp_addr: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Node {
    /// Starts a node or the all-in-one (with `args`, plus an ephemeral HTTP, UDP and TCP port
    /// unless given) and waits until it prints its URL.
    pub fn start(command: Command, args: &[&str]) -> Result<Self> {
        let ephemeral = [
            ("--listen", "127.0.0.1:0"),
            ("--udp-port", "0"),
            ("--tcp-port", "0"),
        ];
        Self::spawn(with_defaults(command, args, &ephemeral), args)
    }

    /// Starts a locator (with `args`, plus an ephemeral HTTP port unless given; it has no media
    /// ports) and waits until it prints its URL.
    pub fn start_locator(command: Command, args: &[&str]) -> Result<Self> {
        let ephemeral = [("--listen", "127.0.0.1:0")];
        Self::spawn(with_defaults(command, args, &ephemeral), args)
    }

    /// Starts any kaskade binary with exactly `args` and waits until it prints its URL.
    pub fn spawn(mut command: Command, args: &[&str]) -> Result<Self> {
        command.args(args);
        let mut child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the node")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Self {
            child,
            http: "0.0.0.0:0".parse()?,
            udp_addr: "0.0.0.0:0".parse()?,
            log,
        };
        loop {
            let line = node
                .log
                .recv_timeout(Duration::from_secs(20))
                .context("the node did not print its URL in time")?;
            if let Some(addr) = line.strip_prefix("kaskade media: udp ") {
                node.udp_addr = addr
                    .parse()
                    .with_context(|| format!("bad address in {line:?}"))?;
            }
            if let Some(url) = [
                "kaskade is running: open http://",
                "kaskade node ready: http://",
                "kaskade recorder ready: http://",
            ]
            .iter()
            .find_map(|prefix| line.strip_prefix(prefix))
            {
                let addr = url.split(['/', ' ']).next().unwrap_or_default();
                node.http = addr
                    .parse()
                    .with_context(|| format!("bad address in {line:?}"))?;
                return Ok(node);
            }
        }
    }

    /// The node's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of one metric sample (name with labels, exactly as exposed), or 0.
    pub fn metric(&self, sample: &str) -> Result<f64> {
        let text = http_get(self.http, "/metrics")?;
        Ok(parse_metric(&text, sample).unwrap_or(0.0))
    }

    /// Waits (at most `within`) until this locator lists `names` among its nodes: a node
    /// prints its URL before its first report reaches the locator, which places no one on it
    /// until then.
    pub async fn wait_for_nodes(&self, names: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let listed = http_get(self.http, "/api/nodes").unwrap_or_default();
            if names.iter().all(|n| listed.contains(&format!("\"{n}\""))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {names:?} never registered: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU time (user + system) the process has used, from /proc.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11).context("utime")?.parse::<f64>()?
            + fields.get(12).context("stime")?.parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GStreamer's gst-rtsp-server serving tests/rtsp/camera.py's test pattern (H.264 and G.711
/// by default) at `rtsp://127.0.0.1:{port}/cam`; killed on drop.
pub struct RtspCamera {
    child: Child,
    /// The RTSP port it listens on.
    pub port: u16,
}

impl RtspCamera {
    /// Starts the camera script with `python` (`/usr/bin/python3`, possibly run inside a
    /// network namespace) on `port` (a free one when 0) with the script's `args`, and waits
    /// until it listens; panics if it cannot start, which fails the calling test.
    pub fn start(mut python: Command, port: u16, args: &[&str]) -> Self {
        let port = if port == 0 { free_port() } else { port };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/rtsp/camera.py");
        let mut child = python
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the RTSP camera");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("camera stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the camera prints a line");
        assert_eq!(line.trim(), "camera ready", "the RTSP camera started");
        Self { child, port }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    /// Starts one (panics when redis-server is missing or does not listen within 10 s).
    pub fn start() -> Self {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port that was free a moment ago on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Finds `sample` (e.g. `kaskade_sfu_dropped_total{reason="muted"}`) in a Prometheus text body.
pub fn parse_metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
}

/// A plain HTTP/1.1 GET on loopback (no client library needed for metrics and health).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_samples_with_labels() {
        let text =
            "# HELP x\nkaskade_sfu_rooms 2\nkaskade_sfu_dropped_total{reason=\"muted\"} 17\n";
        assert_eq!(parse_metric(text, "kaskade_sfu_rooms"), Some(2.0));
        assert_eq!(
            parse_metric(text, "kaskade_sfu_dropped_total{reason=\"muted\"}"),
            Some(17.0)
        );
        assert_eq!(parse_metric(text, "kaskade_sfu_participants"), None);
    }
}
