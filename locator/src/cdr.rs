//! Call detail records: one row per participant session, kept in an SQLite file and exported
//! as CSV (by `GET /api/cdr.csv` and by `kaskade-locator cdr`).
//!
//! SQLite calls block, so the async side runs them on tokio's blocking pool; the connection
//! sits behind a mutex that no await holds.

use kaskade_protocol::cluster::CallRecord;
use kaskade_protocol::signaling::Role;
use rusqlite::{Connection, params};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, Time};

/// The CSV header, one column per field of a record.
pub const CSV_HEADER: &str = "session,meeting,identity,name,node,kind,role,joined_at,joined_at_ms,\
left_at_ms,duration_ms,bytes_sent,bytes_received,reason,caller,result";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS call_records (
    session TEXT PRIMARY KEY,
    meeting TEXT NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_at_ms INTEGER NOT NULL,
    left_at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    bytes_sent INTEGER NOT NULL,
    bytes_received INTEGER NOT NULL,
    reason TEXT NOT NULL,
    caller TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS call_records_joined ON call_records (joined_at_ms);
";

/// Columns added since the first schema, added to an older database when it opens.
const ADDED_COLUMNS: [&str; 2] = ["caller", "result"];

/// Why the records could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// SQLite refused.
    #[error("call record database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task did not finish.
    #[error("call record task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The call record database.
#[derive(Clone)]
pub struct CdrDb {
    conn: Arc<Mutex<Connection>>,
}

impl CdrDb {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, CdrError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        add_missing_columns(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Stores `records` (a record sent twice is stored once); returns how many.
    pub async fn insert(&self, records: Vec<CallRecord>) -> Result<usize, CdrError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.insert_blocking(&records)).await?
    }

    /// Records whose session started in `[from_ms, to_ms)`, oldest first.
    pub async fn query(
        &self,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    ) -> Result<Vec<CallRecord>, CdrError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.query_blocking(from_ms, to_ms)).await?
    }

    fn insert_blocking(&self, records: &[CallRecord]) -> Result<usize, CdrError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO call_records (session, meeting, identity, name, node, \
                 kind, role, joined_at_ms, left_at_ms, duration_ms, bytes_sent, bytes_received, \
                 reason, caller, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for r in records {
                insert.execute(params![
                    r.session,
                    r.meeting,
                    r.identity,
                    r.name,
                    r.node,
                    r.kind,
                    role_name(r.role),
                    sql_int(r.joined_at_ms),
                    sql_int(r.left_at_ms),
                    sql_int(r.left_at_ms.saturating_sub(r.joined_at_ms)),
                    sql_int(r.bytes_sent),
                    sql_int(r.bytes_received),
                    r.reason,
                    r.caller,
                    r.result,
                ])?;
            }
        }
        tx.commit()?;
        Ok(records.len())
    }

    /// [`CdrDb::query`] on the calling thread (the CLI).
    pub fn query_blocking(
        &self,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    ) -> Result<Vec<CallRecord>, CdrError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut select = conn.prepare_cached(
            "SELECT session, meeting, identity, name, node, kind, role, joined_at_ms, \
             left_at_ms, bytes_sent, bytes_received, reason, caller, result FROM call_records \
             WHERE joined_at_ms >= ?1 AND joined_at_ms < ?2 ORDER BY joined_at_ms, session",
        )?;
        let rows = select.query_map(
            params![
                sql_int(from_ms.unwrap_or(0)),
                sql_int(to_ms.unwrap_or(u64::MAX))
            ],
            |row| {
                Ok(CallRecord {
                    session: row.get(0)?,
                    meeting: row.get(1)?,
                    identity: row.get(2)?,
                    name: row.get(3)?,
                    node: row.get(4)?,
                    kind: row.get(5)?,
                    role: role_of(&row.get::<_, String>(6)?),
                    joined_at_ms: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
                    left_at_ms: u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
                    bytes_sent: u64::try_from(row.get::<_, i64>(9)?).unwrap_or(0),
                    bytes_received: u64::try_from(row.get::<_, i64>(10)?).unwrap_or(0),
                    reason: row.get(11)?,
                    caller: row.get(12)?,
                    result: row.get(13)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// SQLite integers are signed: clamp.
fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Participant => "participant",
        Role::Moderator => "moderator",
        Role::Recorder => "recorder",
    }
}

fn role_of(name: &str) -> Role {
    match name {
        "moderator" => Role::Moderator,
        "recorder" => Role::Recorder,
        _ => Role::Participant,
    }
}

/// `records` as CSV (RFC 4180: fields with commas, quotes or line breaks are quoted), with a
/// header row.
pub fn to_csv(records: &[CallRecord]) -> String {
    let mut out = String::with_capacity(64 + records.len() * 160);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for r in records {
        let joined_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.joined_at_ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default();
        for (i, field) in [
            r.session.as_str(),
            &r.meeting,
            &r.identity,
            &r.name,
            &r.node,
            &r.kind,
            role_name(r.role),
            &joined_at,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            push_field(&mut out, field);
        }
        let _ = write!(
            out,
            ",{},{},{},{},{},",
            r.joined_at_ms,
            r.left_at_ms,
            r.left_at_ms.saturating_sub(r.joined_at_ms),
            r.bytes_sent,
            r.bytes_received
        );
        push_field(&mut out, &r.reason);
        out.push(',');
        push_field(&mut out, r.caller.as_deref().unwrap_or_default());
        out.push(',');
        push_field(&mut out, r.result.as_deref().unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// Which end of a range a time bound is: a bare date means the start of that day as `from`
/// and the end of that day (the next midnight, exclusive) as `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The range starts here (inclusive).
    From,
    /// The range ends here (exclusive).
    To,
}

/// Unix milliseconds of a time given as RFC 3339 (`2026-03-01T12:00:00Z`), a UTC date
/// (`2026-03-01`) or Unix seconds (`1772366400`).
pub fn parse_time(text: &str, bound: Bound) -> Option<u64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds.checked_mul(1000);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok();
    }
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let mut date = Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    if bound == Bound::To {
        date = date.next_day()?;
    }
    let at = date.with_time(Time::MIDNIGHT).assume_utc();
    u64::try_from(at.unix_timestamp()).ok()?.checked_mul(1000)
}

/// Adds the columns of [`ADDED_COLUMNS`] a database made by an older kaskade lacks.
fn add_missing_columns(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut info = conn.prepare("PRAGMA table_info(call_records)")?;
    let present: Vec<String> = info
        .query_map([], |row| row.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    for column in ADDED_COLUMNS {
        if !present.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE call_records ADD COLUMN {column} TEXT"
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(session: &str, joined_at_ms: u64, name: &str) -> CallRecord {
        CallRecord {
            session: session.into(),
            meeting: "standup".into(),
            identity: "alice@example.com".into(),
            name: name.into(),
            node: "node-1".into(),
            kind: "browser".into(),
            role: Role::Moderator,
            joined_at_ms,
            left_at_ms: joined_at_ms + 61_500,
            bytes_sent: 1_000,
            bytes_received: 2_000,
            reason: "left".into(),
            caller: None,
            result: None,
        }
    }

    #[test]
    fn times_parse_in_every_accepted_form() {
        let day = 1_772_323_200_000; // 2026-03-01T00:00:00Z
        assert_eq!(parse_time("2026-03-01", Bound::From), Some(day));
        assert_eq!(parse_time("2026-03-01", Bound::To), Some(day + 86_400_000));
        assert_eq!(parse_time("2026-03-01T00:00:00Z", Bound::To), Some(day));
        assert_eq!(
            parse_time("2026-03-01T01:00:00+01:00", Bound::From),
            Some(day)
        );
        assert_eq!(parse_time("1772323200", Bound::From), Some(day));
        for bad in ["", "yesterday", "2026-13-01", "2026-02-30", "1-2-3-4"] {
            assert_eq!(parse_time(bad, Bound::From), None, "{bad}");
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let csv = to_csv(&[record("n/1/5", 1_772_323_200_000, "Smith, \"Bob\"\nJr")]);
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert_eq!(
            lines.next(),
            Some(
                "n/1/5,standup,alice@example.com,\"Smith, \"\"Bob\"\"\nJr\",node-1,browser,\
                 moderator,2026-03-01T00:00:00Z,1772323200000,1772323261500,61500,1000,2000,left,,"
            )
        );
    }

    #[tokio::test]
    async fn a_sip_calls_caller_and_result_are_kept_and_an_older_database_gains_their_columns() {
        let dir = std::env::temp_dir().join(format!("kaskade-cdr-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.sqlite");
        let _ = std::fs::remove_file(&path);
        // the table as the first kaskade made it, with one record in it
        let old = Connection::open(&path).unwrap();
        let first_schema = SCHEMA.replace(",\n    caller TEXT,\n    result TEXT", "");
        assert!(!first_schema.contains("caller"), "{first_schema}");
        old.execute_batch(&first_schema).unwrap();
        old.execute(
            "INSERT INTO call_records VALUES ('old', 'm', 'i', 'n', 'node', 'browser', \
             'participant', 1, 2, 1, 0, 0, 'left')",
            [],
        )
        .unwrap();
        drop(old);
        let db = CdrDb::open(&path).unwrap();
        let call = CallRecord {
            kind: "sip".into(),
            identity: "sip:room@mcu.example.org".into(),
            caller: Some("alice@example.com".into()),
            result: Some("busy (486 Busy Here)".into()),
            ..record("call", 3, "Oslo room")
        };
        db.insert(vec![call.clone()]).await.unwrap();
        let records = db.query(None, None).await.unwrap();
        assert_eq!(records[0].session, "old");
        assert_eq!(
            (records[0].caller.clone(), records[0].result.clone()),
            (None, None)
        );
        assert_eq!(records[1], call);
        let csv = to_csv(&records[1..]);
        assert!(
            csv.ends_with(",left,alice@example.com,busy (486 Busy Here)\r\n"),
            "{csv}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn records_round_trip_through_the_database() {
        let dir = std::env::temp_dir().join(format!("kaskade-cdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("unit.sqlite");
        let _ = std::fs::remove_file(&path);
        let db = CdrDb::open(&path).unwrap();
        let records = vec![record("a", 1_000, "A"), record("b", 5_000, "B")];
        assert_eq!(db.insert(records.clone()).await.unwrap(), 2);
        assert_eq!(db.insert(vec![records[0].clone()]).await.unwrap(), 1);
        assert_eq!(db.query(None, None).await.unwrap(), records);
        assert_eq!(db.query(Some(2_000), None).await.unwrap(), records[1..]);
        assert_eq!(db.query(None, Some(5_000)).await.unwrap(), records[..1]);
        drop(db);
        let reopened = CdrDb::open(&path).unwrap();
        assert_eq!(reopened.query_blocking(None, None).unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
