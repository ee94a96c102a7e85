//! `kaskade-sfu`: runs one SFU node with its web client.

use clap::Parser;
use kaskade_sfu::NodeConfig;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("info,rtc=warn,rtc_dtls=error,rtc_ice=warn,rsipstack=warn")
        }))
        .init();
    let config = NodeConfig::parse();
    let server = kaskade_sfu::serve(&config).await?;
    println!("kaskade media: udp {}", server.udp_addr);
    if config.locators.is_empty() {
        println!(
            "kaskade is running: open http://{}/m/hello",
            server.http_addr
        );
    } else {
        println!(
            "kaskade node ready: http://{} (joins go through {})",
            server.http_addr,
            config.locators.join(", ")
        );
    }
    server.run().await?;
    Ok(())
}
