//! `kaskade-locator`: places meetings on SFU nodes and cascades them; without `--cluster` it
//! also runs one node in the same process. `token` and `cdr` are operator tools.

use anyhow::Context;
use clap::Parser;
use kaskade_locator::cdr::{Bound, CdrDb, parse_time, to_csv};
use kaskade_locator::config::{Cli, Command};
use kaskade_locator::server;
use kaskade_protocol::token::{Claims, TokenKey, unix_now};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rtc=warn,rtc_dtls=error,rtc_ice=warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        None => server::run(cli.serve).await?.wait().await,
        Some(Command::Token {
            meeting,
            identity,
            name,
            role,
            ttl,
            once,
            secret,
        }) => {
            let claims = Claims {
                meeting,
                name: name.unwrap_or_else(|| identity.clone()),
                sub: identity,
                role: role.into(),
                exp: unix_now() + ttl,
                rejoin: false,
                jti: once.then(Claims::new_jti),
                aud: None,
            };
            println!("{}", TokenKey::from_secret(secret.as_bytes()).sign(&claims));
            Ok(())
        }
        Some(Command::Cdr { from, to, db }) => {
            let bound = |text: Option<String>, which| match text {
                None => Ok(None),
                Some(t) => parse_time(&t, which).map(Some).with_context(|| {
                    format!("{t:?} is not a time: use RFC 3339, YYYY-MM-DD or Unix seconds")
                }),
            };
            let (from, to) = (bound(from, Bound::From)?, bound(to, Bound::To)?);
            anyhow::ensure!(db.exists(), "no call records at {}", db.display());
            let db = CdrDb::open(&db).with_context(|| format!("opening {}", db.display()))?;
            print!("{}", to_csv(&db.query_blocking(from, to)?));
            Ok(())
        }
    }
}
