//! The directory of SIP rooms (video MCUs, room systems) that participants pick from the
//! dialpad, kept where the locator keeps what must outlive it: in its SQLite file (`--db`, beside
//! the call records) for one locator, or in Redis (`--redis`, hash `kaskade:sip-directory`, id
//! to entry JSON) when several locators share a cluster.
//!
//! The operator manages it through the API (`/api/directory`) or the `directory` tool; nodes
//! read it when someone opens the dialpad or dials an entry.

use crate::persist::{Persist, PersistError, parse, sqlite, to_json};
use kaskade_protocol::directory::{DirectoryEntry, MAX_ENTRIES};
use redis::AsyncCommands;
use rusqlite::params;
use std::path::Path;

/// The Redis hash of the directory.
const REDIS_KEY: &str = "kaskade:sip-directory";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sip_directory (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    uri TEXT NOT NULL,
    credentials TEXT
);
";

/// The directory, in SQLite or in Redis; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    backend: Persist,
}

impl Directory {
    /// The directory where the locator's flags keep state: Redis at `redis` when given, else
    /// the SQLite file `db`.
    pub async fn open(redis: Option<&str>, db: &Path) -> Result<Self, PersistError> {
        Ok(Self {
            backend: Persist::open(redis, db, SCHEMA).await?,
        })
    }

    /// The directory in the SQLite file at `path` (created if needed).
    pub fn sqlite(path: &Path) -> Result<Self, PersistError> {
        Ok(Self {
            backend: Persist::sqlite(path, SCHEMA)?,
        })
    }

    /// The directory in Redis at `url`.
    pub async fn redis(url: &str) -> Result<Self, PersistError> {
        Ok(Self {
            backend: Persist::redis(url).await?,
        })
    }

    /// Every entry, by name (then id).
    pub async fn list(&self) -> Result<Vec<DirectoryEntry>, PersistError> {
        let mut entries = match &self.backend {
            Persist::Sqlite(conn) => {
                sqlite(conn, |conn| {
                    let mut select = conn
                        .prepare_cached("SELECT id, name, uri, credentials FROM sip_directory")?;
                    let rows = select.query_map([], entry_of_row)?;
                    rows.collect::<Result<Vec<_>, _>>()
                })
                .await?
            }
            Persist::Redis(con) => {
                let stored: Vec<(String, String)> = con.clone().hgetall(REDIS_KEY).await?;
                stored
                    .iter()
                    .map(|(_, json)| parse(json))
                    .collect::<Result<_, _>>()?
            }
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(entries)
    }

    /// The entry `id`, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<DirectoryEntry>, PersistError> {
        let select = (
            "SELECT id, name, uri, credentials FROM sip_directory WHERE id = ?1",
            entry_of_row as _,
        );
        self.backend.lookup(select, REDIS_KEY, id).await
    }

    /// Adds `entry`, or replaces the one with its id; whether it is new. The caller has checked
    /// it ([`DirectoryEntry::check`]).
    pub async fn put(&self, entry: DirectoryEntry) -> Result<bool, PersistError> {
        match &self.backend {
            Persist::Sqlite(conn) => {
                sqlite(conn, move |conn| {
                    let tx = conn.transaction()?;
                    let (count, exists): (i64, bool) = tx.query_row(
                        "SELECT COUNT(*), COALESCE(SUM(id = ?1), 0) > 0 FROM sip_directory",
                        [&entry.id],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?;
                    if !exists && usize::try_from(count).unwrap_or(usize::MAX) >= MAX_ENTRIES {
                        return Ok(Err(full()));
                    }
                    tx.execute(
                        "INSERT OR REPLACE INTO sip_directory (id, name, uri, credentials) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![entry.id, entry.name, entry.uri, entry.credentials],
                    )?;
                    tx.commit()?;
                    Ok(Ok(!exists))
                })
                .await?
            }
            Persist::Redis(con) => {
                let mut con = con.clone();
                let json = to_json(&entry)?;
                let exists: bool = con.hexists(REDIS_KEY, &entry.id).await?;
                if !exists && con.hlen::<_, usize>(REDIS_KEY).await? >= MAX_ENTRIES {
                    return Err(full());
                }
                let added: usize = con.hset(REDIS_KEY, &entry.id, json).await?;
                Ok(added == 1)
            }
        }
    }

    /// Removes the entry `id`; whether there was one.
    pub async fn remove(&self, id: &str) -> Result<bool, PersistError> {
        match &self.backend {
            Persist::Sqlite(conn) => {
                let id = id.to_string();
                sqlite(conn, move |conn| {
                    conn.execute("DELETE FROM sip_directory WHERE id = ?1", [id])
                        .map(|n| n > 0)
                })
                .await
            }
            Persist::Redis(con) => {
                let removed: usize = con.clone().hdel(REDIS_KEY, id).await?;
                Ok(removed > 0)
            }
        }
    }
}

fn entry_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DirectoryEntry> {
    Ok(DirectoryEntry {
        id: row.get(0)?,
        name: row.get(1)?,
        uri: row.get(2)?,
        credentials: row.get(3)?,
    })
}

/// The directory holds [`MAX_ENTRIES`] already.
fn full() -> PersistError {
    PersistError::Full(format!("the directory holds {MAX_ENTRIES} rooms"))
}
