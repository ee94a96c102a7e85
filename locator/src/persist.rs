//! Where the locator keeps what must outlive it (the SIP directory, meetings' dial-in numbers):
//! its SQLite file (`--db`, beside the call records) for one locator, or Redis (`--redis`)
//! when several locators share a cluster. Each store on top says what it keeps in either.

use redis::aio::ConnectionManager;
use rusqlite::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Why something kept could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// SQLite refused.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The blocking task did not finish.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A stored record does not parse.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Adding one more would pass the store's limit.
    #[error("full: {0}")]
    Full(String),
}

/// An SQLite connection or a Redis one; cheap to clone.
#[derive(Clone)]
pub enum Persist {
    /// The locator's SQLite file.
    Sqlite(Arc<Mutex<Connection>>),
    /// The cluster's Redis.
    Redis(ConnectionManager),
}

impl Persist {
    /// Where the locator's flags keep state: Redis at `redis` when given, else the SQLite file
    /// `db` with `schema` created.
    pub async fn open(redis: Option<&str>, db: &Path, schema: &str) -> Result<Self, PersistError> {
        match redis {
            Some(url) => Self::redis(url).await,
            None => Self::sqlite(db, schema),
        }
    }

    /// The SQLite file at `path` (created if needed) with `schema` created.
    pub fn sqlite(path: &Path, schema: &str) -> Result<Self, PersistError> {
        let conn = Connection::open(path)?;
        // the call records and the operator's tools may hold the file for a moment
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(schema)?;
        Ok(Self::Sqlite(Arc::new(Mutex::new(conn))))
    }

    /// Redis at `url`.
    pub async fn redis(url: &str) -> Result<Self, PersistError> {
        let con = redis::Client::open(url)?.get_connection_manager().await?;
        Ok(Self::Redis(con))
    }
}

/// How a record is read from SQLite: a `SELECT` that takes the key as `?1`, and what a row
/// becomes.
pub type Select<T> = (&'static str, fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>);

impl Persist {
    /// The record under `key`: the row `select` finds in SQLite, or the JSON in the Redis hash
    /// `hash`.
    pub async fn lookup<T: DeserializeOwned + Send + 'static>(
        &self,
        (sql, row): Select<T>,
        hash: &str,
        key: &str,
    ) -> Result<Option<T>, PersistError> {
        match self {
            Persist::Sqlite(conn) => {
                let key = key.to_string();
                sqlite(conn, move |conn| {
                    use rusqlite::OptionalExtension;
                    conn.prepare_cached(sql)?.query_row([key], row).optional()
                })
                .await
            }
            Persist::Redis(con) => {
                let json: Option<String> =
                    redis::AsyncCommands::hget(&mut con.clone(), hash, key).await?;
                json.as_deref().map(parse).transpose()
            }
        }
    }
}

/// Runs `work` on the connection in tokio's blocking pool.
pub async fn sqlite<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, PersistError> {
    let conn = conn.clone();
    let result = tokio::task::spawn_blocking(move || {
        work(&mut conn.lock().unwrap_or_else(PoisonError::into_inner))
    })
    .await?;
    Ok(result?)
}

/// A record stored as JSON.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, PersistError> {
    serde_json::from_str(json).map_err(|e| PersistError::Corrupt(format!("{e}: {json}")))
}

/// A record as the JSON it is stored as.
pub fn to_json<T: Serialize>(record: &T) -> Result<String, PersistError> {
    serde_json::to_string(record).map_err(|e| PersistError::Corrupt(e.to_string()))
}
