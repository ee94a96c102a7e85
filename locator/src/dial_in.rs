//! Meetings' dial-in numbers and PINs: a phone calling kaskade enters a meeting's number (and
//! its PIN, when it has one) at the voice menu. A meeting gets its number the first time a
//! moderator (or the operator) asks for it, and keeps it: in the locator's SQLite file (table
//! `dial_in`), or in Redis (`kaskade:dial-in` number to entry JSON, `kaskade:dial-in-meetings`
//! meeting to number) when several locators share a cluster.

use crate::persist::{Persist, PersistError, sqlite, to_json};
use kaskade_protocol::directory::{DIAL_IN_DIGITS, DialIn};
use rand::Rng;
use redis::AsyncCommands;
use rusqlite::{OptionalExtension, params};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dial_in (
    number TEXT PRIMARY KEY,
    meeting TEXT NOT NULL UNIQUE,
    pin TEXT
);
";

/// Redis: number -> entry JSON.
const BY_NUMBER: &str = "kaskade:dial-in";
/// Redis: meeting -> number.
const BY_MEETING: &str = "kaskade:dial-in-meetings";
/// Numbers tried before giving up (the space holds 900 million).
const ATTEMPTS: usize = 16;

/// Meetings' dial-in numbers; cheap to clone.
#[derive(Clone)]
pub struct DialIns {
    backend: Persist,
}

impl DialIns {
    /// Where the locator's flags keep state: Redis at `redis` when given, else the SQLite file
    /// `db`.
    pub async fn open(redis: Option<&str>, db: &Path) -> Result<Self, PersistError> {
        Ok(Self {
            backend: Persist::open(redis, db, SCHEMA).await?,
        })
    }

    /// In the SQLite file at `path`.
    pub fn sqlite(path: &Path) -> Result<Self, PersistError> {
        Ok(Self {
            backend: Persist::sqlite(path, SCHEMA)?,
        })
    }

    /// The meeting whose number is `number`, if any.
    pub async fn by_number(&self, number: &str) -> Result<Option<DialIn>, PersistError> {
        let select = (
            "SELECT meeting, number, pin FROM dial_in WHERE number = ?1",
            entry_of_row as _,
        );
        self.backend.lookup(select, BY_NUMBER, number).await
    }

    /// The dial-in of `meeting`, given a new number if it has none yet.
    pub async fn of_meeting(&self, meeting: &str) -> Result<DialIn, PersistError> {
        if let Some(entry) = self.existing(meeting).await? {
            return Ok(entry);
        }
        for _ in 0..ATTEMPTS {
            let entry = DialIn {
                meeting: meeting.into(),
                number: new_number(),
                pin: None,
            };
            if let Some(kept) = self.claim(entry).await? {
                return Ok(kept);
            }
        }
        Err(PersistError::Full(
            "no free dial-in number found: try again".into(),
        ))
    }

    /// Sets (or, with `None`, clears) the PIN of `meeting`, giving it a number if needed.
    pub async fn set_pin(
        &self,
        meeting: &str,
        pin: Option<String>,
    ) -> Result<DialIn, PersistError> {
        let entry = DialIn {
            pin,
            ..self.of_meeting(meeting).await?
        };
        match &self.backend {
            Persist::Sqlite(conn) => {
                let (number, pin) = (entry.number.clone(), entry.pin.clone());
                sqlite(conn, move |conn| {
                    conn.execute(
                        "UPDATE dial_in SET pin = ?2 WHERE number = ?1",
                        params![number, pin],
                    )
                })
                .await?;
            }
            Persist::Redis(con) => {
                let json = to_json(&entry)?;
                let () = con.clone().hset(BY_NUMBER, &entry.number, json).await?;
            }
        }
        Ok(entry)
    }

    /// The dial-in `meeting` has, if any.
    async fn existing(&self, meeting: &str) -> Result<Option<DialIn>, PersistError> {
        match &self.backend {
            Persist::Sqlite(conn) => {
                let meeting = meeting.to_string();
                sqlite(conn, move |conn| {
                    conn.prepare_cached(
                        "SELECT meeting, number, pin FROM dial_in WHERE meeting = ?1",
                    )?
                    .query_row([meeting], entry_of_row)
                    .optional()
                })
                .await
            }
            Persist::Redis(con) => {
                let number: Option<String> = con.clone().hget(BY_MEETING, meeting).await?;
                match number {
                    Some(number) => self.by_number(&number).await,
                    None => Ok(None),
                }
            }
        }
    }

    /// Stores `entry` unless its number is taken: the meeting's dial-in as kept (another
    /// locator's, when it got there first), or `None` to try another number.
    async fn claim(&self, entry: DialIn) -> Result<Option<DialIn>, PersistError> {
        match &self.backend {
            Persist::Sqlite(conn) => {
                let claimed = entry.clone();
                let stored = sqlite(conn, move |conn| {
                    conn.execute(
                        "INSERT OR IGNORE INTO dial_in (number, meeting, pin) VALUES (?1, ?2, NULL)",
                        params![claimed.number, claimed.meeting],
                    )
                })
                .await?;
                if stored == 1 {
                    Ok(Some(entry))
                } else {
                    // the number was taken, or the meeting got one meanwhile
                    self.existing(&entry.meeting).await
                }
            }
            Persist::Redis(con) => {
                let mut con = con.clone();
                let json = to_json(&entry)?;
                if !con
                    .hset_nx::<_, _, _, bool>(BY_NUMBER, &entry.number, json)
                    .await?
                {
                    return Ok(None);
                }
                if con
                    .hset_nx::<_, _, _, bool>(BY_MEETING, &entry.meeting, &entry.number)
                    .await?
                {
                    return Ok(Some(entry));
                }
                // another locator numbered the meeting first: give the number back
                let _: usize = con.hdel(BY_NUMBER, &entry.number).await?;
                self.existing(&entry.meeting).await
            }
        }
    }
}

/// A random number of [`DIAL_IN_DIGITS`] digits, the first not 0.
fn new_number() -> String {
    let low = 10u64.pow(DIAL_IN_DIGITS as u32 - 1);
    rand::rng().random_range(low..low * 10).to_string()
}

fn entry_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DialIn> {
    Ok(DialIn {
        meeting: row.get(0)?,
        number: row.get(1)?,
        pin: row.get(2)?,
    })
}
