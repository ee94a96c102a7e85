//! Command-line configuration of `kaskade-locator`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kaskade_protocol::signaling::Role;
use kaskade_recorder::at_rest::Keyring;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `kaskade-locator`: places meetings on kaskade SFU nodes and cascades them. Without
/// `--cluster` it also runs one SFU node in the same process (all-in-one).
#[derive(Debug, Clone, Parser)]
#[command(name = "kaskade-locator", version, about)]
pub struct Cli {
    /// Run a tool instead of the locator.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The locator's settings.
    #[command(flatten)]
    pub serve: ServeConfig,
}

/// How the locator serves.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// HTTP address for the web client, the API, /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Run without an embedded SFU node: nodes run as `kaskade-sfu --locator URL`.
    #[arg(long)]
    pub cluster: bool,
    /// Cluster secret: signs tokens and node credentials. Without it, open joins are allowed
    /// (all-in-one only).
    #[arg(long, env = "KASKADE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Key that guards POST /api/tokens and the operator endpoints (Authorization: Bearer).
    #[arg(long, env = "KASKADE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Keep the cluster's state in Redis (redis://host:port), shared by several locators.
    #[arg(long)]
    pub redis: Option<String>,
    /// A node whose reports stop for this long is dropped (e.g. 3s, 1500ms, or seconds).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub node_timeout: Duration,
    /// SQLite file of the call detail records (created on first run).
    #[arg(long, default_value = "kaskade-cdr.sqlite")]
    pub db: PathBuf,
    /// Visible participants per meeting, across all its nodes.
    #[arg(long, default_value_t = 10)]
    pub max_room_size: u32,
    /// Per-client-address limits on joins (and the embedded node's signaling connections).
    #[command(flatten)]
    pub ip_limits: kaskade_limits::IpLimitsConfig,
    /// Embedded node: UDP port shared by every peer's media (0: any free port).
    #[arg(long, default_value_t = 10_000)]
    pub udp_port: u16,
    /// Embedded node: TCP port for ICE-TCP (0: any free port).
    #[arg(long, default_value_t = 10_000)]
    pub tcp_port: u16,
    /// Embedded node: its region.
    #[arg(long)]
    pub region: Option<String>,
    /// Embedded recorder: directory of the recordings.
    #[arg(long, default_value = "kaskade-recordings")]
    pub recordings: PathBuf,
    /// Embedded recorder: encrypt recordings at rest with the key in this file (64 hex
    /// digits; further lines: older keys that still decrypt). See docs/RECORDING.md.
    #[arg(
        long = "recording-key-file",
        value_name = "FILE",
        value_parser = |p: &str| Keyring::from_file(Path::new(p))
    )]
    pub recording_key: Option<Keyring>,
}

/// The locator's tools.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a token for a meeting.
    Token {
        /// The meeting.
        #[arg(long)]
        meeting: String,
        /// The holder's stable identity.
        #[arg(long)]
        identity: String,
        /// Display name (default: the identity).
        #[arg(long)]
        name: Option<String>,
        /// The holder's role.
        #[arg(long, value_enum, default_value_t = RoleArg::Participant)]
        role: RoleArg,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// A one-time token: it admits once, and never again after its participant left.
        #[arg(long)]
        once: bool,
        /// The cluster secret.
        #[arg(long, env = "KASKADE_SECRET", hide_env_values = true)]
        secret: String,
    },
    /// Print the call detail records of a time range as CSV.
    Cdr {
        /// Sessions that started at or after (RFC 3339, YYYY-MM-DD or Unix seconds).
        #[arg(long)]
        from: Option<String>,
        /// Sessions that started before (a date includes that whole day).
        #[arg(long)]
        to: Option<String>,
        /// SQLite file of the call detail records.
        #[arg(long, default_value = "kaskade-cdr.sqlite")]
        db: PathBuf,
    },
}

/// A role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Publishes and receives.
    Participant,
    /// May also mute, remove and lock.
    Moderator,
    /// Hidden, subscribe-only.
    Recorder,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Participant => Role::Participant,
            RoleArg::Moderator => Role::Moderator,
            RoleArg::Recorder => Role::Recorder,
        }
    }
}

/// `3s`, `1500ms`, `1m` (humantime), or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Duration::from_secs_f64(seconds),
        Ok(_) => return Err("the duration must be positive".into()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string())?,
    };
    if duration.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_humantime_or_seconds() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "0s", "soon", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_defaults_are_the_all_in_one() {
        let cli = Cli::try_parse_from(["kaskade-locator"]).unwrap();
        assert!(cli.command.is_none());
        assert!(!cli.serve.cluster);
        assert_eq!(
            cli.serve.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cli.serve.node_timeout, Duration::from_secs(3));
        assert_eq!(cli.serve.max_room_size, 10);
        assert!(cli.serve.recording_key.is_none());
        let cli = Cli::try_parse_from([
            "kaskade-locator",
            "token",
            "--meeting",
            "m",
            "--identity",
            "i",
            "--role",
            "moderator",
            "--secret",
            "s",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Token {
                role: RoleArg::Moderator,
                ttl: 3600,
                ..
            })
        ));
    }

    #[test]
    fn the_recording_key_file_is_read_at_startup() {
        let path = std::env::temp_dir().join(format!("kaskade-key-{}", std::process::id()));
        let key = "42".repeat(32);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        let file = path.to_str().unwrap();
        let cli = Cli::try_parse_from(["kaskade-locator", "--recording-key-file", file]).unwrap();
        let keys = cli.serve.recording_key.expect("a keyring");
        assert_eq!(
            keys.current_id(),
            Keyring::parse(&key).unwrap().current_id()
        );
        std::fs::write(&path, "not a key\n").unwrap();
        let error = Cli::try_parse_from(["kaskade-locator", "--recording-key-file", file])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1 of the key file is not a key"),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
