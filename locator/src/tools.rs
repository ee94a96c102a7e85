//! The operator's tools that `kaskade-locator` (and the all-in-one) run instead of serving:
//! `token` prints a signed access token, `cdr` prints call records as CSV.

use crate::cdr::{Bound, CdrDb, parse_time, to_csv};
use crate::config::Command;
use anyhow::Context;
use kaskade_protocol::token::{Claims, TokenKey, unix_now};

/// Runs one tool and prints what it makes on stdout.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Token {
            meeting,
            identity,
            name,
            role,
            ttl,
            once,
            secret,
        } => {
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
        Command::Cdr { from, to, db } => {
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

/// Logs to stderr at `info` (webrtc-rs's chatty modules quieter), or as `RUST_LOG` says.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,rtc=warn,rtc_dtls=error,rtc_ice=warn,rsipstack=warn",
                )
            }),
        )
        .init();
}
