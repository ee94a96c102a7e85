//! The directory of SIP rooms (video MCUs, room systems) that participants pick from the
//! dialpad, kept where the locator keeps what must outlive it: in its SQLite file (`--db`, beside
//! the call records) for one locator, or in Redis (`--redis`, hash `kaskade:sip-directory`, id
//! to entry JSON) when several locators share a cluster.
//!
//! The operator manages it through the API (`/api/directory`) or the `directory` tool; nodes
//! read it when someone opens the dialpad or dials an entry.

use kaskade_protocol::directory::{DirectoryEntry, MAX_ENTRIES};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// Why the directory could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// SQLite refused.
    #[error("directory database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The blocking task did not finish.
    #[error("directory task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A stored entry does not parse.
    #[error("corrupt directory entry: {0}")]
    Corrupt(String),
    /// Adding one more would pass [`MAX_ENTRIES`].
    #[error("the directory is full ({MAX_ENTRIES} entries)")]
    Full,
}

/// The directory, in SQLite or in Redis; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<Mutex<Connection>>),
    Redis(ConnectionManager),
}

impl Directory {
    /// The directory where the locator's flags keep state: Redis at `redis` when given, else
    /// the SQLite file `db`.
    pub async fn open(redis: Option<&str>, db: &Path) -> Result<Self, DirectoryError> {
        match redis {
            Some(url) => Self::redis(url).await,
            None => Self::sqlite(db),
        }
    }

    /// The directory in the SQLite file at `path` (created if needed).
    pub fn sqlite(path: &Path) -> Result<Self, DirectoryError> {
        let conn = Connection::open(path)?;
        // the call records and the `directory` tool may hold the file for a moment
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            backend: Backend::Sqlite(Arc::new(Mutex::new(conn))),
        })
    }

    /// The directory in Redis at `url`.
    pub async fn redis(url: &str) -> Result<Self, DirectoryError> {
        let con = redis::Client::open(url)?.get_connection_manager().await?;
        Ok(Self {
            backend: Backend::Redis(con),
        })
    }

    /// Every entry, by name (then id).
    pub async fn list(&self) -> Result<Vec<DirectoryEntry>, DirectoryError> {
        let mut entries = match &self.backend {
            Backend::Sqlite(conn) => {
                sqlite(conn, |conn| {
                    let mut select = conn
                        .prepare_cached("SELECT id, name, uri, credentials FROM sip_directory")?;
                    let rows = select.query_map([], entry_of_row)?;
                    rows.collect::<Result<Vec<_>, _>>()
                })
                .await?
            }
            Backend::Redis(con) => {
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
    pub async fn get(&self, id: &str) -> Result<Option<DirectoryEntry>, DirectoryError> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let id = id.to_string();
                sqlite(conn, move |conn| {
                    conn.prepare_cached(
                        "SELECT id, name, uri, credentials FROM sip_directory WHERE id = ?1",
                    )?
                    .query_row([id], entry_of_row)
                    .optional()
                })
                .await
            }
            Backend::Redis(con) => {
                let json: Option<String> = con.clone().hget(REDIS_KEY, id).await?;
                json.as_deref().map(parse).transpose()
            }
        }
    }

    /// Adds `entry`, or replaces the one with its id; whether it is new. The caller has checked
    /// it ([`DirectoryEntry::check`]).
    pub async fn put(&self, entry: DirectoryEntry) -> Result<bool, DirectoryError> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                sqlite(conn, move |conn| {
                    let tx = conn.transaction()?;
                    let (count, exists): (i64, bool) = tx.query_row(
                        "SELECT COUNT(*), COALESCE(SUM(id = ?1), 0) > 0 FROM sip_directory",
                        [&entry.id],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?;
                    if !exists && usize::try_from(count).unwrap_or(usize::MAX) >= MAX_ENTRIES {
                        return Ok(Err(DirectoryError::Full));
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
            Backend::Redis(con) => {
                let mut con = con.clone();
                let json = serde_json::to_string(&entry)
                    .map_err(|e| DirectoryError::Corrupt(e.to_string()))?;
                let exists: bool = con.hexists(REDIS_KEY, &entry.id).await?;
                if !exists && con.hlen::<_, usize>(REDIS_KEY).await? >= MAX_ENTRIES {
                    return Err(DirectoryError::Full);
                }
                let added: usize = con.hset(REDIS_KEY, &entry.id, json).await?;
                Ok(added == 1)
            }
        }
    }

    /// Removes the entry `id`; whether there was one.
    pub async fn remove(&self, id: &str) -> Result<bool, DirectoryError> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let id = id.to_string();
                sqlite(conn, move |conn| {
                    conn.execute("DELETE FROM sip_directory WHERE id = ?1", [id])
                        .map(|n| n > 0)
                })
                .await
            }
            Backend::Redis(con) => {
                let removed: usize = con.clone().hdel(REDIS_KEY, id).await?;
                Ok(removed > 0)
            }
        }
    }
}

/// Runs `work` on the connection in tokio's blocking pool.
async fn sqlite<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, DirectoryError> {
    let conn = conn.clone();
    let result = tokio::task::spawn_blocking(move || {
        work(&mut conn.lock().unwrap_or_else(PoisonError::into_inner))
    })
    .await?;
    Ok(result?)
}

fn entry_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DirectoryEntry> {
    Ok(DirectoryEntry {
        id: row.get(0)?,
        name: row.get(1)?,
        uri: row.get(2)?,
        credentials: row.get(3)?,
    })
}

fn parse(json: &str) -> Result<DirectoryEntry, DirectoryError> {
    serde_json::from_str(json).map_err(|e| DirectoryError::Corrupt(format!("{e}: {json}")))
}
