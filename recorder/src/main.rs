//! `kaskade-recorder`: records meetings on the locator's request and serves their playback.

use clap::Parser;
use kaskade_recorder::at_rest::Keyring;
use kaskade_recorder::service::{Recorder, RecorderConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// `kaskade-recorder`: records meetings into crash-safe MP4 files and plays them back.
#[derive(Debug, Parser)]
#[command(name = "kaskade-recorder", version, about)]
struct Cli {
    /// The locator to report to (it sends the recordings to make).
    #[arg(long)]
    locator: String,
    /// Directory of the recordings.
    #[arg(long)]
    out: PathBuf,
    /// The cluster secret shared with the locator.
    #[arg(long, env = "KASKADE_SECRET", hide_env_values = true)]
    secret: String,
    /// HTTP address: recording control for the locator and playback (`/r/{meeting}`).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The base URL the locator and viewers reach this recorder at (default: http://LISTEN).
    #[arg(long)]
    advertise_url: Option<String>,
    /// The recorder's unique name (default: its advertised host:port).
    #[arg(long)]
    name: Option<String>,
    /// Encrypt recordings at rest with the key in this file (64 hex digits; further lines:
    /// older keys that still decrypt). See docs/RECORDING.md.
    #[arg(long = "key-file", value_name = "FILE", value_parser = |p: &str| Keyring::from_file(Path::new(p)))]
    key: Option<Keyring>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rtc=warn,webrtc=warn,rtc_dtls=error")),
        )
        .init();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    let url = cli
        .advertise_url
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let name = cli
        .name
        .unwrap_or_else(|| url.split("://").nth(1).unwrap_or(&url).to_string());
    let recorder = Arc::new(Recorder::new(RecorderConfig {
        out: cli.out,
        secret: cli.secret.into_bytes(),
        open: false,
        public_url: Some(url.clone()),
        encryption: cli.key,
    }));
    recorder.recover_in_background();
    tokio::spawn(kaskade_recorder::report::report_forever(
        recorder.clone(),
        cli.locator,
        name,
        url.clone(),
    ));
    println!("kaskade recorder ready: {url}");
    axum::serve(listener, kaskade_recorder::api::router(recorder)).await?;
    Ok(())
}
