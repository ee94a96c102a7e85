//! The recorder service: the recordings it runs and has finished, who may see them, and the
//! files on disk (`OUT/{meeting}/{id}/`: one MP4 per participant and `manifest.json`). With a
//! recording key the MP4 files are encrypted at rest ([`crate::at_rest`]) and decrypted as
//! they are served; the manifest stays plain, so recordings can be listed.

use crate::at_rest::{self, AtRestError, Expect, FileReader, Keyring};
use crate::recover::recover_with;
use crate::session::{MANIFEST, Session, fragmented_path, write_manifest};
use kaskade_protocol::recording::{
    RecordedParticipant, RecordingInfo, RecordingState, StartRecording,
};
use kaskade_protocol::signaling::valid_meeting;
use kaskade_protocol::token::{TokenKey, unix_now};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Why a request to the recorder failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// No such recording or file.
    #[error("{0}")]
    NotFound(String),
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// The recording could not be made or finished.
    #[error("{0}")]
    Failed(String),
}

/// How the recorder is set up.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Where recordings go.
    pub out: PathBuf,
    /// The cluster secret: node credentials of the locator, and meeting tokens of viewers.
    pub secret: Vec<u8>,
    /// Anyone may watch recordings (the all-in-one default without a secret).
    pub open: bool,
    /// The base URL viewers reach this recorder at, when it is not the locator's own origin:
    /// file and manifest links are made absolute with it.
    pub public_url: Option<String>,
    /// Encrypt recordings at rest with the keyring's current key (its other keys still read
    /// older files); `None` writes plain MP4.
    pub encryption: Option<Keyring>,
}

/// The recorder: its running recordings and the finished ones on disk.
pub struct Recorder {
    config: RecorderConfig,
    tokens: TokenKey,
    running: Mutex<HashMap<String, Arc<Session>>>,
}

impl Recorder {
    /// A recorder writing under `config.out`.
    pub fn new(config: RecorderConfig) -> Self {
        if let Some(keys) = &config.encryption {
            info!(key = %keys.current_id(), "recordings are encrypted at rest");
        }
        Self {
            tokens: TokenKey::from_secret(&config.secret),
            config,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The cluster secret.
    pub fn secret(&self) -> &[u8] {
        &self.config.secret
    }

    /// Recordings running now.
    pub fn running(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    /// Runs [`Self::recover_interrupted`] on a blocking thread, so start-up does not wait for
    /// it (a recording still being recovered lists as interrupted until then).
    pub fn recover_in_background(self: &Arc<Self>) {
        let recorder = Arc::clone(self);
        tokio::task::spawn_blocking(move || recorder.recover_interrupted());
    }

    /// Recovers the recordings a crash interrupted (run at start): every participant file cut
    /// mid-write is trimmed to its last complete fragment and finalized, and the manifest says
    /// so.
    pub fn recover_interrupted(&self) {
        let Ok(meetings) = std::fs::read_dir(&self.config.out) else {
            return;
        };
        for meeting in meetings.flatten() {
            let Ok(recordings) = std::fs::read_dir(meeting.path()) else {
                continue;
            };
            for recording in recordings.flatten() {
                let dir = recording.path();
                match recover_recording(&dir, self.config.encryption.as_ref()) {
                    Ok(true) => info!(dir = %dir.display(), "recovered an interrupted recording"),
                    Ok(false) => {}
                    Err(e) => warn!(dir = %dir.display(), "cannot recover a recording: {e:#}"),
                }
            }
        }
    }

    /// Starts recording a meeting: joins it as a hidden participant.
    pub async fn start(&self, request: StartRecording) -> Result<RecordingInfo, ServiceError> {
        if !valid_meeting(&request.meeting) {
            return Err(ServiceError::BadRequest(format!(
                "not a meeting name: {:?}",
                request.meeting
            )));
        }
        let id = format!("{}-{:04x}", unix_now(), rand::random::<u16>());
        let dir = self.config.out.join(&request.meeting).join(&id);
        let keys = self.config.encryption.clone();
        let session = Session::start(id.clone(), dir, request, keys)
            .await
            .map_err(|e| ServiceError::Failed(format!("{e:#}")))?;
        let info = session.info();
        if let Ok(mut running) = self.running.lock() {
            running.insert(id.clone(), Arc::new(session));
        }
        info!(recording = %id, meeting = %info.meeting, "recording started");
        Ok(self.published(info))
    }

    /// Stops a running recording and finalizes its files.
    pub async fn stop(&self, id: &str) -> Result<RecordingInfo, ServiceError> {
        let session = self
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.remove(id))
            .ok_or_else(|| ServiceError::NotFound(format!("no running recording {id:?}")))?;
        let info = session.stop().await;
        info!(recording = %id, meeting = %info.meeting, "recording stopped");
        Ok(self.published(info))
    }

    /// The meeting's recordings, running and finished, oldest first.
    pub fn list(&self, meeting: &str) -> Vec<RecordingInfo> {
        let mut all: HashMap<String, RecordingInfo> = HashMap::new();
        if valid_meeting(meeting)
            && let Ok(entries) = std::fs::read_dir(self.config.out.join(meeting))
        {
            for entry in entries.flatten() {
                let path = entry.path().join(MANIFEST);
                match std::fs::read(&path).map(|b| serde_json::from_slice::<RecordingInfo>(&b)) {
                    Ok(Ok(info)) => {
                        all.insert(info.id.clone(), info);
                    }
                    Ok(Err(e)) => warn!(path = %path.display(), "unreadable manifest: {e}"),
                    Err(_) => {}
                }
            }
        }
        if let Ok(running) = self.running.lock() {
            for session in running.values() {
                let info = session.info();
                if info.meeting == meeting {
                    all.insert(info.id.clone(), info);
                }
            }
        }
        let mut list: Vec<RecordingInfo> =
            all.into_values().map(|info| self.published(info)).collect();
        list.sort_by_key(|r| r.started_at_ms);
        list
    }

    /// `info` with its links made absolute when the recorder has a public URL of its own.
    fn published(&self, mut info: RecordingInfo) -> RecordingInfo {
        if let Some(base) = &self.config.public_url {
            let absolute = |path: &mut String| {
                if path.starts_with('/') {
                    *path = format!("{base}{path}");
                }
            };
            absolute(&mut info.manifest);
            if let Some(composed) = &mut info.composed {
                absolute(composed);
            }
            for file in info.participants.iter_mut().filter_map(|p| p.file.as_mut()) {
                absolute(file);
            }
        }
        info
    }

    /// Whether the holder of `token` may watch the meeting's recordings.
    pub fn check_viewer(&self, meeting: &str, token: Option<&str>) -> Result<(), ServiceError> {
        if !valid_meeting(meeting) {
            return Err(ServiceError::BadRequest("not a meeting name".into()));
        }
        match token {
            _ if self.config.open => Ok(()),
            Some(token) => self
                .tokens
                .verify(token, meeting, unix_now())
                .map(|_| ())
                .map_err(|e| ServiceError::Unauthorized(format!("token refused: {e}"))),
            None => Err(ServiceError::Unauthorized(
                "recordings need a token for the meeting (?token=...)".into(),
            )),
        }
    }

    /// A file of a recording, for reading.
    pub async fn open_file(
        &self,
        meeting: &str,
        id: &str,
        name: &str,
    ) -> Result<StoredFile, ServiceError> {
        let safe = |part: &str| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        if !valid_meeting(meeting) || !safe(id) || !safe(name) {
            return Err(ServiceError::NotFound("no such file".into()));
        }
        let path = self.config.out.join(meeting).join(id).join(name);
        let file = StoredFile {
            path,
            len: 0,
            keys: self.config.encryption.clone(),
        };
        let opened = tokio::task::spawn_blocking(move || {
            file.reader().map(|reader| StoredFile {
                len: reader.len(),
                ..file
            })
        })
        .await
        .map_err(|e| ServiceError::Failed(format!("opening a recording: {e}")))?;
        opened.map_err(|e| match e {
            AtRestError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ServiceError::NotFound(format!("no file {name:?} in recording {id:?}"))
            }
            e => ServiceError::Failed(format!("{name}: {e}")),
        })
    }
}

/// A file of a recording (its content decrypted, if it is encrypted).
#[derive(Clone)]
pub struct StoredFile {
    path: PathBuf,
    len: u64,
    keys: Option<Keyring>,
}

impl StoredFile {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `[start, end)`. A damaged encrypted chunk among them is an error.
    pub async fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, ServiceError> {
        let file = self.clone();
        let read = move || -> std::io::Result<Vec<u8>> {
            let mut reader = file.reader()?;
            reader.seek(SeekFrom::Start(start))?;
            let mut bytes = vec![0; end.saturating_sub(start) as usize];
            reader.read_exact(&mut bytes)?;
            Ok(bytes)
        };
        let failed =
            |e: &dyn std::fmt::Display| ServiceError::Failed(format!("reading a recording: {e}"));
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))
    }

    /// Opens the content for reading (blocking).
    fn reader(&self) -> Result<FileReader, AtRestError> {
        at_rest::open(&self.path, self.keys.as_ref(), Expect::Complete)
    }
}

/// Recovers one recording directory if its manifest says it was still recording (its files
/// encrypted with `keys` if given); returns whether it did.
fn recover_recording(dir: &Path, keys: Option<&Keyring>) -> anyhow::Result<bool> {
    let manifest = dir.join(MANIFEST);
    let Ok(bytes) = std::fs::read(&manifest) else {
        return Ok(false);
    };
    let mut info: RecordingInfo = serde_json::from_slice(&bytes)?;
    if info.state != RecordingState::Recording && info.state != RecordingState::Finalizing {
        return Ok(false);
    }
    // participants who joined after the manifest was last written still have their file
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_suffix(".mp4.part")
            .and_then(|id| id.parse().ok())
            && !info.participants.iter().any(|p| p.id == id)
        {
            info.participants.push(RecordedParticipant {
                id,
                identity: None,
                name: format!("participant {id}"),
                joined_offset_ms: 0,
                left_offset_ms: None,
                file: None,
                duration_ms: 0,
            });
        }
    }
    for p in &mut info.participants {
        let fragmented = fragmented_path(dir, p.id);
        if !fragmented.exists() {
            continue;
        }
        match recover_with(&fragmented, &dir.join(format!("{}.mp4", p.id)), keys) {
            Ok(report) => {
                p.file = Some(format!("/r/{}/{}/{}.mp4", info.meeting, info.id, p.id));
                p.duration_ms = report.summary.duration.as_millis() as u64;
                info.incidents.push(format!(
                    "{}'s file was recovered after the recorder stopped unexpectedly ({:.1} s kept{})",
                    p.name,
                    report.summary.duration.as_secs_f64(),
                    if report.lost_data() { ", a torn fragment dropped" } else { "" }
                ));
                let _ = std::fs::remove_file(&fragmented);
            }
            Err(e) => info
                .incidents
                .push(format!("{}'s file could not be recovered: {e}", p.name)),
        }
    }
    let ended = info
        .participants
        .iter()
        .map(|p| p.joined_offset_ms + p.duration_ms)
        .max()
        .unwrap_or(0);
    info.stopped_at_ms = Some(info.started_at_ms + ended);
    info.state = RecordingState::Done;
    write_manifest(dir, &info)?;
    Ok(true)
}
