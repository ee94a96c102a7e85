//! Command-line configuration of `kaskade-locator`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kaskade_protocol::signaling::Role;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `kaskade-locator`: places meetings on kaskade SFU nodes (`kaskade-sfu --locator URL`) and
/// cascades them. One machine without a cluster runs `kaskade`, the all-in-one, instead.
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
    /// Cluster secret: signs tokens and node credentials (required by `kaskade-locator`; the
    /// all-in-one without it allows open joins).
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
    /// Per-client-address limits on joins (and, in the all-in-one, on its node's signaling
    /// connections).
    #[command(flatten)]
    pub ip_limits: kaskade_limits::IpLimitsConfig,
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
        /// The holder may place SIP calls from the meeting's dialpad (moderators may anyway).
        #[arg(long)]
        dial: bool,
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
    /// List, set or remove rooms of the SIP directory that the dialpad offers, where the
    /// locator keeps it: in Redis with --redis, else in the SQLite file --db.
    Directory {
        /// What to do.
        #[command(subcommand)]
        action: DirectoryAction,
        /// The cluster's Redis (redis://host:port), when the locators share one.
        #[arg(long, global = true)]
        redis: Option<String>,
        /// The locator's SQLite file (its --db), without --redis.
        #[arg(long, default_value = "kaskade-cdr.sqlite", global = true)]
        db: PathBuf,
    },
}

/// What the `directory` tool does.
#[derive(Debug, Clone, Subcommand)]
pub enum DirectoryAction {
    /// Print every room as JSON.
    List,
    /// Add a room, or replace the one with this id.
    Set {
        /// The room's id (A-Z a-z 0-9 _ . -), what dial requests name.
        id: String,
        /// The name the dialpad shows.
        #[arg(long)]
        name: String,
        /// Its SIP address (sip:user@host[:port]).
        #[arg(long)]
        uri: String,
        /// The name of the digest credentials the nodes hold for it (--sip-credential).
        #[arg(long)]
        credentials: Option<String>,
    },
    /// Remove a room.
    Remove {
        /// The room's id.
        id: String,
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
    fn the_defaults_serve_on_localhost_and_the_tools_parse() {
        let cli = Cli::try_parse_from(["kaskade-locator"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.serve.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cli.serve.node_timeout, Duration::from_secs(3));
        assert_eq!(cli.serve.max_room_size, 10);
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
}
