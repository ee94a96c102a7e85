//! One recording: the recorder's hidden participant in the meeting (a WebRTC client that only
//! receives), a writer thread that turns every participant's packets into a fragmented MP4
//! (synced to disk at each fragment), who was there when, and at stop the finalized files and
//! the manifest.

use crate::at_rest::{self, FileWriter, Keyring, Layout};
use crate::compose::{ComposeConfig, ComposeInput, compose};
use crate::finalize::finalize_with;
use crate::fmp4::{Fmp4Error, Fragment};
use crate::participant::{MediaKind, ParticipantRecorder};
use crate::timeline::RtpPacket;
use anyhow::Context;
use bytes::Bytes;
use kaskade_client::{
    Event, JoinConfig, MediaSink, Participant, ParticipantId, ParticipantInfo, ReceivedPacket,
    ServerMessage,
};
use kaskade_protocol::recording::{
    RecordedParticipant, RecordingInfo, RecordingState, StartRecording,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

/// The writer thread wakes at least this often to release held packets.
const WRITER_TICK: Duration = Duration::from_millis(100);
/// File name of the composed meeting video.
pub const COMPOSED: &str = "composed.mp4";
/// File name of a recording's manifest.
pub const MANIFEST: &str = "manifest.json";
/// How long joining the meeting may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// One running recording.
pub struct Session {
    participant: tokio::sync::Mutex<Option<Participant>>,
    writer: mpsc::Sender<Input>,
    state: Arc<Mutex<Record>>,
    dir: PathBuf,
    events: tokio::task::JoinHandle<()>,
    keys: Option<Keyring>,
}

/// What the recording knows about itself (the manifest's content).
struct Record {
    info: RecordingInfo,
    origin: Instant,
    present: BTreeMap<ParticipantId, RecordedParticipant>,
}

enum Input {
    Packet(ReceivedPacket),
    Stop(tokio::sync::oneshot::Sender<Vec<Finished>>),
}

/// A participant's file after stop.
struct Finished {
    id: ParticipantId,
    duration: Duration,
}

/// Joins the meeting of `request` as the hidden recording participant: it publishes
/// nothing, decodes nothing, and hands every packet it receives to the writer thread.
async fn join_hidden(
    request: &StartRecording,
    writer: mpsc::Sender<Input>,
) -> anyhow::Result<Participant> {
    let mut config = JoinConfig::new(([127, 0, 0, 1], 0).into(), &request.meeting, "Recorder");
    config.locator = Some(request.join_url.clone());
    config.token = Some(request.token.clone());
    config.publish_audio = false;
    config.publish_video = false;
    config.decode_video = false;
    config.timeout = JOIN_TIMEOUT;
    config.sink = Some(MediaSink(Arc::new(move |packet| {
        let _ = writer.send(Input::Packet(packet));
    })));
    Participant::join(config)
        .await
        .with_context(|| format!("joining meeting {}", request.meeting))
}

/// Follows who joins and leaves (and the recorder's own rejoins) into the record, rewriting
/// the manifest at each change: a crash leaves a manifest that knows who was recorded.
async fn follow_meeting(
    mut events: tokio::sync::broadcast::Receiver<Event>,
    tracked: Arc<Mutex<Record>>,
    manifest_dir: PathBuf,
) {
    loop {
        let event = events.recv().await;
        let changes = matches!(
            &event,
            Ok(Event::Signal(
                ServerMessage::Welcome(_)
                    | ServerMessage::Joined { .. }
                    | ServerMessage::Left { .. }
            ) | Event::Rejoined { .. })
        );
        match event {
            Ok(Event::Signal(ServerMessage::Welcome(welcome))) => {
                for p in &welcome.participants {
                    note_joined(&tracked, p);
                }
            }
            Ok(Event::Signal(ServerMessage::Joined { participant })) => {
                note_joined(&tracked, &participant);
            }
            Ok(Event::Signal(ServerMessage::Left { id, .. })) => note_left(&tracked, id),
            Ok(Event::Rejoined { node }) => note_incident(
                &tracked,
                format!(
                    "the recorder lost its node and rejoined on {}",
                    node.as_deref().unwrap_or("another node")
                ),
            ),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(missed = n, "recording events lagged");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
        if changes && let Err(e) = write_manifest(&manifest_dir, &snapshot(&tracked)) {
            warn!("writing the manifest: {e:#}");
        }
    }
}

impl Session {
    /// Joins `request.meeting` through its join URL and starts writing under `dir`, every
    /// file encrypted with `keys` if given.
    pub async fn start(
        id: String,
        dir: PathBuf,
        request: StartRecording,
        keys: Option<Keyring>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let origin = Instant::now();
        let info = RecordingInfo {
            id: id.clone(),
            meeting: request.meeting.clone(),
            state: RecordingState::Recording,
            started_at_ms: unix_ms(),
            stopped_at_ms: None,
            participants: Vec::new(),
            composed: None,
            manifest: format!("/r/{}/{id}/{MANIFEST}", request.meeting),
            incidents: Vec::new(),
        };
        let state = Arc::new(Mutex::new(Record {
            info,
            origin,
            present: BTreeMap::new(),
        }));
        write_manifest(&dir, &snapshot(&state))?;
        let (writer, inputs) = mpsc::channel();
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name(format!("record-{id}"))
            .spawn({
                let (keys, state) = (keys.clone(), state.clone());
                move || write_files(origin, &thread_dir, keys.as_ref(), &state, &inputs)
            })
            .context("starting the writer thread")?;
        let participant = join_hidden(&request, writer.clone()).await?;
        let events = participant.subscribe();
        for p in participant.state().participants.values() {
            note_joined(&state, p);
        }
        write_manifest(&dir, &snapshot(&state))?;
        let events = tokio::spawn(follow_meeting(events, state.clone(), dir.clone()));
        Ok(Self {
            participant: tokio::sync::Mutex::new(Some(participant)),
            writer,
            state,
            dir,
            events,
            keys,
        })
    }

    /// What the recording is now.
    pub fn info(&self) -> RecordingInfo {
        snapshot(&self.state)
    }

    /// Leaves the meeting, finalizes every participant's file and writes the manifest; the
    /// composed video follows in the background (the recording is `finalizing` until then).
    pub async fn stop(&self) -> RecordingInfo {
        if let Some(participant) = self.participant.lock().await.take()
            && let Err(e) = participant.leave().await
        {
            debug!("recorder leave: {e}");
        }
        self.events.abort();
        let stopped_at = Instant::now();
        if let Ok(mut record) = self.state.lock() {
            record.info.state = RecordingState::Finalizing;
            record.info.stopped_at_ms = Some(unix_ms());
            let offset = stopped_at.duration_since(record.origin).as_millis() as u64;
            for p in record.present.values_mut() {
                p.left_offset_ms.get_or_insert(offset);
            }
        }
        let (reply, finished) = tokio::sync::oneshot::channel();
        let files = match self.writer.send(Input::Stop(reply)) {
            Ok(()) => finished.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if let Ok(mut record) = self.state.lock() {
            let meeting = record.info.meeting.clone();
            let id = record.info.id.clone();
            for file in files {
                if let Some(p) = record.present.get_mut(&file.id) {
                    p.file = Some(format!("/r/{meeting}/{id}/{}.mp4", file.id));
                    p.duration_ms = file.duration.as_millis() as u64;
                }
            }
        }
        let info = snapshot(&self.state);
        if let Err(e) = write_manifest(&self.dir, &info) {
            warn!("writing the manifest: {e:#}");
        }
        let (state, dir, keys) = (self.state.clone(), self.dir.clone(), self.keys.clone());
        tokio::task::spawn_blocking(move || compose_meeting(&state, &dir, keys.as_ref()));
        info
    }
}

/// Renders `composed.mp4` from the participants' files, then marks the recording done.
fn compose_meeting(state: &Mutex<Record>, dir: &Path, keys: Option<&Keyring>) {
    let inputs: Vec<ComposeInput> = snapshot(state)
        .participants
        .iter()
        .filter(|p| p.file.is_some())
        .map(|p| ComposeInput {
            path: dir.join(format!("{}.mp4", p.id)),
            label: p.name.clone(),
        })
        .collect();
    let started = Instant::now();
    let result = (!inputs.is_empty())
        .then(|| compose(&inputs, &dir.join(COMPOSED), ComposeConfig::default(), keys));
    if let Ok(mut record) = state.lock() {
        match result {
            Some(Ok(summary)) => {
                debug!(
                    seconds = summary.duration.as_secs_f64(),
                    took = started.elapsed().as_secs_f64(),
                    "composed the meeting video"
                );
                record.info.composed = Some(format!(
                    "/r/{}/{}/{COMPOSED}",
                    record.info.meeting, record.info.id
                ));
            }
            Some(Err(e)) => record
                .info
                .incidents
                .push(format!("the composed video could not be made: {e}")),
            None => {}
        }
        record.info.state = RecordingState::Done;
    }
    if let Err(e) = write_manifest(dir, &snapshot(state)) {
        warn!("writing the manifest: {e:#}");
    }
}

fn note_joined(state: &Mutex<Record>, p: &ParticipantInfo) {
    if let Ok(mut record) = state.lock() {
        let offset = record.origin.elapsed().as_millis() as u64;
        record.present.entry(p.id).or_insert(RecordedParticipant {
            id: p.id,
            identity: p.identity.clone(),
            name: p.name.clone(),
            joined_offset_ms: offset,
            left_offset_ms: None,
            file: None,
            duration_ms: 0,
        });
    }
}

fn note_left(state: &Mutex<Record>, id: ParticipantId) {
    if let Ok(mut record) = state.lock() {
        let offset = record.origin.elapsed().as_millis() as u64;
        if let Some(p) = record.present.get_mut(&id) {
            p.left_offset_ms.get_or_insert(offset);
        }
    }
}

fn note_incident(state: &Mutex<Record>, incident: String) {
    if let Ok(mut record) = state.lock() {
        let offset = record.origin.elapsed().as_secs_f64();
        record
            .info
            .incidents
            .push(format!("{incident} ({offset:.1} s in)"));
    }
}

fn snapshot(state: &Mutex<Record>) -> RecordingInfo {
    state.lock().map_or_else(
        |_| RecordingInfo {
            id: String::new(),
            meeting: String::new(),
            state: RecordingState::Failed,
            started_at_ms: 0,
            stopped_at_ms: None,
            participants: Vec::new(),
            composed: None,
            manifest: String::new(),
            incidents: vec!["the recording's state was lost".into()],
        },
        |record| RecordingInfo {
            participants: record.present.values().cloned().collect(),
            ..record.info.clone()
        },
    )
}

/// Writes the manifest atomically (temporary file, then rename).
pub fn write_manifest(dir: &Path, info: &RecordingInfo) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(info)?;
    let temporary = dir.join(format!("{MANIFEST}.tmp"));
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, dir.join(MANIFEST))?;
    Ok(())
}

/// The path of a participant's file while it is being written.
pub fn fragmented_path(dir: &Path, id: ParticipantId) -> PathBuf {
    dir.join(format!("{id}.mp4.part"))
}

/// One participant's file in the writer thread.
struct Writing {
    recorder: ParticipantRecorder<FileWriter, Bytes>,
    /// The last complete fragment: bytes in the file and media time covered.
    synced: Fragment,
    /// Writing failed (a full disk, say): the file holds what was synced, nothing more comes.
    failed: bool,
}

impl Writing {
    /// Takes the outcome of a write: syncs a completed fragment, or stops the file at its
    /// last complete fragment when writing failed.
    fn outcome(
        &mut self,
        id: ParticipantId,
        written: Result<Option<Fragment>, Fmp4Error>,
        state: &Mutex<Record>,
    ) {
        match written {
            Ok(Some(fragment)) => {
                if let Err(e) = self.recorder.output().sync_data() {
                    warn!(participant = %id, "syncing its file failed: {e}");
                }
                self.synced = fragment;
            }
            Ok(None) => {}
            Err(e) => {
                self.failed = true;
                let kept = self.synced.media_end.as_secs_f64();
                warn!(participant = %id, kept, "recording its media failed: {e}");
                if let Err(e) = self.recorder.output().truncate_plain(self.synced.file_size) {
                    warn!(participant = %id, "cutting its file back failed: {e}");
                }
                let name = state
                    .lock()
                    .ok()
                    .and_then(|r| r.present.get(&id).map(|p| p.name.clone()))
                    .unwrap_or_else(|| format!("participant {id}"));
                note_incident(
                    state,
                    format!("{name}'s file stopped ({e}); {kept:.1} s kept"),
                );
            }
        }
    }
}

/// The writer thread: one fragmented MP4 per participant (encrypted with `keys` if given),
/// synced at every fragment.
fn write_files(
    origin: Instant,
    dir: &Path,
    keys: Option<&Keyring>,
    state: &Mutex<Record>,
    inputs: &mpsc::Receiver<Input>,
) {
    let mut files: HashMap<ParticipantId, Writing> = HashMap::new();
    loop {
        let input = match inputs.recv_timeout(WRITER_TICK) {
            Ok(input) => Some(input),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        match input {
            Some(Input::Packet(packet)) => {
                let from = packet.from;
                let writing = match files.entry(from) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let path = fragmented_path(dir, from);
                        match at_rest::create(&path, keys, Layout::Streaming) {
                            Ok(file) => e.insert(Writing {
                                recorder: ParticipantRecorder::new(origin, file),
                                synced: Fragment {
                                    file_size: 0,
                                    media_end: Duration::ZERO,
                                },
                                failed: false,
                            }),
                            Err(err) => {
                                warn!(participant = %from, "cannot create its file: {err}");
                                continue;
                            }
                        }
                    }
                };
                if writing.failed {
                    continue;
                }
                let kind = match packet.kind {
                    kaskade_client::MediaKind::Audio => MediaKind::Audio,
                    kaskade_client::MediaKind::Video => MediaKind::Video,
                };
                let rtp = RtpPacket {
                    ssrc: packet.packet.header.ssrc,
                    sequence: packet.packet.header.sequence_number,
                    timestamp: packet.packet.header.timestamp,
                    marker: packet.packet.header.marker,
                    payload: packet.packet.payload,
                };
                let written = writing.recorder.push(kind, rtp, packet.arrival);
                writing.outcome(from, written, state);
            }
            Some(Input::Stop(reply)) => {
                let _ = reply.send(finish_all(dir, keys, files));
                return;
            }
            None => {}
        }
        let now = Instant::now();
        for (from, writing) in &mut files {
            if !writing.failed && writing.recorder.poll_timeout().is_some_and(|at| at <= now) {
                let written = writing.recorder.handle_timeout(now);
                writing.outcome(*from, written, state);
            }
        }
    }
}

/// Writes what is held and finalizes every participant's file into `{id}.mp4`. A file that
/// cannot be finalized (no room on a full disk) keeps its complete fragments as a fragmented
/// MP4 under the same name: still playable.
fn finish_all(
    dir: &Path,
    keys: Option<&Keyring>,
    files: HashMap<ParticipantId, Writing>,
) -> Vec<Finished> {
    let now = Instant::now();
    let mut finished = Vec::new();
    for (id, writing) in files {
        let fragmented = fragmented_path(dir, id);
        let output = dir.join(format!("{id}.mp4"));
        let Fragment {
            file_size: synced_bytes,
            media_end: synced,
        } = writing.synced;
        let written = if writing.failed {
            Ok(())
        } else {
            writing
                .recorder
                .finish(now)
                .map_err(anyhow::Error::from)
                .and_then(|file| Ok(file.finish()?))
        };
        let result = written.and_then(|()| Ok(finalize_with(&fragmented, &output, keys)?));
        match result {
            Ok(summary) => {
                let _ = std::fs::remove_file(&fragmented);
                finished.push(Finished {
                    id,
                    duration: summary.duration,
                });
            }
            Err(e) => {
                warn!(participant = %id, "finalizing its file failed: {e:#}");
                // a plain file is cut back to its last complete fragment (the torn tail of a
                // failed write); an encrypted one's readers drop a torn last chunk themselves
                let cut = keys.is_some()
                    || std::fs::OpenOptions::new()
                        .write(true)
                        .open(&fragmented)
                        .and_then(|f| f.set_len(synced_bytes))
                        .is_ok();
                if cut && !synced.is_zero() && std::fs::rename(&fragmented, &output).is_ok() {
                    finished.push(Finished {
                        id,
                        duration: synced,
                    });
                }
            }
        }
    }
    finished
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
