//! Command line of `kaskade`: the locator's settings, plus its node's and recorder's.

use clap::{Args, Parser};
use kaskade_locator::config::{Command, ServeConfig};
use kaskade_recorder::at_rest::Keyring;
use std::path::{Path, PathBuf};

/// `kaskade`: a locator, one SFU node and a recorder in one process (the all-in-one). A
/// cluster runs `kaskade-locator` and `kaskade-sfu --locator URL` instead.
#[derive(Debug, Clone, Parser)]
#[command(name = "kaskade", version, about)]
pub struct Cli {
    /// Run one of the locator's tools instead.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// What to serve.
    #[command(flatten)]
    pub all_in_one: AllInOne,
}

/// The all-in-one's settings.
#[derive(Debug, Clone, Args)]
pub struct AllInOne {
    /// The locator's settings.
    #[command(flatten)]
    pub serve: ServeConfig,
    /// The node: UDP port shared by every peer's media (0: any free port).
    #[arg(long, default_value_t = 10_000)]
    pub udp_port: u16,
    /// The node: TCP port for ICE-TCP (0: any free port).
    #[arg(long, default_value_t = 10_000)]
    pub tcp_port: u16,
    /// The node: its region.
    #[arg(long)]
    pub region: Option<String>,
    /// The recorder: directory of the recordings.
    #[arg(long, default_value = "kaskade-recordings")]
    pub recordings: PathBuf,
    /// The recorder: encrypt recordings at rest with the key in this file (64 hex digits;
    /// further lines: older keys that still decrypt). See docs/RECORDING.md.
    #[arg(
        long = "recording-key-file",
        value_name = "FILE",
        value_parser = |p: &str| Keyring::from_file(Path::new(p))
    )]
    pub recording_key: Option<Keyring>,
    /// The node's SIP gateway (off unless `--sip-listen` is given; docs/SIP.md).
    #[command(flatten)]
    pub sip: kaskade_sfu::config::SipOptions,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn the_defaults_serve_localhost_with_open_joins_and_plain_recordings() {
        let cli = Cli::try_parse_from(["kaskade"]).unwrap();
        assert!(cli.command.is_none());
        let config = cli.all_in_one;
        assert_eq!(
            config.serve.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!((config.udp_port, config.tcp_port), (10_000, 10_000));
        assert_eq!(config.recordings, PathBuf::from("kaskade-recordings"));
        assert!(config.recording_key.is_none());
        let cli = Cli::try_parse_from(["kaskade", "cdr", "--from", "2026-12-01"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Cdr { .. })));
    }

    #[test]
    fn the_recording_key_file_is_read_at_startup() {
        let path = std::env::temp_dir().join(format!("kaskade-key-{}", std::process::id()));
        let key = "42".repeat(32);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        let file = path.to_str().unwrap();
        let cli = Cli::try_parse_from(["kaskade", "--recording-key-file", file]).unwrap();
        let keys = cli.all_in_one.recording_key.expect("a keyring");
        assert_eq!(
            keys.current_id(),
            Keyring::parse(&key).unwrap().current_id()
        );
        std::fs::write(&path, "not a key\n").unwrap();
        let error = Cli::try_parse_from(["kaskade", "--recording-key-file", file])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1 of the key file is not a key"),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
