//! `kaskade`: the all-in-one (a locator, one node and a recorder in one process); `token`,
//! `cdr` and `directory` are the locator's operator tools.

use clap::Parser;
use kaskade::config::Cli;
use kaskade_locator::tools;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tools::init_logging();
    let cli = Cli::parse();
    match cli.command {
        None => kaskade::run(cli.all_in_one).await?.wait().await,
        Some(command) => tools::run(command).await,
    }
}
