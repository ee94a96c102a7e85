//! `kaskade-locator`: places meetings on SFU nodes and cascades them. `token`, `cdr` and
//! `directory` are operator tools.

use clap::Parser;
use kaskade_locator::config::Cli;
use kaskade_locator::{server, tools};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tools::init_logging();
    let cli = Cli::parse();
    match cli.command {
        None => server::run(cli.serve).await?.wait().await,
        Some(command) => tools::run(command).await,
    }
}
