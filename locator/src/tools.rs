//! The operator's tools that `kaskade-locator` (and the all-in-one) run instead of serving:
//! `token` prints a signed access token, `cdr` prints call records as CSV, `directory` manages
//! the SIP rooms of the dialpad.

use crate::cdr::{Bound, CdrDb, parse_time, to_csv};
use crate::config::{Command, DirectoryAction};
use crate::directory::Directory;
use anyhow::Context;
use kaskade_protocol::directory::DirectoryEntry;
use kaskade_protocol::token::{Claims, TokenKey, unix_now};

/// Runs one tool and prints what it makes on stdout.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Token {
            meeting,
            identity,
            name,
            role,
            ttl,
            once,
            dial,
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
                dial,
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
        Command::Directory { action, redis, db } => {
            let directory = Directory::open(redis.as_deref(), &db)
                .await
                .context("opening the SIP directory")?;
            directory_tool(&directory, action).await
        }
    }
}

/// Lists, sets or removes directory entries.
async fn directory_tool(directory: &Directory, action: DirectoryAction) -> anyhow::Result<()> {
    match action {
        DirectoryAction::List => {
            println!(
                "{}",
                serde_json::to_string_pretty(&directory.list().await?)?
            );
        }
        DirectoryAction::Set {
            id,
            name,
            uri,
            credentials,
        } => {
            let entry = DirectoryEntry {
                id,
                name: name.trim().to_string(),
                uri: uri.trim().to_string(),
                credentials,
            };
            entry.check().map_err(anyhow::Error::msg)?;
            let created = directory.put(entry.clone()).await?;
            let done = if created { "added" } else { "replaced" };
            println!("{done} {}: {} <{}>", entry.id, entry.name, entry.uri);
        }
        DirectoryAction::Remove { id } => {
            anyhow::ensure!(directory.remove(&id).await?, "no directory entry {id:?}");
            println!("removed {id}");
        }
    }
    Ok(())
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
